"""The account formats: real Telethon, kurigram and Telegram Desktop files in, working files out."""
from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

from support import account_files as fx
from telegate.accounts import (ACCOUNT_FIELDS, FormatError, apply_sidecar, auth_key_bytes, new_account, plan_folder,
                               proxy_url, pyrogram_string, read_candidate, read_session_file, read_session_string,
                               telethon_string, write_session_file)
from telegate.accounts._formats import peer_type_from_id
from telegate.accounts._tdata import tdata_available


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


# -- Telethon .session files --------------------------------------------------------------------


def test_telethon_session_written_by_telethon(tmp_path):
    key = fx.random_key()
    fx.telethon_session(tmp_path / "a.session", key)
    kind, account = read_session_file(tmp_path / "a.session")
    assert kind == "telethon"
    assert list(account) == list(ACCOUNT_FIELDS)
    assert account["auth_key"] == b64(key) and auth_key_bytes(account) == key
    assert (account["dc_id"], account["server_address"], account["port"]) == (2, "149.154.167.51", 443)
    assert account["test_mode"] is False
    by_id = {e["id"]: e for e in account["state"]["entities"]}
    assert by_id[fx.TELETHON_ENTITY_USER] == {"id": fx.TELETHON_ENTITY_USER, "hash": -42, "type": None,
                                              "username": "someone", "phone": "15550001", "name": "Some One"}
    assert by_id[fx.TELETHON_ENTITY_CHANNEL]["hash"] == 99
    assert by_id[fx.TELETHON_ENTITY_CHANNEL]["username"] == "news"
    assert account["state"]["update_state"] == {"pts": 10, "qts": 2, "date": 1700000000, "seq": 5}


def test_telethon_string_session_file_is_not_touched(tmp_path):
    key = fx.random_key()
    fx.telethon_session(tmp_path / "a.session", key)
    before = (tmp_path / "a.session").read_bytes()
    read_session_file(tmp_path / "a.session")
    assert (tmp_path / "a.session").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.session"]


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6, 7])
def test_telethon_older_schema_versions(tmp_path, version):
    from telethon.sessions import SQLiteSession

    key = fx.random_key()
    fx.telethon_session_of_version(tmp_path / "old.session", key, version)
    kind, account = read_session_file(tmp_path / "old.session")
    assert kind == "telethon" and auth_key_bytes(account) == key and account["dc_id"] == 2
    assert [e["id"] for e in account["state"]["entities"]] == [fx.TELETHON_ENTITY_USER]
    expected_state = {"pts": 10, "qts": 2, "date": 1700000000, "seq": 5} if version >= 4 else None
    assert account["state"]["update_state"] == expected_state
    # Today's Telethon takes the fixture for its own: it upgrades a copy and reads the same key.
    shutil.copy(tmp_path / "old.session", tmp_path / "copy.session")
    session = SQLiteSession(str(tmp_path / "copy.session"))
    assert session.auth_key.key == key and session.dc_id == 2
    session.close()


# -- Pyrogram / kurigram .session files ------------------------------------------------------------


def test_kurigram_session_written_by_kurigram(tmp_path):
    key = fx.random_key()
    fx.kurigram_session(tmp_path / "p.session", key)
    kind, account = read_session_file(tmp_path / "p.session")
    assert kind == "pyrogram"
    assert auth_key_bytes(account) == key
    assert (account["dc_id"], account["server_address"], account["port"]) == (4, "149.154.167.91", 443)
    assert (account["api_id"], account["user_id"], account["is_bot"], account["test_mode"]) == (12345, 987654321,
                                                                                                  False, False)
    by_id = {e["id"]: e for e in account["state"]["entities"]}
    assert by_id[fx.PYRO_USER] == {"id": fx.PYRO_USER, "hash": 1111, "type": "user", "username": "pyrouser",
                                   "phone": "15550002", "name": None}
    assert by_id[fx.PYRO_CHANNEL]["type"] == "supergroup" and by_id[fx.PYRO_CHANNEL]["username"] == "pyrochat"
    assert account["state"]["update_state"] == {"pts": 20, "qts": 3, "date": 1700000001, "seq": 7}


@pytest.mark.parametrize("version", [2, 3, 4, 5, 6])
def test_pyrogram_older_schema_versions(tmp_path, version):
    key = fx.random_key()
    fx.pyrogram_session_of_version(tmp_path / "old.session", key, version)
    kind, account = read_session_file(tmp_path / "old.session")
    assert kind == "pyrogram" and auth_key_bytes(account) == key
    # No server_address before schema 7: the DC's address, as the library maps it.
    assert (account["dc_id"], account["server_address"], account["port"]) == (4, "149.154.167.91", 443)
    assert account["api_id"] == (12345 if version >= 3 else None)
    assert account["user_id"] == 987654321
    assert [(e["id"], e["username"]) for e in account["state"]["entities"]] == [(fx.PYRO_USER, "pyrouser")]
    assert account["state"]["update_state"] == ({"pts": 20, "qts": 3, "date": 1700000001, "seq": 7}
                                                if version >= 5 else None)
    # kurigram takes the fixture for its own: it upgrades a copy to 7 and reads the same key.
    shutil.copy(tmp_path / "old.session", tmp_path / "copy.session")
    opened = fx.open_kurigram_file(tmp_path / "copy.session")
    assert opened["auth_key"] == key and opened["version"] == 7 and opened["dc_id"] == 4


# -- files that are not sessions --------------------------------------------------------------------


def test_not_sessions_have_reasons(tmp_path):
    (tmp_path / "text.session").write_text("hello", encoding="utf-8")
    with pytest.raises(FormatError, match="not a SQLite database"):
        read_session_file(tmp_path / "text.session")
    import sqlite3
    conn = sqlite3.connect(tmp_path / "other.session")
    conn.execute("create table t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(FormatError, match="not a Telethon or Pyrogram session"):
        read_session_file(tmp_path / "other.session")
    # A Telethon session that never logged in holds no key.
    from telethon.sessions import SQLiteSession
    empty = SQLiteSession(str(tmp_path / "empty.session"))
    empty.save()
    empty.close()
    with pytest.raises(FormatError, match="no auth key"):
        read_session_file(tmp_path / "empty.session")
    # Truncated: the header survives, the pages do not.
    fx.telethon_session(tmp_path / "whole.session", fx.random_key())
    data = (tmp_path / "whole.session").read_bytes()
    (tmp_path / "cut.session").write_bytes(data[:200])
    with pytest.raises(FormatError):
        read_session_file(tmp_path / "cut.session")


def test_reasons_never_quote_the_key(tmp_path):
    key = fx.random_key()[:100]  # a key of the wrong size
    fx.telethon_session_of_version(tmp_path / "short.session", key, 7)
    with pytest.raises(FormatError) as caught:
        read_session_file(tmp_path / "short.session")
    assert "100 bytes" in str(caught.value)
    assert b64(key)[:16] not in str(caught.value) and key.hex()[:16] not in str(caught.value)


# -- session strings ------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["149.154.167.51", "2001:67c:4e8:f002::a"])
def test_telethon_string_sessions(address):
    key = fx.random_key()
    string = fx.telethon_string(key, address=address)
    assert len(string) == (353 if ":" not in address else 369)
    kind, account = read_session_string(string)
    assert kind == "telethon" and auth_key_bytes(account) == key
    assert (account["dc_id"], account["server_address"], account["port"]) == (2, address, 443)
    assert telethon_string(account) == string  # and back, byte for byte


@pytest.mark.parametrize("test_mode", [False, True])
def test_kurigram_current_string(test_mode):
    key = fx.random_key()
    string = fx.kurigram_string(key, test_mode=test_mode)
    assert len(string) == 362
    kind, account = read_session_string(string + "\n")
    assert kind == "pyrogram" and auth_key_bytes(account) == key
    assert (account["dc_id"], account["api_id"], account["user_id"], account["test_mode"]) == (
        2, 12345, 2 ** 40 + 7, test_mode)
    assert account["port"] == (80 if test_mode else 443)
    assert pyrogram_string(account) == string


@pytest.mark.parametrize("wide_ids,length", [(False, 351), (True, 356)])
def test_old_pyrogram_strings(wide_ids, length):
    key = fx.random_key()
    string = fx.old_pyrogram_string(key, wide_ids=wide_ids)
    assert len(string) == length
    assert fx.open_kurigram_string(string)["auth_key"] == key  # kurigram still reads it
    kind, account = read_session_string(string)
    assert kind == "pyrogram" and auth_key_bytes(account) == key
    assert (account["dc_id"], account["user_id"], account["is_bot"], account["api_id"]) == (2, 987654321, True, None)
    # Written back in today's layout, which kurigram opens to the same key.
    assert fx.open_kurigram_string(pyrogram_string(account))["auth_key"] == key


@pytest.mark.parametrize("text,reason", [
    ("", "empty"), ("x" * 100, "100 characters"), ("1" + "!" * 352, "not base64"),
])
def test_bad_strings(text, reason):
    with pytest.raises(FormatError, match=reason):
        read_session_string(text)


def test_string_of_all_zero_key_is_refused():
    string = "1" + base64.urlsafe_b64encode(
        b"\x02" + bytes([149, 154, 167, 51]) + (443).to_bytes(2, "big") + bytes(256)).decode()
    with pytest.raises(FormatError, match="all zeros"):
        read_session_string(string)


# -- writing .session files back ---------------------------------------------------------------------


def _rich_account(key: bytes) -> dict:
    return new_account(
        dc_id=2, server_address="149.154.167.51", port=443, auth_key=b64(key), user_id=987654321, is_bot=False,
        test_mode=False, api_id=12345, api_hash="0123456789abcdef0123456789abcdef", phone="+15550000",
        state={"entities": [
            {"id": fx.PYRO_USER, "hash": 1111, "type": "user", "username": "pyrouser", "phone": "15550002",
             "name": "Py Ro"},
            {"id": fx.TELETHON_ENTITY_CHANNEL, "hash": 99, "type": None, "username": "news", "phone": None,
             "name": "News"},
        ], "update_state": {"pts": 10, "qts": 2, "date": 1700000000, "seq": 5}})


def test_export_telethon_opens_in_telethon(tmp_path):
    from telethon import types
    from telethon.sessions import SQLiteSession

    key = fx.random_key()
    path = tmp_path / "out.session"
    write_session_file(_rich_account(key), path, "telethon")
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_session_file(path)[0] == "telethon"
    session = SQLiteSession(str(path))
    assert session.auth_key.key == key
    assert (session.dc_id, session.server_address, session.port) == (2, "149.154.167.51", 443)
    peer = session.get_input_entity(fx.PYRO_USER)
    assert isinstance(peer, types.InputPeerUser) and peer.access_hash == 1111
    channel = session.get_input_entity("news")
    assert isinstance(channel, types.InputPeerChannel) and channel.access_hash == 99
    state = session.get_update_state(0)
    assert (state.pts, state.qts, state.seq, int(state.date.timestamp())) == (10, 2, 5, 1700000000)
    session.close()


def test_export_pyrogram_opens_in_kurigram(tmp_path):
    from pyrogram import raw

    key = fx.random_key()
    path = tmp_path / "out.session"
    write_session_file(_rich_account(key), path, "pyrogram")
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    opened = fx.open_kurigram_file(path)
    assert opened["auth_key"] == key and opened["version"] == 7
    assert (opened["dc_id"], opened["api_id"], opened["user_id"]) == (2, 12345, 987654321)
    assert isinstance(opened["peers"][fx.PYRO_USER], raw.types.InputPeerUser)
    assert isinstance(opened["peers"][fx.TELETHON_ENTITY_CHANNEL], raw.types.InputPeerChannel)
    assert opened["by_username"].user_id == fx.PYRO_USER
    assert [(s.pts, s.qts, s.date, s.seq) for s in opened["update_state"]] == [(10, 2, 1700000000, 5)]


@pytest.mark.parametrize("kind", ["telethon", "pyrogram"])
def test_round_trip_keeps_the_account(tmp_path, kind):
    key = fx.random_key()
    account = _rich_account(key)
    write_session_file(account, tmp_path / "x.session", kind)
    read_kind, back = read_session_file(tmp_path / "x.session")
    assert read_kind == kind and back["auth_key"] == account["auth_key"]
    assert back["state"]["update_state"] == account["state"]["update_state"]
    assert {e["id"]: e["hash"] for e in back["state"]["entities"]} == {fx.PYRO_USER: 1111,
                                                                     fx.TELETHON_ENTITY_CHANNEL: 99}


def test_export_never_overwrites(tmp_path):
    (tmp_path / "x.session").write_text("mine", encoding="utf-8")
    with pytest.raises(FileExistsError):
        write_session_file(_rich_account(fx.random_key()), tmp_path / "x.session", "telethon")
    assert (tmp_path / "x.session").read_text(encoding="utf-8") == "mine"


def test_export_of_a_bad_account_leaves_no_file(tmp_path):
    with pytest.raises(FormatError, match="auth_key"):
        write_session_file(new_account(dc_id=2, auth_key="short"), tmp_path / "x.session", "telethon")
    assert not list(tmp_path.iterdir())


def test_peer_type_from_id():
    assert [peer_type_from_id(i) for i in (5, -5, -1001234567890)] == ["user", "group", "channel"]


# -- a seller's json ------------------------------------------------------------------------------


def _sidecar(tmp_path, data, name="acc.json") -> tuple[dict, list[str]]:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    account = new_account(dc_id=2, auth_key=b64(fx.random_key()), user_id=12345)
    return account, apply_sidecar(path, account)


SELLER = {"app_id": 2040, "app_hash": "B18441A1FF607E10A989891A5462E627", "device": "Desktop", "sdk": "Windows 10",
          "app_version": "4.8.1 x64", "lang_pack": "tdesktop", "lang_code": "en", "system_lang_pack": "en-US",
          "twoFA": "hunter2-secret", "phone": "79991234567", "username": "@seller_acc", "is_premium": True,
          "id": 12345, "first_name": "ignored", "register_time": 1700000000,
          "proxy": ["socks5", "10.0.0.1", 1080, True, "puser", "p@ss:word"]}


def test_seller_json_every_field(tmp_path):
    account, warnings = _sidecar(tmp_path, SELLER)
    assert warnings == []
    assert account["api_id"] == 2040 and account["api_hash"] == "b18441a1ff607e10a989891a5462e627"
    assert (account["device_model"], account["system_version"], account["app_version"]) == (
        "Desktop", "Windows 10", "4.8.1 x64")
    assert (account["lang_pack"], account["lang_code"], account["system_lang_code"]) == ("tdesktop", "en", "en-US")
    assert account["twofa"] == "hunter2-secret" and account["phone"] == "+79991234567"
    assert account["username"] == "seller_acc" and account["premium"] is True and account["user_id"] == 12345
    assert account["proxy"] == "socks5://puser:p%40ss%3Aword@10.0.0.1:1080"


@pytest.mark.parametrize("proxy,url", [
    (["socks5", "h.example", 1080, True, "u", "p"], "socks5://u:p@h.example:1080"),
    ([2, "h.example", "1080"], "socks5://h.example:1080"),
    (["http", "h.example", 8080, False], "http://h.example:8080"),
    ({"proxy_type": "socks5", "addr": "h.example", "port": 1080, "username": "u", "password": "p"},
     "socks5://u:p@h.example:1080"),
    ({"scheme": "socks4", "hostname": "h.example", "port": 1080}, "socks4://h.example:1080"),
    ({"host": "::1", "port": 1080}, "socks5://[::1]:1080"),
    ("socks5://u:p@h.example:1080", "socks5://u:p@h.example:1080"),
    ("http://h.example:3128", "http://h.example:3128"),
    (None, None), ("", None), ([], None),
])
def test_proxy_forms(proxy, url):
    assert proxy_url(proxy) == url


@pytest.mark.parametrize("proxy", [["socks5", "h"], ["ftp", "h", 1], {"port": 1080}, "nonsense", 42,
                                   "socks5://u:secretpw@h:notaport"])
def test_bad_proxy_warns_without_its_value(tmp_path, proxy):
    account, warnings = _sidecar(tmp_path, {**SELLER, "proxy": proxy})
    assert len(warnings) == 1 and warnings[0].startswith("acc.json: proxy is not usable")
    assert "secretpw" not in warnings[0] and "hunter2" not in warnings[0]
    assert account["proxy"] is None and account["api_id"] == 2040  # the rest is kept


def test_missing_and_mistyped_fields_warn_by_name(tmp_path):
    data = {"app_id": "id-secret-xyz", "app_hash": 12, "device": ["x"], "twoFA": {"pw": "hunter2-secret"},
            "is_premium": "maybe", "id": 999, "lang_code": 5}
    account, warnings = _sidecar(tmp_path, data)
    text = "\n".join(warnings)
    assert account["api_id"] is None
    assert "acc.json: missing sdk, app_version" in text
    for field in ("app_id is text", "app_hash is a number", "device is a list", "twoFA is an object",
                  "is_premium is text", "id differs", "lang_code is a number"):
        assert field in text
    assert "hunter2" not in text and "id-secret-xyz" not in text
    assert account["user_id"] == 12345 and account["twofa"] is None
    assert account["lang_code"] is None
    _, warnings = _sidecar(tmp_path, {**SELLER, "twoFA": 123456, "phone": 79991234567})
    assert warnings == []  # a password or a phone written as a number is what it says


@pytest.mark.parametrize("content,reason", [
    ("{not json", "not valid JSON (line 1"), ("[1, 2]", "a list, not a JSON object"),
    ("[" * 200_000 + "]" * 200_000, "nested too deep"),
    ("\udcff", None),
])
def test_unreadable_json_warns(tmp_path, content, reason):
    path = tmp_path / "acc.json"
    if reason is None:
        path.write_bytes(b"\xff\xfe{")
        reason = "not UTF-8"
    else:
        path.write_text(content, encoding="utf-8")
    account = new_account(dc_id=2)
    warnings = apply_sidecar(path, account)
    assert len(warnings) == 1 and warnings[0].startswith("acc.json: ") and reason in warnings[0]


def test_json_with_bom_is_read(tmp_path):
    (tmp_path / "acc.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(SELLER).encode())
    account = new_account()
    assert apply_sidecar(tmp_path / "acc.json", account) == []
    assert account["api_id"] == 2040


# -- a folder ---------------------------------------------------------------------------------------


def test_folder_every_entry_is_imported_or_has_a_reason(tmp_path):
    fx.telethon_session(tmp_path / "tele.session", fx.random_key())
    (tmp_path / "tele.json").write_text(json.dumps(SELLER), encoding="utf-8")
    fx.kurigram_session(tmp_path / "pyro.session", fx.random_key())
    (tmp_path / "orphan.json").write_text("{}", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    (tmp_path / "broken.session").write_text("garbage", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "tele.session-journal").write_bytes(b"")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.session")
    candidates, skipped = plan_folder(tmp_path)
    assert [c.name for c in candidates] == ["broken", "pyro", "tele"]
    reasons = {s.shown: s.reason for s in skipped}
    assert "no orphan.session beside it" in reasons["orphan.json"]
    assert "not a .session file" in reasons["notes.txt"]
    assert "no Telegram Desktop tdata" in reasons["sub/"]
    if hasattr(os, "mkfifo"):
        assert reasons["fifo.session"] == "not a regular file"
    read = {c.name: read_candidate(c) for c in candidates}
    assert "not a SQLite database" in str(read["broken"][0])
    assert read["tele"][0].kind == "telethon" and read["tele"][0].account["api_id"] == 2040
    assert read["tele"][0].warnings == []
    assert read["pyro"][0].kind == "pyrogram"


def test_folder_names_with_control_characters_are_skipped(tmp_path):
    fx.telethon_session(tmp_path / "bad\x1bname.session", fx.random_key())
    candidates, skipped = plan_folder(tmp_path)
    assert not candidates and "control or format" in skipped[0].reason
    assert "\x1b" not in skipped[0].shown


def test_folder_sidecar_warnings_name_the_file(tmp_path):
    fx.telethon_session(tmp_path / "a.session", fx.random_key())
    (tmp_path / "a.json").write_text(json.dumps({"app_id": [1], "app_hash": "x" * 32}), encoding="utf-8")
    (found,) = read_candidate(plan_folder(tmp_path)[0][0])
    assert any(w.startswith("a.json: ") and "app_id is a list" in w for w in found.warnings)


# -- Telegram Desktop ---------------------------------------------------------------------------------

needs_tdata = pytest.mark.skipif(not tdata_available() and not os.environ.get("CI"),
                                 reason="the tdata extra (opentele-ng) is not installed")


@needs_tdata
def test_tdata_folder(tmp_path):
    keys = [fx.random_key(), fx.random_key()]
    fx.tdata_folder(tmp_path / "desk" / "tdata", keys)
    fx.tdata_folder(tmp_path / "bare", [keys[0]])
    candidates, skipped = plan_folder(tmp_path)
    assert [(c.name, c.what) for c in candidates] == [("bare", "tdata"), ("desk", "tdata")] and not skipped
    found = read_candidate(candidates[1])
    assert [f.name for f in found] == ["desk", "desk-2"]
    assert [auth_key_bytes(f.account) for f in found] == keys
    account = found[0].account
    assert (account["dc_id"], account["user_id"], account["api_id"], account["lang_pack"]) == (
        2, 123456789, 2040, "tdesktop")
    assert account["device_model"] and account["app_version"]


@needs_tdata
def test_damaged_tdata_has_a_reason(tmp_path):
    (tmp_path / "x" / "tdata").mkdir(parents=True)
    (tmp_path / "x" / "tdata" / "key_datas").write_bytes(b"TDF$garbage")
    candidates, _ = plan_folder(tmp_path)
    (skipped,) = read_candidate(candidates[0])
    assert "not a readable tdata folder" in skipped.reason or "tdata" in skipped.reason


def test_tdata_without_the_extra_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "x" / "tdata").mkdir(parents=True)
    (tmp_path / "x" / "tdata" / "key_datas").write_bytes(b"TDF$")
    monkeypatch.setitem(sys.modules, "opentele.td", None)  # as if the extra were not installed
    candidates, skipped = plan_folder(tmp_path)
    assert not candidates and "telegate[tdata]" in skipped[0].reason


def test_folder_names_obey_the_session_name_rules(tmp_path):
    for name in ("Acc1", "acc1", "CON", "good"):
        fx.telethon_session_of_version(tmp_path / f"{name}.session", fx.random_key(), 7)
    (tmp_path / ".hidden.session").write_bytes(b"")
    candidates, skipped = plan_folder(tmp_path)
    assert [c.name for c in candidates] == ["Acc1", "good"]
    reasons = {s.shown: s.reason for s in skipped}
    assert "differs only in case from that of Acc1.session" in reasons["acc1.session"]
    assert "name rule: windows_reserved" in reasons["CON.session"]
    assert "name rule: dot" in reasons[".hidden.session"]


def test_kurigram_peer_types_in_the_contracts_words(tmp_path):
    fx.kurigram_session(tmp_path / "p.session", fx.random_key())
    import sqlite3
    with sqlite3.connect(tmp_path / "p.session") as conn:
        conn.executemany("INSERT INTO peers (id, access_hash, type) VALUES (?, ?, ?)",
                         [(-1001, 1, "forum"), (-1002, 2, "direct"), (-1003, 3, "community"), (-1004, 4, "odd")])
    conn.close()
    _, account = read_session_file(tmp_path / "p.session")
    types = {e["id"]: e["type"] for e in account["state"]["entities"]}
    assert [types[i] for i in (-1001, -1002, -1003, -1004)] == ["supergroup", "channel", "channel", None]
