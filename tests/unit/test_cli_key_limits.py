"""`telegate keys` on a database file (--db, no server): lease limits, leases held, --keep-leases."""
from __future__ import annotations

import io

import pytest

from telegate.cli import main
from telegate.store import LeaseLimit, open_store


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, stdin=io.StringIO(""), environ={})
    return code, out.getvalue(), err.getvalue()


def test_limits_leases_and_revocation_offline(tmp_path):
    db = str(tmp_path / "pool.db")
    assert run("sessions", "add", "a", "b", "c", "d", "--db", db)[0] == 0
    code, key, err = run("keys", "create", "capped", "--max-leases", "2", "--db", db)
    assert code == 0 and "2 lease" in err
    code, kept, _ = run("keys", "create", "kept", "--db", db)
    with open_store(db) as store:
        capped_info, kept_info = store.authenticate(key.strip()), store.authenticate(kept.strip())
        assert capped_info.max_leases == 2
        for _ in range(2):
            store.acquire(3600, key=capped_info)
        with pytest.raises(LeaseLimit):
            store.acquire(3600, key=capped_info)
        store.acquire(3600, key=kept_info)
    code, listing, _ = run("keys", "list", "--db", db)
    lines = {line.split()[0]: line for line in listing.splitlines() if line.split()}
    assert "max 2" in lines["capped"] and "2 lease" in lines["capped"]
    assert "no limit" in lines["kept"] and "1 lease" in lines["kept"]
    assert run("keys", "revoke", "kept", "--keep-leases", "--db", db)[0] == 0
    assert run("keys", "revoke", "capped", "--db", db)[0] == 0
    with open_store(db) as store:
        states = sorted((row["state"], row["lease_key"]) for row in store.list_sessions()[0])
    assert states == [("free", None), ("free", None), ("free", None), ("in_use", "kept")]
