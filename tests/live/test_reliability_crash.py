"""kill -9 the server at random moments under load; after every restart nothing granted is lost.

Eight load threads lease (long TTLs, so nothing lapses during the test) and release. A
lease a thread got a 200 for and never tried to release must, after each crash and
restart, still be held under its token; a release that got a 200 must have stuck; no
token is ever handed out twice; the file passes ``PRAGMA integrity_check`` and the
``/status`` counts add up. A request cut off by the kill has an unknown outcome and is
not judged (its lease, if any, simply stays held until its TTL).
"""
from __future__ import annotations

import http.client
import random
import threading
import time

import pytest

from support.reliability import KeepAlive, check_counts, check_integrity, lease_tokens

pytestmark = pytest.mark.reliability

KILLS = 12
THREADS = 8
SESSIONS = 400  # each kill may strand a few leases whose grant it cut off (held until their TTL)
KEEP_AT_MOST = 6  # leases each thread keeps before it releases its oldest
TTL = 3600
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


class Ledger:
    """What the clients know for sure, shared by the load threads and the checker."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tokens: list[str] = []             # every token granted with a 200
        self.kept: dict[int, str] = {}          # session id -> token: granted, release never sent
        self.released: dict[str, int] = {}      # token -> session id: release answered 200
        self.ops = 0
        self.cut_off = 0                        # requests whose answer the kill swallowed


def test_kill_minus_nine_under_load_loses_nothing(server_factory):
    server = server_factory("--access-log", "false")
    server.add_sessions(*(f"acc{i}" for i in range(SESSIONS)))
    ledger = Ledger()
    stop = threading.Event()
    gates = [threading.Lock() for _ in range(THREADS)]  # the checker takes them all to pause the load
    errors: list[BaseException] = []

    def release(conn: KeepAlive, sid: int, token: str) -> None:
        """Release until the server answers: release with a token is idempotent, so a retry
        after a cut-off attempt is safe (409 then means it did stick and the session moved on)."""
        deadline = time.monotonic() + 60
        retried = False
        while True:
            try:
                reply = conn.request("POST", "/release", {"session_id": sid, "lease_token": token})
                break
            except TRANSPORT_ERRORS:
                assert time.monotonic() < deadline, "the server did not come back within 60 s"
                retried = True
                with ledger.lock:
                    ledger.cut_off += 1
                stop.wait(0.01)
        assert reply.status == 200 or (retried and reply.status == 409), reply
        with ledger.lock:
            ledger.released[token] = sid

    def worker(number: int) -> None:
        rng = random.Random(number)
        conn = KeepAlive(server, timeout=10)
        mine: list[tuple[int, str]] = []
        try:
            while not stop.is_set():
                with gates[number]:
                    if stop.is_set():
                        break
                    try:
                        if len(mine) < KEEP_AT_MOST and (not mine or rng.random() < 0.6):
                            reply = conn.request("POST", "/session", {"ttl": TTL, "holder": f"w{number}"})
                            if reply.status == 200:
                                lease = reply.json
                                sid, token = lease["session_id"], lease["lease_token"]
                                with ledger.lock:
                                    ledger.tokens.append(token)
                                    assert sid not in ledger.kept, f"session {sid} granted while kept by a client"
                                    ledger.kept[sid] = token
                                mine.append((sid, token))
                            else:
                                assert reply.status == 503 and reply.json["error"] == "no_session_available", reply
                        else:
                            sid, token = mine.pop(0)
                            with ledger.lock:
                                del ledger.kept[sid]  # in limbo until the release gets an answer
                            release(conn, sid, token)
                        with ledger.lock:
                            ledger.ops += 1
                    except TRANSPORT_ERRORS:
                        with ledger.lock:
                            ledger.cut_off += 1
                        stop.wait(0.01)  # the server is down: give its restart the CPU
        except BaseException as exc:  # surfaced by the assertion at the end
            errors.append(exc)
            stop.set()
        finally:
            conn.close()

    def check(restart_number: int) -> None:
        check_integrity(server.store)
        with ledger.lock:
            kept = dict(ledger.kept)
            released = dict(ledger.released)
            tokens = list(ledger.tokens)
        assert len(tokens) == len(set(tokens)), "a lease token was handed out twice"
        in_db = lease_tokens(server.db_path)
        now = time.time()
        for sid, token in kept.items():
            db_token, expires = in_db[sid]
            assert db_token == token, f"after restart {restart_number}: session {sid} lost lease {token}"
            assert expires is not None and expires > now
        for token, sid in released.items():
            assert in_db[sid][0] != token, f"after restart {restart_number}: release of {token} did not stick"
        # The API agrees with the file: a kept token still renews, and the counts add up.
        probe = KeepAlive(server, timeout=10)
        try:
            for sid, token in random.Random(restart_number).sample(sorted(kept.items()), min(3, len(kept))):
                reply = probe.request("POST", "/renew", {"session_id": sid, "lease_token": token, "ttl": TTL})
                assert reply.status == 200, reply
            status = probe.request("GET", "/status").json
        finally:
            probe.close()
        check_counts(status, SESSIONS)
        assert status["in_use"] >= len(kept)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    rng = random.Random(42)
    ops_at_kill = []
    try:
        for number in range(1, KILLS + 1):
            # Let the load run a random while (at least some operations), then kill -9.
            started = ledger.ops
            deadline = time.monotonic() + 30
            pause = rng.uniform(0.05, 0.6)
            time.sleep(pause)  # a random moment, not a wait for readiness
            while ledger.ops - started < 20 and time.monotonic() < deadline and not stop.is_set():
                time.sleep(0.01)
            assert not stop.is_set(), errors
            ops_at_kill.append(ledger.ops)
            server.kill()
            server.start()
            for gate in gates:
                gate.acquire()
            try:
                check(number)
            finally:
                for gate in gates:
                    gate.release()
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not errors, errors[:3]
    assert not any(thread.is_alive() for thread in threads)
    assert len(ops_at_kill) == KILLS and ops_at_kill == sorted(set(ops_at_kill))  # load between kills
    check(KILLS + 1)
    assert len(ledger.released) > 50 and len(ledger.kept) > 10
    print(f"{ledger.ops} operations, {len(ledger.tokens)} leases, {ledger.cut_off} cut off by {KILLS} kills")  # -s shows it
