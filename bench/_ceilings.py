"""The two ceilings TeleGate is measured against, served like ``telegate serve`` serves.

``python bench/_ceilings.py noop``   ceiling A: Bottle routes answering fixed JSON.
``python bench/_ceilings.py sqlite`` ceiling B: the same routes, each doing one durable
SQLite write (WAL, synchronous=FULL, ``BEGIN IMMEDIATE`` ... ``COMMIT``), with the same
in-process write lock TeleGate's store takes, so threads never meet SQLite's sleeping
busy handler.

Both listen through TeleGate's own ``bind_socket`` and are served by TeleGate's own
waitress server (``telegate.serve.create_server``: its channel class) with the options
``telegate serve`` uses (``telegate.serve.waitress_options``: threads, connection limit,
backlog, poll, body limit), so the only difference from TeleGate is what the route does.
"""
from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))

import bottle  # noqa: E402
from telegate.serve import bind_socket, create_server, waitress_options  # noqa: E402
from telegate.settings import Settings  # noqa: E402

LEASE = json.dumps({"session_id": 1, "session_name": "acc000001", "lease_token": "x" * 24,
                    "lease_expires_at": "2030-01-01T00:00:00.000Z", "ttl": 60, "kind": "unknown", "meta": {}})
RELEASED = json.dumps({"status": "released"})


def make_app(kind: str, db: Path) -> bottle.Bottle:
    app = bottle.Bottle()
    write = None
    if kind == "sqlite":
        local = threading.local()
        lock = threading.Lock()
        setup = sqlite3.connect(str(db), isolation_level=None)
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        setup.execute("INSERT OR IGNORE INTO counter VALUES (1, 0)")
        setup.close()

        def write() -> None:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            with lock:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
                conn.execute("COMMIT")

    def answer(body: str) -> bottle.HTTPResponse:
        bottle.request.body.read()
        if write is not None:
            write()
        response = bottle.HTTPResponse(body)
        response.content_type = "application/json"
        return response

    app.route("/session", "POST", lambda: answer(LEASE))
    app.route("/release", "POST", lambda: answer(RELEASED))
    app.route("/renew", "POST", lambda: answer(LEASE))
    app.route("/healthz", "GET", lambda: answer(RELEASED))
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("noop", "sqlite"))
    parser.add_argument("--db", type=Path, default=Path("ceiling.db"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--access-log", default=None, help="accepted for symmetry with telegate serve; ignored")
    args = parser.parse_args()
    settings = Settings()
    threads = args.threads or settings.threads
    # As in telegate serve: no log line per queued request (a ceiling does no logging).
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    sock = bind_socket("127.0.0.1", 0)
    # The same waitress arguments as telegate serve, from the same function.
    options = waitress_options(settings)
    options["threads"] = threads
    server = create_server(make_app(args.kind, args.db), sock, **options)
    host, port = sock.getsockname()[:2]
    print(f"ceiling {args.kind} listening on http://{host}:{port} ({threads} threads)", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    from telegate._stop import StopHandlers
    StopHandlers()  # stopped like serve: SIGTERM, SIGINT, Ctrl-Break
    sys.exit(main())
