"""Running TeleGate for real: access logs, settings documented, a taken port, backups while serving."""
from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import threading
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from support import ROOT, LiveServer, server_env, wait_for_log
from telegate import _logging
from telegate.cli import main
from telegate.settings import resolve
from telegate.settings import SETTINGS
from telegate.store import open_store

# One store is enough: logs, ports and SQLite backups: the server around the store, not the store.
pytestmark = pytest.mark.sqlite_only

DOCS = ROOT / "docs"

# -- logs ------------------------------------------------------------------------------------


def test_access_line_names_the_key_never_shows_it(live_server):
    (sid,) = live_server.add_sessions("acc1")
    lease = live_server.request("POST", "/session", {"holder": "box:42"}).json
    live_server.request("POST", "/release", {"session_id": sid, "lease_token": lease["lease_token"],
                                             "flood_wait": 30})
    bearer = {"Authorization": f"Bearer {live_server.admin_key}"}
    live_server.request("GET", "/sessions", key=None, headers=bearer)
    live_server.request("GET", "/status", key="tg_this-key-is-wrong")

    wait_for_log(live_server, r"telegate\.access: 127\.0\.0\.1 POST /session 200 [\d.]+ms key=test-client\b")
    wait_for_log(live_server, r"telegate\.access: 127\.0\.0\.1 GET /sessions 200 [\d.]+ms key=test-admin\b")
    wait_for_log(live_server, r"telegate\.access: 127\.0\.0\.1 GET /status 401 [\d.]+ms key=-")
    # Lease events at INFO, with the holder, on the request's one line:
    wait_for_log(live_server, rf"(?m)INFO telegate\.access: 127\.0\.0\.1 POST /session 200 [\d.]+ms key=test-client"
                              rf" leased session {sid} \(acc1\) to box:42 until \d{{4}}-\d\d-\d\dT[\d:.]+Z$")
    wait_for_log(live_server, rf"(?m)INFO telegate\.access: 127\.0\.0\.1 POST /release 200 [\d.]+ms key=test-client"
                              rf" released session {sid}, flood wait 30 s$")
    assert "telegate.app: leased" not in live_server.log and "telegate.app: released" not in live_server.log
    for secret in (live_server.client_key, live_server.admin_key, "tg_this-key-is-wrong"):
        assert secret not in live_server.log


def test_json_log_format(server_factory):
    chatty = server_factory("--log-format", "json")
    chatty.add_sessions("acc1")
    chatty.request("POST", "/session")
    wait_for_log(chatty, r'"logger": "telegate.access"')
    wait_for_log(chatty, r"leased session")
    entries = [json.loads(line) for line in chatty.log.splitlines() if line.startswith("{")]
    access = [e for e in entries if e["logger"] == "telegate.access"]
    assert access and access[0]["level"] == "info"
    assert re.fullmatch(r"127\.0\.0\.1 POST /session 200 [\d.]+ms key=test-client"
                        r" leased session 1 \(acc1\) to test-client until \S+Z", access[0]["message"])
    assert chatty.client_key not in chatty.log


def test_without_access_lines_the_lease_events_keep_their_own_lines(server_factory):
    quiet = server_factory("--access-log", "false")
    (sid,) = quiet.add_sessions("acc1")
    lease = quiet.request("POST", "/session", {"holder": "box:7"}).json
    quiet.request("POST", "/release", {"session_id": sid, "lease_token": lease["lease_token"], "disable": "banned"})
    wait_for_log(quiet, rf"(?m)INFO telegate\.app: leased session {sid} \(acc1\) to box:7 until \S+Z$")
    wait_for_log(quiet, rf"(?m)INFO telegate\.app: released session {sid}, disabled: banned$")
    assert "telegate.access" not in quiet.log


@pytest.fixture
def restore_logging():
    names = ("telegate", "telegate.access", "waitress")
    saved = [(logging.getLogger(n), logging.getLogger(n).handlers[:], logging.getLogger(n).level,
              logging.getLogger(n).propagate, logging.getLogger(n).disabled) for n in names]
    yield
    for logger, handlers, level, propagate, disabled in saved:
        logger.handlers[:], logger.level, logger.propagate, logger.disabled = handlers, level, propagate, disabled


@pytest.mark.parametrize("level,access_shown", [("debug", True), ("info", True), ("warning", False)])
def test_log_level_decides_whether_access_lines_are_written(restore_logging, level, access_shown):
    settings = resolve({"log_level": level})
    _logging.configure(settings.log_level, settings.log_format, settings.access_log)
    assert logging.getLogger("telegate.access").isEnabledFor(logging.INFO) == access_shown
    assert logging.getLogger("telegate.app").isEnabledFor(logging.WARNING)


def test_access_log_can_be_turned_off(restore_logging):
    settings = resolve({}, environ={"TELEGATE_ACCESS_LOG": "false"})
    _logging.configure(settings.log_level, settings.log_format, settings.access_log)
    assert logging.getLogger("telegate.access").disabled
    assert logging.getLogger("telegate.app").isEnabledFor(logging.INFO)


# -- settings: one table, documented everywhere ----------------------------------------------


def serve_help() -> str:
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    return out.getvalue()


def test_serve_help_shows_every_setting():
    text = serve_help()
    for setting in SETTINGS:
        assert setting.flag in text, setting.name
        assert setting.env in text, setting.name


def test_operations_doc_has_every_setting_with_its_default():
    doc = (DOCS / "OPERATIONS.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(--[a-z-]+)[^|]*\|.*$", doc, re.M)}
    for setting in SETTINGS:
        assert setting.flag in rows, f"{setting.flag} is missing from the settings table in docs/OPERATIONS.md"
        row = rows[setting.flag]
        assert f"`{setting.env}`" in row, row
        default = "(none)" if setting.default is None else str(setting.default).lower()
        assert f"`{default}`" in row.lower(), f"{setting.flag}: default {default} not in {row}"
    assert set(rows) == {setting.flag for setting in SETTINGS}, "the docs list a setting that does not exist"


# -- a port that is taken ---------------------------------------------------------------------


def test_second_server_on_a_taken_port_exits_with_one_line(live_server):
    proc = subprocess.run(
        [sys.executable, "-m", "telegate", "serve", "--port", str(live_server.port), "--db", str(live_server.db_path)],
        capture_output=True, text=True, encoding="utf-8", env=server_env(), cwd=ROOT, timeout=60,
        stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("telegate: error: cannot listen on 127.0.0.1:") and "in use" in lines[0]
    assert "Traceback" not in proc.stderr and "listening" not in proc.stdout
    assert live_server.request("GET", "/healthz").status == 200  # the first server is untouched


# -- backup while serving ---------------------------------------------------------------------


def test_backup_while_the_server_serves(live_server, tmp_path: Path):
    names = [f"acc{i}" for i in range(200)]
    live_server.add_sessions(*names)
    stop = threading.Event()
    failures: list = []
    cycles = [0]

    def worker() -> None:
        while not stop.is_set() and cycles[0] < 5000:
            reply = live_server.request("POST", "/session", {"ttl": 60})
            if reply.status == 200:
                done = live_server.request("POST", "/release", {"session_id": reply.json["session_id"],
                                                                "lease_token": reply.json["lease_token"]})
                if done.status != 200:
                    failures.append(done)
            elif reply.status != 503:
                failures.append(reply)
            cycles[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        while cycles[0] < 20 and time.monotonic() < deadline:  # the server is busy before we copy
            time.sleep(0.01)
        target = tmp_path / "backup.db"
        proc = subprocess.run([sys.executable, "-m", "telegate", "backup", str(target), "--db", str(live_server.db_path)],
                              capture_output=True, text=True, env=server_env(), cwd=ROOT, timeout=60, encoding="utf-8")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert proc.returncode == 0, proc.stderr
    assert not failures, failures[:3]
    assert cycles[0] >= 20
    with open_store(target) as copy:
        assert copy.integrity_check() == "ok"
        rows, total = copy.list_sessions(limit=1000)
        assert total == 200 and sorted(r["name"] for r in rows) == sorted(names)
        assert copy.authenticate(live_server.admin_key).scope == "admin"
    # A server started on the copy serves the same pool.
    restored = LiveServer(target)
    try:
        assert restored.status()["total"] == 200
    finally:
        restored.close()
