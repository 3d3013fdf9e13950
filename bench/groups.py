"""Benchmark: what confining a key to groups costs its acquires.

    python bench/groups.py [--quick] [--seconds S] [--rounds R] [--sessions N] [--share 10,50]
                           [--stores sqlite,postgresql]

One pool of N sessions (default 10,000). Session i is in group ``g10`` when i % 10 == 0 and
in ``g50`` when i is even, so ``g10`` holds a tenth of the pool and ``g50`` half. The
workload is acquire+release in process (``Store``, one thread), the contenders side by
side in one run, every round printed (turns of 50 ms, as in bench/purposes.py):

* ``unconfined``: a key without groups (every key before groups): the baseline;
* ``g50`` / ``g10``: a key confined to that group.

Each contender cycles its own sessions to the back of the claim order, so after a warm-up
the front of the order holds the sessions of other groups, idle: the worst case for a
confined claim, which walks past them. The ratio confined/unconfined is the cost.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402
from purposes import SLICE, per_round, rounds_of  # noqa: E402


def make_pool(db, sessions: int):
    from telegate.store import open_store
    store = open_store(db, synchronous="normal") if not isinstance(db, str) else open_store(db)
    names = [f"acc{i:06d}" for i in range(sessions)]
    store.add_sessions([n for i, n in enumerate(names) if i % 10 == 0], groups=["g10", "g50"])
    store.add_sessions([n for i, n in enumerate(names) if i % 2 == 0 and i % 10], groups=["g50"])
    store.add_sessions([n for i, n in enumerate(names) if i % 2])
    return store


def cycle(store, key) -> Callable[[], bool]:
    def once() -> bool:
        lease = store.acquire(60, key=key)
        store.release(lease.session_id, lease.lease_token, key=key)
        return True
    return once


def run(db, label: str, sessions: int, shares: list[int], seconds: float, rounds: int) -> None:
    store = make_pool(db, sessions)
    try:
        keys = {"unconfined": store.authenticate(store.create_key("all"))}
        for share in shares:
            keys[f"g{share}"] = store.authenticate(store.create_key(f"only-g{share}", groups=[f"g{share}"]))
        cyclers = {name: [cycle(store, key)] for name, key in keys.items()}
        for name, (once,) in cyclers.items():  # warm-up: each key's sessions go to the back once
            for _ in range(sessions // 10 + 1):
                once()
        results = rounds_of(cyclers, seconds, rounds)
    finally:
        store.close()
    print(f"\n## {label}, {sessions} sessions, in process, 1 thread: acquire+release pairs/s")
    print(per_round(results, [(f"g{share}/unconfined", f"g{share}", "unconfined") for share in shares]))


def main(argv: list[str] | None = None) -> int:
    parser = c.arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--share", default="10,50", help="group sizes in percent (10 and/or 50)")
    parser.add_argument("--stores", default="sqlite", help="sqlite, postgresql (needs TELEGATE_TEST_PG)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.4 if args.quick else 3.0)
    rounds = max(3, args.rounds or (3 if args.quick else 5))
    sessions = 500 if args.quick else args.sessions
    shares = [int(n) for n in args.share.split(",")]
    print(f"# Benchmark: groups, confined keys against an unconfined one ({c.environment_note()})")
    print(f"# {seconds:g} s per round shared by its contenders in {SLICE * 1000:g} ms turns, {rounds} rounds")
    with c.workspace(args.workdir) as where:
        for kind in args.stores.split(","):
            if kind == "sqlite":
                run(where / "groups.db", "SQLite", sessions, shares, seconds, rounds)
            else:
                import os
                url = os.environ.get("TELEGATE_TEST_PG")
                if not url:
                    print("\n## PostgreSQL: skipped (set TELEGATE_TEST_PG to an empty database's URL)")
                    continue
                run(url, "PostgreSQL", sessions, shares, seconds, rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
