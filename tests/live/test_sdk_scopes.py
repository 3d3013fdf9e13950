"""Purposes and flood scopes (#11) from the SDK: a Telegram error inside ``with client.session()`` rests the
account for the method that hit the limit only.

Telegram is faked with the real exception classes, built the way the libraries build them:
Telethon's ``rpc_message_to_error(RpcError, request)`` with real ``telethon.tl.functions``
request objects, and kurigram's ``RPCError.raise_it(RpcError, raw.functions...)``.
The live tests need the server side of #11 (``purpose``, ``flood_scope``, ``peer_flood``).
"""
from __future__ import annotations

import asyncio
import logging

import pytest
from pyrogram import raw
from pyrogram.errors import RPCError as PyrogramRPCError
from telethon.errors import rpc_message_to_error
from telethon.tl import functions as tl_functions
from telethon.tl.types import InputPeerSelf, RpcError

from telegram_session_manager import (
    AsyncTelegramSessionManagerClient,
    Lease,
    NoSessionAvailable,
    Outcome,
    TelegramSessionManagerClient,
    classify_exception,
    tl_method,
)

LOGGER = "telegram_session_manager.client"
RESOLVE = "contacts.resolveUsername"
HISTORY = "messages.getHistory"


def telethon(message: str, request, code: int = 420) -> Exception:
    return rpc_message_to_error(RpcError(error_code=code, error_message=message), request)


def kurigram(message: str, function, code: int = 420) -> Exception:
    try:
        PyrogramRPCError.raise_it(raw.types.RpcError(error_code=code, error_message=message), function)
    except PyrogramRPCError as exc:
        return exc
    raise AssertionError("raise_it did not raise")


def resolve_request():
    return tl_functions.contacts.ResolveUsernameRequest(username="durov")


def test_telethon_errors_are_scoped_by_their_request():
    flood = telethon("FLOOD_WAIT_72000", resolve_request())
    assert type(flood).__name__ == "FloodWaitError"
    assert classify_exception(flood) == Outcome(flood_wait=72000, flood_scope=RESOLVE)
    history = tl_functions.messages.GetHistoryRequest(peer=InputPeerSelf(), offset_id=0, offset_date=None,
                                                      add_offset=0, limit=10, max_id=0, min_id=0, hash=0)
    assert tl_method(telethon("FLOOD_WAIT_5", history)) == HISTORY
    premium = telethon("FLOOD_PREMIUM_WAIT_7", tl_functions.upload.GetFileRequest(location=None, offset=0, limit=1))
    assert type(premium).__name__ == "FloodPremiumWaitError"
    assert classify_exception(premium) == Outcome(flood_wait=7, flood_scope="upload.getFile")
    peer = telethon("PEER_FLOOD", tl_functions.messages.SendMessageRequest(peer=InputPeerSelf(), message="hi"), 400)
    assert type(peer).__name__ == "PeerFloodError"
    assert classify_exception(peer) == Outcome(peer_flood=True, flood_scope="messages.sendMessage")
    root = telethon("FLOOD_WAIT_3", tl_functions.help.GetConfigRequest())
    assert tl_method(root) == "help.getConfig"


def test_telethon_wrappers_are_unwrapped_to_the_request_inside():
    inner = resolve_request()
    wrapped = tl_functions.InvokeWithLayerRequest(layer=1, query=tl_functions.InitConnectionRequest(
        api_id=1, device_model="d", system_version="s", app_version="a", system_lang_code="en", lang_pack="",
        lang_code="en", query=inner))
    assert tl_method(telethon("FLOOD_WAIT_9", wrapped)) == RESOLVE


def test_kurigram_errors_are_scoped_by_their_rpc_name():
    flood = kurigram("FLOOD_WAIT_72000", raw.functions.contacts.ResolveUsername)
    assert type(flood).__name__ == "FloodWait" and 'caused by "contacts.ResolveUsername"' in str(flood)
    assert classify_exception(flood) == Outcome(flood_wait=72000, flood_scope=RESOLVE)
    premium = kurigram("FLOOD_PREMIUM_WAIT_9", raw.functions.upload.GetFile)
    assert classify_exception(premium) == Outcome(flood_wait=9, flood_scope="upload.getFile")
    peer = kurigram("PEER_FLOOD", raw.functions.messages.SendMessage, 400)
    assert type(peer).__name__ == "PeerFlood"
    assert classify_exception(peer) == Outcome(peer_flood=True, flood_scope="messages.sendMessage")


def test_an_unknown_method_rests_the_whole_account():
    import pyrogram.errors as pyro
    import telethon.errors as tl

    assert classify_exception(tl.FloodWaitError(request=None, capture=30)) == Outcome(flood_wait=30)
    assert classify_exception(pyro.FloodWait(value=30)) == Outcome(flood_wait=30)  # no "caused by"
    # A wrapper names no limit of its own (kurigram reports the wrapper, not what is inside).
    assert tl_method(kurigram("FLOOD_WAIT_3", raw.functions.InvokeWithLayer)) is None

    class Odd(Exception):
        request = object()

    assert tl_method(Odd()) is None
    assert classify_exception(tl.PeerFloodError(request=None)) == Outcome(peer_flood=True)


def test_scoped_rests_merge_to_account_wide_unless_they_agree():
    resolve = Outcome(flood_wait=60, flood_scope=RESOLVE)
    assert resolve.merge(Outcome(flood_wait=10, flood_scope=RESOLVE)) == resolve
    assert resolve.merge(Outcome(flood_wait=10)) == Outcome(flood_wait=60)  # account-wide wins
    assert resolve.merge(Outcome(flood_wait=90, flood_scope=HISTORY)) == Outcome(flood_wait=90)
    assert resolve.merge(Outcome()) == resolve  # a plain release keeps the scope
    assert Outcome(peer_flood=True, flood_scope=RESOLVE).action == "peer_flood"
    assert resolve.merge(Outcome(disable="banned")).action == "disable"


def test_release_bodies_carry_scope_and_peer_flood():
    client = TelegramSessionManagerClient("http://127.0.0.1:9", "key", keepalive=False)
    lease = Lease({"session_id": 4, "session_name": "a", "lease_token": "t"})
    lease.report_flood_wait(60, method=RESOLVE)
    body = client._release_begin(lease, 4, Outcome())
    assert body == {"session_id": 4, "lease_token": "t", "flood_wait": 60, "flood_scope": RESOLVE}
    other = Lease({"session_id": 5, "session_name": "b", "lease_token": "u"})
    other.report_peer_flood("messages.sendMessage")
    assert client._release_begin(other, 5, Outcome()) == {
        "session_id": 5, "lease_token": "u", "peer_flood": True, "flood_scope": "messages.sendMessage"}
    with pytest.raises(ValueError):
        lease.report_flood_wait(5, method="not a method")
    with pytest.raises(ValueError):
        client.release_session(4, flood_scope=RESOLVE)  # a scope alone rests nothing
    with pytest.raises(ValueError):
        client.get_session(purpose="contacts.resolve.username")
    call = client._acquire_call(None, None, False, None, purpose=HISTORY)
    assert call.body["purpose"] == HISTORY
    client._transport.close()


# -- against a live server ---------------------------------------------------------------


@pytest.fixture
def client(live_server):
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, keepalive=False) as c:
        yield c


@pytest.mark.parametrize("library", ["telethon", "kurigram"])
def test_a_flood_wait_in_the_block_rests_only_its_method(live_server, client, library, caplog):
    """#11's "done when": a reader with another purpose gets the account at once; a worker without one doesn't."""
    [sid] = live_server.add_sessions("acc1")
    error = (telethon("FLOOD_WAIT_72000", resolve_request()) if library == "telethon"
             else kurigram("FLOOD_WAIT_72000", raw.functions.contacts.ResolveUsername))
    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(type(error)):
        with client.session(purpose=RESOLVE) as s:
            assert s.purpose == RESOLVE
            raise error
    assert "released into a flood wait of 72000 s for contacts.resolveUsername" in caplog.text
    reader = client.get_session(purpose=HISTORY, auto_wait=False)  # usable for other methods at once
    assert reader.session_id == sid and reader.purpose == HISTORY
    client.release_session(sid)
    with pytest.raises(NoSessionAvailable) as refused:
        client.get_session(purpose=RESOLVE, auto_wait=False)
    assert refused.value.purpose == RESOLVE and str(refused.value).startswith(
        f"no free session for {RESOLVE}: 1 in flood wait (for it or account-wide)")
    with pytest.raises(NoSessionAvailable) as refused:
        client.get_session(auto_wait=False)  # no purpose: may call anything, so not this account
    assert refused.value.purpose is None and str(refused.value).startswith("no free session: 1 in flood wait")


def test_peer_flood_rests_its_method(live_server, client):
    live_server.add_sessions("acc1")
    error = telethon("PEER_FLOOD", tl_functions.messages.SendMessageRequest(peer=InputPeerSelf(), message="hi"), 400)
    with pytest.raises(type(error)):
        with client.session():
            raise error
    with pytest.raises(NoSessionAvailable):
        client.get_session(purpose="messages.sendMessage", auto_wait=False)
    assert client.get_session(purpose=HISTORY, auto_wait=False).session_name == "acc1"


def test_an_unscoped_flood_wait_rests_the_whole_account(live_server, client):
    import telethon.errors as tl

    live_server.add_sessions("acc1")
    with pytest.raises(tl.FloodWaitError):
        with client.session():
            raise tl.FloodWaitError(request=None, capture=600)
    with pytest.raises(NoSessionAvailable):
        client.get_session(purpose=HISTORY, auto_wait=False)


def test_the_async_client_scopes_too(live_server):
    [sid] = live_server.add_sessions("acc1")

    async def main():
        async with AsyncTelegramSessionManagerClient(live_server.url, live_server.client_key) as client:
            with pytest.raises(Exception):
                async with client.session(purpose=RESOLVE):
                    raise kurigram("FLOOD_WAIT_600", raw.functions.contacts.ResolveUsername)
            lease = await client.get_session(purpose=HISTORY, auto_wait=False)
            await client.release_session(lease.session_id)
            with pytest.raises(NoSessionAvailable):
                await client.get_session(purpose=RESOLVE, auto_wait=False)
            return lease.session_id

    assert asyncio.run(main()) == sid
