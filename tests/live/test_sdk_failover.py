"""``base_url`` as a list: two live servers on one SQLite file; the client moves on when one dies."""
from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from support import Sleeps, eventually
from telegram_session_manager import (
    AsyncTelegramSessionManagerClient,
    TelegramSessionManagerClient,
    TeleGateConnectionError,
)

LOGGER = "telegram_session_manager.client"


@pytest.fixture
def pair(server_factory):
    """Two servers sharing one database: either serves any lease."""
    first = server_factory()
    second = server_factory(db_path=first.db_path)
    return first, second


def switches(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and "switching to" in r.getMessage()]


def test_a_single_url_stays_the_seeds_string(live_server):
    with TelegramSessionManagerClient(live_server.url + "/", live_server.client_key) as client:
        assert client.base_url == live_server.url and client.base_urls == (live_server.url,)


def test_bad_url_lists_are_refused():
    for bad in ([], ["http://a", ""], ["http://a", "ftp://b"], ("localhost:1",), [None]):
        with pytest.raises(ValueError):
            TelegramSessionManagerClient(bad, "key")


def test_the_first_url_that_answers_is_used_and_release_follows_a_switch(pair, caplog):
    first, second = pair
    [sid] = first.add_sessions("acc1")
    with TelegramSessionManagerClient([first.url, second.url], first.client_key) as client:
        assert client.base_url == first.url
        lease = client.get_session()
        first.kill()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert client.release_session(sid) is True  # sent to the second server
        assert client.base_url == second.url
        assert switches(caplog) == [f"TeleGate at {first.url} is not answering (connection refused); "
                                    f"switching to {second.url}"]
        assert second.status()["free"] == 1 and lease.released
        assert client.get_session().session_name == "acc1"  # the second stays current: no new switch
        assert len(switches(caplog)) == 1


def test_a_dead_first_url_at_start_is_skipped(pair, caplog):
    first, second = pair
    first.add_sessions("acc1")
    first.kill()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with TelegramSessionManagerClient([first.url, second.url], second.client_key) as client:
            assert client.get_session().session_name == "acc1"
    assert len(switches(caplog)) == 1


def test_the_keepalive_follows_the_switch(pair):
    first, second = pair
    [sid] = first.add_sessions("acc1")
    with TelegramSessionManagerClient([first.url, second.url], first.client_key) as client:
        lease = client.get_session(ttl=1.5)  # renewed every 0.5 s
        first.kill()
        renewals = lease.renewals
        eventually(lambda: lease.renewals >= renewals + 3, what="renewals through the second server")
        assert client.base_url == second.url and not lease.lost
        assert second.store.get_session(sid)["state"] == "in_use"


def test_when_every_url_is_down_the_wait_names_them_all(pair, caplog):
    first, second = pair
    first.kill()
    second.kill()
    sleeps = Sleeps()
    with TelegramSessionManagerClient([first.url, second.url], first.client_key, sleep=sleeps,
                                      connect_wait=3) as client:
        with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(TeleGateConnectionError) as caught:
            client.get_status()
    assert sleeps.waits == [0.5, 1, 1.5]
    assert f"TeleGate at {first.url} or {second.url} is not answering; retrying in 0.5 s" in caplog.text
    assert f"at {second.url} or {first.url} is not answering (connection refused); waited 3 s" in str(caught.value)


def test_a_worker_carries_on_when_its_server_is_killed(pair):
    """#9's "done when": a worker with two URLs keeps leasing through a SIGKILL of the first server."""
    first, second = pair
    first.add_sessions("a", "b")
    done: list[str] = []
    errors: list[BaseException] = []
    killed = threading.Event()

    def worker() -> None:
        try:
            with TelegramSessionManagerClient([first.url, second.url], first.client_key) as client:
                for number in range(40):
                    if number == 10:
                        first.kill()
                        killed.set()
                    with client.session(ttl=30) as s:
                        done.append(s.session_name)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(60)
    assert not thread.is_alive() and not errors, errors
    assert killed.is_set() and len(done) == 40
    assert second.status()["free"] == 2  # every lease given back, through the second server


def test_the_async_client_fails_over_too(pair, caplog):
    first, second = pair
    [sid] = first.add_sessions("acc1")

    async def main():
        async with AsyncTelegramSessionManagerClient([first.url, second.url], first.client_key) as client:
            async with client.session():
                first.kill()
            assert client.base_url == second.url
            async with client.session() as s:
                return s.session_id

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert asyncio.run(main()) == sid
    assert len(switches(caplog)) == 1 and second.status()["free"] == 1
