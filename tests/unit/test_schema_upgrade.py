"""Every database an earlier TeleGate made still opens, upgrades to this schema, and keeps its pool.

The fixtures (``tests/fixtures/schema``) were made by the code of each earlier schema
version itself (``make.py`` there): SQLite files, and for the versions that ran on
PostgreSQL a plain ``pg_dump`` restored here. ``vN.json`` is what that code saw of its
pool; the upgraded pool must show the same, and go on leasing.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from telegate.store import SCHEMA_VERSION, NoSessionAvailable, open_store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "schema"
SQLITE_VERSIONS = sorted(int(path.stem.split("-v")[1]) for path in FIXTURES.glob("sqlite-v*.db"))
POSTGRES_VERSIONS = sorted(int(path.stem.split("-v")[1]) for path in FIXTURES.glob("postgres-v*.sql"))
COMPARED = ("id", "name", "kind", "meta", "disabled", "disabled_reason", "holder", "use_count", "flood_count",
            "lease_expires_at", "flood_wait_until", "created_at", "last_released_at", "state")


#: The schema versions a TeleGate that shipped (landed on main) wrote: each has a fixture made
#: by that version's code. When a release ships a newer version, add it here and make its
#: fixture from the commit that landed it (make.py's VERSIONS and ``--only``). No release
#: ever wrote version 1, and 6-9 were written and replaced within one session.
SHIPPED = [2, 3, 4, 5, 10]


def test_every_earlier_version_has_a_fixture():
    """Every shipped schema version has a fixture (see make.py), and this code is at or past it."""
    assert SQLITE_VERSIONS == SHIPPED
    assert POSTGRES_VERSIONS == [version for version in SHIPPED if version >= 3]  # PostgreSQL support began at 3
    assert SCHEMA_VERSION >= SHIPPED[-1]


def _manifest(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def _as_now(row: dict[str, Any], rests: list) -> dict[str, Any]:
    """A session as the earlier code showed it, in today's words: a free session resting for
    some methods is ``resting_scoped`` since issue 16's groups (plain acquires skip it)."""
    shown = {k: row[k] for k in COMPARED}
    if shown["state"] == "free" and rests:
        shown["state"] = "resting_scoped"
    return shown


def _check_upgraded(db: Path | str, seen: dict[str, Any]) -> None:
    later = seen["now"] + 100.0
    with open_store(db, clock=lambda: later) as store:
        assert store.schema_version() == SCHEMA_VERSION
        sessions = store.list_sessions()[0]
        assert [{k: row[k] for k in COMPARED} for row in sessions] == \
            [_as_now(row, seen["rests"][row["name"]]) for row in seen["sessions"]]
        assert {row["name"]: row["rests"] for row in sessions} == seen["rests"]
        events = {row["name"]: len(store.events(row["id"])) for row in sessions}
        assert events == (seen["events"] or {name: 0 for name in events})
        worker = store.authenticate(seen["client_key"])
        assert worker is not None and (worker.name, worker.scope) == ("worker", "client")
        assert store.authenticate(seen["admin_key"]) is None and store.has_key(seen["admin_key"])
        keys = {row["name"]: row for row in store.list_keys()}
        assert keys["old-admin"]["revoked_at"] is not None and keys["worker"]["revoked_at"] is None
        assert keys["worker"]["leases"] == (1 if seen["schema_version"] >= 3 else 0)  # v2 leases had no key
        # The lease taken before the upgrade is still its holder's to end...
        lease = seen["lease"]
        assert store.release(lease["session_id"], lease["token"], key=worker)
        # ...and the pool goes on: what is free (and rests for no method) is leased least
        # recently used first, the session just released last; then nothing is left.
        free = [row["name"] for row in sorted(sessions, key=lambda row: (row["last_released_at"] or 0, row["id"]))
                if row["state"] == "free" and not row["rests"]]
        assert [store.acquire(60, key=worker).session_name for _ in range(len(free) + 1)] == free + ["leased"]
        with pytest.raises(NoSessionAvailable):
            store.acquire(60, key=worker)


@pytest.mark.parametrize("version", SQLITE_VERSIONS)
def test_a_sqlite_file_of_each_earlier_version_upgrades_and_keeps_its_pool(tmp_path, version):
    db = tmp_path / "old.db"
    shutil.copyfile(FIXTURES / f"sqlite-v{version}.db", db)
    _check_upgraded(db, _manifest(f"v{version}.json"))
    with open_store(db) as again:  # and opens again as it is now
        assert again.schema_version() == SCHEMA_VERSION


@pytest.mark.parametrize("version", POSTGRES_VERSIONS)
def test_a_postgresql_database_of_each_earlier_version_upgrades_and_keeps_its_pool(pg_url, version):
    import psycopg

    dump = (FIXTURES / f"postgres-v{version}.sql").read_text(encoding="utf-8")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(dump)  # no parameters: sent as one simple query, statement after statement
    _check_upgraded(pg_url, _manifest(f"v{version}-pg.json"))
