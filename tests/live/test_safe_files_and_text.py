"""Private files, an access log that cannot be forged, no invisible
characters in names and reasons, imports that skip what is not a file, backups that do
not overwrite by accident, and no weak bootstrap key.

(The HTTP side of the text rule is in tests/live/test_bad_input.py and the hostile-input
table in tests/live/test_reliability_hostile.py.)
"""
from __future__ import annotations

import io
import logging
import os
import re
import sqlite3
import stat
import sys
from pathlib import Path

import pytest

from support import LiveServer, wait_for_log
from support.cli import run, run_process
from telegate._files import create_private
from telegate._sessionfiles import scan_dir
from telegate._text import escape, find_unsafe, text_pattern, unsafe_detail
from telegate.app import access_logged
from telegate.store import open_store

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")


def mode_of(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    """The usual umask, under which files are created 0644 unless asked otherwise."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def telethon_file(path: Path) -> None:
    from telethon.sessions import SQLiteSession

    session = SQLiteSession(str(path.with_suffix("")))  # writes NAME.session
    session.save()
    session.close()


# -- file modes --------------------------------------------------------------------------------


@posix_only
def test_create_private_makes_an_owner_only_file_and_leaves_existing_ones_alone(tmp_path, umask_022):
    made = tmp_path / "new.db"
    assert create_private(made) is True
    assert mode_of(made) == 0o600 and made.stat().st_size == 0
    existing = tmp_path / "old.db"
    existing.write_bytes(b"keep me")
    existing.chmod(0o644)
    assert create_private(existing) is False
    assert mode_of(existing) == 0o644 and existing.read_bytes() == b"keep me"
    dangling = tmp_path / "link.db"
    dangling.symlink_to(tmp_path / "elsewhere.db")
    assert create_private(dangling) is False  # O_EXCL: never follows a link to create its target
    assert not (tmp_path / "elsewhere.db").exists()


@posix_only
def test_sqlite_gives_wal_and_shm_the_database_files_mode(tmp_path, umask_022):
    """What _files.py relies on: SQLite copies the database's mode to the files it makes beside it."""
    def wal_database(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        return conn

    usual = wal_database(tmp_path / "usual.db")
    private_path = tmp_path / "private.db"
    create_private(private_path)
    private = wal_database(private_path)
    try:
        for suffix in ("", "-wal", "-shm"):
            assert mode_of(f"{tmp_path / 'usual.db'}{suffix}") == 0o644  # what happens without the helper
            assert mode_of(f"{private_path}{suffix}") == 0o600
    finally:
        usual.close()
        private.close()


@posix_only
def test_store_creates_its_database_wal_and_shm_owner_only(tmp_path, umask_022):
    """Needs the SQLite engine to call create_private(path) before sqlite3.connect (issue 8)."""
    path = tmp_path / "pool.db"
    with open_store(path) as store:
        store.add_sessions(["a"])
        store.acquire(60)
        for suffix in ("", "-wal", "-shm"):
            assert mode_of(f"{path}{suffix}") == 0o600, suffix


@posix_only
def test_backup_is_owner_only_even_when_replacing_a_readable_file(tmp_path, umask_022):
    db = str(tmp_path / "pool.db")
    assert run("sessions", "add", "a", "--db", db)[0] == 0
    fresh = tmp_path / "fresh.db"
    assert run("backup", str(fresh), "--db", db)[0] == 0
    assert mode_of(fresh) == 0o600
    old = tmp_path / "old.db"
    old.write_bytes(b"yesterday")
    old.chmod(0o644)
    assert run("backup", str(old), "--force", "--db", db)[0] == 0
    assert mode_of(old) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("pool.db")) == ["fresh.db", "old.db"]


# -- backup refuses to overwrite ---------------------------------------------------------------


def test_backup_refuses_an_existing_file_without_force(tmp_path):
    db = str(tmp_path / "pool.db")
    assert run("sessions", "add", "a", "b", "--db", db)[0] == 0
    target = tmp_path / "precious.db"
    target.write_bytes(b"not to be lost")
    proc = run_process("backup", str(target), "--db", db)
    assert proc.returncode == 1
    assert proc.stderr == f"telegate: error: {target} exists; pass --force to replace it\n"
    assert target.read_bytes() == b"not to be lost"

    code, _, err = run("backup", str(target), "--force", "--db", db)
    assert code == 0, err
    with open_store(target) as copy:
        assert copy.integrity_check() == "ok"
        assert copy.status()["total"] == 2


@pytest.mark.parametrize("case", ["the database itself", "a database with a -wal file", "a folder"])
def test_backup_with_force_still_refuses_what_would_break(tmp_path, case):
    db = tmp_path / "pool.db"
    assert run("sessions", "add", "a", "--db", str(db))[0] == 0
    target = {"the database itself": db, "a database with a -wal file": tmp_path / "live.db",
              "a folder": tmp_path / "folder"}[case]
    if case == "a database with a -wal file":
        target.write_bytes(b"live")
        Path(f"{target}-wal").write_bytes(b"frames")
    if case == "a folder":
        target.mkdir()
    before = db.read_bytes()
    code, _, err = run("backup", str(target), "--force", "--db", str(db))
    assert code == 1 and err.startswith("telegate: error:") and err.count("\n") == 1, err
    assert db.read_bytes() == before
    if case == "a database with a -wal file":
        assert target.read_bytes() == b"live"
    with open_store(db) as store:
        assert store.status()["total"] == 1
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


# -- weak bootstrap key -------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["admin", "x" * 31])
def test_a_short_telegate_api_key_is_refused_at_start(tmp_path, key):
    db = tmp_path / "pool.db"
    # Without the check this server would start and serve until the timeout: the test fails.
    proc = run_process("serve", "--port", "0", "--db", str(db), env={"TELEGATE_API_KEY": key}, cwd=tmp_path)
    assert proc.returncode == 1, proc
    assert proc.stderr == (f"telegate: error: TELEGATE_API_KEY is {len(key)} characters; an admin key needs at"
                           " least 32 (make one with: python -c \"import secrets;"
                           " print(secrets.token_urlsafe(32))\")\n")
    assert "Traceback" not in proc.stdout  # (stderr is exactly the line above: the key itself is not shown)
    assert not db.exists()  # refused before anything was created


# -- access log ---------------------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _log_one(environ: dict) -> str:
    logger = logging.getLogger("test.hygiene.access")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = _Records()
    logger.handlers[:] = [handler]

    def app(environ, start_response):
        environ["telegate.key_name"] = environ.get("test.key_name", "-")
        start_response("404 Not Found", [])
        return [b""]

    base = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.input": io.BytesIO()}
    list(access_logged(app, logger)({**base, **environ}, lambda *a: None))
    assert len(handler.lines) == 1
    return handler.lines[0]


@pytest.mark.parametrize("path, shown", [
    ("/status\n2030-01-01 INFO forged", "/status\\n2030-01-01 INFO forged"),
    ("/a\r\nb", "/a\\r\\nb"),
    ("/\x1b[2Jclear", "/\\x1b[2Jclear"),
    ("/a\\nb", "/a\\\\nb"),  # a literal backslash cannot pass for an escape
    # WSGI paths are bytes as latin-1: U+202E arrives as three characters and is logged as itself, escaped.
    ("/x\u202eexe".encode().decode("latin-1"), "/x\\u202eexe"),
    ("/сессии".encode().decode("latin-1"), "/сессии"),
    ("/\xff\xfe", "/\xff\xfe"),  # not UTF-8: kept as it came, printable either way
])
def test_access_line_escapes_the_path(path, shown):
    line = _log_one({"PATH_INFO": path})
    assert line.startswith(f"- GET {shown} 404 ")
    assert line.isprintable()


def test_access_line_escapes_method_and_key_name():
    line = _log_one({"REQUEST_METHOD": "GE\nT", "test.key_name": "w\u200b1\x1b"})
    assert line.startswith("- GE\\nT / 404 ") and line.endswith(" key=w\\u200b1\\x1b")


def test_a_newline_in_the_path_does_not_forge_a_log_line(tmp_path):
    server = LiveServer(tmp_path / "pool.db")
    try:
        forged = "2030-01-01 00:00:00,000 INFO telegate.access: POST /release 200 1.0ms key=admin"
        reply = server.request("GET", "/status%0a" + forged.replace(" ", "%20"))
        assert reply.status == 404
        wait_for_log(server, r"telegate\.access: 127\.0\.0\.1 GET /status\\n2030-01-01 ")
        assert not any(line.startswith("2030-01-01") for line in server.log.splitlines()), server.log
    finally:
        server.close()


# -- the text rule -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, found", [
    ("line\nbreak", (4, "\n")), ("\x1b[2J", (0, "\x1b")), ("nel\x85", (3, "\x85")), ("del\x7f", (3, "\x7f")),
    ("gpj.\u202eexe", (4, "\u202e")), ("a\u200bb", (1, "\u200b")), ("a\u200db", (1, "\u200d")),
    ("\ufeffbom", (0, "\ufeff")), ("soft\xadhyphen", (4, "\xad")), ("isolate\u2066x", (7, "\u2066")),
    ("tag\U000e0041", (3, "\U000e0041")), ("a\u2028b", (1, "\u2028")), ("a\u2029b", (1, "\u2029")),
])
def test_control_format_and_line_separator_characters_are_found(text, found):
    assert find_unsafe(text) == found
    assert "\\" in escape(text) and escape(text).isprintable()


@pytest.mark.parametrize("text", ["worker-1", "box:42 / pid 7", "Вася", "山田太郎", "🙂 bot", "a\u00a0b", "tab-free"])
def test_ordinary_text_passes(text):
    assert find_unsafe(text) is None and escape(text) == text


def test_the_detail_names_field_character_and_position():
    assert unsafe_detail("holder", "ab\u202ecd") == (
        "holder must not contain control or format characters (U+202E RIGHT-TO-LEFT OVERRIDE at position 3)")
    assert unsafe_detail("holder", "a\nb") == "holder must not contain control or format characters (U+000A at position 2)"


def test_the_openapi_pattern_refuses_exactly_what_the_server_refuses_in_the_bmp():
    from telegate.openapi import build_openapi

    def patterns(node) -> list[str]:
        found = []
        if isinstance(node, dict):
            found += [node["pattern"]] if "pattern" in node else []
            node = list(node.values())
        for value in node if isinstance(node, list) else ():
            found += patterns(value)
        return found

    pattern = re.compile(text_pattern())
    assert patterns(build_openapi()).count(pattern.pattern) >= 5  # holder, name(s), disable, reason, ...
    assert pattern.pattern.isascii()  # \\uXXXX escapes only: ECMA-262 reads it as Python does
    differ = [hex(code) for code in range(0x10000) if 0xD800 > code or code > 0xDFFF
              if (pattern.fullmatch(f"a{chr(code)}b") is None) != (find_unsafe(f"a{chr(code)}b") is not None)]
    assert differ == []
    assert pattern.fullmatch("   ") is None and pattern.fullmatch(" Вася 🙂 ")


@pytest.mark.parametrize("argv, words", [
    (["sessions", "add", "ok", "ab\u202ecd"], "name 2 'ab\\u202ecd' must not contain control or format characters"
                                              " (U+202E RIGHT-TO-LEFT OVERRIDE at position 3)"),
    (["sessions", "add", "a\u200bb"], "(U+200B ZERO WIDTH SPACE at position 2)"),
    (["sessions", "add", "--from-file", "names.txt"], "name 2 'b\\x0cc' must not contain"),
    (["sessions", "disable", "a", "--reason", "spam\x1b[2J"], "--reason must not contain control or format"),
    (["keys", "create", "w\u202e1"], "the key name must not contain control or format characters"),
])
def test_cli_refuses_control_and_format_characters_in_one_line(tmp_path, argv, words):
    db = str(tmp_path / "pool.db")
    assert run("sessions", "add", "a", "--db", db)[0] == 0
    (tmp_path / "names.txt").write_text("ok\nb\x0cc\n", encoding="utf-8")  # \x0c: splitlines() would cut here
    proc = run_process(*argv, "--db", db, cwd=tmp_path, env={"PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith("telegate: error:") and proc.stderr.count("\n") == 1, proc.stderr
    assert words in proc.stderr
    with open_store(db) as store:
        rows, total = store.list_sessions()
        assert total == 1 and not rows[0]["disabled"]
        assert [k["name"] for k in store.list_keys()] == []


# -- import --------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_import_skips_a_fifo_without_opening_it(tmp_path):
    folder = tmp_path / "sessions"
    folder.mkdir()
    telethon_file(folder / "good.session")
    os.mkfifo(folder / "x.session")  # opening this for reading would block until a writer comes
    os.mkdir(folder / "dir.session")
    db = str(tmp_path / "pool.db")
    # A hang fails the test by its timeout rather than blocking the suite.
    proc = run_process("sessions", "import", str(folder), "--db", db, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "warning: skipped x.session: not a regular file" in proc.stderr
    assert "warning: skipped dir.session: not a regular file" in proc.stderr
    assert "imported 1 session(s)" in proc.stderr
    with open_store(db) as store:
        assert [r["name"] for r in store.list_sessions()[0]] == ["good"]


@pytest.mark.skipif(sys.platform == "win32", reason="Windows file names cannot hold control characters")
def test_import_skips_names_with_control_or_format_characters(tmp_path):
    folder = tmp_path / "sessions"
    folder.mkdir()
    for name in ("good", "evil\u202eexe", "two\nlines", "zero\u200bwidth"):
        telethon_file(folder / f"{name}.session")
    found, warnings = scan_dir(folder)
    assert found == {"good": "telethon"}
    assert len(warnings) == 3 and all(w.isprintable() for w in warnings), warnings
    assert any(re.match(r"skipped evil\\u202eexe\.session: the name 'evil\\u202eexe' must not contain control or"
                        r" format characters"
                        r" \(U\+202E RIGHT-TO-LEFT OVERRIDE at position 5\)", w) for w in warnings), warnings
    db = str(tmp_path / "pool.db")
    code, _, err = run("sessions", "import", str(folder), "--db", db)
    assert code == 0 and "imported 1 session(s)" in err and "3 file(s) skipped" in err
    assert "warning: skipped two\\nlines.session" in err
