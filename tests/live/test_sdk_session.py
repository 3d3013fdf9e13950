"""``with client.session()``: released on every exit, Telegram errors classified, exceptions propagate.

Telegram itself is faked by raising the real exception classes of Telethon
(``telethon.errors``) and of kurigram (``pyrogram.errors``) inside the block.
"""
from __future__ import annotations

import logging

import pyrogram.errors as pyro
import pytest
import telethon.errors as tl

from telegram_session_manager import Outcome, TelegramSessionManagerClient, classify_exception

DEAD = ["AuthKeyUnregistered", "AuthKeyInvalid", "AuthKeyDuplicated", "SessionRevoked", "SessionExpired",
        "UserDeactivated", "UserDeactivatedBan", "PhoneNumberBanned"]


def telethon_error(name: str, seconds: int | None = None) -> Exception:
    cls = getattr(tl, name)
    return cls(request=None) if seconds is None else cls(request=None, capture=seconds)


def pyrogram_error(name: str, seconds: int | None = None) -> Exception:
    return getattr(pyro, name)(value=seconds)


@pytest.fixture
def client(live_server):
    with TelegramSessionManagerClient(live_server.url, live_server.client_key) as c:
        yield c


def test_the_block_gets_the_session_and_it_is_released_on_exit(live_server, client):
    [sid] = live_server.add_sessions("acc1")
    with client.session(ttl=60) as s:
        assert (s.session_id, s.session_name, s["session_name"]) == (sid, "acc1", "acc1")
        assert s.ttl == 60 and live_server.status()["in_use"] == 1
        assert client.held == [s]
    assert live_server.status()["free"] == 1
    assert s.released and client.held == []


def test_an_exception_in_the_block_propagates_and_the_session_is_released(live_server, client, admin):
    [sid] = live_server.add_sessions("acc1")
    error = ValueError("worker bug")
    with pytest.raises(ValueError) as caught:
        with client.session():
            raise error
    assert caught.value is error
    info = admin.session_info(sid)
    assert info["state"] == "free" and info["flood_count"] == 0 and not info["disabled"]


def test_keyboard_interrupt_releases_plainly(live_server, client):
    live_server.add_sessions("acc1")
    with pytest.raises(KeyboardInterrupt):
        with client.session():
            raise KeyboardInterrupt
    assert live_server.status()["free"] == 1


@pytest.mark.parametrize("make", [
    lambda: telethon_error("FloodWaitError", 42),
    lambda: telethon_error("FloodPremiumWaitError", 42),
    lambda: pyrogram_error("FloodWait", 42),
    lambda: pyrogram_error("FloodPremiumWait", 42),
], ids=["telethon-FloodWaitError", "telethon-FloodPremiumWaitError", "pyrogram-FloodWait",
        "pyrogram-FloodPremiumWait"])
def test_a_flood_wait_raised_in_the_block_puts_the_session_in_flood_wait(live_server, client, admin, make):
    [sid] = live_server.add_sessions("acc1")
    error = make()
    with pytest.raises(type(error)) as caught:
        with client.session():
            raise error
    assert caught.value is error
    info = admin.session_info(sid)
    assert info["state"] == "in_floodwait" and info["flood_count"] == 1
    assert 40 < info["flood_wait_remaining"] <= 42


@pytest.mark.parametrize("make", [
    lambda: telethon_error("SlowModeWaitError", 30),
    lambda: pyrogram_error("SlowmodeWait", 30),
], ids=["telethon", "pyrogram"])
def test_slow_mode_is_per_chat_so_the_session_is_simply_released(live_server, client, admin, make):
    [sid] = live_server.add_sessions("acc1")
    with pytest.raises(Exception):
        with client.session():
            raise make()
    info = admin.session_info(sid)
    assert info["state"] == "free" and info["flood_count"] == 0


@pytest.mark.parametrize("library", ["telethon", "pyrogram"])
def test_dead_account_errors_disable_the_session_with_the_error_name(live_server, client, admin, library):
    ids = live_server.add_sessions(*DEAD)
    for name, sid in zip(DEAD, ids):
        error = telethon_error(name + "Error") if library == "telethon" else pyrogram_error(name)
        with pytest.raises(type(error)):
            with client.session(name=name):
                raise error
        info = admin.session_info(sid)
        assert info["state"] == "disabled", name
        assert info["disabled_reason"] == type(error).__name__
    assert live_server.status()["disabled"] == len(DEAD)


def test_report_flood_wait_and_report_dead_without_an_exception(live_server, client, admin):
    a, b = live_server.add_sessions("a", "b")
    with client.session(name="a") as s:
        s.report_flood_wait(120)
        assert live_server.status()["in_use"] == 1  # still ours until the block ends
    with client.session(name="b") as s:
        s.report_dead("phone number banned")
    assert admin.session_info(a)["state"] == "in_floodwait"
    assert 115 < admin.session_info(a)["flood_wait_remaining"] <= 120
    assert admin.session_info(b)["disabled_reason"] == "phone number banned"
    with pytest.raises(ValueError):
        s.report_flood_wait(-1)


def test_the_longer_of_a_reported_and_a_raised_flood_wait_wins(live_server, client, admin):
    [sid] = live_server.add_sessions("a")
    with pytest.raises(tl.FloodWaitError):
        with client.session() as s:
            s.report_flood_wait(10)
            raise telethon_error("FloodWaitError", 60)
    assert 55 < admin.session_info(sid)["flood_wait_remaining"] <= 60


def test_a_report_on_a_get_session_lease_is_sent_by_release_session(live_server, client, admin):
    [sid] = live_server.add_sessions("a")
    lease = client.get_session()
    lease.report_flood_wait(30)
    client.release_session(lease["session_id"])
    assert admin.session_info(sid)["state"] == "in_floodwait"


def test_a_lease_lost_in_the_block_is_logged_not_raised(live_server, client, caplog):
    [sid] = live_server.add_sessions("a")
    with TelegramSessionManagerClient(live_server.url, live_server.client_key) as other:
        with caplog.at_level(logging.ERROR):
            with client.session() as s:
                other.release_session(sid)  # no token: ends whatever lease is current
                theirs = other.get_session()
        assert s.lost and "lost" in caplog.text
        assert live_server.store.get_session(sid)["state"] == "in_use"  # theirs is untouched
        other.release_session(theirs.session_id)


def test_an_unreachable_server_at_the_end_of_the_block_does_not_mask_the_work(live_server, caplog):
    live_server.add_sessions("a")
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=lambda s: None) as c:
        with caplog.at_level(logging.ERROR):
            with c.session() as s:
                live_server.kill()
        assert "could not release" in caplog.text and not s.released
        assert c.held == []  # no longer renewed: the server frees it when the lease expires


class LegacyPyrogramFloodWait(Exception):
    """Old Pyrogram (< 2.0) kept the wait in ``.x``."""

    def __init__(self, x: int) -> None:
        super().__init__(f"FLOOD_WAIT_{x}")
        self.x = x


LegacyPyrogramFloodWait.__name__ = "FloodWait"


def test_classification_by_duck_typing():
    assert classify_exception(telethon_error("FloodWaitError", 7)) == Outcome(flood_wait=7)
    assert classify_exception(pyrogram_error("FloodWait", 8)) == Outcome(flood_wait=8)
    assert classify_exception(LegacyPyrogramFloodWait(9)) == Outcome(flood_wait=9)

    class MyFlood(tl.FloodWaitError):  # a subclass is matched along the MRO
        pass

    assert classify_exception(MyFlood(request=None, capture=3)) == Outcome(flood_wait=3)
    assert classify_exception(telethon_error("AuthKeyDuplicatedError")) == Outcome(disable="AuthKeyDuplicatedError")
    assert classify_exception(pyrogram_error("UserDeactivatedBan")).action == "disable"
    assert classify_exception(telethon_error("SlowModeWaitError", 5)).action == "release"
    assert classify_exception(tl.RPCError(request=None, message="X")).action == "release"
    assert classify_exception(ValueError()).action == "release"
    assert classify_exception(KeyboardInterrupt()).action == "release"
    assert Outcome(flood_wait=5).merge(Outcome(disable="x")) == Outcome(flood_wait=5, disable="x")
    assert Outcome(disable="x").action == "disable"
