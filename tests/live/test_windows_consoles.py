"""Windows consoles and hosts, simulated on Linux with real processes: each test says what it stands for.

A Russian Windows console writes redirected output in cp1251 (``PYTHONIOENCODING=cp1251``
here), decodes piped input the same way, and NSSM's log file takes the server's stderr in
that code page too. Windows has no ``select.poll`` (a ``sitecustomize`` removes it here).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support import ROOT, LiveServer, server_env
from telegate.store import open_store

pytestmark = [pytest.mark.windows, pytest.mark.sqlite_only]

EMOJI = "🙂 bot"
NOPOLL = ROOT / "tests" / "support" / "nopoll"


def cp1251_env(**extra: str) -> dict[str, str]:
    """A Russian Windows console's encoding for everything the process reads and writes."""
    return {**server_env(), "PYTHONIOENCODING": "cp1251", **extra}


def telegate(*argv: str, env: dict[str, str], stdin: bytes = b"", stdout=subprocess.PIPE):
    return subprocess.run([sys.executable, "-m", "telegate", *argv], input=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, env=env, cwd=ROOT, timeout=60)


def test_sessions_list_redirected_to_a_file_on_a_cp1251_console(tmp_path):
    """Windows: `telegate sessions list > sessions.txt` in a Russian console, with an emoji name."""
    db = tmp_path / "pool.db"
    with open_store(db) as store:
        store.add_sessions([EMOJI, "Акк"])
    listing = tmp_path / "sessions.txt"
    with listing.open("wb") as out:
        done = telegate("sessions", "list", "--db", str(db), env=cp1251_env(), stdout=out)
    assert done.returncode == 0, done.stderr.decode("cp1251", "replace")
    text = listing.read_bytes().decode("cp1251")  # the file is what the console's code page can read
    assert "\\U0001f642 bot" in text and "Акк" in text
    with listing.open("wb") as out:
        done = telegate("sessions", "list", "--json", "--db", str(db), env=cp1251_env(), stdout=out)
    assert done.returncode == 0
    names = [json.loads(line)["name"] for line in listing.read_bytes().decode("cp1251").splitlines()]
    assert names == [EMOJI, "Акк"]  # still JSON: \\ud83d\\ude42 escapes, not \\U0001f642


def test_names_piped_in_with_a_bom_on_a_cp1251_console(tmp_path):
    """Windows: `Get-Content names.txt | telegate sessions add --from-file -` in PowerShell 5.1
    (UTF-8 with a BOM, into a process whose console code page is cp1251); and a Notepad file."""
    db = tmp_path / "pool.db"
    piped = "\ufeffАкк\r\n" + EMOJI + "\r\n"
    done = telegate("sessions", "add", "--from-file", "-", "--db", str(db), env=cp1251_env(),
                    stdin=piped.encode("utf-8"))
    assert done.returncode == 0, done.stderr.decode("cp1251", "replace")
    names_file = tmp_path / "names.txt"
    names_file.write_bytes("\ufeffacc1\r\nacc2\r\n".encode("utf-8"))  # Notepad's "UTF-8 with BOM"
    done = telegate("sessions", "add", "--from-file", str(names_file), "--db", str(db), env=cp1251_env())
    assert done.returncode == 0, done.stderr.decode("cp1251", "replace")
    with open_store(db) as store:
        assert [row["name"] for row in store.list_sessions()[0]] == ["Акк", EMOJI, "acc1", "acc2"]


def test_json_log_in_a_cp1251_service_log_parses_line_by_line(tmp_path):
    """Windows: NSSM writes the server's stderr to a file in the ANSI code page (cp1251)."""
    server = LiveServer(tmp_path / "pool.db", ("--log-format", "json"), env=cp1251_env())
    try:
        server.add_sessions(EMOJI)
        lease = server.request("POST", "/session", {"ttl": 60, "name": EMOJI})
        assert lease.status == 200 and lease.json["session_name"] == EMOJI
        assert server.request("POST", "/release", {"session_id": lease.json["session_id"],
                                                   "lease_token": lease.json["lease_token"]}).status == 200
    finally:
        server.close()
    lines = server.log.splitlines()
    entries = [json.loads(line) for line in lines]  # every line, the banners included
    assert all(line.isascii() for line in lines)
    assert any(EMOJI in entry["message"] and "leased" in entry["message"] for entry in entries)
    assert entries[-1]["message"] == "TeleGate stopped"


def test_examples_print_an_emoji_name_on_a_cp1251_console(tmp_path):
    """Windows: the examples run with output redirected in a Russian console, leasing `🙂 bot`."""
    server = LiveServer(tmp_path / "pool.db")
    try:
        server.add_sessions(EMOJI)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEGATE_")}
        env.update(PYTHONPATH=str(ROOT / "sdk"), PYTHONIOENCODING="cp1251", TELEGATE_URL=server.url,
                   TELEGATE_API_KEY=server.client_key)
        for example in ("seed_example.py", "no_wait.py", "with_statement.py"):
            done = subprocess.run([sys.executable, str(ROOT / "examples" / example)], env=env, capture_output=True,
                                  timeout=120, cwd=ROOT)
            out = done.stdout.decode("cp1251")
            assert done.returncode == 0, (example, done.stderr.decode("cp1251", "replace"))
            assert "\\U0001f642 bot" in out, (example, out)  # escaped, where a traceback used to be
    finally:
        server.close()


def test_a_server_without_poll_serves_with_select_and_caps_connections(tmp_path):
    """Windows: no select.poll, so waitress's loop uses select() and the server caps connections at 500."""
    env = server_env()
    env["PYTHONPATH"] = os.pathsep.join([str(NOPOLL), env["PYTHONPATH"]])
    probe = subprocess.run([sys.executable, "-c", "import select; print(hasattr(select, 'poll'))"], env=env,
                           capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert probe.stdout.strip() == "False"  # the sitecustomize took effect
    server = LiveServer(tmp_path / "pool.db", ("--connection-limit", "2000"), env=env)
    try:
        server.add_sessions("a", "b")
        first = server.request("POST", "/session", {"ttl": 60})
        second = server.request("POST", "/session", {"ttl": 60})
        assert first.status == second.status == 200
        assert {first.json["session_name"], second.json["session_name"]} == {"a", "b"}
    finally:
        server.close()
    assert "more than select() can watch on this system; using 500" in server.log
    assert "TeleGate stopped" in server.log


def test_the_stop_helper_stops_a_server_cleanly(tmp_path):
    """The stop every test uses (SIGINT here, CTRL_BREAK_EVENT on Windows) is serve's clean stop."""
    server = LiveServer(tmp_path / "pool.db")
    server.close()
    assert server.proc.returncode == 0
    assert server.log.rstrip().endswith("TeleGate stopped")


def test_examples_print_nothing_a_console_cannot_take():
    """Every example makes its stdout escape what the console's code page lacks, before printing."""
    for example in sorted((ROOT / "examples").glob("*.py")):
        text = example.read_text(encoding="utf-8")
        if "print(" in text:
            assert 'reconfigure(errors="backslashreplace")' in text, example.name
