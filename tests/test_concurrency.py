"""Mutual exclusion under load: many threads, one or two server processes, a checked history."""
from __future__ import annotations

import random
import threading

import pytest

from history import Holding, LeaseHistory


def hammer(servers, history: LeaseHistory, threads: int = 16, cycles: int = 60, ttl: float = 30) -> list:
    """Each thread leases, sometimes renews, and releases (some with a short flood wait)."""
    errors: list = []

    def worker(number: int) -> None:
        rng = random.Random(number)
        server = servers[number % len(servers)]
        done = 0
        try:
            while done < cycles:
                requested = history.now()
                reply = server.request("POST", "/session", {"ttl": ttl, "holder": f"t{number}"})
                if reply.status == 503:
                    continue
                if reply.status != 200:
                    errors.append(reply)
                    return
                lease = reply.json
                history.granted(lease["session_id"], lease["lease_token"], f"t{number}", requested, ttl)
                if rng.random() < 0.3:
                    renewed = server.request("POST", "/renew", {"session_id": lease["session_id"],
                                                               "lease_token": lease["lease_token"], "ttl": ttl})
                    if renewed.status != 200:
                        errors.append(renewed)
                body = {"session_id": lease["session_id"], "lease_token": lease["lease_token"]}
                if rng.random() < 0.1:
                    body["flood_wait"] = 0.05
                history.releasing(lease["lease_token"])
                released = server.request("POST", "/release", body)
                if released.status != 200:
                    errors.append(released)
                done += 1
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(120)
    assert not any(thread.is_alive() for thread in pool), "a worker hung"
    return errors


def test_history_check_catches_a_double_lease():
    history = LeaseHistory()
    history.holdings = [Holding(1, "a", "x", 0.0, 1.0, 30, released=5.0),
                        Holding(1, "b", "y", 2.0, 3.0, 30, released=4.0),
                        Holding(2, "c", "z", 0.0, 1.0, 30, released=9.0)]
    assert [(a.token, b.token) for a, b in history.overlaps()] == [("a", "b")]
    with pytest.raises(AssertionError, match="double lease"):
        history.check()


def test_history_check_allows_takeover_after_ttl():
    history = LeaseHistory()
    history.holdings = [Holding(1, "a", "x", 0.0, 0.1, 1.0), Holding(1, "b", "y", 1.5, 1.6, 30, released=2.0)]
    history.check()


def test_sixteen_threads_never_share_a_session(live_server):
    live_server.add_sessions("s1", "s2", "s3", "s4")
    history = LeaseHistory()
    errors = hammer([live_server], history)
    assert not errors, errors[:3]
    history.check()
    assert len(history.holdings) == 16 * 60
    status = live_server.status()
    assert status["in_use"] == 0 and status["free"] + status["in_floodwait"] == 4


def test_two_server_processes_on_one_database(server_factory, tmp_path):
    first = server_factory()
    second = server_factory(db_path=first.db_path)
    first.add_sessions("s1", "s2", "s3")
    history = LeaseHistory()
    errors = hammer([first, second], history, cycles=40)
    assert not errors, errors[:3]
    history.check()
    assert {h.session_id for h in history.holdings} == {1, 2, 3}
    assert first.status()["in_use"] == 0
