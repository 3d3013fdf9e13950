"""Ready clients: ``client.telethon()`` / ``client.pyrogram()`` hand the worker a built library client.

The real libraries (Telethon; kurigram, imported as ``pyrogram``), offline: clients are built
with ``connect=False`` (no Telegram connection is possible here). Every secret comes from
``os.urandom``. Building from an account is tested on the Account JSON of the shared
contract; file mode and the end of a block (flood, dead account, kind) against a live
server on both stores.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pyrogram import raw
from telethon.crypto import AuthKey
from telethon.errors import rpc_message_to_error
from telethon.sessions import SQLiteSession
from telethon.tl import functions as tl_functions
from telethon.tl.types import PeerUser, RpcError, User

from support import ROOT
from support.sessions import pyrogram_file, telethon_file
from telegram_session_manager import AsyncTelegramSessionManagerClient, TelegramSessionManagerClient
from telegram_session_manager import ready
from telegram_session_manager.ready import ReadyClientError

CHANNEL = -1001234567890


def new_account(**overrides: Any) -> dict[str, Any]:
    """An account as the server hands it out (the shared Account JSON), every secret random."""
    account = {
        "dc_id": 4, "server_address": "149.154.167.91", "port": 443,
        "auth_key": base64.b64encode(os.urandom(256)).decode("ascii"),
        "user_id": 100000 + secrets.randbelow(10**9), "is_bot": False, "test_mode": False,
        "api_id": 2040, "api_hash": os.urandom(16).hex(),
        "device_model": "Pixel 7", "system_version": "Android 14", "app_version": "10.5.0",
        "lang_code": "de", "system_lang_code": "de-DE", "lang_pack": "android",
        "proxy": f"socks5://user{secrets.randbelow(1000)}:{secrets.token_hex(12)}@10.1.2.3:1080",
        "twofa": None, "phone": "+15550000000", "username": None, "premium": False,
        "state": {"entities": [
            {"id": 777, "hash": secrets.randbits(63), "type": "user", "username": "friend", "phone": None,
             "name": "Friend"},
            {"id": CHANNEL, "hash": secrets.randbits(63), "type": "channel", "username": "news", "phone": None,
             "name": "News"}],
            "update_state": {"pts": 10, "qts": 2, "date": 1700000000, "seq": 3}},
    }
    account.update(overrides)
    return account


def proxy_password(account: dict[str, Any]) -> str:
    return account["proxy"].split(":")[2].split("@")[0]


# -- building from an account (no server) ------------------------------------------------


def test_a_telethon_client_holds_the_account():
    account = new_account()
    tg = ready.build_telethon(account)
    session = tg.session
    assert session.auth_key.key == base64.b64decode(account["auth_key"])
    assert (session.dc_id, session.server_address, session.port) == (4, "149.154.167.91", 443)
    assert tg.api_id == 2040 and tg.api_hash == account["api_hash"]
    init = tg._init_request  # what Telethon sends Telegram on connecting: the fingerprint
    assert (init.api_id, init.device_model, init.system_version, init.app_version, init.lang_code,
            init.system_lang_code, init.lang_pack) == (2040, "Pixel 7", "Android 14", "10.5.0", "de", "de-DE",
                                                       "android")
    assert tg._proxy == {"proxy_type": "socks5", "addr": "10.1.2.3", "port": 1080,
                         "username": account["proxy"].split("//")[1].split(":")[0],
                         "password": proxy_password(account), "rdns": True}
    friend = account["state"]["entities"][0]
    assert session.get_input_entity("friend").access_hash == friend["hash"]
    assert session.get_input_entity(CHANNEL).access_hash == account["state"]["entities"][1]["hash"]
    state = session.get_update_state(0)
    assert (state.pts, state.qts, state.seq, int(state.date.timestamp())) == (10, 2, 3, 1700000000)


def test_a_kurigram_client_holds_the_account():
    account = new_account()
    app = ready.build_pyrogram(account, name="acc1")
    storage = app.storage

    async def read():
        return (await storage.auth_key(), await storage.dc_id(), await storage.server_address(), await storage.port(),
                await storage.user_id(), await storage.get_peer_by_username("friend"),
                await storage.get_peer_by_id(CHANNEL), await storage.get_update_states(0))

    key, dc, address, port, user_id, friend, channel, states = asyncio.run(read())
    assert key == base64.b64decode(account["auth_key"]) and (dc, address, port) == (4, "149.154.167.91", 443)
    assert user_id == account["user_id"]
    assert (app.api_id, app.api_hash) == (2040, account["api_hash"])
    assert (app.device_model, app.system_version, app.app_version, app.lang_code, app.system_lang_code,
            app.lang_pack) == ("Pixel 7", "Android 14", "10.5.0", "de", "de-de", "android")
    assert (app.proxy.hostname, app.proxy.port, app.proxy.password) == ("10.1.2.3", 1080, proxy_password(account))
    assert friend.access_hash == account["state"]["entities"][0]["hash"]
    assert channel.access_hash == account["state"]["entities"][1]["hash"]
    assert [(s.pts, s.qts, s.date, s.seq) for s in states] == [(10, 2, 1700000000, 3)]


@pytest.mark.parametrize("library", ["telethon", "pyrogram"])
def test_kwargs_override_the_account_but_never_drop_its_proxy(library):
    build = ready.build_telethon if library == "telethon" else ready.build_pyrogram
    client = build(new_account(), device_model="Worker", api_id=99)
    assert client.api_id == 99
    assert (client._init_request.device_model if library == "telethon" else client.device_model) == "Worker"
    with pytest.raises(ReadyClientError, match="only through its proxy"):
        build(new_account(), proxy=None)
    direct = build(new_account(proxy=None))  # an account without a proxy connects directly, as it always did
    assert (direct._proxy if library == "telethon" else direct.proxy) is None


@pytest.mark.parametrize("library", ["telethon", "pyrogram"])
def test_without_python_socks_an_account_with_a_proxy_is_refused(library, monkeypatch):
    monkeypatch.setitem(sys.modules, "python_socks", None)  # "import python_socks" now fails
    build = ready.build_telethon if library == "telethon" else ready.build_pyrogram
    with pytest.raises(ReadyClientError, match="needs python-socks") as refused:
        build(new_account())
    assert "connect directly" in str(refused.value)
    build(new_account(proxy=None))  # no proxy, no need


def test_an_account_without_api_id_says_what_to_pass():
    with pytest.raises(ReadyClientError, match="api_id=... and api_hash="):
        ready.build_telethon(new_account(api_id=None))
    assert ready.build_telethon(new_account(api_id=None), api_id=5, api_hash="x" * 32).api_id == 5


def test_what_changed_in_a_telethon_client_is_what_goes_back():
    account = new_account()
    tg = ready.build_telethon(account)
    assert ready.state_changes(account, ready.telethon_state(tg)) is None  # nothing changed, nothing sent
    met = User(id=4242, access_hash=secrets.randbits(63), username="newfriend", first_name="New")
    tg.session.process_entities(type("Result", (), {"users": [met], "chats": []})())
    changes = ready.state_changes(account, ready.telethon_state(tg))
    assert changes == {"entities": [{"id": 4242, "hash": met.access_hash, "type": None, "username": "newfriend",
                                     "phone": None, "name": "New"}]}
    # The server upserts them by id: the next client of the account knows the new entity.
    merged = dict(account, state={**account["state"], "entities": account["state"]["entities"] + changes["entities"]})
    assert ready.build_telethon(merged).session.get_input_entity("newfriend").access_hash == met.access_hash


def test_what_changed_in_a_kurigram_client_is_what_goes_back():
    account = new_account()
    app = ready.build_pyrogram(account)
    assert ready.state_changes(account, ready.pyrogram_state(app)) is None

    async def meet():
        await app.storage.update_peers([(4242, 99, "user", None)])
        await app.storage.update_usernames([(4242, ["newfriend"])])
        from pyrogram.storage import UpdateState
        await app.storage.set_update_state(UpdateState(0, 11, None, 1700000100, None))

    asyncio.run(meet())
    changes = ready.state_changes(account, ready.pyrogram_state(app))
    assert changes == {"entities": [{"id": 4242, "hash": 99, "type": "user", "username": "newfriend", "phone": None,
                                     "name": None}],
                       "update_state": {"pts": 11, "qts": 2, "date": 1700000100, "seq": 3}}


def test_a_dc_move_goes_back_with_the_new_key():
    account = new_account()
    tg = ready.build_telethon(account)
    new_key = os.urandom(256)
    tg.session.set_dc(2, "149.154.167.51", 443)
    tg.session.auth_key = AuthKey(new_key)
    changes = ready.state_changes(account, ready.telethon_state(tg))
    assert changes == {"dc": {"dc_id": 2, "server_address": "149.154.167.51", "port": 443,
                              "auth_key": base64.b64encode(new_key).decode("ascii")}}


def by_id(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """A write-back with its entities in id order (a set of rows has no order of its own)."""
    if state is None or "entities" not in state:
        return state
    return {**state, "entities": sorted(state["entities"], key=lambda entity: entity["id"])}


def test_the_end_of_a_telethon_block_sends_what_reading_every_entity_back_would():
    """``changed_state`` compares only the rows Telethon wrote since the seeding; the write-back
    is the one the whole cache read back and compared gives: nothing, new, changed, DC moved."""
    account = new_account()
    account["state"]["entities"] += [{"id": 5000 + n, "hash": n, "type": "user", "username": f"u{n}",
                                      "phone": None, "name": f"U {n}"} for n in range(200)]
    tg = ready.build_telethon(account)

    def both():
        return ready.changed_state("telethon", tg, account), ready.state_changes(account, ready.telethon_state(tg))

    assert both() == (None, None)
    met = User(id=4242, access_hash=secrets.randbits(63), username="newfriend", first_name="New")
    moved = User(id=5007, access_hash=99, username="u7", first_name="U 7")  # its hash changed
    same = User(id=5008, access_hash=8, username="u8", first_name="U 8")  # seen again, unchanged
    tg.session.process_entities(type("Result", (), {"users": [met, moved, same], "chats": []})())
    fast, full = both()
    assert by_id(fast) == by_id(full)
    assert [entity["id"] for entity in by_id(fast)["entities"]] == [4242, 5007]
    tg.session.set_dc(2, "149.154.167.51", 443)
    tg.session.auth_key = AuthKey(os.urandom(256))
    fast, full = both()
    assert by_id(fast) == by_id(full) and "dc" in fast


def test_the_end_of_a_kurigram_block_sends_what_reading_every_peer_back_would():
    """kurigram's peers written since the seeding are noted by TEMP triggers; the write-back is
    the one the whole storage read back and compared gives (new, changed, renamed, update state)."""
    account = new_account()
    account["state"]["entities"] += [{"id": 5000 + n, "hash": n, "type": "user", "username": f"u{n}",
                                      "phone": None, "name": f"U {n}"} for n in range(200)]
    app = ready.build_pyrogram(account)

    def both():
        return ready.changed_state("pyrogram", app, account), ready.state_changes(account, ready.pyrogram_state(app))

    assert both() == (None, None)

    async def meet():
        from pyrogram.storage import UpdateState
        await app.storage.update_peers([(4242, 99, "user", None), (5007, 1234, "user", None),
                                        (5008, 8, "user", None)])  # new, hash changed, unchanged
        await app.storage.update_usernames([(4242, ["newfriend"]), (5009, ["renamed"])])
        await app.storage.set_update_state(UpdateState(0, 11, None, 1700000100, None))
        assert (await app.storage.get_peer_by_username("u10")).access_hash == 10  # seeded peers still found

    asyncio.run(meet())
    fast, full = both()
    assert by_id(fast) == by_id(full)
    assert [entity["id"] for entity in by_id(fast)["entities"]] == [4242, 5007, 5009]
    assert fast["update_state"] == {"pts": 11, "qts": 2, "date": 1700000100, "seq": 3}
    app.storage.dispose()


def test_the_kurigram_storage_has_kurigram_schema_and_notes_writes_in_temp_tables():
    """The storage is seeded from a copy of kurigram's schema made once per process, indexes
    built after the rows: the schema is kurigram's own, and the change tracking is TEMP."""
    from pyrogram.storage.sqlite_storage import SCHEMA

    before = int(time.time())
    app = ready.build_pyrogram(new_account())
    after = int(time.time())
    with contextlib.closing(sqlite3.connect(":memory:")) as kurigram:
        kurigram.executescript(SCHEMA)
        schema = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        assert app.storage.conn.execute(schema).fetchall() == kurigram.execute(schema).fetchall()
    temp = {row[0] for row in app.storage.conn.execute("SELECT name FROM temp.sqlite_master")}
    assert "telegate_touched" in temp and "telegate_peers_insert" in temp
    assert app.storage.conn.execute("SELECT COUNT(*) FROM temp.telegate_touched").fetchone() == (0,)
    last_update = app.storage.conn.execute("SELECT last_update_on FROM peers WHERE id = 777").fetchone()[0]
    assert before <= last_update <= after  # as kurigram's default (now) would set it
    app.storage.dispose()


# -- file mode and the end of a block, against a live server ------------------------------


@pytest.fixture
def folder(tmp_path):
    """The workers' folder of .session files (the server's database lives beside it, not in it)."""
    made = tmp_path / "sessions"
    made.mkdir()
    return made


@pytest.fixture
def client(live_server):
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, host="worker-1") as c:
        yield c


APP = {"api_id": 2040, "api_hash": "0" * 32}


def test_file_mode_opens_the_session_file_of_its_own_kind(live_server, client, folder):
    live_server.add_sessions("p1", kind="pyrogram")  # leased first, were kind not asked for
    live_server.add_sessions("t1", kind="telethon", meta={"app_id": 2040, "app_hash": "1" * 32, "device": "Box"})
    key = telethon_file(folder, "t1")
    with client.telethon(connect=False, sessions_dir=folder) as tg:
        assert tg.session.filename == str(folder / "t1.session")
        assert tg.session.auth_key.key == key and tg.session.dc_id == 2
        assert tg.api_id == 2040 and tg._init_request.device_model == "Box"  # from the seller's meta
        assert tg.session.get_input_entity("friend").access_hash == 5
        assert live_server.status()["in_use"] == 1
    assert live_server.status()["in_use"] == 0


def test_file_mode_closes_the_telethon_file_at_the_end_and_keeps_what_the_block_wrote(live_server, client, folder):
    """Not connected, Telethon's disconnect never runs: the block's end closes the session file
    itself (not left open until the garbage collector finds the client), committing it."""
    live_server.add_sessions("t1", kind="telethon")
    telethon_file(folder, "t1")
    met = User(id=4242, access_hash=4343, username="newfriend", first_name="New")
    with client.telethon(connect=False, sessions_dir=folder, **APP) as tg:
        tg.session.process_entities(type("Result", (), {"users": [met], "chats": []})())
    assert tg.session._conn is None  # closed
    again = SQLiteSession(str(folder / "t1"))
    try:
        assert again.get_input_entity("newfriend").access_hash == 4343
    finally:
        again.close()


def test_file_mode_takes_sessions_dir_from_the_environment(live_server, client, folder, monkeypatch):
    live_server.add_sessions("p1", kind="pyrogram")
    key = pyrogram_file(folder, "p1")
    monkeypatch.setenv("TELEGATE_SESSIONS_DIR", str(folder))
    with client.pyrogram(connect=False, **APP) as app:
        assert Path(app.storage.database) == folder / "p1.session"  # kurigram opens it on connect
        with contextlib.closing(sqlite3.connect(app.storage.database)) as conn:
            assert conn.execute("SELECT auth_key FROM sessions").fetchone()[0] == key


@pytest.mark.parametrize("library", ["telethon", "pyrogram"])
def test_a_missing_session_file_is_an_error_naming_it_and_nothing_is_created(live_server, client, folder,
                                                                              library):
    live_server.add_sessions("gone", kind=library)
    with pytest.raises(ReadyClientError) as missing:
        with getattr(client, library)(connect=False, sessions_dir=folder, **APP):
            raise AssertionError("the block must not run")
    assert str(folder / "gone.session") in str(missing.value)
    assert list(folder.iterdir()) == []
    assert live_server.status()["free"] == 1  # released


def test_a_lease_without_an_account_and_no_sessions_dir_says_what_to_set(live_server, folder, monkeypatch):
    """Account mode on a server that hands out no account (an older one): nothing is built blind."""
    monkeypatch.delenv("TELEGATE_SESSIONS_DIR", raising=False)
    live_server.add_sessions("t1", kind="telethon")
    with TelegramSessionManagerClient(live_server.url, live_server.client_key) as client:
        lease_sent = []
        original = client.get_session

        def get_session(*args, **kwargs):
            lease_sent.append(kwargs.pop("_extra"))
            return original(*args, **kwargs)  # the server of this branch may not take "account" yet

        client.get_session = get_session
        with pytest.raises(ReadyClientError, match="sessions_dir=... or TELEGATE_SESSIONS_DIR"):
            with client.telethon(connect=False):
                pass
    assert lease_sent == [{"account": True}]
    assert live_server.status()["free"] == 1


def flood(seconds: int):
    return rpc_message_to_error(RpcError(error_code=420, error_message=f"FLOOD_WAIT_{seconds}"),
                                tl_functions.contacts.ResolveUsernameRequest(username="someone"))


def test_a_flood_in_a_ready_client_rests_its_method_only(live_server, client, folder):
    [sid] = live_server.add_sessions("t1", kind="telethon")
    telethon_file(folder, "t1")
    error = flood(3600)
    with pytest.raises(type(error)):
        with client.telethon(connect=False, sessions_dir=folder, **APP):
            raise error
    lease = client.get_session(purpose="messages.getHistory", auto_wait=False)  # other methods: at once
    assert lease.session_id == sid
    client.release_session(sid)
    with pytest.raises(Exception, match="no free session for contacts.resolveUsername"):
        client.get_session(purpose="contacts.resolveUsername", auto_wait=False)


def test_a_dead_account_error_in_a_ready_client_disables_it(live_server, client, folder, admin):
    from telethon.errors import AuthKeyUnregisteredError

    [sid] = live_server.add_sessions("t1", kind="telethon")
    telethon_file(folder, "t1")
    with pytest.raises(AuthKeyUnregisteredError):
        with client.telethon(connect=False, sessions_dir=folder, **APP):
            raise AuthKeyUnregisteredError(request=None)
    info = admin.session_info(sid)
    assert info["state"] == "disabled" and info["disabled_reason"] == "AuthKeyUnregisteredError"


def test_the_async_ready_clients_open_files_and_report_floods(live_server, folder):
    live_server.add_sessions("t1", kind="telethon")
    live_server.add_sessions("p1", kind="pyrogram")
    telethon_key = telethon_file(folder, "t1")
    pyrogram_file(folder, "p1")

    async def main():
        async with AsyncTelegramSessionManagerClient(live_server.url, live_server.client_key) as client:
            async with client.telethon(connect=False, sessions_dir=folder, **APP) as tg:
                assert tg.session.auth_key.key == telethon_key
            with pytest.raises(Exception):
                async with client.pyrogram(connect=False, sessions_dir=folder, **APP) as app:
                    assert Path(app.storage.database) == folder / "p1.session"
                    raise flood(60)
            return await client.get_status()

    status = asyncio.run(main())
    assert status["in_use"] == 0 and status["free"] == 1  # p1 rests for contacts.resolveUsername


def test_client_py_copied_alone_says_ready_clients_need_the_package(tmp_path):
    import shutil
    import subprocess

    source = ROOT / "sdk" / "telegram_session_manager" / "client.py"
    shutil.copy(source, tmp_path / "client.py")
    code = ("from client import TelegramSessionManagerClient as C\n"
            "c = C('http://127.0.0.1:9', 'k', keepalive=False)\n"
            "try:\n    c.telethon()\nexcept ImportError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, encoding="utf-8",
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    assert "need the telegram_session_manager package" in done.stdout
