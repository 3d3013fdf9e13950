"""Time under the test's control: a clock it moves, a ``sleep`` that records instead of sleeping, a deadline."""
from __future__ import annotations

import time
from typing import Any

import pytest


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sleeps:
    """An injected ``sleep``: records each wait instead of sleeping, then runs ``action``."""

    def __init__(self, action=None) -> None:
        self.waits: list[float] = []
        self.action = action

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.action is not None:
            self.action(len(self.waits))


def eventually(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll the test's own state until ``predicate()`` holds; fail after ``timeout`` seconds (a bound, not a wait)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)
