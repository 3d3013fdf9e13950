"""``telegate sessions import / import-string / export`` and the progress of long commands.

Accounts are stored by the vault (``Store.put_sessions``); the tests that need it run
once the store has it. The rest (reasons, name-only sessions, progress, Ctrl-C) run on
any store, both backends (``--db`` and a live server over HTTP).
"""
from __future__ import annotations

import base64
import io
import json
import os
import stat
from pathlib import Path

import pytest

from support import account_files as fx
from telegate import _cli_accounts
from telegate._progress import Progress, track
from telegate.accounts import plan_folder, read_candidate, read_session_file
from telegate.cli import main
from telegate.store import Store, open_store

needs_vault = pytest.mark.skipif(not hasattr(Store, "put_sessions"),
                                 reason="the store keeps no accounts yet (issue 16's vault adds put_sessions)")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(*argv: str, stdin: str = "", environ: dict | None = None, err: io.StringIO | None = None):
    out, err = io.StringIO(), err or io.StringIO()
    code = main(list(argv), out=out, err=err, stdin=io.StringIO(stdin), environ=environ or {})
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def db(fresh_db) -> str:
    return str(fresh_db())


@pytest.fixture(params=["db", "http"])
def where(request, fresh_db):
    """The admin backend: ``--db`` on a database, or a live server over HTTP; (args, env, db path)."""
    if request.param == "db":
        path = str(fresh_db())
        return ["--db", path], {"TELEGATE_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}, path
    server = request.getfixturevalue("live_server")
    return [], {"TELEGATE_URL": server.url, "TELEGATE_ADMIN_KEY": server.admin_key}, str(server.db_path)


def accounts_in(where) -> dict[str, dict | None]:
    """Every session's account as the admin backend of ``where`` reads it back (the vault opens it)."""
    from telegate._admin_client import choose

    args, env, _ = where
    admin = choose(db=args[1] if args else None, url=None, key=None, environ=env)
    try:
        rows = admin.sessions_named([row["name"] for row in admin.iter_sessions()])
        return {name: admin.get_account(row["id"]) for name, row in rows.items()}
    finally:
        admin.close()


def names_in(db: str) -> dict[str, str]:
    with open_store(db) as store:
        rows, _ = store.list_sessions(limit=100_000)
    return {row["name"]: row["kind"] for row in rows}


# -- progress -------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_bar_on_a_terminal_shows_counts_rate_and_eta():
    clock, stream = Clock(), Tty()
    with Progress("import", 1000, stream, clock=clock, width=10) as bar:
        clock.now += 2.0
        bar.advance(250)
        assert bar.line() == "import  [##........]  250/1,000   25%  125/s  ETA 0:06"
        clock.now += 0.05
        bar.advance(1)  # within the redraw interval: not drawn
        assert stream.getvalue().count("\r") == 2
    assert stream.getvalue().endswith("\r\x1b[K")  # erased: the summary line follows on a clean line
    assert bar.elapsed == pytest.approx(2.05)


def test_progress_is_silent_when_not_a_terminal():
    stream = io.StringIO()
    assert list(track(range(5), "export", stream)) == [0, 1, 2, 3, 4]
    assert stream.getvalue() == ""


def test_progress_interrupted_keeps_the_bar():
    stream, clock = Tty(), Clock()
    with pytest.raises(KeyboardInterrupt):
        with Progress("rotate", 10, stream, clock=clock) as bar:
            clock.now += 1
            bar.advance(3)
            raise KeyboardInterrupt
    assert "3/10" in stream.getvalue() and stream.getvalue().endswith("\n")


def test_progress_eta_in_hours_and_unknown_total():
    clock = Clock()
    bar = Progress("migrate", 100_000, Tty(), clock=clock)
    clock.now += 10
    bar.advance(100)
    assert bar.line().endswith("ETA 2:46:30")
    empty = Progress("migrate", 0, Tty(), clock=clock)
    assert "0/0" in empty.line() and "ETA -" in empty.line()


# -- import: what is not imported, and why ----------------------------------------------------------


_EMPTY_TELETHON: list[bytes] = []


def _empty_telethon(path: Path) -> None:
    """A never-logged-in Telethon .session file, as Telethon writes it (made once, then copied:
    every such file holds the same bytes, and Telethon's own commits wait on the disk)."""
    if not _EMPTY_TELETHON:
        from telethon.sessions import SQLiteSession

        made = path.with_name("made-by-telethon.session")
        SQLiteSession(str(made)).close()
        _EMPTY_TELETHON.append(made.read_bytes())
        made.unlink()
    path.write_bytes(_EMPTY_TELETHON[0])


def test_import_names_every_entry_not_imported(where, tmp_path):
    args, env, db = where
    folder = tmp_path / "in"
    folder.mkdir()
    _empty_telethon(folder / "fresh.session")  # never logged in: registered by name, as before
    (folder / "junk.session").write_bytes(b"not sqlite at all")
    (folder / "readme.txt").write_text("hi", encoding="utf-8")
    (folder / "lonely.json").write_text("{}", encoding="utf-8")
    (folder / "sub").mkdir()
    code, _, err = run("sessions", "import", str(folder), *args, environ=env)
    assert code == 0, err
    assert "warning: skipped junk.session: not a SQLite database" in err
    assert "warning: skipped readme.txt: not a .session file" in err
    assert "warning: skipped lonely.json: a .json with no lonely.session beside it" in err
    assert "warning: skipped sub/: a folder with no Telegram Desktop tdata" in err
    assert "fresh.session: holds no auth key (the session never logged in): registered by name only" in err
    summary = err.strip().splitlines()[-1]
    assert summary.startswith(f"imported 1 session(s) from {folder}, 0 with an account, 4 file(s) skipped in ")
    assert "\r" not in err  # not a terminal: no bar, one summary line
    assert names_in(db) == {"fresh": "telethon"}
    # Again: nothing is silently skipped; the name is listed as not changed.
    code, _, err = run("sessions", "import", str(folder), *args, environ=env)
    assert code == 0 and "not changed (1 registered already; --update refreshes them): fresh" in err


def test_import_interrupted_leaves_whole_batches(db, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    for number in range(700):
        _empty_telethon(folder / f"s{number:03d}.session")
    real = _cli_accounts.read_candidate
    seen = []

    def interrupting(candidate):
        seen.append(candidate)
        if len(seen) == 650:
            raise KeyboardInterrupt  # the admin's Ctrl-C, between two accounts
        return real(candidate)

    monkeypatch.setattr(_cli_accounts, "read_candidate", interrupting)
    code, _, err = run("sessions", "import", str(folder), "--db", db)
    assert code == 130
    assert "interrupted after 649 of 700 entries; every account stored is whole" in err
    assert len(names_in(db)) == 500  # the first batch; the second was never sent
    monkeypatch.setattr(_cli_accounts, "read_candidate", real)
    code, _, err = run("sessions", "import", str(folder), "--db", db)
    assert code == 0 and "imported 200 session(s)" in err and "500 already registered" in err
    assert len(names_in(db)) == 700


def test_import_shows_a_bar_on_a_terminal(db, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for number in range(3):
        _empty_telethon(folder / f"s{number}.session")
    err = Tty()
    code, _, text = run("sessions", "import", str(folder), "--db", db, err=err)
    assert code == 0 and "import  [" in text and "3/3" in text and "ETA" in text


@pytest.mark.parametrize("stdin,words", [
    ("", "stdin is not a session string: empty"),
    ("hello", "5 characters: neither a Telethon string session"),
    ("1" + "A" * 10, "neither"),
])
def test_import_string_bad_input_is_one_line(db, stdin, words):
    code, out, err = run("sessions", "import-string", "x", "--db", db, stdin=stdin)
    assert code == 1 and out == "" and err.startswith("telegate: error: ") and words in err
    assert err.count("\n") == 1


def test_import_string_never_echoes_the_string(db):
    secret = fx.telethon_string(bytes(256))  # an all-zero key: refused
    code, _, err = run("sessions", "import-string", "x", "--db", db, stdin=secret)
    assert code == 1 and "all zeros" in err and secret[5:40] not in err


def test_export_reports_unknown_and_name_only_sessions(where, tmp_path):
    args, env, db = where
    run("sessions", "add", "bare", *args, environ=env)
    code, _, err = run("sessions", "export", "bare", "ghost", "--to", str(tmp_path / "out"), *args, environ=env)
    assert code == 1
    assert "warning: not exported bare: holds no account (registered by name only)" in err
    assert "warning: not exported ghost: not registered" in err
    assert "exported 0 of 2 session(s)" in err
    assert not list((tmp_path / "out").iterdir())


# -- with the vault: accounts in and out ----------------------------------------------------------------


def _folder(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    folder = tmp_path / "in"
    folder.mkdir()
    keys = {name: fx.random_key() for name in ("tele", "pyro", "old_tele", "old_pyro")}
    fx.telethon_session(folder / "tele.session", keys["tele"])
    (folder / "tele.json").write_text(json.dumps({
        "app_id": 2040, "app_hash": "b18441a1ff607e10a989891a5462e627", "device": "Desktop", "sdk": "Windows 10",
        "app_version": "4.8.1 x64", "lang_pack": "tdesktop", "lang_code": "en", "system_lang_pack": "en-US",
        "twoFA": "pw-" + os.urandom(4).hex(), "phone": "79990001122", "username": "tele_acc", "is_premium": True,
        "proxy": ["socks5", "10.1.2.3", 1080, True, "u", "p-" + os.urandom(4).hex()]}), encoding="utf-8")
    fx.kurigram_session(folder / "pyro.session", keys["pyro"])
    (folder / "pyro.json").write_text(json.dumps({"app_id": "12345", "device": 7}), encoding="utf-8")
    fx.telethon_session_of_version(folder / "old_tele.session", keys["old_tele"], 3)
    fx.pyrogram_session_of_version(folder / "old_pyro.session", keys["old_pyro"], 2)
    return folder, keys


@needs_vault
def test_import_keeps_every_field_and_export_writes_working_files(where, tmp_path):
    args, env, db = where
    folder, keys = _folder(tmp_path)
    code, _, err = run("sessions", "import", str(folder), *args, environ=env)
    assert code == 0, err
    assert "imported 4 session(s)" in err and "4 with an account" in err
    assert "warning: pyro.json: missing app_hash, sdk, app_version" in err
    assert "warning: pyro.json: device is a number, not text (ignored)" in err
    assert names_in(db) == {"tele": "telethon", "pyro": "pyrogram", "old_tele": "telethon", "old_pyro": "pyrogram"}
    expected = {}
    candidates, _ = plan_folder(folder)
    expected.update({f.name: f.account for c in candidates for f in read_candidate(c)})
    stored = accounts_in(where)
    for name, key in keys.items():
        assert base64.b64decode(stored[name]["auth_key"]) == key
        for field, value in expected[name].items():
            if field != "state":
                assert stored[name].get(field) == value, (name, field)
    assert stored["tele"]["proxy"].startswith("socks5://u:p-") and stored["tele"]["premium"] is True
    out = tmp_path / "out"
    code, _, err = run("sessions", "export", *keys, "--to", str(out), *args, environ=env)
    assert code == 0 and f"exported 4 of 4 session(s) to {out}" in err, err
    for name, key in keys.items():
        path = out / f"{name}.session"
        if os.name == "posix":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        kind, account = read_session_file(path)
        assert kind == names_in(db)[name] and base64.b64decode(account["auth_key"]) == key
    from telethon.sessions import SQLiteSession
    session = SQLiteSession(str(out / "tele.session"))
    assert session.auth_key.key == keys["tele"]
    session.close()
    assert fx.open_kurigram_file(out / "pyro.session")["auth_key"] == keys["pyro"]
    # Existing files are left alone; --format writes the other library's file.
    code, _, err = run("sessions", "export", "tele", "--to", str(out), *args, environ=env)
    assert code == 1 and "exists (--force replaces it)" in err
    code, _, err = run("sessions", "export", "tele", "--to", str(out), "--format", "pyrogram", "--force",
                       "--json", *args, environ=env)
    assert code == 0, err
    assert fx.open_kurigram_file(out / "tele.session")["auth_key"] == keys["tele"]
    seller = json.loads((out / "tele.json").read_text(encoding="utf-8"))
    assert seller["app_id"] == 2040 and seller["proxy"].startswith("socks5://")


@needs_vault
def test_update_refreshes_kind_and_account(where, tmp_path):
    args, env, db = where
    folder, keys = _folder(tmp_path)
    run("sessions", "add", "tele", *args, environ=env)  # registered earlier, kind unknown
    code, _, err = run("sessions", "import", str(folder), *args, environ=env)
    assert code == 0 and "not changed (1 registered already; --update refreshes them): tele" in err
    assert names_in(db)["tele"] == "unknown"
    code, _, err = run("sessions", "import", str(folder), "--update", *args, environ=env)
    assert code == 0 and "4 updated" in err, err
    assert names_in(db)["tele"] == "telethon"
    assert base64.b64decode(accounts_in(where)["tele"]["auth_key"]) == keys["tele"]


@needs_vault
def test_import_string_both_libraries(where):
    args, env, db = where
    key = fx.random_key()
    code, _, err = run("sessions", "import-string", "t1", *args, environ=env, stdin=fx.telethon_string(key))
    assert code == 0 and "imported 't1' from a telethon session string" in err
    code, _, err = run("sessions", "import-string", "p1", *args, environ=env, stdin=fx.kurigram_string(key) + "\n")
    assert code == 0 and names_in(db) == {"t1": "telethon", "p1": "pyrogram"}
    code, _, err = run("sessions", "import-string", "t1", *args, environ=env, stdin=fx.kurigram_string(key))
    assert code == 1 and "registered already and was not changed; pass --update" in err
    code, _, err = run("sessions", "import-string", "t1", "--update", *args, environ=env,
                       stdin=fx.kurigram_string(key))
    assert code == 0 and "updated 't1'" in err and names_in(db)["t1"] == "pyrogram"


@needs_vault
def test_an_account_the_server_refuses_is_named_and_the_rest_go_in(where, tmp_path):
    args, env, db = where
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a1", "a2", "a3"):
        fx.telethon_session(folder / f"{name}.session", fx.random_key())
    (folder / "a2.json").write_text(json.dumps({"username": "u" * 500}), encoding="utf-8")  # over the server's limit
    code, _, err = run("sessions", "import", str(folder), *args, environ=env)
    assert code == 0, err
    assert "warning: skipped a2: " in err and "username" in err
    assert "imported 2 session(s)" in err and "1 file(s) skipped" in err
    assert names_in(db) == {"a1": "telethon", "a3": "telethon"}


@needs_vault
def test_groups_pass_through_to_the_server(where, tmp_path):
    args, env, db = where
    folder = tmp_path / "in"
    folder.mkdir()
    fx.telethon_session(folder / "g1.session", fx.random_key())
    code, _, err = run("sessions", "import", str(folder), "--group", "RU,premium", "--group", "ru", *args,
                       environ=env)
    # The groups are stored with the account, checked and normalised as `sessions add --group` does.
    assert code == 0, err
    with open_store(db) as store:
        (row,), _ = store.list_sessions(names=["g1"])
        assert row["groups"] == ["premium", "ru"] and row["has_account"]
    code, _, err = run("sessions", "import", str(folder), "--group", "bad name", *args, environ=env)
    assert code != 0 and err.startswith("telegate: error: ") and "group name" in err and err.count("\n") == 1


@needs_vault
def test_a_huge_entity_cache_keeps_the_most_recent_and_fits_one_request(where, tmp_path):
    import sqlite3

    args, env, db = where
    folder = tmp_path / "in"
    folder.mkdir()
    fx.telethon_session(folder / "big.session", fx.random_key())
    with sqlite3.connect(folder / "big.session") as conn:
        conn.executemany("INSERT INTO entities VALUES (?, ?, ?, ?, ?, ?)",
                         [(10_000 + n, n, f"user_{n}", None, "Some Body " * 3, n) for n in range(30_000)])
    conn.close()
    code, _, err = run("sessions", "import", str(folder), *args, environ=env)
    assert code == 0 and "imported 1 session(s)" in err, err
    kept = int(err.split("cached entities; the ")[1].split(" ")[0])
    assert "big: 30002 cached entities" in err and 1000 < kept <= 20_000
    entities = accounts_in(where)["big"]["state"]["entities"]
    mine = [e["id"] for e in entities if 10_000 <= e["id"] < 40_000]
    assert len(entities) == kept and min(mine) == 40_000 - len(mine)  # the most recently seen
