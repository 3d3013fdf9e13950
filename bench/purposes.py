"""Benchmark 5: leasing for a purpose on a pool where most sessions rest for another method.

    python bench/purposes.py [--quick] [--seconds S] [--rounds R] [--sessions N] [--resting K]
                             [--layers store,http] [--clients 1,4]

Two pools of N sessions (default 100): ``rested``, where K of them (default 60) rest for
``contacts.resolveUsername`` (a scoped flood wait of a day), and ``clean``, with no rests.
The workload is acquire+release with ``purpose="messages.getHistory"``; the goal is that
it runs at >= 0.9x the clean pool's rate: skipping rests must not cost the readers.

Side by side in one run, every round printed; within a round the contenders take turns
of 50 ms each, so the shared machine's noise hits them alike:

* ``store``: ``Store.acquire()`` + ``Store.release()`` in process (one thread), where the
  extra SQL (the ``NOT EXISTS`` probe of ``session_rests``) is all the difference; with
  ``synchronous=normal`` by default, so that the rate is the SQL's, not the disk's fsync.
  Also the same cycle with no purpose on both pools (information: a lease without a
  purpose has to skip the K resting sessions).
* ``http``: two real ``telegate serve`` processes, the thin keep-alive client sending
  ``{"purpose": "messages.getHistory"}``.

Then the capacity a farm keeps: sessions a history reader can lease when the K flood
waits are scoped to ``contacts.resolveUsername``, against the same K as account-wide
flood waits (what TeleGate did before scopes), read from ``GET /status?purpose=``'s store
query on real pools.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

RESOLVE = "contacts.resolveUsername"
HISTORY = "messages.getHistory"
DAY = 86400
#: Length of one contender's turn within a round (see :func:`sliced`).
SLICE = 0.05


def make_pool(path: Path, sessions: int, resting: int, scope: str | None = RESOLVE, synchronous: str = "full"):
    """A store of ``sessions`` sessions, the first ``resting`` resting for a day (for ``scope``, or account-wide)."""
    from telegate.store import open_store
    store = open_store(path, synchronous=synchronous)
    if not store.status()["total"]:
        store.add_sessions(f"acc{i:06d}" for i in range(sessions))
    for number in range(resting):
        lease = store.acquire(60, name=f"acc{number:06d}", purpose=HISTORY)
        store.release(lease.session_id, lease.lease_token, flood_wait=DAY, flood_scope=scope)
    return store


def store_cycle(store, purpose: str | None) -> Callable[[], bool]:
    def once() -> bool:
        lease = store.acquire(60, purpose=purpose)
        store.release(lease.session_id, lease.lease_token)
        return True
    return once


def sliced(cyclers: dict[str, list[Callable[[], bool]]], seconds: float, slice_len: float = SLICE) -> dict[str, float]:
    """Cycles per second of each contender, measured in turns of ``slice_len`` seconds.

    ``cyclers`` maps each contender to one cycle function per load thread. All threads
    switch contender at the same slice boundaries, so every contender runs many short
    turns spread over the whole round: a burst of someone else's work on this shared
    machine hits them all alike, which whole-second turns do not ensure.
    """
    names = list(cyclers)
    workers = len(cyclers[names[0]])
    turns = max(1, round(seconds / (slice_len * len(names))))
    seconds = turns * slice_len * len(names)
    counts = dict.fromkeys(names, 0)
    lock = threading.Lock()
    barrier = threading.Barrier(workers + 1)
    window: dict[str, float] = {}
    errors: list[BaseException] = []

    def run(worker: int) -> None:
        mine = dict.fromkeys(names, 0)
        try:
            for name in names:  # warm-up: connections open, statements prepared
                cyclers[name][worker]()
            barrier.wait(30)
            start, stop = window["start"], window["stop"]
            while True:
                now = time.perf_counter()
                if now >= stop:
                    break
                name = names[int((now - start) / slice_len) % len(names)]
                if cyclers[name][worker]():
                    mine[name] += 1
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            with lock:
                for name in names:
                    counts[name] += mine[name]

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(workers)]
    for thread in threads:
        thread.start()
    window["start"] = time.perf_counter() + 0.2
    window["stop"] = window["start"] + seconds
    barrier.wait(30)
    for thread in threads:
        thread.join(seconds + 120)
    if errors:
        raise RuntimeError(f"load failed: {errors[0]!r}") from errors[0]
    return {name: counts[name] / (seconds / len(names)) for name in names}


def rounds_of(cyclers: dict[str, list[Callable[[], bool]]], seconds: float, rounds: int) -> dict[str, list[float]]:
    """``rounds`` sliced rounds, the contenders' turn order rotated every round."""
    names = list(cyclers)
    results: dict[str, list[float]] = {name: [] for name in names}
    for number in range(rounds):
        shift = number % len(names)
        order = names[shift:] + names[:shift]
        rates = sliced({name: cyclers[name] for name in order}, seconds)
        for name in names:
            results[name].append(rates[name])
    return results


def per_round(results: dict[str, list[float]], pairs: list[tuple[str, str, str]]) -> str:
    """One row per round: every contender's rate, and each (label, rate, baseline) ratio."""
    names = list(results)
    rows = []
    for number in range(len(results[names[0]])):
        row: list = [number + 1] + [results[name][number] for name in names]
        row += [results[a][number] / results[b][number] for _, a, b in pairs]
        rows.append(row)
    medians = ["median"] + [c.median(results[name]) for name in names]
    medians += [c.median([x / y for x, y in zip(results[a], results[b]) if y]) for _, a, b in pairs]
    rows.append(medians)
    return c.table(["round", *names, *(label for label, _, _ in pairs)], rows)


def store_layer(where: Path, sessions: int, resting: int, seconds: float, rounds: int, synchronous: str) -> None:
    rested = make_pool(where / "rested.db", sessions, resting, synchronous=synchronous)
    clean = make_pool(where / "clean.db", sessions, 0, synchronous=synchronous)
    try:
        results = rounds_of({
            "rested, purpose": [store_cycle(rested, HISTORY)],
            "clean, purpose": [store_cycle(clean, HISTORY)],
            "rested, no purpose": [store_cycle(rested, None)],
            "clean, no purpose": [store_cycle(clean, None)],
        }, seconds, rounds)
    finally:
        rested.close()
        clean.close()
    print(f"\n## store, in process, 1 thread, synchronous={synchronous}: acquire+release pairs/s,"
          f" purpose={HISTORY!r} unless 'no purpose'")
    print(per_round(results, [("rested/clean (purpose)", "rested, purpose", "clean, purpose"),
                              ("rested/clean (no purpose)", "rested, no purpose", "clean, no purpose"),
                              ("purpose/none (clean)", "clean, purpose", "clean, no purpose")]))


class HistoryReader(c.ThinClient):
    """The thin keep-alive client, leasing for ``messages.getHistory``."""

    def __init__(self, server: c.Server, ttl: float = 60) -> None:
        super().__init__(server, ttl)
        self.acquire_body = json.dumps({"ttl": ttl, "purpose": HISTORY}).encode()


def http_layer(where: Path, sessions: int, resting: int, seconds: float, rounds: int, clients: list[int],
               access_log: str) -> None:
    with c.Servers(where) as running:
        servers = [running.start("telegate", sessions=sessions, label=label, extra=("--access-log", access_log))
                   for label in ("rested", "clean")]
        make_pool(servers[0].db, sessions, resting).close()  # the rests, written beside the running server
        for count in clients:
            readers = {server.label: [HistoryReader(server) for _ in range(count)] for server in servers}
            try:
                results = rounds_of({f"{label}, {count} client(s)": [reader.cycle for reader in group]
                                     for label, group in readers.items()}, seconds, rounds)
            finally:
                for group in readers.values():
                    for reader in group:
                        reader.close()
            print(f"\n## HTTP, thin client x{count}: acquire+release cycles/s, purpose={HISTORY!r}")
            names = list(results)
            print(per_round(results, [("rested/clean", names[0], names[1])]))


def capacity(where: Path, sessions: int, resting: int) -> None:
    scoped = make_pool(where / "cap-scoped.db", sessions, resting, RESOLVE)
    account = make_pool(where / "cap-account.db", sessions, resting, None)
    try:
        rows = []
        for label, store in (("scoped to " + RESOLVE, scoped), ("account-wide (before scopes)", account)):
            for_readers = store.status(HISTORY)["free_for_purpose"]
            for_resolvers = store.status(RESOLVE)["free_for_purpose"]
            rows.append([label, for_readers, for_resolvers, store.status()["free"]])
    finally:
        scoped.close()
        account.close()
    print(f"\n## capacity: {resting} of {sessions} sessions flood-waited on {RESOLVE} (a day)")
    print(c.table(["the flood waits are", f"leasable for {HISTORY}", f"leasable for {RESOLVE}",
                   "leasable with no purpose"], rows))
    gained = rows[0][1] / rows[1][1] if rows[1][1] else float("inf")
    print(f"# history readers keep {rows[0][1]} sessions instead of {rows[1][1]}: {gained:.1f}x the capacity")


def main(argv: list[str] | None = None) -> int:
    parser = c.arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100, help="sessions in each pool")
    parser.add_argument("--resting", type=int, default=60, help=f"sessions resting for {RESOLVE} in the rested pool")
    parser.add_argument("--layers", default="store,http", help="store, http (comma-separated)")
    parser.add_argument("--clients", default="1,4", help="HTTP client counts (comma-separated)")
    parser.add_argument("--synchronous", default="normal", choices=("normal", "full"),
                        help="the store layer's SQLite synchronous setting (default normal: no fsync per"
                             " commit, so the rate shows the SQL, not the disk)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.4 if args.quick else 4.0)
    rounds = max(3, args.rounds or (3 if args.quick else 5))
    clients = [int(n) for n in args.clients.split(",")][:1 if args.quick else None]
    layers = args.layers.split(",")
    print(f"# Benchmark 5: purposes on a pool where {args.resting} of {args.sessions} sessions rest for {RESOLVE}"
          f" ({c.environment_note()})")
    print(f"# {seconds:g} s per round shared by its contenders in {SLICE * 1000:g} ms turns, {rounds} rounds,"
          " each shown, then medians; goal: rested/clean (purpose) >= 0.9")
    with c.workspace(args.workdir) as where:
        if "store" in layers:
            store_layer(where, args.sessions, args.resting, seconds, rounds, args.synchronous)
        if "http" in layers:
            http_layer(where, args.sessions, args.resting, seconds, rounds, clients, args.access_log)
        capacity(where, args.sessions, args.resting)
    return 0


if __name__ == "__main__":
    sys.exit(main())
