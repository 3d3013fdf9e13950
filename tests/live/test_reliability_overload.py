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
