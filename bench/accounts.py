"""Benchmark: what accounts cost. Hand-outs, write-backs, database size, rotation.

    python bench/accounts.py [--quick] [--seconds S] [--rounds R] [--clients 16] [--pg URL]

1. Acquire+release with ``"account": true`` against the same cycle without it, on one
   server whose every session holds an account (so both pick from the same pool), N
   clients, in alternating rounds: the ratio of cycles per second every round (goal
   >= 0.8), and the server's CPU per cycle.
2. Write-back of 1,000 entities on each release against a release without ``state`` (a
   plain lease of the same sessions), in alternating rounds: the extra server CPU and
   latency per release.
3. Database size per account: SQLite file bytes (and, with ``--pg``, PostgreSQL's
   ``pg_total_relation_size``) per account, bare and with 100 and 1,000 cached entities,
   over a names-only pool of the same size.
4. ``vault rotate``: seconds per 1,000 accounts.

Ratios are taken side by side in one run (bench/_common.py): absolute figures of a shared
machine mean little.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

from telegate.accounts import Vault, master_key_source  # noqa: E402
from telegate.store import open_store  # noqa: E402


def account(number: int, entities: int = 20) -> dict[str, Any]:
    """A realistic account: random secrets, a device, a proxy, a small entity cache."""
    return {
        "dc_id": 2, "server_address": "149.154.167.51", "port": 443,
        "auth_key": base64.b64encode(os.urandom(256)).decode(), "user_id": 10**9 + number, "is_bot": False,
        "test_mode": False, "api_id": 2040, "api_hash": os.urandom(16).hex(),
        "device_model": "Pixel 7", "system_version": "Android 14", "app_version": "10.5.0", "lang_code": "en",
        "system_lang_code": "en-US", "lang_pack": "android",
        "proxy": f"socks5://u{number}:{os.urandom(8).hex()}@10.0.{number % 250}.{number % 200}:1080",
        "twofa": os.urandom(8).hex(), "phone": f"+1555{number:07d}", "username": f"acc{number}", "premium": False,
        "state": {"entities": [entity(n) for n in range(entities)],
                  "update_state": {"pts": 100, "qts": 0, "date": 1717243819, "seq": 9}},
    }


def entity(number: int, salt: int = 0) -> dict[str, Any]:
    return {"id": 10**6 + number, "hash": number * 7919 + salt, "type": "user", "username": f"user{number}",
            "phone": None, "name": f"User Number {number}"}


class Cycle:
    """A thin keep-alive client (like bench/_common.ThinClient) whose bodies the benchmark picks."""

    def __init__(self, server: c.Server, *, with_account: bool = False, state: dict | None = None) -> None:
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
        self.headers = {"X-API-Key": server.api_key, "Content-Type": "application/json"}
        self.acquire = json.dumps({"ttl": 60, **({"account": True} if with_account else {})}).encode()
        self.with_account = with_account
        self.state = state

    def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.conn.request("POST", path, body, self.headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def cycle(self) -> bool:
        status, data = self._post("/session", self.acquire)
        if status == 503:
            return False
        if status != 200:
            raise RuntimeError(f"acquire answered {status}: {data[:200]!r}")
        lease = json.loads(data)
        if self.with_account and "auth_key" not in lease["account"]:
            raise RuntimeError("no account in the answer")
        release = {"session_id": lease["session_id"], "lease_token": lease["lease_token"]}
        if self.state is not None:
            release["state"] = self.state
        status, data = self._post("/release", json.dumps(release).encode())
        if status != 200:
            raise RuntimeError(f"release answered {status}: {data[:200]!r}")
        return True

    def close(self) -> None:
        self.conn.close()


def _accounts_pool(where: Path, sessions: int) -> tuple[Path, str]:
    """A SQLite pool whose every session holds an account; (database, accounts key). The master key
    file goes beside it, where the server finds it."""
    db = where / "accounts.db"
    keys = master_key_source({}, None, db)
    with open_store(db, vault=keys.vault()) as store:
        store.put_sessions([{"name": f"acc{n:05d}", "kind": "telethon", "account": account(n)}
                            for n in range(sessions)])
        key = store.create_key("bench", "client", accounts=True)
    return db, key


def _alternate(server: c.Server, clients: int, seconds: float, rounds: int,
               kinds: dict[str, dict[str, Any]]) -> dict[str, list[c.Result]]:
    """Each kind of cycle (Cycle's keyword arguments) in turn, rotating the order every round."""
    results: dict[str, list[c.Result]] = {label: [] for label in kinds}
    labels = list(kinds)
    for number in range(rounds):
        order = labels[number % len(labels):] + labels[:number % len(labels)]
        for label in order:
            c.CLIENTS["_bench_accounts"] = lambda srv, options=kinds[label]: Cycle(srv, **options)
            results[label].append(c.run_load(server, clients, seconds, "_bench_accounts"))
    return results


def hand_out(where: Path, args: Any, seconds: float, rounds: int) -> None:
    db, key = _accounts_pool(where, args.sessions)
    with c.Server("telegate", where, db=db, api_key=key, label="accounts",
                  extra=("--access-log", args.access_log)) as server:
        rows, by_round = [], []
        for clients in [int(n) for n in args.clients.split(",")]:
            found = c.Rounds(_alternate(server, clients, seconds, rounds,
                                        {"plain": {}, "account": {"with_account": True}}))
            rows.append([clients, found.rate("plain"), found.rate("account"), found.ratio("account", "plain"),
                         round(found.cpu_per_cycle("plain") * 1e6), round(found.cpu_per_cycle("account") * 1e6),
                         found.cpu_ratio("account", "plain"),
                         c.ms(found.percentile("plain", 0.5)), c.ms(found.percentile("account", 0.5))])
            by_round.append([clients, *found.round_ratios("account", "plain")])
        print("\n## 1. Acquire+release with \"account\": true against without (same server, same pool)\n")
        print(c.table(["clients", "plain cycles/s", "account cycles/s", "account/plain", "plain CPU µs/cycle",
                       "account CPU µs/cycle", "account/plain CPU", "plain p50 ms", "account p50 ms"], rows))
        print("\nEvery round, account over plain (cycles/s; CPU per cycle):\n")
        print(c.table(["clients", "account/plain cycles/s by round", "account/plain CPU by round"], by_round))


def write_back(where: Path, args: Any, seconds: float, rounds: int) -> None:
    (where / "wb").mkdir(exist_ok=True)
    db, key = _accounts_pool(where / "wb", args.sessions)
    state = {"entities": [entity(n, salt=1) for n in range(1000)],
             "update_state": {"pts": 200, "qts": 0, "date": 1717243900, "seq": 10}}
    with c.Server("telegate", where / "wb", db=db, api_key=key, label="writeback",
                  extra=("--access-log", args.access_log)) as server:
        rows, by_round = [], []
        for clients in (1, int(args.clients.split(",")[-1])):
            found = c.Rounds(_alternate(server, clients, seconds, rounds,
                                        {"release": {}, "release+state": {"state": state}}))
            extra_cpu = (found.cpu_per_cycle("release+state") - found.cpu_per_cycle("release")) * 1e3
            rows.append([clients, found.rate("release"), found.rate("release+state"),
                         found.ratio("release+state", "release"),
                         round(found.cpu_per_cycle("release") * 1e6), round(found.cpu_per_cycle("release+state") * 1e6),
                         round(extra_cpu, 2),
                         c.ms(found.percentile("release", 0.5)), c.ms(found.percentile("release+state", 0.5))])
            by_round.append([clients, *found.round_ratios("release+state", "release")])
        print("\n## 2. A release that writes back 1,000 entities against one that writes nothing\n")
        print(f"(body {len(json.dumps({'state': state})) / 1024:.0f} KiB; each account's cache holds 1,000+ entities)\n")
        print(c.table(["clients", "release cycles/s", "+state cycles/s", "+state/release", "release CPU µs/cycle",
                       "+state CPU µs/cycle", "extra CPU ms/release", "release p50 ms", "+state p50 ms"], rows))
        print("\nEvery round, +state over release (cycles/s; CPU per cycle):\n")
        print(c.table(["clients", "+state/release cycles/s by round", "+state/release CPU by round"], by_round))


def _sqlite_bytes(db: Path) -> int:
    import sqlite3
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DELETE FROM session_events")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return db.stat().st_size


def size(where: Path, args: Any) -> None:
    count = 200 if args.quick else 2000
    master = os.urandom(32)
    rows = []
    cases = [("names only", None), ("account, no entities", 0), ("account, 20 entities", 20),
             ("account, 100 entities", 100), ("account, 1,000 entities", 1000)]
    base_sqlite = base_pg = None
    for label, entities in cases:
        db = where / f"size-{entities}.db"
        with open_store(db, vault=Vault(master)) as store:
            if entities is None:
                store.add_sessions(f"acc{n:05d}" for n in range(count))
            else:
                for start in range(0, count, 500):
                    store.put_sessions([{"name": f"acc{n:05d}", "account": account(n, entities)}
                                        for n in range(start, min(count, start + 500))])
        bytes_sqlite = _sqlite_bytes(db)
        bytes_pg = _pg_bytes(args.pg, master, count, entities) if args.pg else None
        if entities is None:
            base_sqlite, base_pg = bytes_sqlite, bytes_pg
        rows.append([label, bytes_sqlite / count, (bytes_sqlite - base_sqlite) / count,
                     "-" if bytes_pg is None else bytes_pg / count,
                     "-" if bytes_pg is None else (bytes_pg - base_pg) / count])
    print(f"\n## 3. Database size per account ({count} accounts; SQLite after VACUUM)\n")
    print(c.table(["pool", "SQLite bytes/session", "SQLite bytes/account over names only",
                   "PostgreSQL bytes/session", "PostgreSQL bytes/account over names only"], rows))


def _pg_bytes(url: str, master: bytes, count: int, entities: int | None) -> int:
    import psycopg
    with open_store(url, vault=Vault(master)) as store:
        store.engine.write(lambda tx: tx.run("TRUNCATE sessions, accounts, session_events"))
        if entities is None:
            store.add_sessions(f"acc{n:05d}" for n in range(count))
        else:
            for start in range(0, count, 500):
                store.put_sessions([{"name": f"acc{n:05d}", "account": account(n, entities)}
                                    for n in range(start, min(count, start + 500))])
        store.engine.write(lambda tx: tx.run("DELETE FROM session_events"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM FULL sessions")
        conn.execute("VACUUM FULL accounts")
        row = conn.execute("SELECT pg_total_relation_size('sessions') + pg_total_relation_size('accounts')").fetchone()
    return int(row[0])


def rotation(where: Path, args: Any) -> None:
    count = 500 if args.quick else 5000
    old, new = os.urandom(32), os.urandom(32)
    db = where / "rotate.db"
    with open_store(db, vault=Vault(old)) as store:
        for start in range(0, count, 500):
            store.put_sessions([{"name": f"acc{n:05d}", "account": account(n)}
                                for n in range(start, min(count, start + 500))])
    with open_store(db, vault=Vault(new, [old])) as store:
        began = time.perf_counter()
        done = store.rotate_keys()
        took = time.perf_counter() - began
    assert done == count
    print(f"\n## 4. vault rotate\n\n{count} accounts rewrapped in {took:.2f} s:"
          f" {took / count * 1000 * 1000:.0f} ms per 1,000 accounts (SQLite)")


def main(argv: list[str] | None = None) -> int:
    parser = c.arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--clients", default="16", help="comma-separated client counts for the hand-out")
    parser.add_argument("--sessions", type=int, default=64, help="sessions (each with an account) in the pool")
    parser.add_argument("--pg", default=None, help="an empty PostgreSQL database URL for the size figures")
    parser.add_argument("--parts", default="1,2,3,4", help="which measurements to run (comma-separated numbers)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.3 if args.quick else 1.0)
    rounds = args.rounds or (1 if args.quick else 7)
    print(f"# Benchmark: accounts ({c.environment_note()})")
    print(f"# {seconds:g} s per kind and round, {rounds} alternating round(s), medians of per-round ratios;"
          f" pool of {args.sessions} sessions, each with an account")
    with c.workspace(args.workdir) as where:
        parts = set(args.parts.split(","))
        if "1" in parts:
            hand_out(where, args, seconds, rounds)
        if "2" in parts:
            write_back(where, args, seconds, rounds)
        if "3" in parts:
            size(where, args)
        if "4" in parts:
            rotation(where, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
