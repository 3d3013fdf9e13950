"""Benchmark 3: the store alone, in process: acquire+release pairs per second.

    python bench/store_cycle.py [--quick] [--seconds S] [--rounds R] [--sessions N]

Side by side on one machine, in one run, alternating rounds:

* ``bare SQL``  -- a bare loop of the two statements a lease needs (``UPDATE ... WHERE id =
                   (SELECT ... LIMIT 1) RETURNING`` and the releasing ``UPDATE``) on the same
                   kind of file (WAL, synchronous=FULL): the floor of any SQLite pool.
* ``TeleGate``  -- ``Store.acquire()`` + ``Store.release()``: one thread, and 8 or 16 threads
                   (where the group commit shares one fsync among concurrent writes); and
                   one thread with ``synchronous=normal`` (survives a process crash, not a
                   power cut: no fsync per commit).
* ``twscrape``  -- twscrape's ``AccountsPool`` (its SQLite account pool) doing the same cycle:
                   ``get_for_queue()`` then ``unlock()``, as shipped (its defaults: a new
                   connection per call, rollback journal), from 1 and from 8 tasks.
"""
from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402


def timed(loop_once: Callable[[], None], seconds: float) -> float:
    """Pairs per second of ``loop_once`` over ``seconds`` (after one warm-up call)."""
    loop_once()
    done = 0
    started = time.perf_counter()
    stop_at = started + seconds
    while time.perf_counter() < stop_at:
        loop_once()
        done += 1
    return done / (time.perf_counter() - started)


def bare_sql(path: Path, sessions: int) -> Callable[[], None]:
    from telegate.store import open_store
    open_store(path).add_sessions(f"acc{i:06d}" for i in range(sessions))  # TeleGate's schema and indexes
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    counter = [0]

    def once() -> None:
        counter[0] += 1
        now = time.time()
        row = conn.execute(
            "UPDATE sessions SET lease_token = ?, lease_expires_at = ?, avail_at = ? WHERE id ="
            " (SELECT id FROM sessions WHERE disabled = 0 AND avail_at <= ? ORDER BY avail_at, id LIMIT 1)"
            " RETURNING id", (str(counter[0]), now + 60, now + 60, now)).fetchall()
        conn.execute("UPDATE sessions SET lease_token = NULL, lease_expires_at = NULL, avail_at = ? WHERE id = ?",
                     (time.time(), row[0][0]))
    return once


def telegate_store(path: Path, sessions: int, synchronous: str = "full"):
    from telegate.store import open_store
    store = open_store(path, synchronous=synchronous)
    store.add_sessions(f"acc{i:06d}" for i in range(sessions))

    def once() -> None:
        lease = store.acquire(60)
        store.release(lease.session_id, lease.lease_token)
    return store, once


def telegate_threads(store, seconds: float, threads: int = 8) -> float:
    counts = [0] * threads
    stop_at = time.perf_counter() + seconds

    def worker(number: int) -> None:
        while time.perf_counter() < stop_at:
            lease = store.acquire(60)
            store.release(lease.session_id, lease.lease_token)
            counts[number] += 1

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(seconds + 60)
    return sum(counts) / (time.perf_counter() - started)


class Twscrape:
    """twscrape's AccountsPool on its own file, driven from one event loop."""

    def __init__(self, path: Path, sessions: int) -> None:
        import logging
        from twscrape import AccountsPool
        from twscrape.logger import set_log_level
        set_log_level("ERROR")
        logging.getLogger("twscrape").setLevel(logging.ERROR)
        self.loop = asyncio.new_event_loop()
        self.pool = AccountsPool(str(path), raise_when_no_account=True)
        for i in range(sessions):
            self.loop.run_until_complete(self.pool.add_account(
                f"acc{i:06d}", "pw", f"acc{i}@example.invalid", "pw", cookies="auth_token=a; ct0=b"))

    def rate_tasks(self, seconds: float, tasks: int) -> float:
        """``tasks`` concurrent tasks (twscrape serialises them on its own asyncio lock)."""
        async def run() -> int:
            stop_at = time.perf_counter() + seconds
            return sum(await asyncio.gather(*(self._cycle(None, stop_at) for _ in range(tasks))))
        started = time.perf_counter()
        done = self.loop.run_until_complete(run())
        return done / (time.perf_counter() - started)

    async def _cycle(self, count: int | None, stop_at: float | None) -> int:
        done = 0
        while (count is None or done < count) and (stop_at is None or time.perf_counter() < stop_at):
            account = await self.pool.get_for_queue("bench")
            await self.pool.unlock(account.username, "bench")
            done += 1
        return done

    def rate(self, seconds: float) -> float:
        self.loop.run_until_complete(self._cycle(1, None))
        started = time.perf_counter()
        done = self.loop.run_until_complete(self._cycle(None, started + seconds))
        return done / (time.perf_counter() - started)

    def close(self) -> None:
        self.loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = c.arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100, help="sessions/accounts in each pool")
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.3 if args.quick else 1.5)
    rounds = args.rounds or (1 if args.quick else 5)
    sessions = 10 if args.quick else args.sessions
    print(f"# Benchmark 3: store alone, acquire+release pairs/s ({c.environment_note()})")
    print(f"# {seconds:g} s per contender and round, {rounds} alternating rounds, medians; {sessions} sessions each")
    with c.workspace(args.workdir) as where:
        store, store_once = telegate_store(where / "store.db", sessions)
        relaxed, relaxed_once = telegate_store(where / "relaxed.db", sessions, synchronous="normal")
        contenders: dict[str, Callable[[], float]] = {
            "bare SQL (1 thread)": (lambda once: lambda: timed(once, seconds))(bare_sql(where / "bare.db", sessions)),
            "TeleGate Store (1 thread)": lambda: timed(store_once, seconds),
            "TeleGate Store (8 threads)": lambda: telegate_threads(store, seconds, 8),
            "TeleGate Store (16 threads)": lambda: telegate_threads(store, seconds, 16),
            "TeleGate Store, synchronous=normal (1 thread)": lambda: timed(relaxed_once, seconds),
        }
        tw = None
        try:
            tw = Twscrape(where / "twscrape.db", sessions)
            contenders["twscrape AccountsPool (1 task)"] = lambda: tw.rate(seconds)
            contenders["twscrape AccountsPool (8 tasks)"] = lambda: tw.rate_tasks(seconds, 8)
        except ImportError:
            print("# twscrape is not installed (pip install '.[bench]'): its row is left out")
        results: dict[str, list[float]] = {name: [] for name in contenders}
        try:
            names = list(contenders)
            for number in range(rounds):
                shift = number % len(names)
                for name in names[shift:] + names[:shift]:
                    results[name].append(contenders[name]())
        finally:
            store.close()
            relaxed.close()
            if tw is not None:
                tw.close()

    def ratio(name: str, base: str) -> float:
        if name not in results or base not in results:
            return float("nan")
        return c.median([a / b for a, b in zip(results[name], results[base]) if b])

    rows = []
    for name in results:
        rows.append([name, c.median(results[name]), ratio(name, "bare SQL (1 thread)"),
                     ratio(name, "twscrape AccountsPool (1 task)")])
    print(c.table(["contender", "pairs/s", "x bare SQL", "x twscrape"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
