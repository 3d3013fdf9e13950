"""The shared core: the decisions both clients make, tested in process (no server).

Both clients subclass ``client._ClientCore``; it decides what to send, what an answer or
an exception means and what to log. These tests pin those decisions without HTTP, and
check that the asyncio client adds none of its own.
"""
from __future__ import annotations

import ast
import asyncio
import logging
from pathlib import Path

import pytest
import telethon.errors as tl

from telegram_session_manager import (
    AsyncTelegramSessionManagerClient,
    Lease,
    LeaseLost,
    Outcome,
    TelegramSessionManagerClient,
)
from telegram_session_manager.client import _ClientCore

ROOT = Path(__file__).resolve().parent.parent
AIO = ROOT / "sdk" / "telegram_session_manager" / "aio.py"
LOGGER = "telegram_session_manager.client"


@pytest.fixture(params=["sync", "async"])
def core(request):
    """A client of either kind, never connected (the core's decisions need no server)."""
    cls = TelegramSessionManagerClient if request.param == "sync" else AsyncTelegramSessionManagerClient
    client = cls("http://127.0.0.1:9", "key", holder="me:1", keepalive=False)
    yield client
    client._transport.close()


def lease(**extra) -> Lease:
    return Lease({"session_id": 4, "session_name": "acc4", "lease_token": "tok", "ttl": 60, **extra})


def test_both_clients_share_one_core():
    assert issubclass(TelegramSessionManagerClient, _ClientCore)
    assert issubclass(AsyncTelegramSessionManagerClient, _ClientCore)


def test_the_asyncio_client_logs_nothing_itself():
    """Every message comes from the core, so the two clients cannot say different things."""
    tree = ast.parse(AIO.read_text(encoding="utf-8"))
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not {"log", "logging"} & names


def test_release_body_carries_the_token_and_the_strongest_report(core):
    held = lease()
    held.report_flood_wait(30)
    body = core._release_begin(held, 4, Outcome(flood_wait=10))
    assert body == {"session_id": 4, "lease_token": "tok", "flood_wait": 30}
    assert held._releasing and not held._renewable
    assert core._release_begin(None, 7, Outcome(disable="x" * 600)) == {"session_id": 7, "disable": "x" * 500}


def test_a_failed_release_keeps_renewing_unless_the_lease_is_lost(core):
    held = lease()
    core._release_begin(held, 4, Outcome())
    core._release_failed(held, OSError("reset"))
    assert held._renewable and not held.lost
    core._release_begin(held, 4, Outcome())
    core._release_failed(held, LeaseLost("gone", status=409, detail="lease_mismatch"))
    assert held.lost and held.lost_reason == "lease_mismatch"


def test_block_outcome_classifies_merges_and_says_so(core, caplog):
    held = lease()
    held.report_flood_wait(10)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        outcome = core._block_outcome(held, tl.FloodWaitError(request=None, capture=60))
    assert outcome == Outcome(flood_wait=60)
    assert "FloodWaitError raised in the block of session acc4" in caplog.text
    assert core._block_outcome(held, None) == Outcome(flood_wait=10)
    held.released = True
    assert core._block_outcome(held, ValueError()) is None


def test_acquire_body_and_wait_state(core):
    call = core._acquire_call(ttl=120, name="acc1", auto_wait=False, max_wait=None)
    assert call.body == {"ttl": 120, "holder": "me:1", "name": "acc1"} and call.waiting is None
    assert core._acquire_call(None, None, None, 5).waiting.max_wait == 5


def test_the_async_client_logs_the_classification_too(live_server, caplog):
    """The drift #11 found: only the sync client logged what an exception in the block meant."""
    live_server.add_sessions("acc1")

    async def main():
        async with AsyncTelegramSessionManagerClient(live_server.url, live_server.client_key) as client:
            with pytest.raises(tl.FloodWaitError):
                async with client.session():
                    raise tl.FloodWaitError(request=None, capture=30)

    with caplog.at_level(logging.INFO, logger=LOGGER):
        asyncio.run(main())
    assert "FloodWaitError raised in the block of session acc1 -> flood_wait" in caplog.text
    assert "released into a flood wait of 30 s" in caplog.text
