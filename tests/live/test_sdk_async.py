"""AsyncTelegramSessionManagerClient against a live server (each test runs its own event loop)."""
from __future__ import annotations

import asyncio
import logging
import threading

import pyrogram.errors as pyro
import pytest
import telethon.errors as tl

from telegram_session_manager import (
    AsyncTelegramSessionManagerClient,
    AuthenticationError,
    ClientClosed,
    LeaseLost,
    NoSessionAvailable,
    TeleGateConnectionError,
)


class AsyncSleeps:
    def __init__(self, action=None) -> None:
        self.waits: list[float] = []
        self.action = action

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.action is not None:
            self.action(len(self.waits))
        await asyncio.sleep(0)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def eventually(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def make(live_server, **options) -> AsyncTelegramSessionManagerClient:
    return AsyncTelegramSessionManagerClient(live_server.url, live_server.client_key, **options)


def test_get_release_status(live_server):
    [sid] = live_server.add_sessions("acc1")

    async def main():
        async with make(live_server) as client:
            session = await client.get_session()
            assert (session["session_id"], session["session_name"]) == (sid, "acc1")
            assert (await client.get_status())["in_use"] == 1
            assert await client.release_session(session["session_id"]) is True
            assert await client.release_session(12345) is True
            assert (await client.get_status())["free"] == 1

    run(main())


def test_async_with_session_releases_and_classifies(live_server, admin):
    a, b, c = live_server.add_sessions("a", "b", "c")

    async def main():
        async with make(live_server) as client:
            async with client.session(name="a") as s:
                assert s.session_name == "a" and s["session_id"] == a
            with pytest.raises(tl.FloodWaitError):
                async with client.session(name="b"):
                    raise tl.FloodWaitError(request=None, capture=50)
            with pytest.raises(pyro.UserDeactivatedBan):
                async with client.session(name="c"):
                    raise pyro.UserDeactivatedBan()

    run(main())
    assert admin.session_info(a)["state"] == "free"
    assert admin.session_info(b)["state"] == "in_floodwait" and 45 < admin.session_info(b)["flood_wait_remaining"] <= 50
    assert admin.session_info(c)["disabled_reason"] == "UserDeactivatedBan"


def test_waits_are_exact_and_use_the_injected_async_sleep(live_server, admin, caplog):
    [sid] = live_server.add_sessions("acc1")
    sleeps = AsyncSleeps(lambda n: admin.update_session(sid, clear_flood_wait=True))

    async def main():
        async with make(live_server, sleep=sleeps) as client:
            await client.release_session((await client.get_session()).session_id, flood_wait=7)
            with caplog.at_level(logging.WARNING):
                lease = await client.get_session()
            assert lease.session_id == sid

    run(main())
    assert sleeps.waits == [7]
    assert any("waiting 7 s" in r.getMessage() for r in caplog.records)


def test_nothing_can_free_up_and_auto_wait_false_raise_at_once(live_server):
    sleeps = AsyncSleeps()

    async def main():
        async with make(live_server, sleep=sleeps) as client:
            with pytest.raises(NoSessionAvailable) as caught:
                await client.get_session()
            assert caught.value.total == 0
            live_server.add_sessions("a")
            held = await client.get_session()
            with pytest.raises(NoSessionAvailable) as caught:
                await client.get_session(auto_wait=False)
            assert caught.value.in_use == 1
            with pytest.raises(NoSessionAvailable) as caught:
                await client.get_session(max_wait=0.5)  # one long-poll of 0.5 s, no sleeping
            assert caught.value.waited >= 0.5
            await client.release_session(held.session_id)

    run(main())
    assert sleeps.waits == []


def test_keepalive_task_renews_and_flags_a_lost_lease(live_server, caplog):
    [sid] = live_server.add_sessions("acc1")

    async def main():
        async with make(live_server) as client, make(live_server, keepalive=False) as other:
            lease = await client.get_session(ttl=1)
            await eventually(lambda: lease.renewals >= 4, what="4 renewals")
            with pytest.raises(NoSessionAvailable):
                await other.get_session(auto_wait=False)
            with caplog.at_level(logging.ERROR):
                await other.release_session(sid)
                await other.get_session()
                await eventually(lambda: lease.lost, what="the keepalive to notice")
            assert client.held == [] and "lost the lease" in caplog.text
            await eventually(lambda: client._keepalive_task is None, what="the keepalive task to end")
            with pytest.raises(LeaseLost):
                await client.release_session(sid)

    run(main())


def test_a_cancelled_task_releases_its_session(live_server):
    live_server.add_sessions("acc1")

    async def main():
        async with make(live_server) as client:
            entered = asyncio.Event()

            async def worker():
                async with client.session():
                    entered.set()
                    await asyncio.sleep(3600)

            task = asyncio.ensure_future(worker())
            await entered.wait()
            assert (await client.get_status())["in_use"] == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await client.get_status())["free"] == 1

    run(main())


def test_close_is_idempotent_and_releases(live_server):
    live_server.add_sessions("a")

    async def main():
        client = make(live_server)
        await client.get_session(ttl=30)
        await client.close()
        await client.aclose()
        assert live_server.status()["free"] == 1
        with pytest.raises(ClientClosed):
            await client.get_status()

    run(main())


def test_typed_errors(live_server):
    sleeps = AsyncSleeps()

    async def main():
        async with AsyncTelegramSessionManagerClient(live_server.url, "wrong", sleep=sleeps) as bad:
            with pytest.raises(AuthenticationError) as caught:
                await bad.get_status()
            assert caught.value.status == 401 and caught.value.url == live_server.url + "/status"
        live_server.kill()
        async with make(live_server, sleep=sleeps, auto_wait=False) as client:
            with pytest.raises(TeleGateConnectionError) as caught:
                await client.get_status()
            assert caught.value.reason is not None and caught.value.__cause__ is None
            assert "is not answering (connection refused); tried 4 times" in str(caught.value)

    run(main())
    assert sleeps.waits == [0.5, 1.0, 2.0]


def test_a_get_session_cancelled_mid_request_gives_the_lease_back(live_server):
    live_server.add_sessions("acc1")
    answered = threading.Event()

    async def main():
        async with make(live_server) as client:
            real_send = client._transport.send

            def slow_send(method, path, body=None):
                data = real_send(method, path, body)  # the server grants the lease...
                if path == "/session":
                    answered.wait(30)  # ...but the answer reaches the caller only after it was cancelled
                return data

            client._transport.send = slow_send
            task = asyncio.ensure_future(client.get_session())
            await eventually(lambda: live_server.status()["in_use"] == 1, what="the lease to be granted")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            answered.set()
            await eventually(lambda: live_server.status()["free"] == 1, timeout=10,
                             what="the orphaned lease to be released")
            assert client.held == []

    run(main())


def test_sessions_in_use_are_long_polled(live_server, caplog):
    live_server.add_sessions("acc1")
    sleeps = AsyncSleeps()

    async def main():
        async with make(live_server, sleep=sleeps) as client, make(live_server, keepalive=False) as other:
            held = await other.get_session()
            bodies = []
            real = client._transport.send

            def send(method, path, body=None):
                if path == "/session":
                    bodies.append(dict(body))
                return real(method, path, body)

            client._transport.send = send
            waiter = asyncio.ensure_future(client.get_session())
            await eventually(lambda: any("wait" in body for body in bodies), what="a long-poll")
            await other.release_session(held.session_id)
            lease = await waiter
            return lease, bodies

    with caplog.at_level(logging.WARNING):
        lease, bodies = run(main())
    assert lease.session_name == "acc1" and sleeps.waits == []
    assert [body.get("wait") for body in bodies] == [None, 30]
    assert "waiting up to 30 s for a session to be released" in caplog.text


def test_a_release_whose_answer_was_lost_is_not_a_lost_lease(live_server, caplog):
    """The server released the session, the answer never came, another worker took the account
    before the retry: the retry is answered as released, no false "lost lease" (as in sync)."""
    live_server.add_sessions("solo")

    async def main():
        async with make(live_server, sleep=AsyncSleeps()) as client, make(live_server, keepalive=False) as other:
            real = client._transport._send_to
            taken = []

            def drop_the_release_answer(base_url, method, path, body):  # runs in the client's HTTP thread
                data = real(base_url, method, path, body)
                if path == "/release" and not taken:
                    taken.append(other._transport.send("POST", "/session", {"ttl": 60}))  # the account is theirs now
                    error = TeleGateConnectionError("reset", method=method, url=base_url + path, detail="reset")
                    error.transient = True
                    raise error
                return data

            client._transport._send_to = drop_the_release_answer
            with caplog.at_level(logging.WARNING):
                async with client.session() as lease:
                    pass
            assert taken and not lease.lost and lease.released
            assert "lost" not in caplog.text, caplog.text
            assert live_server.store.get_session(lease.session_id)["state"] == "in_use"  # theirs, untouched

    run(main())


def test_the_async_client_logs_the_classification_too(live_server, caplog):
    """The drift #11 found: only the sync client logged what an exception in the block meant."""
    live_server.add_sessions("acc1")

    async def main():
        async with AsyncTelegramSessionManagerClient(live_server.url, live_server.client_key) as client:
            with pytest.raises(tl.FloodWaitError):
                async with client.session():
                    raise tl.FloodWaitError(request=None, capture=30)

    with caplog.at_level(logging.INFO, logger="telegram_session_manager.client"):
        asyncio.run(main())
    assert "FloodWaitError raised in the block of session acc1 -> flood_wait" in caplog.text
    assert "released into a flood wait of 30 s" in caplog.text
