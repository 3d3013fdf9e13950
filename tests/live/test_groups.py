"""Groups: sessions carry groups, and a key created with groups leases, counts and sees those alone.

On both stores, through a real server (and the CLI, in process, on the database and on the
server). What a hostile confined key can't reach is in test_hostile_groups.py.
"""
from __future__ import annotations

import io
import json
import os
import threading

import pytest

from support import eventually
from telegate.cli import main
from telegate.store import open_store


def run(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, stdin=io.StringIO(""), environ=environ or {})
    return code, out.getvalue(), err.getvalue()


def _sessions(server) -> dict[str, dict]:
    return {row["name"]: row for row in server.request("GET", "/sessions", key="admin").json["sessions"]}


def test_groups_over_http(live_server):
    server = live_server
    reply = server.request("POST", "/sessions", {"names": ["a", "b"], "groups": ["EU", "premium", "eu"]}, key="admin")
    assert reply.status == 201
    assert server.request("POST", "/sessions", {"name": "c"}, key="admin").status == 201
    rows = _sessions(server)
    assert {name: row["groups"] for name, row in rows.items()} == {"a": ["eu", "premium"], "b": ["eu", "premium"],
                                                                  "c": []}
    # PATCH replaces the groups, and the history says who changed them from what.
    reply = server.request("PATCH", f"/sessions/{rows['c']['id']}", {"groups": ["us"]}, key="admin")
    assert reply.status == 200 and reply.json["groups"] == ["us"]
    events = server.request("GET", f"/sessions/{rows['c']['id']}/events", key="admin").json["events"]
    assert (events[0]["type"], events[0]["key"], events[0]["groups"], events[0]["was"]) == (
        "groups", "test-admin", ["us"], [])
    assert server.request("PATCH", f"/sessions/{rows['a']['id']}", {"groups": []}, key="admin").json["groups"] == []
    # Bad groups: 400 naming the rule, nothing changes.
    before = _sessions(server)
    for body, words in (({"groups": "eu"}, "must be a list"), ({"groups": ["e u"]}, "not a group name"),
                        ({"groups": [""]}, "not a group name"), ({"groups": ["x" * 65]}, "not a group name"),
                        ({"groups": [1]}, "must be a list of group names"),
                        ({"groups": [f"g{n}" for n in range(33)]}, "at most 32")):
        reply = server.request("PATCH", f"/sessions/{rows['b']['id']}", body, key="admin")
        assert reply.status == 400 and words in reply.json["detail"], (body, reply.json)
        reply = server.request("POST", "/sessions", {"name": "d", **body}, key="admin")
        assert reply.status == 400 and words in reply.json["detail"], (body, reply.json)
    assert _sessions(server) == before
    # Keys: groups on creation, listed; an admin key can't be confined.
    reply = server.request("POST", "/keys", {"name": "eu-worker", "groups": ["eu", "US"]}, key="admin")
    assert reply.status == 201 and reply.json["groups"] == ["eu", "us"]
    reply = server.request("POST", "/keys", {"name": "boss", "admin": True, "groups": ["eu"]}, key="admin")
    assert reply.status == 400 and "admin key sees every session" in reply.json["detail"]
    keys = {key["name"]: key for key in server.request("GET", "/keys", key="admin").json["keys"]}
    assert keys["eu-worker"]["groups"] == ["eu", "us"] and keys["test-client"]["groups"] == []
    assert "boss" not in keys


def test_a_confined_key_leases_its_groups_and_the_others_see_all(live_server):
    server = live_server
    ids = dict(zip(("eu1", "eu2", "us1", "none"), [
        *server.add_sessions("eu1", "eu2", groups=["eu"]), *server.add_sessions("us1", groups=["us"]),
        *server.add_sessions("none", meta={"proxy": "socks5://u:p@h:1"})]))
    eu = server.store.create_key("eu", groups=["eu"])
    both = server.store.create_key("eu-us", groups=["eu", "us"])
    leased = [server.request("POST", "/session", {"ttl": 60}, key=eu).json for _ in range(2)]
    assert sorted(lease["session_name"] for lease in leased) == ["eu1", "eu2"]
    reply = server.request("POST", "/session", {"ttl": 60}, key=eu)
    assert reply.status == 503 and reply.json["total"] == 2 and reply.json["in_use"] == 2
    # A wait that runs out in line: its 503 counts the key's groups alone too.
    reply = server.request("POST", "/session", {"ttl": 60, "wait": 1}, key=eu)
    assert reply.status == 503 and (reply.json["total"], reply.json["in_use"]) == (2, 2), reply
    assert server.request("POST", "/session", {"ttl": 60}, key=both).json["session_name"] == "us1"
    assert server.request("POST", "/session", {"ttl": 60}, key=both).status == 503
    # A key without groups, and an admin, see every session ("none" is in no group).
    assert server.request("POST", "/session", {"name": "none", "ttl": 60}).json["meta"] == {
        "proxy": "socks5://u:p@h:1"}
    assert server.request("GET", "/status").json["total"] == 4
    assert server.request("GET", "/status", key="admin").json["total"] == 4
    assert server.request("GET", "/status", key=both).json["total"] == 3
    # The key's own lease stays its own when the admin moves the session out of its groups.
    mine = leased[0]
    server.request("PATCH", f"/sessions/{mine['session_id']}", {"groups": ["us"]}, key="admin")
    assert server.request("POST", "/renew", {"session_id": mine["session_id"], "lease_token": mine["lease_token"]},
                          key=eu).status == 200
    assert server.request("POST", "/release", {"session_id": mine["session_id"], "lease_token": mine["lease_token"]},
                          key=eu).json == {"status": "released"}
    assert _sessions(server)[mine["session_name"]]["state"] == "free"
    reply = server.request("POST", "/session", {"name": mine["session_name"]}, key=eu)
    assert reply.status == 404  # out of its groups now: as if unknown


def test_a_confined_key_with_no_session_in_its_groups_is_told_so(live_server):
    live_server.add_sessions("a")
    lonely = live_server.store.create_key("lonely", groups=["nowhere"])
    reply = live_server.request("POST", "/session", {"wait": 5}, key=lonely)
    assert reply.status == 503 and reply.json["total"] == 0
    assert "no session is in this key's groups (nowhere)" in reply.json["detail"]


def test_a_waiting_confined_key_gets_its_groups_alone(live_server):
    """A release outside its groups does not end its wait; one inside, or a session moved into them, does."""
    server = live_server
    ids = dict(zip(("eu", "us", "later"), server.add_sessions("eu", groups=["eu"]) + server.add_sessions("us", "later")))
    eu = server.store.create_key("eu-worker", groups=["eu"])
    held = {name: server.request("POST", "/session", {"name": name, "ttl": 600}).json for name in ("eu", "us", "later")}
    answers: list = []

    def poll() -> None:
        answers.append(server.request("POST", "/session", {"wait": 30, "ttl": 60}, key=eu))

    for freed, moved in (("us", "eu"), ("later", None)):
        thread = threading.Thread(target=poll)
        thread.start()
        eventually(lambda: server.status()["waiting_workers"] == 1, what="the confined poll waits in line")
        # Freed outside its groups: an unconfined poll would get it; the confined one keeps waiting.
        lease = held[freed]
        assert server.request("POST", "/release", {"session_id": lease["session_id"],
                                                   "lease_token": lease["lease_token"]}).status == 200
        assert _sessions(server)[freed]["state"] == "free" and server.status()["waiting_workers"] == 1
        if moved:  # then its own group's session is released
            lease = held[moved]
            server.request("POST", "/release", {"session_id": lease["session_id"], "lease_token": lease["lease_token"]})
        else:  # then the admin puts the free session in its group
            server.request("PATCH", f"/sessions/{ids[freed]}", {"groups": ["eu"]}, key="admin")
        thread.join(60)
        assert answers[-1].status == 200, answers[-1]
        assert answers[-1].json["session_name"] == (moved or freed)
    assert server.request("GET", "/status", key=eu).json["in_use"] == 2


def test_migrate_copies_groups(tmp_path, pg_url):
    with open_store(tmp_path / "pool.db") as source:
        source.add_sessions(["a", "b"], groups=["eu"])
        source.add_sessions(["c"])
        key = source.create_key("eu-worker", groups=["eu"])
        with open_store(pg_url) as target:
            copied = source.copy_into(target)
            assert copied["session_groups"] == 2
            info = target.authenticate(key)
            assert info.groups == ("eu",)
            assert target.status(key=info)["total"] == 2
            assert {row["name"]: row["groups"] for row in target.list_sessions()[0]} == {
                "a": ["eu"], "b": ["eu"], "c": []}


def _cli_groups(environ: dict[str, str], extra: tuple[str, ...]) -> None:
    code, _, err = run("sessions", "add", "a", "b", "--group", "EU", "--group", "vip,eu", *extra, environ=environ)
    assert code == 0 and "added 2" in err, err
    assert run("sessions", "add", "c", *extra, environ=environ)[0] == 0
    code, key, err = run("keys", "create", "eu-worker", "--groups", "eu", *extra, environ=environ)
    assert code == 0 and "confined to group(s) eu" in err and key.startswith("tg_")
    code, out, err = run("keys", "create", "boss", "--admin", "--groups", "eu", *extra, environ=environ)
    assert (code, out) == (1, "") and "--groups is for client keys" in err
    code, out, err = run("keys", "create", "x", "--groups", "no/slash", *extra, environ=environ)
    assert (code, out) == (1, "") and err.startswith("telegate: error: --groups: 'no/slash' is not a group name")
    assert err.count("\n") == 1
    assert "groups eu" in run("keys", "list", *extra, environ=environ)[1]
    code, _, err = run("sessions", "set-groups", "c", "ghost", "--groups", "us,eu", *extra, environ=environ)
    assert code == 1 and "not registered: ghost" in err and "to eu, us" in err
    listing = json.loads(run("sessions", "list", "--json", *extra, environ=environ)[1])
    assert {row["name"]: row["groups"] for row in listing["sessions"]} == {
        "a": ["eu", "vip"], "b": ["eu", "vip"], "c": ["eu", "us"]}
    assert run("sessions", "set-groups", "c", "--groups", "", *extra, environ=environ)[0] == 0
    code, out, _ = run("sessions", "list", *extra, environ=environ)
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "KIND", "STATE", "GROUPS", "ACCOUNT", "PHONE", "USERNAME", "PREMIUM",
                                "PROXY", "DEVICE", "LAST", "LEASED", "BY", "DETAIL"]
    assert lines[1].split()[1:6] == ["a", "unknown", "free", "eu,vip", "no"] and lines[3].split()[4] == "no"


def test_cli_groups_on_the_database(fresh_db):
    _cli_groups({}, ("--db", str(fresh_db())))


def test_cli_groups_on_the_server(live_server):
    _cli_groups({"TELEGATE_URL": live_server.url, "TELEGATE_ADMIN_KEY": live_server.admin_key}, ())
    # The key made over HTTP is confined: it counts its group's two sessions.
    keys = {key["name"]: key for key in live_server.request("GET", "/keys", key="admin").json["keys"]}
    assert keys["eu-worker"]["groups"] == ["eu"]


def test_import_puts_sessions_in_groups(tmp_path, fresh_db):
    from telethon.sessions import SQLiteSession

    folder = tmp_path / "sessions"
    folder.mkdir()
    for name in ("one", "two"):
        session = SQLiteSession(str(folder / name))
        session.set_dc(2, "149.154.167.51", 443)
        session.save()
        session.close()
    db = str(fresh_db())
    code, _, err = run("sessions", "import", str(folder), "--group", "farm", "--db", db)
    assert code == 0 and "imported 2" in err, err
    with open_store(db) as store:
        assert {row["name"]: row["groups"] for row in store.list_sessions()[0]} == {"one": ["farm"], "two": ["farm"]}


def test_sessions_list_json_is_one_document_and_jsonl_lines(fresh_db):
    db = str(fresh_db())
    assert run("sessions", "add", "a", "b", "--db", db)[0] == 0
    code, out, _ = run("sessions", "list", "--json", "--db", db)
    document = json.loads(out)  # one document, whatever the count
    assert code == 0 and document["total"] == 2 and [row["name"] for row in document["sessions"]] == ["a", "b"]
    assert json.loads(run("sessions", "list", "--json", "--state", "disabled", "--db", db)[1]) == {
        "sessions": [], "total": 0}
    lines = run("sessions", "list", "--jsonl", "--db", db)[1].splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["a", "b"]
    assert run("sessions", "list", "--jsonl", "--state", "disabled", "--db", db)[1] == ""
    with pytest.raises(SystemExit):
        run("sessions", "list", "--json", "--jsonl", "--db", db)


def test_status_and_list_show_scoped_rests(live_server):
    """A session resting for one method is resting_scoped everywhere the admin looks, never free,
    and the counts add up to the total (issue 16 item 7, issue 18 M1)."""
    server = live_server
    server.add_sessions("rests", "free1")
    lease = server.request("POST", "/session", {"name": "rests"}).json
    server.request("POST", "/release", {"session_id": lease["session_id"], "lease_token": lease["lease_token"],
                                        "flood_wait": 31_000_000, "flood_scope": "made.up"})
    row = _sessions(server)["rests"]
    assert row["state"] == "resting_scoped" and row["rests"][0]["scope"] == "made.up"
    assert [r["name"] for r in server.request("GET", "/sessions?state=resting_scoped", key="admin").json["sessions"]] \
        == ["rests"]
    assert server.request("POST", "/session", {"name": "rests"}).status == 503  # what the state promises
    env = {"TELEGATE_URL": server.url, "TELEGATE_ADMIN_KEY": server.admin_key}
    code, out, _ = run("status", environ=env)
    counts = dict(part.split(": ") for part in out.splitlines()[0].split("  "))
    assert counts == {"total": "2", "free": "1", "in_use": "0", "in_floodwait": "0", "resting_scoped": "1",
                      "disabled": "0"}
    assert sum(int(v) for k, v in counts.items() if k != "total") == 2
    assert "1 session(s) rest for some methods only" in out
    code, out, _ = run("sessions", "list", "--state", "resting_scoped", environ=env)
    assert "rests" in out and "resting for made.up" in out and "free1" not in out
    # The last holder and when it had the session stay after the release.
    assert row["last_holder"] == "test-client" and row["leased_at"] is not None


def test_the_account_columns_show_no_secret(live_server):
    """Until the vault fills them, the account columns are empty; never a meta secret."""
    secret = os.urandom(8).hex()
    live_server.add_sessions("a", meta={"proxy": f"socks5://u:{secret}@h:1"})
    row = _sessions(live_server)["a"]
    assert {k: row[k] for k in ("has_account", "phone", "username", "premium", "device", "proxy_host")} == {
        "has_account": False, "phone": None, "username": None, "premium": None, "device": None, "proxy_host": None}
    env = {"TELEGATE_URL": live_server.url, "TELEGATE_ADMIN_KEY": live_server.admin_key}
    assert secret not in run("sessions", "list", environ=env)[1]
