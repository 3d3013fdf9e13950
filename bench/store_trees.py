"""Benchmark 5: the store's CPU per acquire+release, this tree against other checkouts, in ONE process.

    python bench/store_trees.py [--quick] --tree before=/tmp/old-checkout [--tree x=DIR ...]
                                [--synchronous normal|full] [--block N] [--blocks N] [--pg URL]

Each tree's ``server/telegate`` is copied under its own package name, so all of them run
in one process, each on its own database file. Blocks of cycles alternate between the
trees, so each meets the same background load within milliseconds of the others; the
figure is the median over blocks of each tree's CPU time per cycle (thread CPU time, so
waiting for the disk does not count) over this tree's. On a machine that other work
shares this resolves about 1 %, where cycles per second over HTTP swing by 10-30 %.

A cycle is what one acquire and one release cost the store: authenticate, acquire,
authenticate, release. A tree whose ``acquire`` takes no ``key`` is called without one.

``--pg URL`` runs every tree on PostgreSQL instead, each on a fresh database of its own
made next to URL's. Thread CPU time then counts this process's side only (building,
sending and reading statements); the database's backends spend about as much again.
"""
from __future__ import annotations

import importlib
import inspect
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402


def _fresh_database(url: str, name: str) -> str:
    """A new, empty PostgreSQL database next to the one at ``url`` (a postgresql:// URL); its URL."""
    import psycopg
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    database = f"{parts.path.strip('/') or 'postgres'}_trees_{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}"')
        conn.execute(f'CREATE DATABASE "{database}"')
    return parts._replace(path="/" + database).geturl()


def _drop_databases(url: str, names: list[str]) -> None:
    import psycopg
    from urllib.parse import urlsplit
    base = urlsplit(url).path.strip("/") or "postgres"
    with psycopg.connect(url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{base}_trees_{name}" WITH (FORCE)')


def load(name: str, tree: Path, where: Path, sync: str, pg: str | None = None):
    """A cycle function over a fresh pool of ``tree``'s store."""
    package = f"telegate_{name}"
    shutil.copytree(tree / "server" / "telegate", where / "packages" / package)
    module = importlib.import_module(f"{package}.store")
    opener = getattr(module, "open_store", None) or module.Store  # trees before open_store: Store(db)
    store = opener(where / f"{name}.db", synchronous=sync) if pg is None else \
        opener(_fresh_database(pg, name))
    store.add_sessions(f"acc{i:06d}" for i in range(64))
    key = store.create_key("bench", "client")
    keyed = "key" in inspect.signature(store.acquire).parameters
    kwargs = {"key": store.authenticate(key)} if keyed else {}

    def once() -> None:
        store.authenticate(key)
        lease = store.acquire(60, holder="bench", **kwargs)
        store.authenticate(key)
        store.release(lease.session_id, lease.lease_token, **kwargs)

    for _ in range(100):
        once()
    return once


def main(argv: list[str] | None = None) -> int:
    parser = c.arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                        help="another checkout to compare with this one (repeatable)")
    parser.add_argument("--synchronous", choices=("normal", "full"), default="normal",
                        help="SQLite synchronous mode (normal: CPU shows; full: as shipped)")
    parser.add_argument("--block", type=int, default=None, help="cycles per block (default 200, quick 20)")
    parser.add_argument("--blocks", type=int, default=None, help="blocks per tree (default 40, quick 3)")
    parser.add_argument("--pg", default=None, metavar="URL",
                        help="run on PostgreSQL: each tree gets a fresh database made next to this one")
    args = parser.parse_args(argv)
    block = args.block or (20 if args.quick else 200)
    blocks = args.blocks or (3 if args.quick else 40)
    trees = {"this": c.ROOT}
    for item in args.tree or ([] if not args.quick else [f"copy={c.ROOT}"]):
        name, sep, path = item.partition("=")
        if not sep or not name.isidentifier() or name in trees:
            parser.error(f"--tree wants NAME=DIR with a new NAME, got {item!r}")
        trees[name] = Path(path).resolve()
    print(f"# Benchmark 6: store CPU per acquire+release, trees side by side in one process ({c.environment_note()})")
    print(f"# {'PostgreSQL' if args.pg else f'synchronous={args.synchronous}'}; {blocks} interleaved blocks of {block} cycles per tree;"
          " medians of per-block ratios")
    with c.workspace(args.workdir) as where:
        (where / "packages").mkdir(exist_ok=True)
        sys.path.insert(0, str(where / "packages"))
        try:
            cycles = {name: load(name, tree, where, args.synchronous, args.pg) for name, tree in trees.items()}
            spent: dict[str, list[float]] = {name: [] for name in trees}
            names = list(trees)
            for number in range(blocks):
                shift = number % len(names)
                for name in names[shift:] + names[:shift]:
                    once = cycles[name]
                    started = time.thread_time()
                    for _ in range(block):
                        once()
                    spent[name].append((time.thread_time() - started) / block)
            rows = [[name, str(trees[name]), round(c.median(spent[name]) * 1e6, 1),
                     c.median([a / b for a, b in zip(spent[name], spent["this"]) if b])] for name in names]
            print(c.table(["tree", "path", "CPU µs/cycle", "tree/this"], rows))
        finally:
            sys.path.remove(str(where / "packages"))
            if args.pg:
                _drop_databases(args.pg, list(trees))
    return 0


if __name__ == "__main__":
    sys.exit(main())
