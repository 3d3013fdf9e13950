"""The shared core: the decisions both clients make, tested in process (no server).

Both clients subclass ``client._ClientCore``; it decides what to send, what an answer or
an exception means and what to log. These tests pin those decisions without HTTP, and
check that the asyncio client adds none of its own.
"""
from __future__ import annotations

import ast
import asyncio
import logging
import re
import socket
from pathlib import Path

import pytest
import telethon.errors as tl

from support import Sleeps
from telegram_session_manager import (
    APIError,
    AsyncTelegramSessionManagerClient,
    Lease,
    LeaseLimitReached,
    LeaseLost,
    NotLeaseHolder,
    Outcome,
    RetryPolicy,
    TelegramSessionManagerClient,
    TeleGateConnectionError,
)
from telegram_session_manager.client import _ClientCore, _error_from_response, _is_transient

ROOT = Path(__file__).resolve().parents[2]
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
    request_id = call.body.pop("request_id")
    assert call.body == {"ttl": 120, "holder": "me:1", "name": "acc1", "host": core.host} and call.waiting is None
    assert core.host == socket.gethostname()  # the machine's name, unless host= says otherwise
    assert core._acquire_call(None, None, None, None, kind="pyrogram").body["kind"] == "pyrogram"
    with pytest.raises(ValueError, match="telethon, pyrogram"):
        core._acquire_call(None, None, None, None, kind="Telethon")
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)  # the contract: 1..64 of [A-Za-z0-9._:-]
    assert core._acquire_call(None, None, None, None).body["request_id"] != request_id
    assert core._acquire_call(None, None, None, 5).waiting.max_wait == 5


# -- errors: one table maps answers to classes, with plain words -------------------------


def answer(status, body=None, headers=None, sent=None):
    return _error_from_response(status, "POST", "http://tg/release", body or {}, "", headers or {}, sent)


def test_not_lease_holder_is_a_lease_lost_in_plain_words():
    error = answer(409, {"error": "not_lease_holder", "detail": "session 4 is leased by key 'w2'"},
                   sent={"session_id": 4})
    assert type(error) is NotLeaseHolder and isinstance(error, LeaseLost)
    assert str(error).startswith("session 4 is leased by another worker's key; you cannot release, renew or "
                                 "report it (POST http://tg/release -> 409 not_lease_holder: session 4 is leased")
    mismatch = answer(409, {"error": "lease_mismatch", "detail": "d"})
    assert type(mismatch) is LeaseLost


def test_lease_limit_carries_the_limit_and_says_what_to_do():
    detail = "key 'w1' already holds 3 leases, its limit (max_leases=3); release one first"
    error = answer(429, {"error": "lease_limit", "detail": detail, "limit": 3, "held": 3}, {"Retry-After": "1"})
    assert type(error) is LeaseLimitReached and not _is_transient(error)
    assert (error.limit, error.held, error.retry_after, error.status) == (3, 3, 1.0, 429)
    assert str(error).startswith(f"this API key is at its lease limit: {detail} (POST http://tg/release -> 429")
    assert "--max-leases" in str(error)
    assert type(answer(429, {"error": "too_many"})) is APIError  # another 429: no special meaning


def test_lease_limit_wait_is_the_retry_after_within_max_wait():
    policy = RetryPolicy()
    limited = LeaseLimitReached("x", status=429)
    limited.retry_after = 2.0
    assert policy.limit_wait(limited, 0, None) == 2.0
    assert policy.limit_wait(limited, 5, 1.5) == 1.5
    assert policy.limit_wait(limited, 0, 0) is None
    limited.retry_after = None  # no Retry-After: poll_min, doubling up to poll_max
    assert [policy.limit_wait(limited, n, None) for n in range(6)] == [1, 2, 4, 8, 10, 10]


# -- the same request_id on every retry of one call (a fake transport, no server) --------


class FakeServer:
    """Stands in for ``client._transport.send``: plays a script of answers and records what was sent."""

    def __init__(self, *script):
        self.script = list(script)
        self.sent: list[tuple[str, str, dict]] = []

    def __call__(self, method, path, body=None):
        self.sent.append((method, path, dict(body or {})))
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


def dropped_answer() -> TeleGateConnectionError:
    error = TeleGateConnectionError("reset", method="POST", url="http://tg/session", detail="connection reset")
    error.transient = True
    error.server = "http://tg"
    return error


def granted(sid=1):
    return {"session_id": sid, "session_name": f"acc{sid}", "lease_token": "t", "ttl": 60}


def limit_reached() -> LeaseLimitReached:
    error = answer(429, {"error": "lease_limit", "detail": "key 'w1' already holds 1 leases, its limit "
                         "(max_leases=1); release one first", "limit": 1, "held": 1}, {"Retry-After": "1"})
    error.server = "http://tg"
    return error


@pytest.mark.parametrize("auto_wait", [True, False])
def test_a_retried_acquire_sends_the_same_request_id_and_the_next_call_a_new_one(auto_wait):
    sleeps = Sleeps()
    client = TelegramSessionManagerClient("http://tg", "key", auto_wait=auto_wait, keepalive=False, sleep=sleeps)
    client._transport.send = fake = FakeServer(dropped_answer(), dropped_answer(), granted(1), granted(2))
    assert client.get_session().session_id == 1
    assert client.get_session().session_id == 2
    ids = [body["request_id"] for _, path, body in fake.sent]
    assert ids[0] == ids[1] == ids[2] != ids[3]
    assert sleeps.waits == [0.5, 1.0]


def test_the_async_client_reuses_its_request_id_too():
    waits: list[float] = []

    async def sleep(seconds):
        waits.append(seconds)

    async def main():
        client = AsyncTelegramSessionManagerClient("http://tg", "key", keepalive=False, sleep=sleep)
        client._transport.send = fake = FakeServer(dropped_answer(), limit_reached(), granted(1))
        lease = await client.get_session()
        client._executor.shutdown()
        return lease, fake

    lease, fake = asyncio.run(main())
    assert lease.session_id == 1 and len({body["request_id"] for _, _, body in fake.sent}) == 1
    assert waits == [0.5]  # the transient failure's backoff; the lease limit is long-polled


def test_auto_wait_waits_on_the_lease_limit_and_says_why(caplog):
    sleeps = Sleeps()
    client = TelegramSessionManagerClient("http://tg", "key", keepalive=False, sleep=sleeps)
    client._transport.send = fake = FakeServer(limit_reached(), limit_reached(), granted(1))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert client.get_session().session_id == 1
    # A long-poll the server holds until one of the key's leases ends; this fake answers it
    # at once (as an older server would), so the next try is paced by Retry-After first.
    assert [body.get("wait") for _, _, body in fake.sent] == [None, 30.0, 30.0]
    assert sleeps.waits == [1.0]
    lines = [r.getMessage() for r in caplog.records if "lease limit" in r.getMessage()]
    assert lines == ["TeleGate: this API key is at its lease limit: key 'w1' already holds 1 leases, its "
                     "limit (max_leases=1); release one first; waiting for one of this key's leases to end"]


def test_without_auto_wait_the_lease_limit_is_raised_at_once():
    sleeps = Sleeps()
    client = TelegramSessionManagerClient("http://tg", "key", auto_wait=False, keepalive=False, sleep=sleeps)
    client._transport.send = FakeServer(limit_reached())
    with pytest.raises(LeaseLimitReached) as caught:
        client.get_session()
    assert sleeps.waits == [] and caught.value.limit == 1


def test_max_wait_bounds_the_lease_limit_wait():
    sleeps = Sleeps()
    client = TelegramSessionManagerClient("http://tg", "key", keepalive=False, sleep=sleeps, max_wait=1.5)
    client._transport.send = fake = FakeServer(*[limit_reached() for _ in range(4)])
    with pytest.raises(LeaseLimitReached):
        client.get_session()
    assert sleeps.waits == [1.0, 0.5]
    assert [body.get("wait") for _, _, body in fake.sent] == [None, 1.5, 1.5, 0.5]
