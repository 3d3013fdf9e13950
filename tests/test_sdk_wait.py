"""auto_wait: the exact waits the client takes, when it gives up, and that it says so.

The injected ``sleep`` records each wait and, instead of time passing, changes the pool
the way time would have (ends a flood wait, releases a session), so every wait is
asserted to the second without sleeping.
"""
from __future__ import annotations

import logging

import pytest

from conftest import Sleeps
from telegram_session_manager import NoSessionAvailable, RetryPolicy, TelegramSessionManagerClient

LOGGER = "telegram_session_manager.client"


@pytest.fixture
def client(live_server, sleeps):
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=sleeps) as c:
        yield c


def wait_messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and "waiting" in r.getMessage()]


def test_flood_wait_is_waited_exactly_and_said(live_server, client, admin, sleeps, caplog):
    [sid] = live_server.add_sessions("acc1")
    client.release_session(client.get_session().session_id, flood_wait=5)
    sleeps.action = lambda n: admin.update_session(sid, clear_flood_wait=True)  # 5 s pass
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        lease = client.get_session()
    assert lease.session_name == "acc1"
    assert sleeps.waits == [5]
    [message] = wait_messages(caplog)
    assert "waiting 5 s" in message and "1 in flood wait" in message
    assert [r.levelno for r in caplog.records if r.getMessage() == message] == [logging.WARNING]


def test_the_earliest_flood_wait_end_is_waited(live_server, client, admin, sleeps):
    a, b = live_server.add_sessions("a", "b")
    client.release_session(client.get_session(name="a").session_id, flood_wait=30)
    client.release_session(client.get_session(name="b").session_id, flood_wait=3)
    sleeps.action = lambda n: admin.update_session(b, clear_flood_wait=True)
    assert client.get_session().session_name == "b"
    assert sleeps.waits == [3]


def test_sessions_in_use_are_polled_with_a_bounded_backoff(live_server, client, other, sleeps, caplog):
    live_server.add_sessions("acc1")
    held = other.get_session()
    # The holder releases after the 5th wait; the server's Retry-After (5 s while leased) bounds the backoff.
    sleeps.action = lambda n: n == 5 and other.release_session(held.session_id)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        lease = client.get_session()
    assert lease.session_name == "acc1"
    assert sleeps.waits == [1, 2, 4, 5, 5]
    assert len(wait_messages(caplog)) == 5


def test_backoff_without_a_retry_after_cap_stops_at_poll_max(live_server, other):
    live_server.add_sessions("acc1")
    held = other.get_session()
    sleeps = Sleeps(lambda n: n == 7 and other.release_session(held.session_id))
    policy = RetryPolicy(poll_min=0.5, poll_max=3)
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=sleeps,
                                      retry_policy=policy) as client:
        client.get_session()
    assert sleeps.waits == [0.5, 1, 2, 3, 3, 3, 3]


def test_an_expiring_lease_bounds_the_poll(live_server, client, other, sleeps):
    live_server.add_sessions("acc1")
    other.get_session(ttl=2)  # nobody renews it (keepalive off): free within 2 s
    with pytest.raises(NoSessionAvailable):
        client.get_session(max_wait=6)
    # 1, then 2 (the lease ends in <= 2 s), then the rest of max_wait.
    assert sleeps.waits == [1, 2, 2, 1]


def test_empty_pool_raises_at_once(live_server, client, sleeps, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(NoSessionAvailable) as caught:
        client.get_session()
    assert sleeps.waits == []
    assert caught.value.total == 0 and "empty" in caught.value.detail
    assert any("giving up" in r.getMessage() for r in caplog.records)


def test_all_disabled_raises_at_once(live_server, client, admin, sleeps):
    a, b = live_server.add_sessions("a", "b")
    admin.update_session(a, disabled=True)
    admin.update_session(b, disabled=True, reason="banned")
    with pytest.raises(NoSessionAvailable) as caught:
        client.get_session()
    assert sleeps.waits == []
    assert (caught.value.in_use, caught.value.next_release_in, caught.value.total) == (0, None, 2)
    assert not caught.value.can_free_up


def test_a_named_session_that_is_disabled_raises_at_once(live_server, client, admin, sleeps):
    a, _ = live_server.add_sessions("a", "b")
    admin.update_session(a, disabled=True)
    with pytest.raises(NoSessionAvailable):
        client.get_session(name="a")
    assert sleeps.waits == []


def test_max_wait_gives_up_at_once_when_only_a_later_flood_end_could_help(live_server, client, sleeps):
    live_server.add_sessions("acc1")
    client.release_session(client.get_session().session_id, flood_wait=30)
    with pytest.raises(NoSessionAvailable) as caught:
        client.get_session(max_wait=10)
    assert sleeps.waits == [] and caught.value.waited == 0


def test_max_wait_bounds_polling(live_server, client, other, sleeps):
    live_server.add_sessions("a", "b")
    client.release_session(client.get_session(name="a").session_id, flood_wait=30)
    other.get_session(name="b")
    with pytest.raises(NoSessionAvailable) as caught:
        client.get_session(max_wait=10)
    assert sleeps.waits == [1, 2, 4, 3]  # the last wait is what is left of max_wait
    assert caught.value.waited == 10 and caught.value.waiting_count == 1 and caught.value.in_use == 1


def test_constructor_max_wait_and_per_call_override(live_server, other, sleeps):
    live_server.add_sessions("a")
    other.get_session()
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=sleeps, max_wait=3) as c:
        with pytest.raises(NoSessionAvailable):
            c.get_session()
        assert sleeps.waits == [1, 2]
        with pytest.raises(NoSessionAvailable):
            c.get_session(auto_wait=False)
        assert sleeps.waits == [1, 2]


def test_auto_wait_false_never_waits(live_server, other, sleeps):
    live_server.add_sessions("a")
    other.get_session()
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, auto_wait=False, sleep=sleeps) as c:
        with pytest.raises(NoSessionAvailable) as caught:
            c.get_session()
    assert sleeps.waits == [] and caught.value.in_use == 1


def test_waits_can_be_silenced(live_server, client, other, sleeps, caplog):
    live_server.add_sessions("a")
    held = other.get_session()
    sleeps.action = lambda n: other.release_session(held.session_id)
    quiet = TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=sleeps, log_waits=False)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        quiet.get_session()
    quiet.close()
    records = [r for r in caplog.records if r.name == LOGGER and "waiting" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.DEBUG]
    assert sleeps.waits == [1]


def test_policy_rules_without_a_server():
    policy = RetryPolicy()
    flood = NoSessionAvailable(waiting_count=1, next_release_in=4.2)
    assert policy.next_wait(flood, polls=0, remaining=None) == (5, False)  # rounded up, as Retry-After
    assert policy.next_wait(NoSessionAvailable(next_release_in=0.0, waiting_count=1), 0, None) == (1, False)
    assert policy.next_wait(NoSessionAvailable(), 0, None) == (None, False)
    busy = NoSessionAvailable(in_use=2)
    assert [policy.next_wait(busy, n, None)[0] for n in range(6)] == [1, 2, 4, 8, 10, 10]
    both = NoSessionAvailable(in_use=1, waiting_count=1, next_release_in=3)
    assert [policy.next_wait(both, n, None)[0] for n in range(3)] == [1, 2, 3]
    assert policy.next_wait(busy, 3, remaining=2.5) == (2.5, True)
    assert policy.next_wait(busy, 0, remaining=0) == (None, False)
    assert policy.next_wait(flood, 0, remaining=4) == (None, False)
    with pytest.raises(ValueError):
        RetryPolicy(poll_min=0)
