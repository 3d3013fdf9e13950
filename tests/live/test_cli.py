"""The ``telegate`` command: sessions, keys, status, serve's first start, and one-line errors."""
from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import urllib3

from support import ROOT, server_env
from support.cli import run, run_process
from support.terminal import on_terminal
from telegate._stop import new_group_flags, request_stop
from telegate.cli import main
from telegate.store import open_store


@pytest.fixture
def db(fresh_db) -> str:
    """An empty database on each store: a SQLite file path, or a PostgreSQL URL."""
    return str(fresh_db())


def test_keys_create_prints_only_the_key(tmp_path, db):
    proc = run_process("keys", "create", "worker1", "--db", db)
    assert proc.returncode == 0
    key = proc.stdout.strip()
    assert re.fullmatch(r"tg_[A-Za-z0-9_-]{43}", key), proc.stdout
    assert "worker1" in proc.stderr
    with open_store(db) as store:
        assert store.authenticate(key).scope == "client"
    code, out, _ = run("keys", "create", "boss", "--admin", "--db", db)
    with open_store(db) as store:
        assert store.authenticate(out.strip()).scope == "admin"


def test_keys_list_and_revoke(db):
    _, key, _ = run("keys", "create", "w", "--db", db)
    code, out, _ = run("keys", "list", "--db", db)
    assert code == 0 and "w" in out and "client" in out and "active" in out
    assert key.strip() not in out
    assert run("keys", "revoke", "w", "--db", db)[0] == 0
    assert "revoked" in run("keys", "list", "--db", db)[1]
    with open_store(db) as store:
        assert store.authenticate(key.strip()) is None
    code, _, err = run("keys", "revoke", "w", "--db", db)
    assert code == 1 and err.count("\n") == 1 and "no active key named 'w'" in err
    assert run("keys", "create", "w", "--db", db)[0] == 0, "a revoked key's name can be reused"
    code, _, err = run("keys", "create", "w", "--db", db)
    assert code == 1 and "exists" in err


def test_sessions_add_list_disable_enable_remove(db):
    code, _, err = run("sessions", "add", "acc1", "acc2", "--db", db, "--meta", '{"proxy": "p1"}')
    assert code == 0 and "added 2" in err
    assert "already registered" in run("sessions", "add", "acc1", "--db", db)[2]
    code, out, _ = run("sessions", "list", "--db", db)
    assert "acc1" in out and "free" in out
    assert run("sessions", "disable", "acc1", "--reason", "banned", "--db", db)[0] == 0
    code, out, _ = run("sessions", "list", "--state", "disabled", "--db", db)
    assert "acc1" in out and "banned" in out and "acc2" not in out
    rows = json.loads(run("sessions", "list", "--json", "--db", db)[1])["sessions"]  # one document
    assert [(r["name"], r["state"], r["meta"]) for r in rows] == [("acc1", "disabled", {"proxy": "p1"}),
                                                                 ("acc2", "free", {"proxy": "p1"})]
    assert run("sessions", "enable", "acc1", "--db", db)[0] == 0
    assert "disabled: 0" in run("status", "--db", db)[1]
    code, _, err = run("sessions", "remove", "acc2", "ghost", "--db", db)
    assert code == 1 and "not registered: ghost" in err
    assert "total: 1" in run("status", "--db", db)[1]


def test_sessions_add_from_file_and_stdin(tmp_path, db):
    names = tmp_path / "names.txt"
    names.write_text("# my accounts\nacc1\n\n  acc2  \nacc1\n", encoding="utf-8")
    code, _, err = run("sessions", "add", "--from-file", str(names), "--db", db)
    assert code == 0 and "added 2" in err
    code, _, err = run("sessions", "add", "--from-file", "-", "--db", db, stdin="acc3\nacc4\n")
    assert code == 0 and "added 2" in err
    assert "total: 4" in run("status", "--db", db)[1]


def test_sessions_add_100k_names(tmp_path, db):
    names = tmp_path / "many.txt"
    names.write_text("\n".join(f"acc{n:06d}" for n in range(100_000)), encoding="utf-8")
    code, _, err = run("sessions", "add", "--from-file", str(names), "--db", db)
    assert code == 0 and "added 100000" in err
    with open_store(db) as store:
        assert store.status()["total"] == 100_000
        assert store.acquire(60).session_name == "acc000000"


def test_sessions_import_tells_telethon_from_pyrogram(tmp_path, db):
    from pyrogram.storage.sqlite_storage import SCHEMA as PYROGRAM_SCHEMA
    from telethon.sessions import SQLiteSession

    folder = tmp_path / "sessions"
    folder.mkdir()
    telethon_session = SQLiteSession(str(folder / "tele1"))  # writes tele1.session
    telethon_session.save()
    telethon_session.close()
    with sqlite3.connect(folder / "pyro1.session") as conn:
        conn.executescript(PYROGRAM_SCHEMA)
    conn.close()
    (folder / "junk.session").write_bytes(b"this is not sqlite")
    (folder / "notes.txt").write_text("ignored", encoding="utf-8")
    code, _, err = run("sessions", "import", str(folder), "--db", db)
    assert code == 0
    assert "warning: skipped junk.session" in err
    assert "imported 2 session(s)" in err
    rows = {r["name"]: r["kind"] for r in map(json.loads, run("sessions", "list", "--jsonl", "--db", db)[1].splitlines())}
    assert rows == {"tele1": "telethon", "pyro1": "pyrogram"}


@pytest.mark.parametrize("argv,words", [
    (["status", "--db", "missing.db"], "does not exist"),
    (["sessions", "list", "--db", "missing.db"], "does not exist"),
    (["sessions", "add", "--db", "{db}"], "no names given"),
    (["sessions", "add", "x", "--meta", "[1]", "--db", "{db}"], "--meta must be a JSON object"),
    (["sessions", "add", "x", "--meta", "{bad", "--db", "{db}"], "--meta is not valid JSON"),
    (["sessions", "add", "--from-file", "nope.txt", "--db", "{db}"], "cannot read nope.txt"),
    (["sessions", "import", "no-such-dir", "--db", "{db}"], "is not a folder"),
    (["serve", "--port", "70000", "--db", "{db}"], "--port: expected a whole number from 0 to 65535"),
    (["serve", "--threads", "lots", "--db", "{db}"], "--threads"),
])
def test_errors_are_one_line_and_non_zero(tmp_path, db, argv, words):
    argv = [a.replace("{db}", db) for a in argv]
    proc = run_process(*argv, cwd=tmp_path)
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith("telegate: error:") and proc.stderr.count("\n") == 1, proc.stderr
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr


def test_telegate_db_environment_variable(tmp_path):
    env = {"TELEGATE_DB": str(tmp_path / "env.db")}
    assert run_process("sessions", "add", "a", env=env, cwd=tmp_path).returncode == 0
    assert "total: 1" in run_process("status", env=env, cwd=tmp_path).stdout
    assert (tmp_path / "env.db").exists() and not (tmp_path / "telegate.db").exists()


class Serving:
    """``telegate serve`` as a user starts it: no keys prepared, output read line by line."""

    def __init__(self, db: str, env: dict | None = None, *args: str, terminal: bool = False) -> None:
        command = [sys.executable, "-m", "telegate", "serve", "--port", "0", "--db", db, *args]
        if terminal:
            self.proc, self.stream = on_terminal(command, env={**server_env(), **(env or {})}, cwd=ROOT,
                                                 stdin=subprocess.DEVNULL)
        else:
            self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                         encoding="utf-8", env={**server_env(), **(env or {})}, cwd=ROOT,
                                         creationflags=new_group_flags())
            self.stream = self.proc.stdout
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()
        assert self.ready.wait(30), "".join(self.lines)
        assert self.proc.poll() is None, "".join(self.lines)

    def _drain(self) -> None:
        for line in self.stream:
            self.lines.append(line)
            if "listening on" in line:
                self.ready.set()
        self.ready.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def interrupt(self) -> int:
        request_stop(self.proc)
        code = self.proc.wait(15)
        self.reader.join(5)
        return code


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal (pty) is POSIX only")
def test_first_start_creates_and_prints_an_admin_key_once(db):
    first = Serving(db, terminal=True)
    keys = re.findall(r"tg_[A-Za-z0-9_-]{43}", first.output)
    assert len(keys) == 1
    with open_store(db) as store:
        assert store.authenticate(keys[0]).scope == "admin"
    assert first.interrupt() == 0
    assert "TeleGate stopped" in first.output
    second = Serving(db, terminal=True)
    assert not re.search(r"tg_[A-Za-z0-9_-]{43}", second.output)
    second.interrupt()


def test_first_admin_key_goes_to_a_private_file_when_output_is_no_terminal(tmp_path):
    """M3: a log (a pipe, a file, journald) keeps what it is sent: the key goes to a 0600 file
    that the output names, and never to the output itself."""
    db = str(tmp_path / "pool.db")
    first = Serving(db)
    assert first.interrupt() == 0
    assert not re.search(r"tg_[A-Za-z0-9_-]{43}", first.output), first.output
    path = Path(str(db) + ".admin-key")
    assert str(path) in first.output and "not a terminal" in first.output
    key = path.read_text(encoding="utf-8").strip()
    with open_store(db) as store:
        assert store.authenticate(key).scope == "admin"
    if sys.platform != "win32":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_telegate_admin_key_registers_that_key_and_leaves_the_workers_key_alone(db):
    own = "my-own-secret-key-of-32-characters"  # shorter keys are refused (tests/test_hygiene.py)
    worker = "the-workers-key-on-this-machine-000"
    server = Serving(db, {"TELEGATE_ADMIN_KEY": own, "TELEGATE_API_KEY": worker})
    assert own not in server.output and worker not in server.output and "tg_" not in server.output
    assert "deprecated" not in server.output
    server.interrupt()
    with open_store(db) as store:
        assert store.authenticate(own).scope == "admin"
        assert store.authenticate(worker) is None  # the SDK's variable is not an admin key
        assert store.count_keys() == 1


def test_telegate_api_key_still_registers_an_admin_key_with_a_deprecation_warning(db):
    own = "my-own-secret-key-of-32-characters"
    server = Serving(db, {"TELEGATE_API_KEY": own})
    assert own not in server.output and "tg_" not in server.output
    server.interrupt()
    assert "registering TELEGATE_API_KEY as an admin key is deprecated" in server.output
    assert "set TELEGATE_ADMIN_KEY" in server.output
    with open_store(db) as store:
        assert store.authenticate(own).scope == "admin"
        assert store.count_keys() == 1


def test_serve_registers_sessions_dir(tmp_path, db):
    from telethon.sessions import SQLiteSession

    folder = tmp_path / "sess"
    folder.mkdir()
    for name in ("a", "b"):
        SQLiteSession(str(folder / name)).close()
    server = Serving(db, {"TELEGATE_API_KEY": os.urandom(24).hex()}, "--sessions-dir", str(folder))  # no key file
    server.interrupt()
    with open_store(db) as store:
        assert store.status()["total"] == 2


def test_no_database_password_reaches_the_banner_the_log_or_an_error(pg_url, tmp_path):
    """M3: a password in the --db URL is never printed: banner, log lines, CLI errors."""
    secret = os.urandom(8).hex()
    user, _, rest = pg_url.partition("://")[2].partition("@")
    with_password = f"postgresql://{user}:{secret}@{rest}"  # trust auth: the password is not checked
    serving = Serving(with_password, {"TELEGATE_API_KEY": os.urandom(24).hex()}, "--log-level", "debug")
    try:
        reply = urllib3.request("GET", serving.output.split("listening on ")[1].split()[0] + "/healthz")
        assert reply.status == 200
    finally:
        serving.interrupt()
    assert secret not in serving.output and "database postgresql://" in serving.output
    assert f"{user}:***@" in serving.output or f"{user}@" in serving.output
    err = io.StringIO()
    unreachable = f"postgresql://{user}:{secret}@127.0.0.1:1/nowhere?connect_timeout=2"
    assert main(["status", "--db", unreachable], out=io.StringIO(), err=err) == 1
    assert secret not in err.getvalue() and "error" in err.getvalue()
