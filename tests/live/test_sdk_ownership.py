"""Leases belong to their key (#8), seen from the SDK: plain-words errors, lease limits waited on, and an
acquire whose answer was lost costs no second session.

These need the server side of #8 (ownership, ``--max-leases``, ``request_id``).
"""
from __future__ import annotations

import logging
import threading

import pytest

from support import Sleeps, eventually
from telegram_session_manager import (
    LeaseLimitReached,
    LeaseLost,
    NotLeaseHolder,
    TelegramSessionManagerClient,
    TeleGateConnectionError,
)

LOGGER = "telegram_session_manager.client"


def client_key(live_server, name: str, max_leases: int | None = None) -> str:
    """A new client key in the server's database (the admin's ``telegate keys create``)."""
    return live_server.store.create_key(name, "client", max_leases=max_leases)


def test_another_keys_release_is_not_lease_holder_in_plain_words(live_server):
    [sid] = live_server.add_sessions("acc1")
    with TelegramSessionManagerClient(live_server.url, live_server.client_key) as mine, \
            TelegramSessionManagerClient(live_server.url, client_key(live_server, "intruder")) as theirs:
        lease = mine.get_session()
        for attempt in (lambda: theirs.release_session(sid), lambda: theirs.release_session(sid, flood_wait=60),
                        lambda: theirs.release_session(sid, disable="banned")):
            with pytest.raises(NotLeaseHolder) as caught:
                attempt()
            assert isinstance(caught.value, LeaseLost) and caught.value.status == 409
            assert str(caught.value).startswith(f"session {sid} is leased by another worker's key; "
                                                "you cannot release, renew or report it")
        row = live_server.store.get_session(sid)
        assert row["state"] == "in_use" and not lease.lost  # nothing changed for the holder
        assert mine.release_session(sid) is True  # the seed's release by the holder still works


def test_a_lost_acquire_answer_costs_no_second_session(live_server):
    """The server grants the lease but the answer never arrives; the retry gets the same lease back."""
    live_server.add_sessions("a", "b")
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=Sleeps()) as client:
        real = client._transport._send_to
        dropped = []

        def drop_first_answer(base_url, method, path, body):
            data = real(base_url, method, path, body)
            if path == "/session" and not dropped:
                dropped.append(data)
                error = TeleGateConnectionError("reset", method=method, url=base_url + path, detail="reset")
                error.transient = True
                raise error
            return data

        client._transport._send_to = drop_first_answer
        lease = client.get_session()
        assert dropped and lease.session_id == dropped[0]["session_id"]
        assert lease.lease_token == dropped[0]["lease_token"]
        assert live_server.status()["in_use"] == 1  # one lease, not two


@pytest.mark.parametrize("next_holder", ["same key", "another key"])
def test_a_release_whose_answer_was_lost_is_not_a_lost_lease(live_server, caplog, next_holder):
    """The server released the session, the answer never came, another worker took the account
    before the SDK sent the release again: that retry is answered as released, no false alarm."""
    live_server.add_sessions("solo")
    other_key = live_server.client_key if next_holder == "same key" else client_key(live_server, "w2")
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=Sleeps()) as client, \
            TelegramSessionManagerClient(live_server.url, other_key, keepalive=False) as other:
        real = client._transport._send_to
        taken = []

        def drop_the_release_answer(base_url, method, path, body):
            data = real(base_url, method, path, body)
            if path == "/release" and not taken:
                taken.append(other.get_session(auto_wait=False))  # the account is someone else's now
                error = TeleGateConnectionError("reset", method=method, url=base_url + path, detail="reset")
                error.transient = True
                raise error
            return data

        client._transport._send_to = drop_the_release_answer
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            with client.session() as lease:
                pass
        assert taken and not lease.lost and lease.released
        assert "lost" not in caplog.text, caplog.text
        assert live_server.store.get_session(lease.session_id)["state"] == "in_use"
        assert other.renew(taken[0]).renewals == 1  # theirs, untouched


def test_a_key_at_its_lease_limit_waits_under_auto_wait_and_says_why(live_server, caplog):
    live_server.add_sessions("a", "b")
    key = client_key(live_server, "w1", max_leases=1)
    with TelegramSessionManagerClient(live_server.url, key, keepalive=False) as holder:
        first = holder.get_session()
        with pytest.raises(LeaseLimitReached) as caught:
            holder.get_session(auto_wait=False)
        assert caught.value.limit == 1 and "max_leases=1" in str(caught.value)
        # The waiter long-polls: the server holds it in line until one of the key's leases ends.
        releaser = threading.Thread(target=lambda: (
            eventually(lambda: live_server.status()["waiting_workers"] == 1, what="the waiter in line"),
            holder.release_session(first.session_id)))
        sleeps = Sleeps()
        with TelegramSessionManagerClient(live_server.url, key, sleep=sleeps) as waiter:
            with caplog.at_level(logging.WARNING, logger=LOGGER):
                releaser.start()
                assert waiter.get_session().session_name in ("a", "b")  # once the key gave one back
                releaser.join()
        assert sleeps.waits == []  # no polling: it was served when the lease ended
        said = [r.getMessage() for r in caplog.records if "lease limit" in r.getMessage()]
        assert len(said) == 1 and said[0].endswith("waiting for one of this key's leases to end")


def test_a_key_at_its_wait_cap_sleeps_and_asks_again_under_auto_wait(live_server):
    """Issue 18: a key parks at most its cap of long-polls; one more gets 429 wait_limit, which
    the SDK (WaitLimitReached, a LeaseLimitReached) sleeps out and asks again."""
    from telegram_session_manager import WaitLimitReached

    live_server.add_sessions("a")
    key = live_server.store.create_key("capped-w", max_waiting=1)
    held = live_server.request("POST", "/session", {"ttl": 3600}, key="admin").json
    parked: list = []
    poll = threading.Thread(target=lambda: parked.append(
        live_server.request("POST", "/session", {"wait": 25, "request_id": "first"}, key=key)), daemon=True)
    poll.start()
    eventually(lambda: live_server.status()["waiting_workers"] == 1, what="the first poll parked")

    def free_the_session(n: int) -> None:
        if n == 1:
            live_server.request("POST", "/release", {"session_id": held["session_id"]}, key="admin")
            poll.join(30)
            live_server.request("POST", "/release", {"session_id": parked[0].json["session_id"]}, key=key)

    sleeps = Sleeps(free_the_session)
    with TelegramSessionManagerClient(live_server.url, key, sleep=sleeps, keepalive=False) as waiter:
        assert waiter.get_session().session_name == "a"
    assert sleeps.waits == [1]
    assert issubclass(WaitLimitReached, LeaseLimitReached)
