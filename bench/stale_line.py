"""Benchmark 9: does a waiting table full of stale rows slow /status and long-polls down?

    python bench/stale_line.py [--quick] [--rounds R] [--rows 100000] [--requests 200]
                               [--baseline-tree DIR]

Rows of polls that left the line stay in the ``waiters`` table for two minutes (a retry
with the same ``request_id`` takes its place back), so keys that poll with fresh
``request_id``\\s could pile them up (issue 18, L1: at 27k rows ``/status`` went from 1.2 to
4.8 ms). Two servers of one tree, in alternating rounds: one whose table is empty, one
with ``--rows`` stale rows (refreshed before each round, so that none is old enough to be
cleaned away), spread over 1,000 keys. Measured per round: the median time of a
``GET /status`` and of a long-poll that parks and runs out (``wait`` 10 ms, on a pool
whose sessions are all leased: its time less the 10 ms). Ratios are empty over stale
(1.0: the rows cost nothing; the goal is at least 0.9). ``--baseline-tree`` measures the
other checkout's two servers too, side by side.
"""
from __future__ import annotations

import http.client
import json
import random
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

POLL_WAIT = 0.01


def fill(db: Path, rows: int) -> None:
    """Replace the waiting table's rows with ``rows`` stale ones: out of the line 10-60 s ago."""
    now = time.time()
    conn = sqlite3.connect(db, timeout=30)
    try:
        with conn:
            conn.execute("DELETE FROM waiters")
            conn.executemany(
                "INSERT INTO waiters (owner, ttl, key_id, request_id, created_at, deadline, alive_until)"
                " VALUES ('gone:1:0', 60, ?, ?, ?, ?, ?)",
                [(1000 + n % 1000, f"{n:032x}", now - 70, now - 10 - random.random() * 50, now - 5)
                 for n in range(rows)])
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the server reads a short WAL, as in steady use
    finally:
        conn.close()


def measure(server: c.Server, requests: int) -> tuple[float, float]:
    """(median seconds of GET /status, median seconds of a long-poll beyond its wait)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    headers = {"X-API-Key": server.api_key, "Content-Type": "application/json"}
    status, polls = [], []
    try:
        for _ in range(requests):
            began = time.perf_counter()
            conn.request("GET", "/status", headers=headers)
            conn.getresponse().read()
            status.append(time.perf_counter() - began)
        body = json.dumps({"ttl": 60, "wait": POLL_WAIT})
        for _ in range(max(1, requests // 2)):
            began = time.perf_counter()
            conn.request("POST", "/session", body, headers)
            reply = conn.getresponse()
            reply.read()
            assert reply.status == 503, f"the pool should be busy, got {reply.status}"
            polls.append(time.perf_counter() - began - POLL_WAIT)
    finally:
        conn.close()
    return c.median(status), c.median(polls)


def hold_everything(server: c.Server, sessions: int) -> None:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    headers = {"X-API-Key": server.api_key, "Content-Type": "application/json"}
    for _ in range(sessions):
        conn.request("POST", "/session", json.dumps({"ttl": 3600}), headers)
        assert conn.getresponse().read() and True
    conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = c.arg_parser(__doc__.splitlines()[0], baseline_tree=True)
    parser.add_argument("--rows", type=int, default=100_000, help="stale rows in the full table")
    parser.add_argument("--requests", type=int, default=200, help="GET /status per round (half as many long-polls)")
    args = parser.parse_args(argv)
    rows = 2_000 if args.quick else args.rows
    requests = 20 if args.quick else args.requests
    rounds = args.rounds or (1 if args.quick else 5)
    print(f"# Benchmark 9: /status and long-polls over {rows} stale waiting rows ({c.environment_note()})")
    trees = [("telegate", None)] + ([("baseline", args.baseline_tree)] if args.baseline_tree else [])
    flags = ("--access-log", args.access_log)
    with c.workspace(args.workdir) as where, c.Servers(where) as running:
        servers = {}
        for label, tree in trees:
            for state in ("empty", "stale"):
                server = running.start("telegate", sessions=2, extra=flags, label=f"{label}-{state}", tree=tree)
                hold_everything(server, 2)
                servers[(label, state)] = server
        results: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in servers}
        for number in range(rounds):
            for (label, state), server in servers.items():
                fill(Path(server.db), rows if state == "stale" else 0)
                results[(label, state)].append(measure(server, requests))
            line = ", ".join(f"{label}-{state} status {c.ms(r[-1][0]):.2f} ms poll {c.ms(r[-1][1]):.2f} ms"
                             for (label, state), r in results.items())
            print(f"  round {number + 1}: {line}")
        table = []
        for label, _ in trees:
            empty, stale = results[(label, "empty")], results[(label, "stale")]
            status_ratios = [e[0] / s[0] for e, s in zip(empty, stale)]
            poll_ratios = [e[1] / s[1] for e, s in zip(empty, stale)]
            table.append([label, c.ms(c.median([e[0] for e in empty])), c.ms(c.median([s[0] for s in stale])),
                          round(c.median(status_ratios), 2), c.ms(c.median([e[1] for e in empty])),
                          c.ms(c.median([s[1] for s in stale])), round(c.median(poll_ratios), 2),
                          ", ".join(f"{r:.2f}" for r in status_ratios), ", ".join(f"{r:.2f}" for r in poll_ratios)])
        print(c.table(["tree", "status ms empty", f"status ms {rows} stale", "status empty/stale",
                       "poll ms empty", f"poll ms {rows} stale", "poll empty/stale",
                       "status ratio by round", "poll ratio by round"], table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
