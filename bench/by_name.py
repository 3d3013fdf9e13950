"""Benchmark 9: admin commands by name on a big pool: `sessions disable` of a few names, paging against by name.

    python bench/by_name.py [--quick] [--rounds R] [--sessions 100000] [--names 5]
                            [--stores sqlite,postgresql] [--pg URL]

One ``telegate serve`` per store over a pool of ``--sessions`` sessions. Each round times
what ``telegate sessions disable NAME... --reason R`` does over HTTP (the admin client's
``set_disabled``, called in this process: the command minus Python's start-up), both
ways, one right after the other, the order alternating from round to round:

* ``paging``  -- how the command found the ids before (and still does against a server
                 without the filter): ``GET /sessions`` page by page, 5,000 rows a page,
                 until every name is found.
* ``by name`` -- ``GET /sessions?name=...`` for just those names.

Then each named session's ``PATCH``, the same both ways. The names are spread over the
pool and the last of them is its last session, so paging reads the whole list, as it
does whenever a name is not registered. After each timed command the sessions are
enabled again (untimed). Printed: median milliseconds per command, requests per command, and
the median of the per-round ratios paging / by name.

PostgreSQL is ``--pg`` (a URL of a database we may CREATE DATABASE from), else
$TELEGATE_TEST_PG, else postgresql://postgres@127.0.0.1:5432/postgres; its database is
dropped at the end, and the store is left out when nothing answers there.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402
from postgres import DEFAULT_PG, Databases, pg_reachable  # noqa: E402

from telegate.store import open_store  # noqa: E402  (_common put the checkout's server/ on the path)
from telegate._admin_client import HttpAdmin  # noqa: E402


class Counted(HttpAdmin):
    """The CLI's admin client, counting the requests it sends."""

    requests = 0

    def _send(self, *args: Any, **kwargs: Any) -> Any:
        self.requests += 1
        return super()._send(*args, **kwargs)


class Paging(Counted):
    """The admin client as it was before the ``name`` filter: it reads the list through."""

    _ids = HttpAdmin._ids_by_listing


def timed_disable(admin: Counted, names: list[str]) -> tuple[float, int]:
    """Seconds and requests of one ``sessions disable NAME...``; the sessions are enabled again after."""
    admin.requests = 0
    started = time.perf_counter()
    missing = admin.set_disabled(names, True, "bench")
    seconds = time.perf_counter() - started
    requests = admin.requests
    assert not missing, f"not registered: {missing}"
    HttpAdmin.set_disabled(admin, names, False)
    return seconds, requests


def measure(server: c.Server, admin_key: str, names: list[str], rounds: int) -> dict[str, list[tuple[float, int]]]:
    ways = {"paging": Paging(server.url, admin_key), "by name": Counted(server.url, admin_key)}
    results: dict[str, list[tuple[float, int]]] = {way: [] for way in ways}
    try:
        for admin in ways.values():
            timed_disable(admin, names)  # warm-up: connections, the server's caches
        order = list(ways)
        for number in range(rounds):
            for way in (order if number % 2 == 0 else order[::-1]):
                results[way].append(timed_disable(ways[way], names))
    finally:
        for admin in ways.values():
            admin.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = c.arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions in each pool")
    parser.add_argument("--names", type=int, default=5, help="names per command, spread over the pool")
    parser.add_argument("--stores", default="sqlite,postgresql", help="stores to measure, comma-separated")
    parser.add_argument("--pg", default=None, help="PostgreSQL URL to create the database from")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 7)
    sessions = 12_000 if args.quick else args.sessions
    names = [f"acc{(number + 1) * sessions // args.names - 1:06d}" for number in range(args.names)]
    stores = [store.strip() for store in args.stores.split(",") if store.strip()]
    print(f"# Benchmark 9: `sessions disable` of {len(names)} names on a pool of {sessions:,}, paging against"
          f" by name ({c.environment_note()})")
    print(f"# {rounds} alternating rounds, medians; names {', '.join(names)}")
    databases = None
    rows = []
    try:
        with c.workspace(args.workdir) as where, c.Servers(where) as running:
            for store in stores:
                if store == "postgresql":
                    admin_url = args.pg or os.environ.get("TELEGATE_TEST_PG") or DEFAULT_PG
                    why = pg_reachable(admin_url)
                    if why is not None:
                        print(f"# PostgreSQL left out: nothing answers at {admin_url.rsplit('@', 1)[-1]} ({why})")
                        continue
                    databases = databases or Databases(admin_url)
                    url, key = databases.create(sessions)
                    server = running.start("telegate", db=url, api_key=key, label="postgresql",
                                           extra=("--access-log", args.access_log))
                elif store == "sqlite":
                    server = running.start("telegate", sessions=sessions, label="sqlite",
                                           extra=("--access-log", args.access_log))
                else:
                    raise SystemExit(f"--stores: unknown store {store!r} (sqlite, postgresql)")
                with open_store(server.db) as pool:
                    admin_key = pool.create_key("bench-admin", "admin")
                results = measure(server, admin_key, names, rounds)
                paging, by_name = results["paging"], results["by name"]
                rows.append([store, c.ms(c.median([s for s, _ in paging])), c.ms(c.median([s for s, _ in by_name])),
                             paging[0][1], by_name[0][1],
                             c.median([old / new for (old, _), (new, _) in zip(paging, by_name) if new])])
                server.close()
            print(c.table(["store", "paging ms", "by name ms", "paging requests", "by name requests",
                           "x faster by name"], rows))
    finally:
        if databases is not None:
            databases.close()  # after its servers stopped
    return 0


if __name__ == "__main__":
    sys.exit(main())
