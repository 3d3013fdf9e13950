"""Session names that mean one file everywhere: the name rules of ``telegate._names``, on both stores.

Windows stands behind most of these rules, and CI runs on Linux: ``PureWindowsPath``
plays Windows' file system (device names, the characters it refuses), and names that
differ only in case (one file on NTFS and on macOS' APFS) are registered through the
HTTP API, the CLI and the import like a Windows admin would.
"""
from __future__ import annotations

import io
import sqlite3
from pathlib import PureWindowsPath

import pytest

from telegate import _names
from telegate.cli import main
from telegate.store import open_store

# Windows behaviour stood in for on Linux: PureWindowsPath for device names and the characters NTFS
# refuses; names differing only in case for NTFS and APFS, which keep them as one file.
pytestmark = pytest.mark.windows

#: name -> the rule it breaks. Issue 18's hostile names first (a name becomes a file path on
#: the worker), then what Windows can't hold as a file.
BAD = {
    "../../etc/passwd": "path",
    "x/../y": "path",
    "C:\\x": "path",
    "a\x00b": "path",
    ".": "dot",
    "..": "dot",
    ".hidden": "dot",
    "CON": "windows_reserved",  # Windows: CON.session opens the console
    "nul": "windows_reserved",
    "COM1": "windows_reserved",
    "lpt9.backup": "windows_reserved",
    "a:b": "windows_character",  # Windows: the stream "b" of the file "a"
    'a"b': "windows_character",
    "a|b": "windows_character",
    "a?b": "windows_character",
    "a*b": "windows_character",
    "<a>": "windows_character",
    "a\tb": "control",
    "a\u202eb": "control",
    "  ": "empty",
    "x" * 256: "too_long",
}
GOOD = ["acc1", "Акк", "🙂 bot", "a.b", "x..y", "CONSOLE", "con1", "COM0x", "+79990001122", "a b"]


@pytest.mark.parametrize("name", list(BAD), ids=[repr(name[:20]) for name in BAD])
def test_each_bad_name_is_refused_naming_its_rule(name):
    with pytest.raises(_names.BadName) as caught:
        _names.check_name(name, "name")
    assert caught.value.rule == BAD[name]
    assert _names.name_problem(name) == BAD[name]


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass(name):
    assert _names.check_name(name) == name
    assert _names.name_problem(name) is None


def test_device_names_are_what_windows_paths_call_reserved():
    """Windows' device names as pathlib's Windows flavour knows them, in any case, with any extension."""
    for stem in ("CON", "PRN", "AUX", "NUL", "COM1", "COM9", "LPT1", "LPT9", "con", "Nul", "aux.tar"):
        assert PureWindowsPath(stem + ".session").is_reserved()
        assert _names.name_problem(stem) == "windows_reserved", stem
    for stem in ("CONSOLE", "NULL", "COM", "LPT", "acc1"):
        assert not PureWindowsPath(stem + ".session").is_reserved()
        assert _names.name_problem(stem) is None, stem


def test_one_key_per_file_on_a_case_insensitive_disk():
    """NTFS and APFS compare names case-insensitively, Unicode included."""
    assert _names.name_key("acc1") == _names.name_key("ACC1")
    assert _names.name_key("Акк") == _names.name_key("акк")
    assert _names.name_key("Straße") == _names.name_key("STRASSE")
    assert _names.name_key("e\u0301") == _names.name_key("\u00e9")  # macOS keeps names decomposed
    assert _names.name_key("acc1") != _names.name_key("acc2")


# -- the HTTP API, on both stores ------------------------------------------------------


@pytest.mark.parametrize("name", ["../../etc/passwd", "x/../y", "C:\\x", ".hidden", "..", "CON", "nul", "a:b"])
def test_api_refuses_a_bad_name_with_400_naming_the_rule(wsgi, name):
    before, _ = wsgi.store.list_sessions()
    reply = wsgi("POST", "/sessions", {"names": ["fine", name]}, key="admin")
    assert reply.status == 400, reply
    assert reply.json["error"] == "bad_request"
    assert f"names[1] {name!r}" in reply.json["detail"]
    assert f"(name rule: {BAD[name]})" in reply.json["detail"]
    assert wsgi.store.list_sessions()[0] == before  # nothing added, not even "fine"


@pytest.mark.parametrize("first, second", [("acc1", "ACC1"), ("Акк", "акк")])
def test_api_keeps_one_of_two_names_that_differ_only_in_case(wsgi, first, second):
    reply = wsgi("POST", "/sessions", {"names": [first, second]}, key="admin")
    assert reply.status == 400 and "(name rule: case)" in reply.json["detail"]
    assert wsgi("POST", "/sessions", {"name": first}, key="admin").json["existing"] == []
    reply = wsgi("POST", "/sessions", {"name": second}, key="admin")
    assert reply.status == 200 and reply.json == {"added": [], "existing": [second]}
    rows, total = wsgi.store.list_sessions()
    assert total == 1 and rows[0]["name"] == first
    assert wsgi.store.add_sessions([second])[1] == [second]  # the store itself refuses it too


def _legacy_pool(db) -> None:
    """A pool as it was before names were unique regardless of case: keys cleared, twins added raw."""
    with open_store(db) as store:
        store.add_sessions(["acc1", "ok"])
        store.engine.write(lambda tx: tx.run("UPDATE sessions SET name_key = NULL"))
        for name in ("ACC1", "Acc1", "CON"):
            store.engine.write(lambda tx, name=name: tx.run(
                "INSERT INTO sessions (name, kind, meta, created_at) VALUES (:n, 'unknown', '{}', 0)", {"n": name}))


def test_existing_twins_open_flagged_until_one_is_removed(fresh_db, tmp_path):
    db = fresh_db()
    _legacy_pool(db)
    with open_store(db) as store:  # opening fills the keys: twins do not stop the server
        rows = {row["name"]: row for row in store.list_sessions()[0]}
        assert rows["acc1"]["name_clash"] == ["ACC1", "Acc1"]
        assert rows["ACC1"]["name_clash"] == ["acc1", "Acc1"]
        assert rows["ok"]["name_clash"] == [] and rows["ok"]["name_problem"] is None
        assert rows["CON"]["name_problem"] == "windows_reserved" and rows["CON"]["name_clash"] == []
        assert store.add_sessions(["aCC1"]) == ([], ["aCC1"])  # still one file: no fourth
        assert store.remove_sessions_by_name(["acc1", "Acc1"]) == []
        (row,), _ = store.list_sessions(names=["ACC1"])
        assert row["name_clash"] == []  # the last of them holds the key now
        assert store.add_sessions(["acc1"]) == ([], ["acc1"])


def test_cli_and_dashboard_data_flag_twins(fresh_db, tmp_path):
    from support import WsgiCaller

    db = fresh_db()
    _legacy_pool(db)
    out, err = io.StringIO(), io.StringIO()
    assert main(["sessions", "list", "--db", str(db)], out=out, err=err, stdin=io.StringIO()) == 0
    lines = {line.split()[1]: line for line in out.getvalue().splitlines()[1:]}
    assert "NAME: one file on Windows and macOS with ACC1, Acc1" in lines["acc1"]
    assert "Windows device name" in lines["CON"]
    assert "NAME:" not in lines["ok"]
    caller = WsgiCaller(tmp_path, db)
    try:
        listed = {row["name"]: row for row in caller("GET", "/sessions", key="admin").json["sessions"]}
    finally:
        caller.store.close()
    assert listed["Acc1"]["name_problem"].startswith("one file on Windows and macOS with acc1, ACC1")
    assert listed["ok"]["name_problem"] is None


def test_sqlite_upgrade_from_version_5_keeps_twins(tmp_path):
    """A real file at the schema before this change, holding twins, upgrades without failing."""
    from telegate.store._schema import migrations, statements

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for version, sql in migrations("sqlite"):
        if version <= 5:
            for statement in statements(sql):
                conn.execute(statement)
    conn.executemany("INSERT INTO sessions (name, created_at) VALUES (?, 0)", [("Акк",), ("акк",), ("b",)])
    conn.execute("PRAGMA user_version = 5")
    conn.commit()
    conn.close()
    with open_store(path) as store:
        rows = {row["name"]: row["name_clash"] for row in store.list_sessions()[0]}
    assert rows == {"Акк": ["акк"], "акк": ["Акк"], "b": []}


# -- the CLI and the import --------------------------------------------------------------


def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, stdin=io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("name", ["../../etc/passwd", "C:\\x", ".hidden", "CON", "a:b"])
def test_cli_add_refuses_a_bad_name_in_one_line(fresh_db, name):
    db = str(fresh_db())
    code, _, err = run("sessions", "add", "--db", db, "--from-file", "-", stdin=f"good\n{name}\n")
    assert code == 1 and err.count("\n") == 1
    assert f"(name rule: {BAD[name]})" in err
    with open_store(db) as store:
        assert store.list_sessions()[1] == 0


def test_cli_add_refuses_twins_in_its_input(fresh_db):
    db = str(fresh_db())
    code, _, err = run("sessions", "add", "acc1", "ACC1", "--db", db)
    assert code == 1 and "names 1 'acc1' and 2 'ACC1' differ only in case" in err


def _session_file(path, kind="telethon") -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE sessions (x)")
    conn.execute("CREATE TABLE entities (x)" if kind == "telethon" else "CREATE TABLE peers (x)")
    conn.commit()
    conn.close()


def test_import_skips_names_windows_cannot_hold_and_twins(fresh_db, tmp_path):
    """Linux holds all these files side by side; a Windows worker could not."""
    folder = tmp_path / "sessions"
    folder.mkdir()
    for stem in ("acc1", "ACC1", "CON", "a:b", ".hidden", "Акк", "акк", "fine"):
        _session_file(folder / f"{stem}.session")
    db = str(fresh_db())
    code, _, err = run("sessions", "import", str(folder), "--db", db)
    assert code == 0, err
    with open_store(db) as store:
        names = sorted(row["name"] for row in store.list_sessions()[0])
    assert names == sorted(["ACC1", "fine", "Акк"])  # sorted() order: the first of each pair wins
    assert "skipped acc1.session: its name differs only in case from ACC1.session" in err
    assert "skipped акк.session: its name differs only in case from Акк.session" in err
    assert "skipped CON.session" in err and "(name rule: windows_reserved)" in err
    assert "skipped a:b.session" in err and "(name rule: windows_character)" in err
    assert "skipped .hidden.session" in err and "(name rule: dot)" in err
