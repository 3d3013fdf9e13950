"""Ready clients in account mode, end to end: the vault hands out an account, the SDK builds the client.

A real server over loopback (where plain HTTP may hand out accounts) with a master key, a
key created with ``--accounts``, accounts imported through the admin API (the vault's test
helper makes them, every secret from ``os.urandom``), and the real libraries (Telethon;
kurigram, imported as ``pyrogram``) built with ``connect=False``. What a block learns goes
back with the release and is in the next client of that account; a flood raised inside
rests its method only; a dead-account error disables the account. The vault marks an
account with a proxy as proxy-bound (it moves between hosts at once); one without keeps
the handover grace.
"""
from __future__ import annotations

import asyncio
import base64
import re
import secrets
from typing import Any, Iterator

import pytest
from telethon.errors import AuthKeyUnregisteredError, rpc_message_to_error
from telethon.tl import functions as tl_functions
from telethon.tl.types import RpcError, User

from support import LiveServer, server_env, wait_for_log
from support.accounts import new_account
from telegate.accounts import new_master_key
from telegram_session_manager import AsyncTelegramSessionManagerClient, TelegramSessionManagerClient

pytestmark = pytest.mark.server_per_test


class AccountServer:
    """A loopback server with a master key, an accounts key, and a way to import accounts."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.url = server.url
        self.key = server.store.create_key(f"worker-{secrets.token_hex(3)}", "client", accounts=True)

    def put(self, kind: str, account: dict[str, Any], *, name: str = "acc1", update: bool = False) -> int:
        answer = self.server.request("POST", "/sessions", {
            "sessions": [{"name": name, "kind": kind, "account": account}], "update": update}, key="admin")
        assert answer.status in (200, 201), answer
        rows = answer.json["updated" if update else "added"]
        return int(rows[0]["id"] if isinstance(rows[0], dict) else self.session_id(name))

    def session_id(self, name: str) -> int:
        return self.server.store.engine.read(
            lambda tx: tx.row("SELECT id FROM sessions WHERE name = :name", {"name": name}))["id"]

    def info(self, session_id: int) -> dict[str, Any]:
        answer = self.server.request("GET", f"/sessions/{session_id}", key="admin")
        assert answer.status == 200, answer
        return answer.json

    def proxy_bound(self, session_id: int) -> int:
        return int(self.server.store.engine.read(
            lambda tx: tx.row("SELECT proxy_bound FROM sessions WHERE id = :id", {"id": session_id}))["proxy_bound"])


@pytest.fixture
def accounts(fresh_db) -> Iterator[AccountServer]:
    env = server_env()
    env["TELEGATE_MASTER_KEY"] = new_master_key()
    server = LiveServer(fresh_db(), ("--handover-grace", "3600"), env=env)
    try:
        yield AccountServer(server)
    finally:
        server.close()


def flood(library: str, seconds: int) -> Exception:
    """The flood error each library raises for contacts.resolveUsername (its own class)."""
    if library == "pyrogram":
        from pyrogram.errors import FloodWait

        return FloodWait(value=seconds, rpc_name="contacts.ResolveUsername")
    return rpc_message_to_error(RpcError(error_code=420, error_message=f"FLOOD_WAIT_{seconds}"),
                                tl_functions.contacts.ResolveUsernameRequest(username="someone"))


def proxy_parts(account: dict[str, Any]) -> tuple[str, str, str, int]:
    """(user, password, host, port) of the account's socks5 proxy URL."""
    credentials, place = account["proxy"].split("//", 1)[1].rsplit("@", 1)
    user, password = credentials.split(":", 1)
    host, port = place.rsplit(":", 1)
    return user, password, host, int(port)


def assert_telethon_holds(tg: Any, account: dict[str, Any]) -> None:
    session = tg.session
    assert session.auth_key.key == base64.b64decode(account["auth_key"])
    assert (session.dc_id, session.server_address, session.port) == (
        account["dc_id"], account["server_address"], account["port"])
    assert tg.api_id == account["api_id"] and tg.api_hash == account["api_hash"]
    init = tg._init_request  # what Telethon sends Telegram on connecting: the fingerprint
    assert (init.device_model, init.system_version, init.app_version, init.lang_code, init.system_lang_code,
            init.lang_pack) == (account["device_model"], account["system_version"], account["app_version"],
                                account["lang_code"], account["system_lang_code"], account["lang_pack"])
    user, password, host, port = proxy_parts(account)
    assert (tg._proxy["proxy_type"], tg._proxy["addr"], tg._proxy["port"], tg._proxy["username"],
            tg._proxy["password"]) == ("socks5", host, port, user, password)
    friend = account["state"]["entities"][0]
    assert session.get_input_entity(friend["username"]).access_hash == friend["hash"]


async def kurigram_view(app: Any, username: str) -> tuple[Any, ...]:
    storage = app.storage
    return (await storage.auth_key(), await storage.dc_id(), await storage.server_address(), await storage.port(),
            await storage.user_id(), await storage.get_peer_by_username(username))


def assert_kurigram_holds(app: Any, view: tuple[Any, ...], account: dict[str, Any]) -> None:
    key, dc, address, port, user_id, friend = view
    assert key == base64.b64decode(account["auth_key"])
    assert (dc, address, port) == (account["dc_id"], account["server_address"], account["port"])
    assert user_id == account["user_id"]
    assert (app.api_id, app.api_hash) == (account["api_id"], account["api_hash"])
    assert (app.device_model, app.system_version, app.app_version, app.lang_code, app.lang_pack) == (
        account["device_model"], account["system_version"], account["app_version"], account["lang_code"],
        account["lang_pack"])
    _, password, host, proxy_port = proxy_parts(account)
    assert (app.proxy.hostname, app.proxy.port, app.proxy.password) == (host, proxy_port, password)
    assert friend.access_hash == account["state"]["entities"][0]["hash"]


# -- the client holds the account, and what it learns comes back ----------------------------


def test_telethon_holds_the_account_and_a_new_entity_is_in_the_next_client(accounts):
    account = new_account()
    sid = accounts.put("telethon", account)
    met = User(id=4242, access_hash=secrets.randbits(63), username="newfriend", first_name="New")
    with TelegramSessionManagerClient(accounts.url, accounts.key) as client:
        with client.telethon(connect=False) as tg:
            assert_telethon_holds(tg, account)
            with pytest.raises(ValueError):
                tg.session.get_input_entity("newfriend")  # not met yet
            tg.session.process_entities(type("Result", (), {"users": [met], "chats": []})())
        assert accounts.server.status()["in_use"] == 0  # released, with the write-back
        with client.telethon(connect=False) as tg:
            assert tg.session.get_input_entity("newfriend").access_hash == met.access_hash
            assert_telethon_holds(tg, account)  # the imported entities stay
    assert accounts.info(sid)["state"] == "free"


@pytest.mark.parametrize("library", ["telethon", "pyrogram"])
def test_the_write_back_rides_on_the_release_and_only_when_something_changed(accounts, library):
    """A block that learned something sends it with its release (one request: no renew, no
    second release); a block that learned nothing sends no state. Counted in the access log."""
    account = new_account()
    sid = accounts.put(library, account)
    with TelegramSessionManagerClient(accounts.url, accounts.key, keepalive=False) as client:
        with getattr(client, library)(connect=False) as built:
            if library == "telethon":
                met = User(id=4242, access_hash=4343, username="newfriend", first_name="New")
                built.session.process_entities(type("Result", (), {"users": [met], "chats": []})())
            else:
                asyncio.run(built.storage.update_peers([(4242, 4343, "user", None)]))
        wait_for_log(accounts.server, r"POST /release 200")
        requests = re.findall(r"(POST|GET) (/\S+) (\d+)", accounts.server.log)
        assert [(method, path) for method, path, _ in requests if path in ("/session", "/release", "/renew")] == [
            ("POST", "/session"), ("POST", "/release")]
        stored = accounts.server.request("GET", f"/sessions/{sid}/account", key="admin").json["account"]["state"][
            "entities"]
        assert {entity["id"]: entity["hash"] for entity in stored}[4242] == 4343  # written by that release
        revision = accounts.server.store.engine.read(
            lambda tx: tx.row("SELECT revision FROM accounts WHERE session_id = :sid", {"sid": sid}))["revision"]
        with getattr(client, library)(connect=False):
            pass  # nothing learned: nothing written
        assert accounts.server.store.engine.read(
            lambda tx: tx.row("SELECT revision FROM accounts WHERE session_id = :sid", {"sid": sid}))["revision"] == revision


def test_the_hand_out_carries_the_state_as_it_was_stored(accounts):
    """The hand-out passes the sealed state's JSON on as it is: the answer is the account,
    unicode and escapes included, and it parses as JSON whole."""
    account = new_account()
    account["state"]["entities"].append({"id": 888, "hash": -5, "type": "channel", "username": None,
                                         "phone": None, "name": 'Ünïcode "quoted" \\ \u2028 ✓'})
    accounts.put("telethon", account)
    answer = accounts.server.request("POST", "/session", {"account": True}, key=accounts.key)
    assert answer.status == 200, answer
    handed = answer.json["account"]
    assert handed["state"] == account["state"]
    assert {name: handed[name] for name in account if name != "state"} == {
        name: value for name, value in account.items() if name != "state"}
    assert answer.json["session_name"] == "acc1" and answer.headers.get("Cache-Control") == "no-store"


def test_kurigram_holds_the_account_and_a_new_entity_is_in_the_next_client(accounts):
    account = new_account()
    accounts.put("pyrogram", account)
    with TelegramSessionManagerClient(accounts.url, accounts.key) as client:
        with client.pyrogram(connect=False) as app:
            assert_kurigram_holds(app, asyncio.run(kurigram_view(app, "friend")), account)

            async def meet() -> None:
                await app.storage.update_peers([(4242, 99, "user", None)])
                await app.storage.update_usernames([(4242, ["newfriend"])])

            asyncio.run(meet())
        with client.pyrogram(connect=False) as app:
            view = asyncio.run(kurigram_view(app, "friend"))
            assert_kurigram_holds(app, view, account)
            peer = asyncio.run(app.storage.get_peer_by_username("newfriend"))
            assert (peer.user_id, peer.access_hash) == (4242, 99)


def test_the_async_ready_clients_hold_the_account_and_write_back(accounts):
    telethon_account, pyrogram_account = new_account(), new_account()
    accounts.put("telethon", telethon_account, name="t1")
    accounts.put("pyrogram", pyrogram_account, name="p1")
    met = User(id=5151, access_hash=secrets.randbits(63), username="asyncfriend", first_name="Async")

    async def main() -> None:  # two accounts: each block names its own (account mode leases any kind)
        async with AsyncTelegramSessionManagerClient(accounts.url, accounts.key) as client:
            async with client.telethon(connect=False, name="t1") as tg:
                assert_telethon_holds(tg, telethon_account)
                tg.session.process_entities(type("Result", (), {"users": [met], "chats": []})())
            async with client.telethon(connect=False, name="t1") as tg:
                assert tg.session.get_input_entity("asyncfriend").access_hash == met.access_hash
            async with client.pyrogram(connect=False, name="p1") as app:
                assert_kurigram_holds(app, await kurigram_view(app, "friend"), pyrogram_account)
                await app.storage.update_peers([(6161, 77, "user", None)])
                await app.storage.update_usernames([(6161, ["pyrofriend"])])
            async with client.pyrogram(connect=False, name="p1") as app:
                peer = await app.storage.get_peer_by_username("pyrofriend")
                assert (peer.user_id, peer.access_hash) == (6161, 77)

    asyncio.run(main())
    assert accounts.server.status()["in_use"] == 0


# -- the end of a block: floods rest their method, dead accounts are disabled ------------------


@pytest.mark.parametrize("library", ["telethon", "pyrogram"])
def test_a_flood_in_an_account_client_rests_its_method_only(accounts, library):
    sid = accounts.put(library, new_account())
    with TelegramSessionManagerClient(accounts.url, accounts.key) as client:
        error = flood(library, 3600)
        with pytest.raises(type(error)):
            with getattr(client, library)(connect=False):
                raise error
        lease = client.get_session(purpose="messages.getHistory", auto_wait=False)  # other methods: at once
        assert lease.session_id == sid
        client.release_session(sid)
        with pytest.raises(Exception, match="no free session for contacts.resolveUsername"):
            client.get_session(purpose="contacts.resolveUsername", auto_wait=False)
    assert accounts.info(sid)["disabled"] in (0, False)


def test_a_dead_account_error_in_an_account_client_disables_it(accounts):
    sid = accounts.put("telethon", new_account())
    with TelegramSessionManagerClient(accounts.url, accounts.key) as client:
        with pytest.raises(AuthKeyUnregisteredError):
            with client.telethon(connect=False):
                raise AuthKeyUnregisteredError(request=None)
    info = accounts.info(sid)
    assert info["state"] == "disabled" and info["disabled_reason"] == "AuthKeyUnregisteredError"


def test_the_async_dead_account_error_of_kurigram_disables_it(accounts):
    from pyrogram.errors import AuthKeyUnregistered

    sid = accounts.put("pyrogram", new_account())

    async def main() -> None:
        async with AsyncTelegramSessionManagerClient(accounts.url, accounts.key) as client:
            with pytest.raises(AuthKeyUnregistered):
                async with client.pyrogram(connect=False):
                    raise AuthKeyUnregistered()

    asyncio.run(main())
    assert accounts.info(sid)["state"] == "disabled"


# -- proxy-bound accounts move between hosts at once; the others keep the grace ----------------


def test_the_vault_marks_accounts_with_a_proxy_and_only_they_move_hosts_at_once(accounts):
    proxied = accounts.put("telethon", new_account(), name="proxied")
    direct = accounts.put("telethon", new_account(proxy=None), name="direct")
    assert (accounts.proxy_bound(proxied), accounts.proxy_bound(direct)) == (1, 0)
    server = accounts.server
    for name in ("proxied", "direct"):
        taken = server.request("POST", "/session", {"name": name, "host": "host-a"}, key=accounts.key)
        assert taken.status == 200, taken
        done = server.request("POST", "/release", {"session_id": taken.json["session_id"],
                                                   "lease_token": taken.json["lease_token"]}, key=accounts.key)
        assert done.status == 200, done
    moved = server.request("POST", "/session", {"name": "proxied", "host": "host-b"}, key=accounts.key)
    assert moved.status == 200, moved  # through its proxy Telegram sees one address: at once
    held = server.request("POST", "/session", {"name": "direct", "host": "host-b"}, key=accounts.key)
    assert held.status == 503, held  # its own address changes: only after --handover-grace
    back = server.request("POST", "/session", {"name": "direct", "host": "host-a"}, key=accounts.key)
    assert back.status == 200, back  # its last host may take it back at once

    # An update that drops the proxy (or adds one) changes the mark with it.
    accounts.put("telethon", new_account(proxy=None), name="proxied", update=True)
    accounts.put("telethon", new_account(), name="direct", update=True)
    assert (accounts.proxy_bound(proxied), accounts.proxy_bound(direct)) == (0, 1)
