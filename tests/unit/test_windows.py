"""Windows behaviour, simulated on Linux (CI has no Windows): each test says what it stands for.

What can't be simulated (ACLs, console events, SIGBREAK) is tested as the command or the
call the code would make there; docs/WINDOWS.md lists what was never run on Windows.
"""
from __future__ import annotations

import ast
import functools
import logging
import mimetypes
import re
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import SimpleNamespace

import pytest

from support import ROOT, WsgiCaller
from support.cli import run
from telegate import _files, _stop
from telegate._channel import _poll_turn
from telegate._sessionfiles import session_kind, sqlite_uri
from telegate.store import open_store

pytestmark = [pytest.mark.windows, pytest.mark.sqlite_only]

OWNER = "S-1-5-21-1004336348-1177238915-682003330-1001"


# -- ACLs: the icacls the code would run --------------------------------------------------


class FakeWindows:
    """Stands for ``whoami`` and ``icacls`` on a Windows host: records every command, answers like them."""

    def __init__(self, icacls_code: int = 0) -> None:
        self.commands: list[list[str]] = []
        self.icacls_code = icacls_code

    def __call__(self, command, **kwargs):
        self.commands.append(list(command))
        if command[0] == "whoami":  # the CSV whoami prints, in the OEM code page (cp866 on Russian Windows)
            out = f'"пк\\администратор","{OWNER}"\r\n'.encode("cp866")
            return subprocess.CompletedProcess(command, 0, out, b"")
        return subprocess.CompletedProcess(command, self.icacls_code, b"", b"Access is denied.\r\n")


def test_windows_lock_down_is_icacls_with_sids(tmp_path):
    """Windows: a new secret file gets its owner, SYSTEM and Administrators only, named by SID
    (a Russian Windows calls Administrators "Администраторы"; a SID is the same everywhere)."""
    windows = FakeWindows()
    assert _files.restrict(tmp_path / "telegate.db", platform="win32", run=windows)
    assert windows.commands == [
        ["whoami", "/user", "/fo", "csv", "/nh"],
        ["icacls", str(tmp_path / "telegate.db"), "/inheritance:r", "/grant:r",
         f"*{OWNER}:(F)", "*S-1-5-18:(F)", "*S-1-5-32-544:(F)"],
    ]
    folder = _files.icacls_command(r"C:\TeleGate", OWNER, folder=True)
    assert folder[-3:] == [f"*{OWNER}:(OI)(CI)(F)", "*S-1-5-18:(OI)(CI)(F)", "*S-1-5-32-544:(OI)(CI)(F)"]
    assert _files.restrict(tmp_path / "x", platform="linux", run=windows) is True  # POSIX: the mode does it
    assert len(windows.commands) == 2


def test_a_failed_lock_down_warns_once_with_a_powershell_command(tmp_path, caplog):
    """Windows: icacls refused (a database on a FAT drive, a share): one warning, with the command to run."""
    windows = FakeWindows(icacls_code=5)
    path = tmp_path / "failing.db"
    with caplog.at_level(logging.WARNING, logger="telegate._files"):
        assert not _files.restrict(path, platform="win32", run=windows)
        assert not _files.restrict(path, platform="win32", run=windows)
    [warning] = [r.getMessage() for r in caplog.records]
    assert "icacls exited with 5: Access is denied." in warning
    # Every argument quoted: unquoted, PowerShell would read (F) as an expression.
    assert (f"run in an elevated PowerShell: icacls '{path}' '/inheritance:r' '/grant:r' '*{OWNER}:(F)'"
            " '*S-1-5-18:(F)' '*S-1-5-32-544:(F)'") in warning


def test_docs_lock_down_commands_use_sids_and_quote_for_powershell():
    """docs/WINDOWS.md's icacls lines: the SIDs, not localized names, and PowerShell-safe quoting."""
    text = (ROOT / "docs" / "WINDOWS.md").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.startswith("icacls ")]
    assert lines, "docs/WINDOWS.md gives the icacls commands"
    for line in lines:
        assert "Administrators" not in line and "SYSTEM" not in line, line
        for grant in re.findall(r"\S*:\(\S*", line):
            assert grant.startswith(("'*S-1-", '"*${')), line  # a SID, or one read into a variable
    assert any("'*S-1-5-32-544:(OI)(CI)(F)'" in line for line in lines)


def test_empty_wal_and_shm_made_before_sqlite_are_used_as_they_are(tmp_path):
    """Windows: -wal and -shm are made private before SQLite opens them; SQLite takes empty ones as its own."""
    db = tmp_path / "pool.db"
    _files.create_private(db)
    _files.precreate_companions(db, platform="win32")
    assert (tmp_path / "pool.db-wal").stat().st_size == 0 and (tmp_path / "pool.db-shm").exists()
    with open_store(db) as store:
        store.add_sessions(["a", "b"])
        assert store.list_sessions()[1] == 2
    with open_store(db) as store:
        assert store.list_sessions()[1] == 2


# -- backups onto a held file --------------------------------------------------------------


def held_open(times: int):
    """Stands for os.replace on Windows onto a file an antivirus has open: WinError 32 ``times`` times."""
    calls = []

    def replace(source, target):
        calls.append(target)
        if len(calls) <= times:
            raise PermissionError(13, "The process cannot access the file because it is being used by"
                                      " another process")
        Path(source).replace(target)

    return replace, calls


def test_backup_retries_a_target_held_open(tmp_path, monkeypatch):
    db = tmp_path / "pool.db"
    with open_store(db) as store:
        store.add_sessions(["a"])
    target = tmp_path / "backup.db"
    target.write_bytes(b"yesterday")
    replace, calls = held_open(2)
    sleeps: list[float] = []
    monkeypatch.setattr("telegate.cli.replace_retrying",
                        functools.partial(_files.replace_retrying, replace=replace, sleep=sleeps.append))
    code, _, err = run("backup", str(target), "--force", "--db", str(db))
    assert code == 0, err
    assert len(calls) == 3 and sleeps == list(_files.REPLACE_DELAYS[:2])
    with open_store(target) as copy:
        assert copy.list_sessions()[1] == 1


def test_backup_onto_a_file_held_for_good_says_why_and_cleans_up(tmp_path, monkeypatch):
    db = tmp_path / "pool.db"
    open_store(db).close()
    target = tmp_path / "backup.db"
    target.write_bytes(b"yesterday")
    replace, calls = held_open(10**6)
    monkeypatch.setattr("telegate.cli.replace_retrying",
                        functools.partial(_files.replace_retrying, replace=replace, sleep=lambda s: None))
    code, _, err = run("backup", str(target), "--force", "--db", str(db))
    assert code == 1 and err.count("\n") == 1
    assert "cannot replace" in err and "being used by another process" in err
    assert len(calls) == len(_files.REPLACE_DELAYS) + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.db", "pool.db"]  # no temporary left
    assert target.read_bytes() == b"yesterday"


def test_a_failed_cleanup_never_hides_why_the_backup_failed(tmp_path, monkeypatch):
    """Windows: the temporary file can't be deleted either while a scanner holds it."""
    db = tmp_path / "pool.db"
    open_store(db).close()
    replace, _ = held_open(10**6)
    monkeypatch.setattr("telegate.cli.replace_retrying",
                        functools.partial(_files.replace_retrying, replace=replace, sleep=lambda s: None))

    def unlink(path, *args, **kwargs):
        raise PermissionError(13, "Access is denied")

    monkeypatch.setattr("telegate.cli.os.unlink", unlink)
    target = tmp_path / "backup.db"
    code, _, err = run("backup", str(target), "--db", str(db))
    assert code == 1
    lines = err.splitlines()
    assert lines[0].startswith("telegate: warning: could not remove") and "delete it by hand" in lines[0]
    assert lines[-1].startswith("telegate: error: cannot replace") and "being used by another process" in lines[-1]


# -- SQLite URIs for network paths -----------------------------------------------------------


def test_sqlite_uri_of_a_unc_path_has_an_empty_host():
    """Windows: a network share (or a mapped drive, which resolve() turns into one) as SQLite wants it."""
    assert PureWindowsPath(r"\\srv\share\a.session").as_uri() == "file://srv/share/a.session"  # refused by SQLite
    assert sqlite_uri(PureWindowsPath(r"\\srv\share\a.session"), mode="ro") == "file:////srv/share/a.session?mode=ro"
    assert sqlite_uri(PureWindowsPath(r"Z:\sessions\Акк.session")) == "file:///Z:/sessions/%D0%90%D0%BA%D0%BA.session"
    assert sqlite_uri(PureWindowsPath(r"C:\s\a#1?.session")) == "file:///C:/s/a%231%3F.session"
    assert sqlite_uri(PurePosixPath("/srv/a b.session")) == "file:///srv/a%20b.session"


def test_sqlite_opens_the_uris_it_is_given(tmp_path):
    """The same builder on this system's paths, opened by the real SQLite: an empty host part
    (``file:////tmp/...``, what a UNC path becomes) and names with ``#``, ``?`` and ``%``."""
    for stem in ("plain", "a#1?%", "🙂 bot"):
        path = tmp_path / f"{stem}.session"
        conn = sqlite3.connect(path)
        conn.executescript("CREATE TABLE sessions (x); CREATE TABLE entities (x);")
        conn.close()
        assert session_kind(path) == "telethon", stem
        uri = "file:///" + sqlite_uri(path)[len("file://"):]  # four slashes, like a UNC path's URI
        assert uri.startswith("file:////")
        sqlite3.connect(uri + "?mode=ro", uri=True).execute("SELECT * FROM sessions").fetchall()


# -- the dashboard when the registry says .js is text/plain -----------------------------------


def test_dashboard_script_is_javascript_whatever_mimetypes_says(tmp_path):
    """Windows: mimetypes reads the registry, where .js is often text/plain (nosniff would then block it)."""
    mimetypes.add_type("text/plain", ".js")
    mimetypes.add_type("text/plain", ".css")
    caller = WsgiCaller(tmp_path)
    try:
        script = caller("GET", "/static/dashboard.js", key=None)
        style = caller("GET", "/static/dashboard.css", key=None)
    finally:
        caller.store.close()
        mimetypes.add_type("text/javascript", ".js")
        mimetypes.add_type("text/css", ".css")
    assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert style.status == 200 and style.headers["Content-Type"].startswith("text/css")
    assert script.headers["X-Content-Type-Options"] == "nosniff"


# -- the loop's pacing on a coarse CPU clock --------------------------------------------------


class CoarseCpuClock:
    """Windows' thread_time: CPU time that moves in whole scheduler ticks of 15.625 ms."""

    def __init__(self) -> None:
        self.cpu = 0.0

    def __call__(self) -> float:
        return (self.cpu // 0.015625) * 0.015625


@pytest.mark.parametrize("use_poll", [True, False], ids=["poll", "select"])
def test_loop_pacing_follows_the_work_not_a_coarse_cpu_clock(monkeypatch, use_poll):
    """A turn whose event costs 1 ms reads as 1 ms (the loop then rests 3 ms), though thread_time,
    here a 15.625 ms-step clock as on Windows, does not move; the wait (an hour here) never counts."""
    wall = [0.0]
    coarse = CoarseCpuClock()
    monkeypatch.setattr("time.thread_time", coarse)
    left, right = socket.socketpair()
    right.sendall(b"x")  # readable at once

    class Busy:
        accepting = False

        def readable(self):
            return True

        def writable(self):
            return False

        def handle_read_event(self):
            left.recv(1)
            wall[0] += 0.001  # the work: 1 ms of wall and CPU time
            coarse.cpu += 0.001

        handle_write_event = handle_expt_event = handle_close = handle_error = lambda self: None

    import select

    real_poll, real_select = select.poll, select.select

    class WaitingPoll:
        def __init__(self):
            self.inner = real_poll()

        def register(self, *args):
            self.inner.register(*args)

        def poll(self, timeout):
            wall[0] += 3600.0  # the wait
            return self.inner.poll(timeout)

    def waiting_select(*args):
        wall[0] += 3600.0
        return real_select(*args)

    monkeypatch.setattr("select.poll", WaitingPoll)
    monkeypatch.setattr("select.select", waiting_select)
    try:
        cpu_before = time.thread_time()
        spent = _poll_turn(0.5, {left.fileno(): Busy()}, lambda: wall[0], use_poll)
        cpu_spent = time.thread_time() - cpu_before
    finally:
        left.close()
        right.close()
    assert wall[0] == pytest.approx(3600.001)
    assert spent == pytest.approx(0.001)
    assert cpu_spent == 0.0  # what pacing on thread_time saw: no work, so never a rest


# -- stopping ------------------------------------------------------------------------------


def test_console_close_stops_like_ctrl_c_and_holds_windows_off_until_stopped():
    """Windows: closing the console (CTRL_CLOSE_EVENT) ends the process when the handler returns,
    so the handler interrupts the main thread and returns only once serve says it stopped."""
    interrupted = threading.Event()
    handlers = _stop.StopHandlers(platform="linux", interrupt_main=interrupted.set)
    try:
        assert handlers.on_console_event(0) is False  # Ctrl-C: left to the SIGINT handler
        result = []
        closing = threading.Thread(target=lambda: result.append(handlers.on_console_event(2)))
        closing.start()
        assert interrupted.wait(10)
        assert closing.is_alive()  # still holding Windows off: the stop is under way
        handlers.stopped()
        closing.join(10)
        assert result == [True]
    finally:
        handlers.restore()


def test_request_stop_sends_ctrl_break_on_windows_and_sigint_elsewhere():
    """Windows: a child in its own process group gets CTRL_BREAK_EVENT (serve's SIGBREAK handler)."""
    sent = []
    proc = SimpleNamespace(poll=lambda: None, send_signal=sent.append)
    _stop.request_stop(proc, platform="win32")
    _stop.request_stop(proc, platform="linux")
    assert sent == [1, 2]  # CTRL_BREAK_EVENT, SIGINT
    assert _stop.new_group_flags("win32") == 0x200 and _stop.new_group_flags("linux") == 0
    assert _stop.stop_signals("win32") == ["SIGINT", "SIGBREAK"]


def test_nssm_waits_longer_than_the_worst_stop():
    """docs/WINDOWS.md's NSSM stop timeouts cover the real worst case (telegate._stop.WORST_CASE_STOP)."""
    text = (ROOT / "docs" / "WINDOWS.md").read_text(encoding="utf-8")
    timeouts = re.findall(r"nssm set TeleGate AppStopMethod(?:Console|Window|Threads) (\d+)", text)
    assert timeouts and all(int(ms) > _stop.WORST_CASE_STOP * 1000 for ms in timeouts), timeouts
    assert "AppRotateOnline 1" in text


# -- lint: what keeps the code Windows-safe ---------------------------------------------------

SOURCES = [path for top in ("server", "sdk", "tests", "examples", "bench") for path in (ROOT / top).rglob("*.py")]


def test_no_bare_stop_signals_outside_the_stop_helper():
    """Windows has no SIGTERM and SIGINT reaches a whole console: stops go through telegate._stop."""
    pattern = re.compile(r"\bsignal\.(SIGTERM|SIGINT)\b|\.terminate\(\)")
    helper = ROOT / "server" / "telegate" / "_stop.py"
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in SOURCES if path != helper and path != Path(__file__)
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if pattern.search(line)]
    assert not found, "\n".join(found)


def _missing_encoding(tree: ast.AST):
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        keywords = {k.arg: k.value for k in node.keywords}
        if "encoding" in keywords:
            continue
        if name == "open":
            if isinstance(func, ast.Attribute):
                if isinstance(func.value, ast.Name) and func.value.id == "os" or (node.keywords and "mode" not in keywords):
                    continue  # os.open, or some other object's open(wait=...)
                mode = node.args[0] if node.args else keywords.get("mode")
            else:
                mode = node.args[1] if len(node.args) > 1 else keywords.get("mode")
            if not (isinstance(mode, ast.Constant) and "b" in str(mode.value)):
                yield node
        elif name in ("read_text", "write_text"):
            yield node
        elif name in ("run", "Popen", "check_output") and any(
                isinstance(keywords.get(k), ast.Constant) and keywords[k].value is True
                for k in ("text", "universal_newlines")):
            yield node


def test_every_text_file_names_its_encoding():
    """Windows: without encoding=, Python uses the ANSI code page (cp1251), not UTF-8."""
    found = [f"{path.relative_to(ROOT)}:{node.lineno}"
             for path in SOURCES if not path.is_relative_to(ROOT / "bench")
             for node in _missing_encoding(ast.parse(path.read_text(encoding="utf-8")))]
    assert not found, "open()/read_text()/write_text()/text=True without encoding=: " + ", ".join(found)
