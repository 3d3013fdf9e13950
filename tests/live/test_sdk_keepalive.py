"""Keepalive: held leases outlive their TTL, a lost lease is flagged, a killed worker's session comes back."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from support import eventually
from telegram_session_manager import LeaseLost, NoSessionAvailable, TelegramSessionManagerClient

ROOT = Path(__file__).resolve().parents[2]


def keepalive_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "telegate-keepalive" and t.is_alive()]


def sdk_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEGATE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "sdk"), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def client(live_server):
    with TelegramSessionManagerClient(live_server.url, live_server.client_key) as c:
        # The thread's grace after the last lease (2 s by default) is not what these tests
        # are about; those that wait for the thread to end would wait it out.
        c.keepalive_linger = 0.1
        yield c


def test_a_held_lease_is_renewed_past_its_ttl(live_server, client, other):
    [sid] = live_server.add_sessions("acc1")
    lease = client.get_session(ttl=1)
    first_expiry = lease.lease_expires_at
    eventually(lambda: lease.renewals >= 4, what="4 renewals (> 1 TTL)")
    assert live_server.store.get_session(sid)["state"] == "in_use"
    with pytest.raises(NoSessionAvailable):
        other.get_session(auto_wait=False)
    assert lease.lease_expires_at > first_expiry and not lease.lost
    client.release_session(sid)
    assert live_server.status()["free"] == 1


def test_the_with_block_lease_is_renewed_too(live_server, client, other):
    live_server.add_sessions("acc1")
    with client.session(ttl=1) as s:
        eventually(lambda: s.renewals >= 4, what="4 renewals")
        with pytest.raises(NoSessionAvailable):
            other.get_session(auto_wait=False)
    assert live_server.status()["free"] == 1


@pytest.mark.parametrize("how", ["taken_over", "disabled_by_admin"])
def test_a_lost_lease_is_flagged_and_logged(live_server, client, other, caplog, how):
    [sid] = live_server.add_sessions("acc1")
    with caplog.at_level(logging.ERROR, logger="telegram_session_manager.client"):
        lease = client.get_session(ttl=1)
        if how == "taken_over":
            other.release_session(sid)
            other.get_session()
        else:
            with TelegramSessionManagerClient(live_server.url, live_server.admin_key) as admin:
                admin.update_session(sid, disabled=True, reason="maintenance")
        eventually(lambda: lease.lost, what="the keepalive to notice")
    assert lease.lost_reason and client.held == []
    assert any("lost the lease" in r.getMessage() and "acc1" in r.getMessage() for r in caplog.records)
    with pytest.raises(LeaseLost):
        client.renew(lease)
    eventually(lambda: client._keepalive_thread is None, what="the keepalive thread to end")
    if how == "taken_over":
        # The seed's `finally: client.release_session(id)` must not free the other worker's lease.
        with pytest.raises(LeaseLost):
            client.release_session(sid)
        assert live_server.store.get_session(sid)["state"] == "in_use"


def test_one_keepalive_thread_that_ends_when_nothing_is_held(live_server, client):
    live_server.add_sessions("a", "b")
    before = set(keepalive_threads())
    assert client._keepalive_thread is None
    a = client.get_session(ttl=30)
    b = client.get_session(ttl=30)
    [thread] = set(keepalive_threads()) - before
    assert thread is client._keepalive_thread and thread.daemon
    client.release_session(a.session_id)
    assert thread.is_alive()  # b is still held
    client.release_session(b.session_id)
    thread.join(15)
    assert not thread.is_alive() and client._keepalive_thread is None
    with client.session():
        second = client._keepalive_thread
        assert second is not None and second.is_alive()
    second.join(15)
    assert not second.is_alive()


def test_close_stops_the_keepalive_and_releases(live_server):
    live_server.add_sessions("a")
    c = TelegramSessionManagerClient(live_server.url, live_server.client_key)
    c.get_session(ttl=30)
    thread = c._keepalive_thread
    c.close()
    assert not thread.is_alive() and live_server.status()["free"] == 1
    c.close()


def test_keepalive_can_be_turned_off(live_server, other):
    live_server.add_sessions("a")
    other.get_session(ttl=30)
    assert other._keepalive_thread is None


def test_explicit_renew_moves_the_expiry(live_server, client):
    live_server.add_sessions("a")
    lease = client.get_session(ttl=10)
    before = lease.lease_expires_at
    client.renew(lease, ttl=600)
    assert lease.lease_expires_at > before and lease.renewals == 1


WORKER = """
import sys, time
from telegram_session_manager import TelegramSessionManagerClient
client = TelegramSessionManagerClient(sys.argv[1], sys.argv[2])
session = client.get_session(ttl=2)
print(session["session_id"], flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_worker_killed_with_sigkill_gives_its_session_back_within_the_ttl(live_server, tmp_path):
    [sid] = live_server.add_sessions("acc1")
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    worker = subprocess.Popen([sys.executable, str(script), live_server.url, live_server.client_key],
                              stdout=subprocess.PIPE, text=True, env=sdk_env(), encoding="utf-8")
    try:
        assert int(worker.stdout.readline()) == sid
        assert live_server.store.get_session(sid)["state"] == "in_use"
    finally:
        worker.kill()  # SIGKILL: no release, no goodbye
        worker.wait(10)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    ttl = 2
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=sleep) as waiter:
        lease = waiter.get_session(max_wait=ttl + 1)  # raises NoSessionAvailable if not back in time
        assert lease.session_id == sid
    assert sum(waits) <= ttl + 1


def test_the_keepalive_rides_out_a_server_restart(live_server, client, caplog):
    [sid] = live_server.add_sessions("acc1")
    lease = client.get_session(ttl=3)
    with caplog.at_level(logging.WARNING, logger="telegram_session_manager.client"):
        live_server.kill()
        eventually(lambda: "could not renew" in caplog.text, what="a failed renewal to be logged")
        renewals = lease.renewals
        live_server.restart()  # same port, same database: the lease is still there
        eventually(lambda: lease.renewals > renewals, what="renewals to resume")
    assert not lease.lost and client.held == [lease]
    assert live_server.store.get_session(sid)["state"] == "in_use"
