"""Encryption at rest, against real servers on both stores.

The database, its WAL and its backups hold no secret in plain text; the master key comes
from the variable or a key file made 0600 on first need; a server whose database holds
accounts it cannot open refuses to start in one line and changes nothing; damaged rows and
key files are clear errors; rotation runs on a live server while workers use accounts.
"""
from __future__ import annotations

import base64
import io
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import urllib3

from support.accounts import new_account, secrets_of
from support import ROOT, LiveServer, eventually, server_env
from telegate.accounts import Vault, key_id_of, new_master_key
from telegate.store import NotFound, open_store


def _env(**extra: str) -> dict[str, str]:
    env = server_env()
    env.update(extra)
    return env


def _serve(db: Path | str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``telegate serve`` that is expected to stop at once (a refused start)."""
    return subprocess.run([sys.executable, "-m", "telegate", "serve", "--port", "0", "--db", str(db), *args],
                          capture_output=True, text=True, encoding="utf-8", env=env, cwd=ROOT, timeout=60,
                          stdin=subprocess.DEVNULL)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "telegate", *args], capture_output=True, text=True, encoding="utf-8", env=env,
                          cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL)


def _accounts_key(server: LiveServer) -> str:
    return server.store.create_key(f"worker-{os.urandom(3).hex()}", "client", accounts=True)


def _put(server: LiveServer, *accounts: dict[str, Any], prefix: str = "acc") -> list[int]:
    answer = server.request("POST", "/sessions", {"sessions": [
        {"name": f"{prefix}{number}", "kind": "telethon", "account": account}
        for number, account in enumerate(accounts)]}, key="admin")
    assert answer.status == 201, answer
    return [row["id"] for row in answer.json["added"]]


def _all_text(store: Any) -> bytes:
    """Every row of every table, as text: what a PostgreSQL dump of the database would hold."""
    tables = ("sessions", "api_keys", "session_events", "session_rests", "accounts", "waiters")
    chunks = []
    for table in tables:
        rows = store.engine.read(lambda tx, table=table: [dict(row) for row in tx.rows(f"SELECT * FROM {table}")])
        chunks.append(json.dumps(rows, default=str))
    return "\n".join(chunks).encode()


def _assert_no_secret(data: bytes, accounts: list[dict[str, Any]], where: str) -> None:
    for account in accounts:
        for name, secret in secrets_of(account).items():
            assert secret not in data, f"{name} found in {where}"


# -- the bytes at rest ------------------------------------------------------------------


def test_database_wal_and_backup_hold_no_secret(fresh_db, tmp_path, db_kind):
    master = new_master_key()
    db = fresh_db()
    server = LiveServer(db, env=_env(TELEGATE_MASTER_KEY=master))
    try:
        accounts = [new_account() for _ in range(5)]
        ids = _put(server, *accounts)
        worker = _accounts_key(server)
        # A hand-out and a write-back that moves the account to another DC with a new key.
        lease = server.request("POST", "/session", {"account": True}, key=worker).json
        moved = base64.b64encode(os.urandom(256)).decode()
        accounts.append({**new_account(), "auth_key": moved})  # its other secrets are not stored: fine
        assert server.request("POST", "/release", {
            "session_id": lease["session_id"], "lease_token": lease["lease_token"],
            "state": {"dc": {"dc_id": 4, "server_address": "149.154.167.92", "port": 443, "auth_key": moved},
                      "entities": [{"id": 5, "hash": 6}]}}, key=worker).status == 200
        got = server.request("GET", f"/sessions/{lease['session_id']}/account", key="admin").json["account"]
        assert got["auth_key"] == moved  # the secret is there, sealed, not lost

        if db_kind == "sqlite":
            wal = Path(f"{db}-wal")
            assert wal.exists() and wal.stat().st_size > 0
            backup = tmp_path / "backup.db"
            done = _cli(_env(), "backup", str(backup), "--db", str(db))
            assert done.returncode == 0, done.stderr
            for path in (Path(db), wal, backup):
                _assert_no_secret(path.read_bytes(), accounts, path.name)
            with open_store(backup, vault=Vault(base64.b64decode(master))) as copy:  # the backup opens with the key
                assert copy.get_account(ids[1]) == accounts[1]
        else:
            _assert_no_secret(_all_text(server.store), accounts, "the PostgreSQL tables")
        # The plain columns are the operator's: profile only.
        rows = server.store.engine.read(lambda tx: [dict(r) for r in tx.rows("SELECT * FROM accounts")])
        assert {row["proxy_host"] for row in rows} == {"socks5://proxy.example:1080"}
        assert {row["phone"] for row in rows} >= {account["phone"] for account in accounts[:5] if account["phone"]}
        assert set(rows[0]) == {"session_id", "master_key_id", "wrapped_key", "sealed", "state", "revision", "phone",
                                "username", "premium", "device", "proxy_host", "updated_at"}
    finally:
        server.close()


def test_migrate_carries_ciphertext_only(tmp_path, pg_url):
    """``telegate migrate`` copies sealed accounts as they are; the copy opens with the same key."""
    master = base64.b64decode(new_master_key())
    source = tmp_path / "source.db"
    accounts = [new_account(), new_account()]
    with open_store(source, vault=Vault(master)) as store:
        store.put_sessions([{"name": f"m{n}", "account": account} for n, account in enumerate(accounts)])
        sealed = store.engine.read(lambda tx: [dict(r) for r in tx.rows("SELECT * FROM accounts ORDER BY session_id")])
    done = _cli(_env(), "migrate", "--db", str(source), "--to", pg_url)
    assert done.returncode == 0, done.stderr
    with open_store(pg_url, vault=Vault(master)) as target:
        copied = target.engine.read(lambda tx: [dict(r) for r in tx.rows("SELECT * FROM accounts ORDER BY session_id")])
        assert copied == sealed
        assert [target.get_account(row["session_id"]) for row in copied] == accounts
        _assert_no_secret(_all_text(target), accounts, "the migrated PostgreSQL tables")


# -- the master key ---------------------------------------------------------------------


def test_key_file_is_made_on_first_need_0600_with_a_warning(tmp_path):
    db = tmp_path / "telegate.db"
    key_file = tmp_path / "telegate.key"
    server = LiveServer(db)  # no TELEGATE_MASTER_KEY: the key file beside the database
    try:
        assert not key_file.exists()  # no account yet: no key needed, none made
        server.add_sessions("plain")
        _put(server, new_account())
        assert key_file.exists()
        if os.name == "posix":
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert "back it up now, somewhere apart from the database" in server.log
        assert key_file.read_text(encoding="ascii").strip() not in server.log
        first = key_file.read_bytes()
        server.restart()  # the same key opens them after a restart
        assert key_file.read_bytes() == first
        assert server.request("GET", "/sessions/2/account", key="admin").status == 200
    finally:
        server.close()


def _sealed_database(db: Path | str, master: bytes, count: int = 3) -> list[dict[str, Any]]:
    accounts = [new_account() for _ in range(count)]
    with open_store(db, vault=Vault(master)) as store:
        store.put_sessions([{"name": f"s{n}", "account": account} for n, account in enumerate(accounts)])
        store.create_key("admin", "admin")
    return accounts


def _fingerprint(db: Path | str) -> Any:
    with open_store(db) as store:
        return _all_text(store)


def test_missing_or_wrong_master_key_refuses_to_start_and_changes_nothing(fresh_db, tmp_path, db_kind):
    db = fresh_db()
    master = os.urandom(32)
    _sealed_database(db, master)
    before = _fingerprint(db)
    key_file = tmp_path / "telegate.key"
    cases = {
        "missing": (_env(), ("--master-key-file", str(key_file)), "no master key is configured"),
        "wrong": (_env(TELEGATE_MASTER_KEY=new_master_key()), (), "wrong key?"),
        "malformed": (_env(TELEGATE_MASTER_KEY="not-a-key"), (), "TELEGATE_MASTER_KEY is not base64"),
        "short": (_env(TELEGATE_MASTER_KEY=base64.b64encode(b"x" * 16).decode()), (), "holds 16 bytes"),
    }
    for case, (env, args, words) in cases.items():
        done = _serve(db, env, *args)
        assert done.returncode == 1, (case, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (case, done.stderr)
        assert env.get("TELEGATE_MASTER_KEY", "<none>") not in done.stderr or case == "missing"
        assert not key_file.exists(), case  # a refused start makes no key file
        assert _fingerprint(db) == before, case
    # A key file holding garbage: one line too.
    key_file.write_text("garbage\n", encoding="ascii")
    done = _serve(db, _env(), "--master-key-file", str(key_file))
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"the master key file {key_file} is not base64" in done.stderr
    assert _fingerprint(db) == before


def test_corrupt_or_moved_rows_are_clear_errors_that_change_nothing(fresh_db):
    master = os.urandom(32)
    db = fresh_db()
    accounts = _sealed_database(db, master)
    server = LiveServer(db, env=_env(TELEGATE_MASTER_KEY=base64.b64encode(master).decode()))
    try:
        store = server.store

        def flip(tx):
            row = tx.row("SELECT sealed FROM accounts WHERE session_id = 1")
            raw = bytearray(base64.b64decode(row["sealed"]))
            raw[-20] ^= 0x01
            tx.run("UPDATE accounts SET sealed = :s WHERE session_id = 1", {"s": base64.b64encode(bytes(raw)).decode()})
            # Session 2's sealed account and data key copied onto session 3's row: bound to 2, they do not open.
            two = tx.row("SELECT wrapped_key, sealed, master_key_id FROM accounts WHERE session_id = 2")
            tx.run("UPDATE accounts SET wrapped_key = :w, sealed = :s, master_key_id = :k WHERE session_id = 3",
                   {"w": two["wrapped_key"], "s": two["sealed"], "k": two["master_key_id"]})

        store.engine.write(flip)
        before = _all_text(store)
        for sid in (1, 3):
            answer = server.request("GET", f"/sessions/{sid}/account", key="admin")
            assert answer.status == 500 and answer.json["error"] == "account_unreadable", answer
            assert f"session {sid}" in answer.json["detail"] and "damaged" in answer.json["detail"]
        good = server.request("GET", "/sessions/2/account", key="admin")
        assert good.status == 200 and good.json["account"] == accounts[1]
        worker = _accounts_key(server)
        # A hand-out of a damaged account gives the lease back and says why.
        for _ in range(3):
            answer = server.request("POST", "/session", {"account": True, "name": "s0"}, key=worker)
            assert answer.status == 500 and answer.json["error"] == "account_unreadable", answer
        assert server.status()["in_use"] == 0
        after = _all_text(store)
        for secret in secrets_of(accounts[0]).values():
            assert secret.decode("latin-1") not in server.log
        assert before.split(b"\n")[4] == after.split(b"\n")[4]  # the accounts table is as it was
    finally:
        server.close()


# -- rotation ---------------------------------------------------------------------------


def test_rotation_on_a_live_server(fresh_db, tmp_path):
    old, new = os.urandom(32), os.urandom(32)
    old_text, new_text = base64.b64encode(old).decode(), base64.b64encode(new).decode()
    db = fresh_db()
    accounts = _sealed_database(db, old, count=40)
    # 1. The server restarts with the new key, the old one as previous: everything still opens.
    server = LiveServer(db, env=_env(TELEGATE_MASTER_KEY=new_text, TELEGATE_PREVIOUS_MASTER_KEYS=old_text))
    try:
        worker = _accounts_key(server)
        errors: list[str] = []
        handed: list[int] = []
        stop = threading.Event()
        http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(30))

        def work() -> None:
            number = 0
            while not stop.is_set():
                lease = http.request("POST", server.url + "/session", body=json.dumps({"account": True}),
                                     headers={"X-API-Key": worker, "Content-Type": "application/json"})
                if lease.status != 200:
                    errors.append(lease.data.decode())
                    continue
                data = json.loads(lease.data)
                handed.append(data["session_id"])
                if data["account"]["auth_key"] != accounts[data["session_id"] - 1]["auth_key"]:
                    errors.append(f"session {data['session_id']}: another auth key")
                number += 1
                done = http.request("POST", server.url + "/release", body=json.dumps({
                    "session_id": data["session_id"], "lease_token": data["lease_token"],
                    "state": {"entities": [{"id": number, "hash": number}]}}),
                    headers={"X-API-Key": worker, "Content-Type": "application/json"})
                if done.status != 200:
                    errors.append(done.data.decode())

        threads = [threading.Thread(target=work) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            eventually(lambda: len(handed) >= 10 or bool(errors), what="hand-outs under way")
            # 2. telegate vault rotate, on the database, while the workers go on.
            done = _cli(_env(TELEGATE_MASTER_KEY=new_text, TELEGATE_PREVIOUS_MASTER_KEYS=old_text),
                        "vault", "rotate", "--db", str(db))
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        assert done.returncode == 0, done.stderr
        assert "rewrapped 40 account data key(s)" in done.stderr and "40 account(s)" in done.stderr
        assert not errors, errors[:3]
        assert len(handed) >= 10
        assert server.store.account_key_ids() == {key_id_of(new): 40}
        # 3. The previous key can go: a restart with the new key alone opens every account.
        server.env = _env(TELEGATE_MASTER_KEY=new_text)
        server.restart()
        for sid in (1, 20, 40):
            answer = server.request("GET", f"/sessions/{sid}/account", key="admin")
            assert answer.status == 200 and answer.json["account"]["auth_key"] == accounts[sid - 1]["auth_key"]
        # Running it again has nothing to do.
        again = _cli(_env(TELEGATE_MASTER_KEY=new_text), "vault", "rotate", "--db", str(db))
        assert again.returncode == 0 and "rewrapped 0 account data key(s)" in again.stderr
    finally:
        server.close()


def test_rotation_without_the_previous_key_says_so_and_changes_nothing(fresh_db):
    old, new = os.urandom(32), new_master_key()
    db = fresh_db()
    _sealed_database(db, old)
    before = _fingerprint(db)
    done = _cli(_env(TELEGATE_MASTER_KEY=new), "vault", "rotate", "--db", str(db))
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"sealed under master key {key_id_of(old)}" in done.stderr and "TELEGATE_PREVIOUS_MASTER_KEYS" in done.stderr
    assert _fingerprint(db) == before


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rotation_shows_progress_on_a_terminal(fresh_db):
    """Long work shows a bar with counts and an ETA on a terminal, erased before the summary line."""
    from telegate.cli import main

    old, new = os.urandom(32), new_master_key()
    db = fresh_db()
    _sealed_database(db, old, count=5)
    err = _Terminal()
    environ = {"TELEGATE_MASTER_KEY": new, "TELEGATE_PREVIOUS_MASTER_KEYS": base64.b64encode(old).decode()}
    assert main(["vault", "rotate", "--db", str(db)], out=io.StringIO(), err=err, environ=environ) == 0
    shown = err.getvalue()
    assert "rewrap  [" in shown and "5/5" in shown and "ETA" in shown
    assert shown.split("\r")[-1].startswith("\x1b[Krewrapped 5 account data key(s)")


def test_vault_keygen_prints_a_fresh_key():
    first, second = (_cli(_env(), "vault", "keygen") for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0
    keys = [done.stdout.strip() for done in (first, second)]
    assert keys[0] != keys[1] and all(len(base64.b64decode(key)) == 32 for key in keys)
    assert keys[0] not in first.stderr


def test_plain_http_override_warns_at_every_start(tmp_path):
    server = LiveServer(tmp_path / "t.db", ("--host", "0.0.0.0", "--allow-plain-http-accounts", "true"),
                        env=_env(TELEGATE_MASTER_KEY=new_master_key()))
    try:
        assert "--allow-plain-http-accounts" in server.log and "plain HTTP" in server.log
        _put(server, new_account())
        lease = server.request("POST", "/session", {"account": True}, key=_accounts_key(server))
        assert lease.status == 200 and "account" in lease.json
        server.restart()
        assert "--allow-plain-http-accounts" in server.log
    finally:
        server.close()


def test_a_waiting_worker_gets_a_session_with_an_account(fresh_db):
    """A long-poll for an account is not handed a plain session that frees up, and gets the account
    when one does."""
    server = LiveServer(fresh_db(), env=_env(TELEGATE_MASTER_KEY=new_master_key()))
    try:
        (sid,) = _put(server, new_account())
        server.add_sessions("plain")
        worker = _accounts_key(server)
        held = server.request("POST", "/session", {"account": True}, key=worker).json
        plain = server.request("POST", "/session", {"name": "plain"}, key=worker).json
        answers: list[Any] = []
        waiter = threading.Thread(target=lambda: answers.append(
            server.request("POST", "/session", {"account": True, "wait": 30}, key=worker)))
        waiter.start()
        eventually(lambda: server.status()["waiting_workers"] == 1, what="the waiter in line")
        assert server.request("POST", "/release", {"session_id": plain["session_id"],
                                                   "lease_token": plain["lease_token"]}, key=worker).status == 200
        assert server.status()["waiting_workers"] == 1  # the plain session is not for it
        assert server.request("POST", "/release", {"session_id": sid, "lease_token": held["lease_token"]},
                              key=worker).status == 200
        waiter.join(30)
        assert answers and answers[0].status == 200, answers
        assert answers[0].json["session_id"] == sid and answers[0].json["account"]["dc_id"] == 2
    finally:
        server.close()


def test_plain_http_to_a_non_loopback_listener_is_refused(tmp_path):
    server = LiveServer(tmp_path / "t.db", ("--host", "0.0.0.0"), env=_env(TELEGATE_MASTER_KEY=new_master_key()))
    try:
        ids = _put_direct(server)
        refused = server.request("POST", "/session", {"account": True}, key=_accounts_key(server))
        assert refused.status == 403 and refused.json["error"] == "tls_required" and "docs/TLS.md" in refused.json["detail"]
        assert server.request("GET", f"/sessions/{ids[0]}/account", key="admin").status == 403
        assert server.status()["in_use"] == 0
        plain = server.request("POST", "/session", {}, key="client")  # names only: as before
        assert plain.status == 200 and "account" not in plain.json
    finally:
        server.close()


def _put_direct(server: LiveServer) -> list[int]:
    """Accounts stored through the CLI on the database (the server refuses them over plain HTTP)."""
    key = server.env["TELEGATE_MASTER_KEY"]
    with open_store(server.db_path, vault=Vault(base64.b64decode(key))) as store:
        return [row["id"] for row in store.put_sessions([{"name": "direct", "account": new_account()}])["added"]]


def test_keys_create_with_accounts_on_the_command_line(tmp_path):
    db = tmp_path / "t.db"
    made = _cli(_env(), "keys", "create", "w1", "--accounts", "--db", str(db))
    plain = _cli(_env(), "keys", "create", "w2", "--db", str(db))
    assert made.returncode == 0 and plain.returncode == 0, made.stderr
    assert "may receive accounts" in made.stderr
    with open_store(db) as store:
        assert store.authenticate(made.stdout.strip()).accounts is True
        assert store.authenticate(plain.stdout.strip()).accounts is False
    listed = _cli(_env(), "keys", "list", "--db", str(db)).stdout.splitlines()
    assert [line.split()[0] for line in listed if line.rstrip().endswith("accounts")] == ["w1"]


def test_a_confined_key_gets_accounts_of_its_groups_alone(fresh_db):
    """Accounts stored with groups (POST /sessions items) keep them; a key confined to a group
    is handed out, and may read, its group's accounts alone; the admin's view shows the
    account's plain columns beside the groups."""
    server = LiveServer(fresh_db(), env=_env(TELEGATE_MASTER_KEY=new_master_key()))
    try:
        eu, us = new_account(), new_account()
        answer = server.request("POST", "/sessions", {"sessions": [
            {"name": "eu1", "kind": "telethon", "groups": ["EU"], "account": eu},
            {"name": "us1", "kind": "telethon", "groups": ["us"], "account": us}]}, key="admin")
        assert answer.status == 201, answer
        ids = {row["name"]: row["id"] for row in answer.json["added"]}
        listed = {row["name"]: row for row in server.request("GET", "/sessions", key="admin").json["sessions"]}
        assert listed["eu1"]["groups"] == ["eu"] and listed["us1"]["groups"] == ["us"]
        assert listed["eu1"]["has_account"] and listed["eu1"]["phone"] == eu["phone"]
        assert listed["us1"]["username"] == us["username"] and listed["us1"]["premium"] is False
        worker = server.store.create_key(f"eu-{os.urandom(3).hex()}", "client", accounts=True, groups=["eu"])
        held = server.request("POST", "/session", {"account": True}, key=worker)
        assert held.status == 200 and held.json["session_id"] == ids["eu1"], held
        assert held.json["account"]["auth_key"] == eu["auth_key"]
        # Its group's one account is leased: nothing else is there for it, the us account neither.
        again = server.request("POST", "/session", {"account": True}, key=worker)
        assert again.status == 503 and again.json["total"] == 1, again
        key = server.store.authenticate(worker)
        assert key is not None and key.groups == ("eu",)
        with pytest.raises(NotFound):  # to it the us session is not registered: refused before any opening
            server.store.get_account(ids["us1"], reader=key)
        # (its own group's account it read above, with its lease; this store holds no master key)
    finally:
        server.close()
