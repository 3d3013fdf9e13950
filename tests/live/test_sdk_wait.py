"""auto_wait: the exact waits the client takes, when it gives up, and that it says so.

Sessions in use are long-polled (``POST /session {"wait": s}``: the server holds the
request until one is free); flood waits alone are slept out. The injected ``sleep``
records each sleep and, instead of time passing, changes the pool the way time would
have (ends a flood wait), so every sleep is asserted to the second without sleeping.
"""
from __future__ import annotations

import logging
import math
import threading

import pytest

from support import Sleeps
from telegram_session_manager import NoSessionAvailable, RetryPolicy, TelegramSessionManagerClient
from telegram_session_manager.client import _Step

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
    assert "waiting 5 s for the flood wait to end" in message and "1 in flood wait" in message
    assert [r.levelno for r in caplog.records if r.getMessage() == message] == [logging.WARNING]


def test_the_earliest_flood_wait_end_is_waited(live_server, client, admin, sleeps):
    a, b = live_server.add_sessions("a", "b")
    client.release_session(client.get_session(name="a").session_id, flood_wait=30)
    client.release_session(client.get_session(name="b").session_id, flood_wait=3)
    sleeps.action = lambda n: admin.update_session(b, clear_flood_wait=True)
    assert client.get_session().session_name == "b"
    assert sleeps.waits == [3]


class Recorder:
    """Wraps ``client._transport.send``: records every POST /session body, then sends it."""

    def __init__(self, client) -> None:
        self.real = client._transport.send
        self.bodies: list[dict] = []
        self.refusals: list[NoSessionAvailable] = []
        self.long_polling = threading.Event()
        client._transport.send = self

    def __call__(self, method, path, body=None):
        if path == "/session":
            self.bodies.append(dict(body))
            if "wait" in body:
                self.long_polling.set()
        try:
            return self.real(method, path, body)
        except NoSessionAvailable as refused:
            self.refusals.append(refused)
            raise

    @property
    def waits(self) -> list:
        return [body.get("wait") for body in self.bodies]


def test_sessions_in_use_are_long_polled_and_said(live_server, client, other, sleeps, caplog):
    live_server.add_sessions("acc1")
    held = other.get_session()
    sent = Recorder(client)
    got: list = []
    thread = threading.Thread(target=lambda: got.append(client.get_session()))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        thread.start()
        assert sent.long_polling.wait(15), "the client never long-polled"
        other.release_session(held.session_id)
        thread.join(30)
    assert got and got[0].session_name == "acc1"
    assert sent.waits == [None, 30]  # one plain try, then one long-poll the release answered
    assert sleeps.waits == []  # no sleeping: the server held the request
    [message] = wait_messages(caplog)
    assert message == ("TeleGate: no free session: 0 in flood wait, 1 in use, 1 registered; "
                       "waiting up to 30 s for a session to be released")
    assert len({body["request_id"] for body in sent.bodies}) == 1


def test_a_long_poll_is_bounded_by_max_wait_then_gives_up(live_server, client, other, sleeps, caplog):
    live_server.add_sessions("a", "b")
    client.release_session(client.get_session(name="a").session_id, flood_wait=30)
    other.get_session(name="b")
    sent = Recorder(client)
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(NoSessionAvailable) as caught:
        client.get_session(max_wait=1.5)
    assert sent.waits[0] is None and 1.4 < sent.waits[1] <= 1.5  # the time left of max_wait
    assert len(sent.waits) == 2  # the server held it to the end: no second try
    assert sleeps.waits == [] and caught.value.waited >= 1.5
    assert (caught.value.waiting_count, caught.value.in_use) == (1, 1)
    assert "or a flood wait to end" in wait_messages(caplog)[0]
    assert any("giving up: max_wait=1.5 s would be exceeded" in r.getMessage() for r in caplog.records)


def test_an_expiring_lease_bounds_the_long_poll(live_server, client, other):
    live_server.add_sessions("acc1")
    other.get_session(ttl=2)  # nobody renews it (keepalive off): free within 2 s
    sent = Recorder(client)
    assert client.get_session(max_wait=10).session_name == "acc1"
    # The long-poll holds for the lease's time left (rounded up to whole seconds), not max_wait:
    # 2 s on a quiet machine, 1 s when the first try came over a second after the lease began.
    ends_in = sent.refusals[0].next_lease_end_in
    assert ends_in is not None and 0 < ends_in <= 2
    assert sent.waits[:2] == [None, max(1, math.ceil(ends_in - 1e-6))]


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
    # No sleep at all; ``waited`` counts the request's own time too, a tenth of a second on a busy machine.
    assert sleeps.waits == [] and caught.value.waited < 1


def test_constructor_max_wait_and_per_call_override(live_server, other, sleeps):
    live_server.add_sessions("a")
    other.get_session()
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=sleeps, max_wait=0.5) as c:
        sent = Recorder(c)
        with pytest.raises(NoSessionAvailable):
            c.get_session()
        assert sent.waits[0] is None and 0.4 < sent.waits[1] <= 0.5 and len(sent.waits) == 2
        with pytest.raises(NoSessionAvailable):
            c.get_session(auto_wait=False)
        assert len(sent.waits) == 3 and sent.waits[2] is None


def test_auto_wait_false_never_waits(live_server, other, sleeps):
    live_server.add_sessions("a")
    other.get_session()
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, auto_wait=False, sleep=sleeps) as c:
        sent = Recorder(c)
        with pytest.raises(NoSessionAvailable) as caught:
            c.get_session()
    assert sleeps.waits == [] and caught.value.in_use == 1
    assert sent.waits == [None]  # a single try, no long-poll


def test_waits_can_be_silenced(live_server, admin, sleeps, caplog):
    [sid] = live_server.add_sessions("a")
    quiet = TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=sleeps, log_waits=False)
    quiet.release_session(quiet.get_session().session_id, flood_wait=3)
    sleeps.action = lambda n: admin.update_session(sid, clear_flood_wait=True)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        quiet.get_session()
    quiet.close()
    records = [r for r in caplog.records if r.name == LOGGER and "waiting" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.DEBUG]
    assert sleeps.waits == [3]


def test_policy_rules_without_a_server():
    policy = RetryPolicy()
    flood = NoSessionAvailable(waiting_count=1, next_release_in=4.2)
    assert policy.next_step(flood, None) == _Step(sleep=5)  # only a flood wait: sleep to its end, rounded up
    assert policy.next_step(NoSessionAvailable(next_release_in=0.0, waiting_count=1), None) == _Step(sleep=1)
    assert policy.next_step(NoSessionAvailable(), None) is None  # nothing can free up
    busy = NoSessionAvailable(in_use=2)
    assert policy.next_step(busy, None) == _Step(long_poll=30)
    assert policy.next_step(busy, remaining=2.5) == _Step(long_poll=2.5)
    assert policy.next_step(busy, remaining=0) is None
    both = NoSessionAvailable(in_use=1, waiting_count=1, next_release_in=3)
    assert policy.next_step(both, None) == _Step(long_poll=3)  # woken by the flood wait's end at the latest
    expiring = NoSessionAvailable(in_use=1, next_lease_end_in=0.2)
    assert policy.next_step(expiring, None) == _Step(long_poll=1)  # at least poll_min
    assert policy.next_step(flood, remaining=4) is None  # the flood wait ends too late
    assert RetryPolicy(long_poll=10).next_step(busy, None) == _Step(long_poll=10)
    with pytest.raises(ValueError):
        RetryPolicy(poll_min=0)
    with pytest.raises(ValueError):
        RetryPolicy(long_poll=61)  # the server holds a request 60 s at most


def test_a_long_poll_answered_at_once_is_not_repeated_in_a_spin():
    """A server that does not hold the request (it should) gets a pause between long-polls."""
    from telegram_session_manager.client import _AutoWait

    class Outcome:
        def __init__(self, exc):
            self._exc = exc

        def exception(self):
            return self._exc

    class State:
        def __init__(self, number, exc):
            self.attempt_number = number
            self.outcome = Outcome(exc)

    waiting = _AutoWait(RetryPolicy(), None, True)
    busy = NoSessionAvailable(in_use=1)
    waiting.body({})
    assert waiting.plan(State(1, busy)) == _Step(long_poll=30)
    waiting.before_sleep(State(1, busy))
    assert waiting.body({"ttl": 5}) == {"ttl": 5, "wait": 30}
    assert waiting.plan(State(2, busy)) == _Step(sleep=1, long_poll=30)  # it came back at once
