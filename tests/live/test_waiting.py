"""Long-polls (POST /session {"wait": s}) are served first come, first served (issue 10).

Real servers under waitress, real HTTP: waiters are started one after another (each
seen in line, through /status, before the next one starts), a holder releases, and the
order in which the waiters get the session is checked, in one server process and with
waiters and releases spread over two processes on one database file. No timing is
asserted (the benchmark measures how fast a grant arrives); deadlines only bound the test.
"""
from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import pytest
import urllib3

from support import LiveServer

DEADLINE = 30.0


def wait_for(condition, what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Waiter:
    """A worker long-polling on its own connection in a thread; ``get()`` gives (status, body)."""

    def __init__(self, server: LiveServer, label: str, wait: float = 30, **body: Any) -> None:
        self.label = label
        self.answer: tuple[int, dict] | None = None
        self.answered = threading.Event()
        self.pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(wait + 30))
        payload = json.dumps({"ttl": 60, "wait": wait, "holder": label, **body}).encode()

        def run() -> None:
            reply = self.pool.request("POST", server.url + "/session", body=payload,
                                      headers={"X-API-Key": server.client_key, "Content-Type": "application/json"})
            self.answer = (reply.status, json.loads(reply.data))
            self.answered.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def get(self) -> tuple[int, dict]:
        assert self.answered.wait(DEADLINE), f"{self.label} got no answer"
        assert self.answer is not None
        return self.answer

    def done(self) -> bool:
        return self.answered.is_set()


def line_up(server: LiveServer, labels: list[str], *, watch: LiveServer | None = None, **body: Any) -> list[Waiter]:
    """Start long-polls one at a time, each in line (per /status) before the next starts."""
    waiters = []
    watch = watch or server
    for label in labels:
        before = watch.status()["waiting_workers"]
        waiters.append(Waiter(server, label, **body))
        wait_for(lambda: watch.status()["waiting_workers"] == before + 1, f"{label} to join the line")
    return waiters


def acquire(server: LiveServer, **body: Any):
    return server.request("POST", "/session", {"ttl": 60, **body})


def release(server: LiveServer, lease: dict, key: str = "client") -> None:
    reply = server.request("POST", "/release", {"session_id": lease["session_id"], "lease_token": lease["lease_token"]},
                           key=key)
    assert reply.status == 200, reply


def next_grant(waiters: list[Waiter], order: list[str]) -> dict:
    """Wait for the one waiter not in ``order`` yet to get the session; add its label, return its lease."""
    wait_for(lambda: any(w.done() and w.label not in order for w in waiters), "the next grant")
    done = [w for w in waiters if w.done() and w.label not in order]
    assert len(done) == 1, "two waiters hold the one session"
    status, lease = done[0].get()
    assert status == 200, lease
    order.append(done[0].label)
    return lease


def test_freed_session_goes_to_the_longest_waiter_not_the_releaser(live_server):
    live_server.add_sessions("only")
    held = acquire(live_server, holder="holder")
    assert held.status == 200
    waiters = line_up(live_server, ["w1", "w2", "w3"])
    status = live_server.status()
    assert status["waiting_workers"] == 3 and status["oldest_wait"] > 0

    release(live_server, held.json)
    again = acquire(live_server, holder="holder")  # the releaser asks again at once: behind the line
    assert again.status == 503, again
    assert again.json["waiting_workers"] == 2  # w1 got it; w2 and w3 still wait

    order: list[str] = []
    for _ in waiters:
        lease = next_grant(waiters, order)
        release(live_server, lease)
    assert order == ["w1", "w2", "w3"]
    assert live_server.status()["waiting_workers"] == 0
    assert "waited=" in live_server.log  # the access log shows each long-poll's wait


def test_fifo_across_two_server_processes_on_one_file(server_factory, tmp_path):
    db = tmp_path / "shared.db"
    first = server_factory(db_path=db)
    second = server_factory(db_path=db)
    first.add_sessions("only")
    held = acquire(second, holder="holder")
    assert held.status == 200
    # In line alternately on the two servers; the release goes to the second server.
    waiters = []
    for label, server in [("a1", first), ("b1", second), ("a2", first), ("b2", second)]:
        waiters += line_up(server, [label], watch=first)
    release(second, held.json)
    order: list[str] = []
    by_label = {w.label: w for w in waiters}
    servers = {"a": first, "b": second}
    for _ in waiters:
        lease = next_grant(waiters, order)
        # Released through the other server than the one that granted it (with the key that holds it).
        granting = servers[order[-1][0]]
        release(servers["b" if order[-1][0] == "a" else "a"], lease, key=granting.client_key)
    assert order == ["a1", "b1", "a2", "b2"], order
    assert by_label["b2"].label == "b2"


def test_wait_runs_out_with_the_usual_503_and_leaves_the_line(live_server):
    live_server.add_sessions("only")
    assert acquire(live_server).status == 200
    started = time.monotonic()
    reply = acquire(live_server, wait=0.3)
    assert time.monotonic() - started >= 0.3  # it did wait
    assert reply.status == 503
    body = reply.json
    assert body["error"] == "no_session_available"
    assert body["in_use"] == 1 and body["waiting_workers"] == 0
    assert "Retry-After" in reply.headers
    assert live_server.status()["waiting_workers"] == 0 and live_server.status()["oldest_wait"] is None


def test_a_request_that_polls_again_keeps_its_place_in_line(live_server):
    """A worker that waits longer than one long-poll polls again with its request_id (the SDK
    does): it takes back its place, ahead of those who came after it, and its wait counts
    from the first poll. Without a request_id a new poll goes to the end."""
    live_server.add_sessions("only")
    held = acquire(live_server, holder="holder")
    first_try = acquire(live_server, wait=0.2, holder="patient", request_id="job-patient")
    assert first_try.status == 503  # its first long-poll ran out
    [later] = line_up(live_server, ["later"])  # meanwhile someone else joins the line
    oldest_before = live_server.status()["oldest_wait"]
    [patient] = line_up(live_server, ["patient"], request_id="job-patient")  # polls again
    assert live_server.status()["oldest_wait"] >= oldest_before  # counted from its first poll
    gone = acquire(live_server, wait=0.2, holder="nobody")  # no request_id: nothing to take back
    assert gone.status == 503 and gone.json["waiting_workers"] == 2

    release(live_server, held.json)
    status, lease = patient.get()
    assert status == 200 and not later.done(), "the one who asked first gets it"
    release(live_server, lease)
    assert later.get()[0] == 200


def test_waiters_do_not_take_the_threads_that_serve_releases(server_factory):
    # Two request threads, ten times as many waiters: a release must still be served.
    server = server_factory("--threads", "2")
    server.add_sessions("only")
    held = acquire(server, holder="holder")
    waiters = [Waiter(server, f"w{i}", wait=40) for i in range(20)]
    wait_for(lambda: server.status()["waiting_workers"] == 20, "twenty waiters in line")
    quick = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(10))
    reply = quick.request("POST", server.url + "/release",
                          body=json.dumps({"session_id": held.json["session_id"],
                                           "lease_token": held.json["lease_token"]}).encode(),
                          headers={"X-API-Key": server.client_key, "Content-Type": "application/json"})
    assert reply.status == 200
    wait_for(lambda: sum(w.done() for w in waiters) == 1, "one waiter to get the session")
    assert server.status()["waiting_workers"] == 19
    assert [w.get()[0] for w in waiters if w.done()] == [200]
    server.stop()  # parked waits end at once when the server stops (no 40 s join)
    wait_for(lambda: "TeleGate stopped" in server.log, "the server's last line")
    # and the pool's threads with them (the waiters that ended must not start new ones)
    assert "still running" not in server.log, server.log[-2000:]


@pytest.mark.parametrize("wait", [-1, 61, "5", True, 1e300, [1]])
def test_bad_wait_is_refused(wsgi, wait):
    wsgi.store.add_sessions(["a"])
    reply = wsgi("POST", "/session", {"wait": wait})
    assert reply.status == 400, reply
    assert "wait" in reply.json["detail"]


@pytest.mark.server_per_test  # the wait histogram is the server process's own: counted from its start
def test_metrics_show_the_line(live_server):
    live_server.add_sessions("only")
    held = acquire(live_server)
    waiter = line_up(live_server, ["w1"])[0]
    text = live_server.request("GET", "/metrics").data.decode()
    assert "telegate_waiting_workers 1.0" in text
    oldest = float(next(line for line in text.splitlines() if line.startswith("telegate_oldest_wait_seconds ")).split()[1])
    assert oldest > 0
    release(live_server, held.json)
    assert waiter.get()[0] == 200
    text = live_server.request("GET", "/metrics").data.decode()
    assert "telegate_waiting_workers 0.0" in text
    assert "telegate_wait_seconds_count 1.0" in text


def test_a_session_freed_by_time_goes_to_the_ticket_not_a_newcomer(tmp_path):
    """No commit frees a lapsed lease: the next acquire serves the line before itself."""
    from support import FakeClock
    from telegate.store import NoSessionAvailable, Ticket, open_store

    clock = FakeClock()
    with open_store(tmp_path / "line.db", clock=clock) as store:
        store.add_sessions(["only"])
        lapsing = store.acquire(5)
        granted = []
        store.grant_listeners.append(granted.extend)
        ticket = store.acquire(60, wait=30, owner="another-process")
        assert isinstance(ticket, Ticket)
        assert store.line_stats() == (1, 0.0)
        clock.advance(6)  # the lease lapses; nothing was committed
        with pytest.raises(NoSessionAvailable) as refused:
            store.acquire(60)  # a newcomer
        assert refused.value.waiting_workers == 0  # the ticket was served in that transaction
        assert [(g.ticket, g.owner) for g in granted] == [(ticket.ticket, "another-process")]
        lease = store.claimed(ticket.ticket)
        assert lease is not None and lease.session_id == lapsing.session_id
        assert lease.lease_expires_at == pytest.approx(clock() + 60)
        assert store.line_stats() == (0, None)


def test_tickets_of_a_dead_server_process_are_not_served(tmp_path):
    """A process renews its tickets while it waits; one that stopped (died) gets no leases."""
    from support import FakeClock
    from telegate.store import NoSessionAvailable, Ticket, open_store
    from telegate.store import ALIVE_FOR

    clock = FakeClock()
    with open_store(tmp_path / "line.db", clock=clock) as store:
        store.add_sessions(["only"])
        held = store.acquire(600)
        dead = store.acquire(60, wait=60, owner="dead-process")
        alive = store.acquire(60, wait=60, owner="live-process")
        assert isinstance(dead, Ticket) and isinstance(alive, Ticket)
        clock.advance(ALIVE_FOR / 2)
        store.keep_alive("live-process")
        clock.advance(ALIVE_FOR / 2 + 1)  # the dead one's tickets lapse; the live one's were renewed
        assert store.line_stats()[0] == 1
        granted = []
        store.grant_listeners.append(granted.extend)
        assert store.release(held.session_id, held.lease_token)
        assert [(g.ticket, g.owner) for g in granted] == [(alive.ticket, "live-process")]
        assert store.claimed(alive.ticket) == granted[0].lease
        assert store.claimed(dead.ticket) is None
        with pytest.raises(NoSessionAvailable) as ended:  # its wait ends with nothing, and the counts
            store.leave_line(dead.ticket)
        assert (ended.value.in_use, ended.value.waiting_workers) == (1, 0)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files through /proc")
def test_parked_requests_leave_no_connections_behind(server_factory):
    """Parked requests get stand-in threads; threads that end (and parked ones) close their SQLite connection."""
    server = server_factory("--threads", "2")
    server.add_sessions("only")
    fds = lambda: len(os.listdir(f"/proc/{server.proc.pid}/fd"))  # noqa: E731

    def one_round() -> None:
        lease = acquire(server).json
        waiters = [Waiter(server, f"w{i}", wait=30) for i in range(12)]
        wait_for(lambda: server.status()["waiting_workers"] == 12, "twelve waiters in line")
        served: list[Waiter] = []
        for _ in waiters:
            release(server, lease)
            wait_for(lambda: sum(w.done() for w in waiters) > len(served), "the next waiter to be served")
            served.append(next(w for w in waiters if w.done() and w not in served))
            status, lease = served[-1].get()
            assert status == 200, lease
        release(server, lease)
        for waiter in waiters:
            waiter.pool.clear()  # their connections close (the count below is of open files)

    one_round()
    before = fds()
    for _ in range(3):
        one_round()
    # Threads beyond --threads end when idle, and closed connections go: allow a moment.
    try:
        wait_for(lambda: fds() <= before + 6, "the open files to settle", deadline=10)
    except AssertionError:
        raise AssertionError(f"{fds() - before} more open files after 36 more long-polls") from None


def test_a_key_revoked_while_waiting_gets_nothing(tmp_path):
    from telegate.store import NoSessionAvailable, Ticket, open_store

    with open_store(tmp_path / "line.db") as store:
        store.add_sessions(["only"])
        held = store.acquire(600)
        key = store.authenticate(store.create_key("w", "client"))
        ticket = store.acquire(60, key=key, wait=30, owner="here")
        assert isinstance(ticket, Ticket)
        store.revoke_key("w")
        store.release(held.session_id, held.lease_token)
        assert store.claimed(ticket.ticket) is None
        with pytest.raises(NoSessionAvailable):
            store.leave_line(ticket.ticket)
        assert store.status()["free"] == 1


def test_a_worker_that_hangs_up_leaves_the_line_at_once(live_server):
    """A killed worker's long-poll must not be granted a session nobody would use (until its TTL)."""
    import socket

    live_server.add_sessions("only")
    held = acquire(live_server).json
    body = json.dumps({"ttl": 600, "wait": 60}).encode()
    ghost = socket.create_connection(("127.0.0.1", live_server.port))
    ghost.sendall(b"POST /session HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"X-API-Key: " + live_server.client_key.encode() + b"\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    wait_for(lambda: live_server.status()["waiting_workers"] == 1, "the worker to join the line")
    ghost.close()  # killed while waiting
    wait_for(lambda: live_server.status()["waiting_workers"] == 0, "the line to forget it", deadline=10)
    release(live_server, held)
    assert live_server.status()["free"] == 1  # not leased to the worker that hung up
