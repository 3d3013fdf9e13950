"""The ``telegate`` admin commands as a client of the running server, and the /keys admin API.

Admin commands talk to ``TELEGATE_URL`` with ``TELEGATE_ADMIN_KEY`` unless ``--db`` or
``TELEGATE_DB`` names a database file. Run from a folder other than the server's, they
must act on the server and leave nothing behind; when nothing answers, or the key is
wrong, they say so in one line.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Iterator

import pytest

from support import server_env
from telegate._admin_client import DEFAULT_URL, DatabaseAdmin, HttpAdmin, choose
from telegate.app import create_app
from telegate.cli import main
from telegate.serve import bind_socket, create_server, waitress_options
from telegate.settings import SETTINGS, Settings
from telegate.store import open_store


def telegate(*argv: str, env: dict[str, str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess:
    """The command as a user runs it: its own process, its own working folder."""
    return subprocess.run([sys.executable, "-m", "telegate", *argv], input=stdin, capture_output=True,
                          text=True, env={**server_env(), **env}, cwd=cwd, timeout=60, encoding="utf-8")


def run(*argv: str, environ: dict[str, str]) -> tuple[int, str, str]:
    """The command in process (faster), with exactly ``environ`` as its environment."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, stdin=io.StringIO(""), environ=environ)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith("telegate: error:") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A folder that is not the server's (the server runs from the checkout, its database in tmp_path)."""
    folder = tmp_path / "somewhere-else"
    folder.mkdir()
    return folder


@pytest.fixture
def admin_env(live_server) -> dict[str, str]:
    return {"TELEGATE_URL": live_server.url, "TELEGATE_ADMIN_KEY": live_server.admin_key}


@pytest.fixture
def dead_url() -> Iterator[str]:
    """An address where nothing listens: a port bound by us but never listening (refused at once)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


# -- the acceptance test of issue 12 -----------------------------------------------------------


def test_commands_from_another_folder_act_on_the_running_server(live_server, admin_env, elsewhere):
    added = telegate("sessions", "add", "acc1", "acc2", env=admin_env, cwd=elsewhere)
    assert added.returncode == 0, added.stderr
    assert "added 2 session(s)" in added.stderr and live_server.url in added.stderr

    created = telegate("keys", "create", "worker-2", env=admin_env, cwd=elsewhere)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert created.stdout == key + "\n", "keys create prints the key alone on stdout"
    # The server knows the new key: a lease with it works, and shows the key's name as holder.
    lease = live_server.request("POST", "/session", {"name": "acc1"}, key=key)
    assert lease.status == 200, lease

    listed = telegate("sessions", "list", env=admin_env, cwd=elsewhere)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[1]: line for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {"acc1", "acc2"}
    assert "in_use" in rows["acc1"] and "worker-2 for" in rows["acc1"], rows["acc1"]
    assert "free" in rows["acc2"]

    assert list(elsewhere.iterdir()) == [], "no stray database (or anything else) in the working folder"
    with open_store(live_server.db_path) as store:
        assert [row["name"] for row in store.list_sessions()[0]] == ["acc1", "acc2"]
        assert store.authenticate(key).name == "worker-2"


# -- when it cannot work: one line that says what to do ------------------------------------------


@pytest.mark.parametrize("argv", [("status",), ("sessions", "list"), ("sessions", "add", "a"),
                                  ("keys", "create", "w"), ("keys", "revoke", "w")])
def test_nothing_answers_says_what_to_do(elsewhere, dead_url, argv):
    proc = telegate(*argv, env={"TELEGATE_URL": dead_url, "TELEGATE_ADMIN_KEY": "tg_whatever"}, cwd=elsewhere)
    assert_one_line_error(proc, f"no TeleGate server answers at {dead_url}", "Connection refused",
                          "telegate serve", "TELEGATE_URL", "--db FILE")
    assert list(elsewhere.iterdir()) == []


def test_which_backend_each_setting_picks(tmp_path, dead_url):
    db = str(tmp_path / "pool.db")
    picks = [
        ({}, {}, HttpAdmin, DEFAULT_URL),
        ({}, {"TELEGATE_URL": dead_url}, HttpAdmin, dead_url),
        ({"url": dead_url.replace("http://", "")}, {}, HttpAdmin, dead_url),  # scheme optional
        ({"key": "k"}, {"TELEGATE_DB": db}, HttpAdmin, DEFAULT_URL),
        ({"db": db}, {"TELEGATE_URL": dead_url, "TELEGATE_ADMIN_KEY": "k"}, DatabaseAdmin, db),
        ({}, {"TELEGATE_DB": db}, DatabaseAdmin, db),
    ]
    for flags, environ, kind, where in picks:
        admin = choose(**{"db": None, "url": None, "key": None, **flags}, environ=environ, create=True)
        try:
            assert isinstance(admin, kind) and where in admin.where, (flags, environ, admin.where)
        finally:
            admin.close()


def test_wrong_missing_and_client_keys_are_one_line(live_server, elsewhere):
    wrong = telegate("sessions", "list", env={"TELEGATE_URL": live_server.url, "TELEGATE_ADMIN_KEY": "tg_wrong"},
                     cwd=elsewhere)
    assert_one_line_error(wrong, "does not accept this admin key", "TELEGATE_ADMIN_KEY")
    missing = telegate("keys", "list", env={"TELEGATE_URL": live_server.url}, cwd=elsewhere)
    assert_one_line_error(missing, "no admin key", "TELEGATE_ADMIN_KEY", "--key")
    client = telegate("keys", "list", "--key", live_server.client_key, env={"TELEGATE_URL": live_server.url},
                      cwd=elsewhere)
    assert_one_line_error(client, "client key", "admin key")
    assert list(elsewhere.iterdir()) == []


def test_a_server_error_detail_is_one_line(live_server, admin_env, elsewhere):
    assert telegate("keys", "create", "dup", env=admin_env, cwd=elsewhere).returncode == 0
    again = telegate("keys", "create", "dup", env=admin_env, cwd=elsewhere)
    assert_one_line_error(again, "an active key named 'dup' exists")


# -- which mode applies ----------------------------------------------------------------------------


def test_db_flag_or_variable_works_offline_and_url_wins_over_the_variable(live_server, admin_env, tmp_path):
    offline = str(tmp_path / "offline.db")
    # --db with TELEGATE_URL and TELEGATE_ADMIN_KEY set: the flag decides, the server is not asked.
    code, _, err = run("sessions", "add", "off1", "--db", offline, environ=admin_env)
    assert code == 0 and f"database {offline}" in err
    assert live_server.status()["total"] == 0
    code, out, _ = run("status", environ={"TELEGATE_DB": offline})
    assert code == 0 and "total: 1" in out
    # --url beats TELEGATE_DB: the command goes to the server.
    code, out, _ = run("status", "--url", live_server.url, "--key", live_server.admin_key,
                       environ={"TELEGATE_DB": offline})
    assert code == 0 and "total: 0" in out
    # Offline on the server's own database while it serves: the server sees the change at once.
    code, _, _ = run("sessions", "add", "shared1", "--db", str(live_server.db_path), environ={})
    assert code == 0 and live_server.status()["total"] == 1


@pytest.mark.parametrize("argv,environ,words", [
    (["status", "--db", "x.db", "--url", "http://h"], {}, "give one or the other"),
    (["status", "--db", "x.db", "--key", "k"], {}, "give one or the other"),
    (["status"], {"TELEGATE_DB": "x.db", "TELEGATE_URL": "http://h"}, "both TELEGATE_DB and TELEGATE_URL"),
    (["status", "--url", "ftp://h"], {}, "must be the server's address"),
])
def test_mode_mistakes_are_one_line(tmp_path, argv, environ, words):
    proc = telegate(*argv, env=environ, cwd=tmp_path)
    assert_one_line_error(proc, words)
    assert not (tmp_path / "x.db").exists()


def test_max_leases_must_be_positive(tmp_path):
    proc = telegate("keys", "create", "w", "--max-leases", "0", "--db", "x.db", env={}, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr  # argparse: usage, then the error
    assert proc.stderr.splitlines()[-1].endswith("--max-leases: expected a whole number of at least 1, got '0'")
    assert not (tmp_path / "x.db").exists()


# -- every admin command over HTTP -------------------------------------------------------------------


def test_sessions_commands_over_http(live_server, admin_env, tmp_path):
    env = admin_env
    assert run("sessions", "add", "a1", "a2", "a3", "--kind", "telethon", "--meta", '{"proxy": "p"}',
               environ=env)[0] == 0
    assert "1 already registered" in run("sessions", "add", "a1", "a4", environ=env)[2]
    code, _, err = run("sessions", "disable", "a1", "ghost", "--reason", "banned", environ=env)
    assert code == 1 and "disabled 1 session(s)" in err and "not registered: ghost" in err
    rows = {r["name"]: r for r in map(json.loads, run("sessions", "list", "--json", environ=env)[1].splitlines())}
    assert (rows["a1"]["state"], rows["a1"]["disabled_reason"], rows["a1"]["meta"]) == ("disabled", "banned",
                                                                                       {"proxy": "p"})
    assert rows["a2"]["kind"] == "telethon" and rows["a4"]["kind"] == "unknown"
    assert set(rows["a1"]) == {"id", "name", "kind", "state", "holder", "disabled_reason", "use_count",
                               "flood_count", "meta", "lease_expires_at", "flood_wait_until", "name_problem"}
    code, out, _ = run("sessions", "list", "--state", "disabled", environ=env)
    assert "a1" in out and "banned" in out and "a2" not in out
    assert run("sessions", "enable", "a1", environ=env)[0] == 0
    assert live_server.request("GET", f"/sessions/{rows['a1']['id']}", key="admin").json["disabled"] is False
    code, _, err = run("sessions", "remove", "a4", environ=env)
    assert code == 0 and "removed 1 session(s)" in err
    # A flood wait shows with its countdown; a lease with its holder.
    lease = live_server.request("POST", "/session", {"name": "a2"}).json
    live_server.request("POST", "/release", {"session_id": lease["session_id"], "flood_wait": 600})
    live_server.request("POST", "/session", {"name": "a3", "holder": "box:7"})
    code, out, _ = run("sessions", "list", environ=env)
    assert re.search(r"in_use +box:7 for (300|299)s more", out), out
    assert re.search(r"in_floodwait +flood wait (600|599)s more", out), out
    code, out, _ = run("status", environ=env)
    assert code == 0 and out.startswith("total: 3  free: 1  in_use: 1  in_floodwait: 1  disabled: 0"), out
    assert "next flood wait ends in 600s" in out or "next flood wait ends in 599s" in out, out


def test_sessions_import_and_many_names_over_http(live_server, admin_env, tmp_path):
    from telethon.sessions import SQLiteSession

    folder = tmp_path / "sessions"
    folder.mkdir()
    SQLiteSession(str(folder / "tele1")).close()
    (folder / "junk.session").write_bytes(b"not sqlite")
    code, _, err = run("sessions", "import", str(folder), environ=admin_env)
    assert code == 0 and "imported 1 session(s)" in err and "warning: skipped junk.session" in err
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"n{i:05d}" for i in range(12_000)), encoding="utf-8")  # several requests
    code, _, err = run("sessions", "add", "--from-file", str(names), environ=admin_env)
    assert code == 0 and "added 12000 session(s)" in err, err
    with open_store(live_server.db_path) as store:
        assert store.status()["total"] == 12_001
        rows, _ = store.list_sessions(limit=1)
        assert (rows[0]["name"], rows[0]["kind"]) == ("tele1", "telethon")
    lines = run("sessions", "list", environ=admin_env)[1].splitlines()
    assert len(lines) == 1 + 12_001, "the list pages through every session"


def _session_lookups(server) -> int:
    """How many times the server was asked for its session list (GET /sessions, any query)."""
    server.request("GET", "/healthz", key=None)  # its access line comes after every earlier one
    deadline = time.monotonic() + 20
    while "GET /healthz 200" not in server.log:
        assert time.monotonic() < deadline, server.log[-2000:]
        time.sleep(0.02)  # the server's output is read by a thread: poll it, with a deadline
    return len(re.findall(r"telegate\.access: \S+ GET /sessions 200 ", server.log))


def test_commands_by_name_ask_for_their_names_not_the_whole_list(live_server, admin_env):
    """On a pool whose list takes three pages to read, each command by name asks for its
    names once, and still reports the names that are not registered."""
    ids = dict(zip((f"n{i:05d}" for i in range(12_000)),
                   live_server.add_sessions(*(f"n{i:05d}" for i in range(12_000)))))
    odd = ["a,b", "über konto", "x&y=z+1#%"]
    live_server.add_sessions(*odd)
    code, _, err = run("sessions", "disable", "n11999", "ghost", "n00007", *odd, "--reason", "banned",
                       environ=admin_env)
    assert (code, err) == (1, "disabled 5 session(s)\ntelegate: error: not registered: ghost\n")
    code, _, err = run("sessions", "enable", "n11999", environ=admin_env)
    assert (code, err) == (0, "enabled 1 session(s)\n")
    code, _, err = run("sessions", "remove", "n00007", "ghost", "spook", "a,b", environ=admin_env)
    assert (code, err) == (1, "removed 2 session(s)\ntelegate: error: not registered: ghost, spook\n")
    assert _session_lookups(live_server) == 3
    rows = {row["name"]: row for row in map(json.loads, run("sessions", "list", "--json", environ=admin_env)[1]
                                           .splitlines())}
    assert len(rows) == 12_000 - 1 + 2 and "n00007" not in rows and "a,b" not in rows
    assert [rows[name]["state"] for name in ("n11999", "n11998", "über konto", "x&y=z+1#%")] == [
        "free", "free", "disabled", "disabled"]
    # Each change went through the session's own PATCH: its history names the admin key.
    events = live_server.request("GET", f"/sessions/{ids['n11999']}/events", key="admin").json["events"]
    assert [(e["type"], e["key"]) for e in events] == [("enable", "test-admin"), ("disable", "test-admin")]


@pytest.fixture
def server_before_the_name_filter(live_server) -> Iterator[str]:
    """The live server's pool behind a server from before GET /sessions took ``name``: the
    same app under waitress, the ``name`` parameters dropped (Bottle ignores unknown ones)."""
    store = open_store(live_server.db_path)
    app = create_app(Settings(db=live_server.db_path), store)

    def without_names(environ, start_response):
        pairs = urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        environ["QUERY_STRING"] = urllib.parse.urlencode([(k, v) for k, v in pairs if k != "name"])
        return app(environ, start_response)

    sock = bind_socket("127.0.0.1", 0)
    server = create_server(without_names, sock, **waitress_options(Settings(threads=2)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.close()
        server.task_dispatcher.shutdown()
        thread.join(10)
        store.close()


def test_commands_by_name_still_work_with_a_server_before_the_name_filter(live_server, admin_env,
                                                                         server_before_the_name_filter):
    """Such a server answers a page of the whole list: the command reads the list through, as before."""
    live_server.add_sessions(*(f"n{i:05d}" for i in range(6_000)))
    env = {**admin_env, "TELEGATE_URL": server_before_the_name_filter}
    code, _, err = run("sessions", "disable", "n05999", "ghost", "n00001", environ=env)
    assert (code, err) == (1, "disabled 2 session(s)\ntelegate: error: not registered: ghost\n")
    disabled = live_server.request("GET", "/sessions?state=disabled", key="admin").json["sessions"]
    assert [row["name"] for row in disabled] == ["n00001", "n05999"]
    assert run("sessions", "remove", "n05999", environ=env)[:2] == (0, "")
    assert live_server.status()["total"] == 5_999


def test_keys_commands_over_http(live_server, admin_env):
    code, key, err = run("keys", "create", "w1", environ=admin_env)
    key = key.strip()
    assert code == 0 and "created client key 'w1'" in err
    code, boss, _ = run("keys", "create", "boss", "--admin", environ=admin_env)
    assert live_server.request("GET", "/keys", key=boss.strip()).status == 200
    code, out, _ = run("keys", "list", environ=admin_env)
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "client" in lines["w1"] and "active" in lines["w1"] and "admin" in lines["boss"]
    assert key not in out
    assert live_server.request("GET", "/status", key=key).status == 200
    code, _, err = run("keys", "revoke", "w1", environ=admin_env)
    assert code == 0 and "revoked key 'w1'" in err
    assert live_server.request("GET", "/status", key=key).status == 401
    assert "revoked 20" in run("keys", "list", environ=admin_env)[1]
    code, _, err = run("keys", "revoke", "w1", environ=admin_env)
    assert code == 1 and "no active key named 'w1'" in err and err.count("\n") == 1


def test_key_names_with_odd_characters_round_trip(live_server, admin_env):
    for name in ("team/alpha", "тест ключ", "a?b#c%d"):
        assert run("keys", "create", name, environ=admin_env)[0] == 0
        assert run("keys", "revoke", name, environ=admin_env)[0] == 0, name
    revoked = {row["name"]: row["revoked_at"] for row in live_server.request("GET", "/keys", key="admin").json["keys"]}
    assert all(revoked[name] for name in ("team/alpha", "тест ключ", "a?b#c%d"))


# -- the /keys API in process ------------------------------------------------------------------------


def test_keys_api_creates_lists_and_revokes(wsgi):
    reply = wsgi("POST", "/keys", {"name": "w2"}, key="admin")
    assert reply.status == 201 and reply.headers["Cache-Control"] == "no-store"
    created = reply.json
    assert (created["name"], created["scope"], created["max_leases"]) == ("w2", "client", None)
    assert wsgi.store.authenticate(created["key"]).scope == "client"
    assert wsgi("POST", "/keys", {"name": "a2", "admin": True}, key="admin").json["scope"] == "admin"
    listed = wsgi("GET", "/keys", key="admin").json["keys"]
    assert [row["name"] for row in listed] == ["admin", "client", "w2", "a2"]
    assert set(listed[0]) == {"name", "scope", "max_leases", "max_waiting", "leases", "created_at", "revoked_at"}
    assert created["key"] not in json.dumps(listed)
    revoked = wsgi("DELETE", "/keys/w2", key="admin")
    assert revoked.json == {"status": "revoked", "name": "w2", "leases_ended": 0}
    assert wsgi.store.authenticate(created["key"]) is None
    assert wsgi("DELETE", "/keys/w2", key="admin").status == 404


@pytest.mark.parametrize("body,words", [
    ({}, "name is required"),
    ({"name": "  "}, "name must not be empty"),
    ({"name": "k" * 101}, "at most 100 characters"),
    ({"name": "w", "admin": 1}, "admin must be true or false"),
    ({"name": "w", "max_leases": 0}, "max_leases must be a positive whole number"),
    ({"name": "w", "max_leases": "3"}, "max_leases must be a whole number"),
    ({"name": "w", "scope": "admin"}, "unknown field(s) scope"),
])
def test_keys_api_rejects_bad_input_and_creates_nothing(wsgi, body, words):
    reply = wsgi("POST", "/keys", body, key="admin")
    assert reply.status == 400 and reply.json["error"] == "bad_request", reply
    assert words in reply.json["detail"]
    assert wsgi.store.count_keys() == 2


def test_keys_api_needs_an_admin_key(wsgi):
    assert wsgi("POST", "/keys", {"name": "w"}).status == 403
    assert wsgi("GET", "/keys").status == 403
    assert wsgi("DELETE", "/keys/admin").status == 403
    assert wsgi("GET", "/keys", key=None).status == 401
    assert wsgi.store.count_keys() == 2
    assert wsgi("DELETE", "/keys/admin", key="admin", query="keep_leases=perhaps").status == 400
    assert wsgi.store.count_keys() == 2


def test_max_leases_is_kept_and_enforced_and_revoking_ends_leases(wsgi):
    wsgi.store.add_sessions(["s1", "s2", "s3"])
    capped = wsgi("POST", "/keys", {"name": "capped", "max_leases": 1}, key="admin").json
    assert capped["max_leases"] == 1
    assert wsgi("POST", "/session", key=capped["key"]).status == 200
    over = wsgi("POST", "/session", key=capped["key"])
    assert over.status == 429 and over.json["error"] == "lease_limit"
    row = next(r for r in wsgi("GET", "/keys", key="admin").json["keys"] if r["name"] == "capped")
    assert (row["max_leases"], row["leases"]) == (1, 1)
    assert wsgi("DELETE", "/keys/capped", key="admin").json["leases_ended"] == 1
    assert wsgi("GET", "/status").json["in_use"] == 0
    kept = wsgi("POST", "/keys", {"name": "kept"}, key="admin").json
    wsgi("POST", "/session", key=kept["key"])
    assert wsgi("DELETE", "/keys/kept", key="admin", query="keep_leases=true").json["leases_ended"] == 0
    assert wsgi("GET", "/status").json["in_use"] == 1


def test_keys_max_leases_and_keep_leases_from_the_command(live_server, admin_env):
    live_server.add_sessions("m1", "m2")
    code, key, err = run("keys", "create", "capped", "--max-leases", "1", environ=admin_env)
    assert code == 0 and "at most 1 lease(s) at once" in err
    assert live_server.request("POST", "/session", key=key.strip()).status == 200
    assert live_server.request("POST", "/session", key=key.strip()).status == 429
    line = next(l for l in run("keys", "list", environ=admin_env)[1].splitlines() if l.startswith("capped "))
    assert "max 1" in line and "1 lease(s)" in line, line
    code, _, err = run("keys", "revoke", "capped", "--keep-leases", environ=admin_env)
    assert code == 0 and "lease(s) ended" not in err and live_server.status()["in_use"] == 1
    code, key2, _ = run("keys", "create", "w9", environ=admin_env)
    live_server.request("POST", "/session", key=key2.strip())
    code, _, err = run("keys", "revoke", "w9", environ=admin_env)
    assert code == 0 and "1 of its lease(s) ended" in err


# -- small things of issue 12 --------------------------------------------------------------------------


def test_holder_defaults_to_the_key_name(wsgi):
    wsgi.store.add_sessions(["s1", "s2"])
    wsgi("POST", "/session", {"name": "s1"})
    wsgi("POST", "/session", {"name": "s2", "holder": "box:1"})
    holders = {row["name"]: row["holder"] for row in wsgi("GET", "/sessions", key="admin").json["sessions"]}
    assert holders == {"s1": "client", "s2": "box:1"}


def test_503_detail_says_waiting_count_counts_sessions_in_flood_wait(wsgi):
    (row,), _ = wsgi.store.add_sessions(["s1"])
    lease = wsgi("POST", "/session").json
    wsgi("POST", "/release", {"session_id": row["id"], "lease_token": lease["lease_token"], "flood_wait": 60})
    reply = wsgi("POST", "/session")
    assert reply.status == 503 and reply.json["waiting_count"] == 1
    assert "waiting_count counts sessions in flood wait, not workers waiting" in reply.json["detail"]


def test_serve_help_shows_each_setting_once():
    out = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(out):
        main(["serve", "--help"])
    text = out.getvalue()
    for setting in SETTINGS:
        assert text.count(setting.env) == 1, (setting.env, text)
        assert text.count(setting.help[:30]) == 1, (setting.help, text)
    assert "default None" not in text
