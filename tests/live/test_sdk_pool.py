"""Worker pools through the SDK: 16 threads (or tasks) over 4 sessions never share one.

Each worker records, under a lock, when it held a session: from the moment the
``with`` block got it to the moment it left the block. The true lease covers that
window, so two overlapping windows on one session would be a double lease.
"""
from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict

from telegram_session_manager import AsyncTelegramSessionManagerClient, TelegramSessionManagerClient

THREADS, SESSIONS, JOBS_PER_WORKER = 16, 4, 8


class Intervals:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_session: dict[int, list[tuple[float, float]]] = defaultdict(list)

    def add(self, session_id: int, start: float, end: float) -> None:
        with self.lock:
            self.by_session[session_id].append((start, end))

    def overlaps(self) -> list[tuple[int, tuple[float, float], tuple[float, float]]]:
        found = []
        for session_id, spans in self.by_session.items():
            spans.sort()
            for earlier, later in zip(spans, spans[1:]):
                if later[0] < earlier[1]:
                    found.append((session_id, earlier, later))
        return found

    @property
    def count(self) -> int:
        return sum(len(spans) for spans in self.by_session.values())


def quick_sleep(seconds: float) -> None:
    """Waits are logged at their advised length; the pool only needs to re-poll soon."""
    time.sleep(min(seconds, 0.01))


async def quick_async_sleep(seconds: float) -> None:
    await asyncio.sleep(min(seconds, 0.01))


def test_sixteen_threads_over_four_sessions_never_share_one(live_server):
    live_server.add_sessions(*(f"acc{n}" for n in range(SESSIONS)))
    intervals = Intervals()
    errors: list[BaseException] = []

    with TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=quick_sleep,
                                      log_waits=False) as client:
        def worker(number: int) -> None:
            rng = random.Random(number)
            try:
                for _ in range(JOBS_PER_WORKER):
                    with client.session(ttl=30) as s:
                        start = time.monotonic()
                        time.sleep(rng.uniform(0, 0.005))  # the Telegram work
                        intervals.add(s.session_id, start, time.monotonic())
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads), "a worker hung"

    assert errors == []
    assert intervals.count == THREADS * JOBS_PER_WORKER
    assert len(intervals.by_session) <= SESSIONS
    assert intervals.overlaps() == []
    status = live_server.status()
    assert (status["free"], status["in_use"]) == (SESSIONS, 0)


def test_sixteen_asyncio_tasks_over_four_sessions_never_share_one(live_server):
    live_server.add_sessions(*(f"acc{n}" for n in range(SESSIONS)))
    intervals = Intervals()

    async def main() -> None:
        async with AsyncTelegramSessionManagerClient(live_server.url, live_server.client_key,
                                                     sleep=quick_async_sleep, log_waits=False) as client:
            async def worker(number: int) -> None:
                rng = random.Random(number)
                for _ in range(JOBS_PER_WORKER):
                    async with client.session(ttl=30) as s:
                        start = time.monotonic()
                        await asyncio.sleep(rng.uniform(0, 0.005))
                        intervals.add(s.session_id, start, time.monotonic())

            await asyncio.wait_for(asyncio.gather(*(worker(n) for n in range(THREADS))), 120)

    asyncio.run(main())
    assert intervals.count == THREADS * JOBS_PER_WORKER
    assert intervals.overlaps() == []
    status = live_server.status()
    assert (status["free"], status["in_use"]) == (SESSIONS, 0)


def test_the_interval_check_catches_a_shared_session():
    intervals = Intervals()
    intervals.add(1, 0.0, 2.0)
    intervals.add(1, 2.0, 3.0)  # back to back is fine
    intervals.add(2, 0.0, 1.0)
    assert intervals.overlaps() == []
    intervals.add(1, 2.5, 4.0)
    assert intervals.overlaps() == [(1, (2.0, 3.0), (2.5, 4.0))]
