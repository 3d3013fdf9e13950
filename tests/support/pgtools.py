"""A real PostgreSQL for the tests: find it, make a throwaway database, drop it afterwards.

The server is ``$TELEGATE_TEST_PG`` (a libpq URL of a database we may CREATE DATABASE
from; ``.ci/run`` exports it), else ``postgresql://postgres@127.0.0.1:5432/postgres``.
Where none answers, PostgreSQL tests skip with one line saying so, except under CI
(``CI=true``), where a missing PostgreSQL is a failure: CI must test both stores.
"""
from __future__ import annotations

import os
import secrets
import socket
import zlib
from functools import lru_cache

import pytest

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

#: This machine, in test database names (a PostgreSQL may serve several machines' runs).
_HOST = format(zlib.crc32(socket.gethostname().encode()), "08x")


def admin_url() -> str:
    return os.environ.get("TELEGATE_TEST_PG") or DEFAULT_ADMIN_URL


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


@lru_cache(maxsize=None)
def unreachable_reason() -> str | None:
    """Why no PostgreSQL can be used for tests, or None when one answers."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install '.[test]')"
    try:
        with psycopg.connect(admin_url(), connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"no PostgreSQL at {_safe(admin_url())} ({first}); set TELEGATE_TEST_PG"
    return None


def require_postgres() -> None:
    """Skip (fail under CI) unless a PostgreSQL answers."""
    reason = unreachable_reason()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI needs PostgreSQL: {reason}", pytrace=False)
    pytest.skip(reason)


def _safe(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def _with_dbname(url: str, dbname: str) -> str:
    from urllib.parse import quote, urlencode

    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    # A URL, so that TeleGate's --db sees "postgresql://" and picks the PostgreSQL store.
    user = info.get("user", "")
    password = info.get("password")
    host = info.get("host", "127.0.0.1")
    port = info.get("port", "5432")
    auth = quote(user) + (f":{quote(password)}" if password else "") + "@" if user else ""
    extra = {k: v for k, v in info.items() if k not in {"user", "password", "host", "port", "dbname"}}
    query = urlencode(extra)
    return f"postgresql://{auth}{host}:{port}/{dbname}" + (f"?{query}" if query else "")


class Databases:
    """Creates databases named telegate_test_<host>_<pid>_<random>_<n> and drops them all at the end."""

    def __init__(self) -> None:
        import psycopg

        self.run = f"{_HOST}_{os.getpid()}_{secrets.token_hex(3)}"
        self.created: list[str] = []
        self._admin = psycopg.connect(admin_url(), autocommit=True, connect_timeout=5)
        self._numbered: list[str] = []
        self._drop_left_behind()

    def _drop_left_behind(self) -> None:
        """Drop this host's test databases whose pytest process is gone (a run killed before
        its teardown); a live run's databases, and other hosts', are left alone."""
        prefix = f"telegate_test_{_HOST}_"
        names = [row[0] for row in self._admin.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,))]
        for name in names:
            pid = name[len(prefix):].split("_", 1)[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}") and os.path.exists("/proc/self"):
                try:
                    self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                except Exception:  # someone else's cleanup got there first, or no right to: leave it
                    pass

    def create(self) -> str:
        """A new empty database; its URL."""
        name = f"telegate_test_{self.run}_{len(self.created)}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        # A commit returns once it is in PostgreSQL's memory, without waiting for the disk
        # (fsync). Transactions, locks and what every connection sees are unchanged: only a
        # crash of the machine (or of PostgreSQL) could lose the last commits, and no test
        # crashes either; a test waiting on a shared disk's flush is testing the disk.
        self._admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        self.created.append(name)
        return _with_dbname(admin_url(), name)

    def scratch(self) -> str:
        """A database apart from the numbered ones, for tests about PostgreSQL alone."""
        if not hasattr(self, "_scratch"):
            self._scratch = self.create()
        return self._scratch

    def numbered(self, n: int) -> str:
        """The n-th of the databases tests reuse (emptied with :meth:`reset` before each use)."""
        while len(self._numbered) <= n:
            self._numbered.append(self.create())
        return self._numbered[n]

    def reset(self, url: str) -> str:
        """Empty ``url``'s database (schema and all) in place: far cheaper than a new database."""
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        return url

    def terminate_connections(self, url: str, application_name: str | None = "telegate") -> int:
        """pg_terminate_backend on every connection to ``url``'s database (TeleGate's, by default)."""
        from psycopg.conninfo import conninfo_to_dict

        dbname = conninfo_to_dict(url)["dbname"]
        rows = self._admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()"
            " AND (%s::text IS NULL OR application_name = %s::text)",
            (dbname, application_name, application_name)).fetchall()
        return len(rows)

    def drop_all(self) -> None:
        for name in self.created:
            try:
                self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:  # leave the others to be dropped
                print(f"could not drop test database {name}: {exc}")
        self.created.clear()
        self._admin.close()
