"""A worker holding a session through the SDK dies by SIGKILL; another gets the session within TTL + 1 s.

The dying worker is a real subprocess in ``with client.session() as s:``, its keepalive
renewing the lease, so at the kill its lease ends at most TTL seconds later. The pool
has that one session only: the other worker (the SDK, waiting with short polls) must
get exactly it, under a new token, no later than TTL + 1 s after the kill; the dead
worker's token must be worthless from then on.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from support import ROOT, server_env

pytestmark = pytest.mark.reliability

TTL = 2  # each round waits one TTL out; the check's 1 s of slack is the same at any TTL

WORKER = textwrap.dedent("""
    import json, sys, time
    from telegram_session_manager import TelegramSessionManagerClient
    client = TelegramSessionManagerClient(sys.argv[1], sys.argv[2], ttl=float(sys.argv[3]), log_waits=False)
    with client.session() as lease:
        print(json.dumps({"session_id": lease.session_id, "lease_token": lease.lease_token}), flush=True)
        time.sleep(600)  # working; the test kills us long before this ends
""")


@pytest.mark.parametrize("round_number", [1, 2])
def test_sigkilled_sdk_worker_loses_its_session_within_ttl_plus_one_second(live_server, round_number):
    from telegram_session_manager import LeaseLost, RetryPolicy, TelegramSessionManagerClient

    (sid,) = live_server.add_sessions("only")
    proc = subprocess.Popen([sys.executable, "-c", WORKER, live_server.url, live_server.client_key, str(TTL)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            env=server_env(), cwd=ROOT)
    try:
        line = proc.stdout.readline()  # blocks until the worker holds the session (or dies)
        assert line, f"worker died: {proc.stderr.read()}"
        held = json.loads(line)
        assert held["session_id"] == sid
        # Let the keepalive renew at least once (it renews every TTL/3) when asked to.
        if round_number == 2:
            renewals = live_server.store.get_session(sid)["lease_expires_at"]
            deadline = time.monotonic() + 2 * TTL
            while live_server.store.get_session(sid)["lease_expires_at"] == renewals:
                assert time.monotonic() < deadline, "the SDK keepalive never renewed"
                time.sleep(0.05)
        assert live_server.status()["in_use"] == 1
    finally:
        proc.kill()  # SIGKILL: no release, no cleanup
        killed_at = time.monotonic()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()

    other = TelegramSessionManagerClient(live_server.url, live_server.client_key, ttl=60, log_waits=False,
                                         retry_policy=RetryPolicy(poll_min=0.05, poll_max=0.1))
    try:
        lease = other.get_session(max_wait=TTL + 5)
        got_at = time.monotonic()
        assert lease.session_id == sid and lease.lease_token != held["lease_token"]
        assert got_at - killed_at <= TTL + 1, f"took {got_at - killed_at:.2f} s after the kill"
        # The dead worker's token no longer does anything.
        stale = live_server.request("POST", "/renew", {"session_id": sid, "lease_token": held["lease_token"]})
        assert stale.status == 409
        with pytest.raises(LeaseLost):
            other.renew(type(lease)({**lease, "lease_token": held["lease_token"]}, ttl=60))
        other.release_session(sid)
    finally:
        other.close()
    assert live_server.status()["free"] == 1
