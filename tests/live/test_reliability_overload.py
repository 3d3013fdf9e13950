"""Overload: 200 clients at once, more than waitress's default connection limit of 100.

All 200 connect first (a barrier), then each leases and releases a few times over a pool
far smaller than the crowd. No session may be leased twice, the only 5xx allowed is the
503 ``no_session_available``, and the server must be alive and answering afterwards.
Run with TeleGate's default connection limit and with waitress's default (100), where
half the crowd waits in the listen backlog until the first half is done.
"""
from __future__ import annotations

import http.client
import random
import threading
import time

import pytest

from support.reliability import KeepAlive, RenewingHistory, Tally, check_counts, run_threads

pytestmark = pytest.mark.reliability

CLIENTS = 200
SESSIONS = 24
CYCLES = 2
MAX_ATTEMPTS = 2000  # per client: a bound, far above what a fair server needs


@pytest.mark.parametrize("limit", [None, "100"], ids=["default-limit", "waitress-default-limit-100"])
def test_two_hundred_clients_at_once(server_factory, limit):
    args = ["--access-log", "false"]
    if limit:
        args += ["--connection-limit", limit]
    server = server_factory(*args)
    server.add_sessions(*(f"acc{i}" for i in range(SESSIONS)))
    history, tally = RenewingHistory(), Tally()
    barrier = threading.Barrier(CLIENTS, timeout=60)

    def client(number: int) -> None:
        rng = random.Random(number)
        conn = KeepAlive(server, timeout=120)
        conn.conn = http.client.HTTPConnection(conn.host, conn.port, timeout=120)
        conn.conn.connect()  # every client holds an open connection before anyone sends
        barrier.wait()
        try:
            done = attempts = 0
            while done < CYCLES:
                attempts += 1
                assert attempts <= MAX_ATTEMPTS, f"client {number} never got a session"
                requested = history.now()
                reply = conn.request("POST", "/session", {"ttl": 60, "holder": f"c{number}"})
                tally.add("acquire", reply, (200, 503))
                if reply.status != 200:
                    time.sleep(rng.uniform(0.02, 0.1))  # back off a little, as a real client would
                    continue
                lease = reply.json
                history.granted(lease["session_id"], lease["lease_token"], f"c{number}", requested, 60)
                history.releasing(lease["lease_token"])
                reply = conn.request("POST", "/release", {"session_id": lease["session_id"],
                                                          "lease_token": lease["lease_token"]})
                tally.add("release", reply, (200,))
                done += 1
        finally:
            conn.close()

    errors = run_threads(client, CLIENTS)
    print("answers (op, status):", sorted(tally.counts.items()))  # shown with -s
    assert not errors, errors[:3]
    assert not tally.bad, tally.bad[:5]
    history.check()
    assert len(history.holdings) == CLIENTS * CYCLES
    # Alive and answering, with nothing left leased.
    after = KeepAlive(server, timeout=10)
    try:
        assert after.request("GET", "/healthz").status == 200
        status = after.request("GET", "/status").json
    finally:
        after.close()
    check_counts(status, SESSIONS)
    assert status["in_use"] == 0 and status["free"] == SESSIONS
    assert server.proc.poll() is None


HONEST = 12
HOSTILE_POLLERS = 16


def test_a_hostile_key_and_host_cannot_keep_honest_workers_out(server_factory):
    """Issue 18, all at once: a hostile key keeps the waiting line full (plain polls, and polls
    by name for a session it holds, re-sent as soon as answered) while a hostile host at
    127.0.0.2 holds idle sockets up to its per-address limit (half the connection limit).
    Honest workers of another key, from 127.0.0.1 with the hostile key's pollers,
    long-poll for sessions meanwhile: every one of them is served, no session is leased twice."""
    import socket

    server = server_factory("--access-log", "false", "--max-waiters", "24", "--connections-per-ip", "40",
                            "--connection-limit", "80", "--header-timeout", "60")
    server.add_sessions(*(f"acc{i}" for i in range(4)), "hostage")
    hostile = server.store.create_key("hostile")
    honest_key = server.store.create_key("honest")
    held = KeepAlive(server, hostile).request("POST", "/session", {"name": "hostage", "ttl": 3600})
    assert held.status == 200
    idle = []
    for _ in range(60):  # the first 40 stay open, the rest are closed at once
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.2", 0))
        except OSError:
            sock.close()
            pytest.skip("cannot send from 127.0.0.2 here")
        sock.connect(("127.0.0.1", server.port))
        idle.append(sock)
    stop = threading.Event()
    history, tally = RenewingHistory(), Tally()

    def hog(number: int) -> None:
        conn = KeepAlive(server, hostile, timeout=60)
        try:
            while not stop.is_set():
                body = {"wait": 20, "ttl": 5} | ({"name": "hostage"} if number % 2 else {})
                reply = conn.request("POST", "/session", body)
                if reply.status == 200:  # it got one: give it back, and keep hogging
                    conn.request("POST", "/release", {"session_id": reply.json["session_id"]})
        except (OSError, http.client.HTTPException):
            if not stop.is_set():  # the server going away at the end is no failure of the test
                raise
        finally:
            conn.close()

    def worker(number: int) -> None:
        conn = KeepAlive(server, honest_key, timeout=60)
        try:
            for attempt in range(1, 41):
                requested = history.now()
                reply = conn.request("POST", "/session", {"wait": 20, "ttl": 60, "holder": f"h{number}"})
                tally.add("acquire", reply, (200, 503))
                if reply.status == 200:
                    lease = reply.json
                    history.granted(lease["session_id"], lease["lease_token"], f"h{number}", requested, 60)
                    history.releasing(lease["lease_token"])
                    tally.add("release", conn.request("POST", "/release", {
                        "session_id": lease["session_id"], "lease_token": lease["lease_token"]}), (200,))
                    return
            raise AssertionError(f"honest worker {number} was never served")
        finally:
            conn.close()

    hogs = [threading.Thread(target=hog, args=(n,), daemon=True) for n in range(HOSTILE_POLLERS)]
    for thread in hogs:
        thread.start()
    try:
        errors = run_threads(worker, HONEST)
    finally:
        stop.set()
        for sock in idle:
            sock.close()
    assert not errors, errors[:3]
    assert not tally.bad, tally.bad[:5]
    history.check()
    assert len(history.holdings) == HONEST
    assert KeepAlive(server, honest_key).request("GET", "/status").status == 200
