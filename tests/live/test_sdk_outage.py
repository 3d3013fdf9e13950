"""An unreachable server: waited out under auto_wait (``connect_wait``), said in one line per retry, then
one short exception; leases held across the outage are renewed when it is back; errors stay short.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from support import Sleeps, eventually
from telegram_session_manager import (
    AsyncTelegramSessionManagerClient,
    AuthenticationError,
    RetryPolicy,
    TelegramSessionManagerClient,
    TeleGateConnectionError,
)

ROOT = Path(__file__).resolve().parents[2]
LOGGER = "telegram_session_manager.client"


def sdk_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEGATE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "sdk"), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def retry_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and "is not answering" in r.getMessage()]


def test_auto_wait_waits_out_the_server_for_connect_wait_then_one_clear_error(live_server, caplog):
    live_server.kill()
    sleeps = Sleeps()
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=sleeps,
                                      connect_wait=30) as client:
        with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(TeleGateConnectionError) as caught:
            client.get_session()
    assert sleeps.waits == [0.5, 1, 2, 4, 8, 10, 4.5]  # backoff up to 10 s, cut to what is left of 30 s
    lines = retry_lines(caplog)
    assert len(lines) == len(sleeps.waits)
    assert lines[0] == f"TeleGate at {live_server.url} is not answering; retrying in 0.5 s (connection refused)"
    message = str(caught.value)
    assert message.startswith(f"TeleGate at {live_server.url} is not answering (connection refused); "
                              "waited 30 s (connect_wait=30). Check that the server is running")
    assert "base_url" in message and caught.value.__cause__ is None and caught.value.__suppress_context__


def test_connect_wait_none_waits_for_ever_until_the_server_is_back(live_server):
    live_server.add_sessions("acc1")
    live_server.kill()
    # The server comes back after 40 retries (well past any finite default backoff schedule).
    sleeps = Sleeps(lambda n: n == 40 and live_server.restart())
    policy = RetryPolicy(connect_backoff_max=1)
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=sleeps, connect_wait=None,
                                      retry_policy=policy) as client:
        assert client.get_session().session_name == "acc1"
    assert len(sleeps.waits) == 40 and sleeps.waits[-1] == 1


def test_auto_wait_false_and_per_call_override_do_not_wait_long(live_server):
    live_server.kill()
    sleeps = Sleeps()
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=sleeps) as client:
        with pytest.raises(TeleGateConnectionError):
            client.get_session(auto_wait=False)
    assert sleeps.waits == [0.5, 1.0, 2.0]


def test_close_does_not_wait_out_a_dead_server(live_server, caplog):
    live_server.add_sessions("acc1")
    sleeps = Sleeps()
    client = TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=sleeps)
    client.get_session()
    live_server.kill()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        client.close()
    assert sleeps.waits == [0.5, 1.0, 2.0]
    assert "could not release session acc1 on close" in caplog.text


def test_bad_connect_wait_is_refused():
    for bad in (-1, float("nan"), "300"):
        with pytest.raises(ValueError):
            TelegramSessionManagerClient("http://127.0.0.1:9", "k", connect_wait=bad)


def test_async_client_waits_out_the_server_too(live_server, caplog):
    import asyncio

    live_server.add_sessions("acc1")
    live_server.kill()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            await asyncio.get_running_loop().run_in_executor(None, live_server.restart)

    async def main():
        async with AsyncTelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=sleep) as client:
            return (await client.get_session()).session_name

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert asyncio.run(main()) == "acc1"
    assert waits == [0.5, 1, 2] and len(retry_lines(caplog)) == 3


WAITER = """
import sys
from telegram_session_manager import TelegramSessionManagerClient
client = TelegramSessionManagerClient(sys.argv[1], sys.argv[2])
session = client.get_session()
print("got", session["session_name"], flush=True)
client.release_session(session["session_id"])
"""


def test_a_waiting_worker_survives_a_server_restart_and_says_so(live_server, other, tmp_path):
    """#12's "done when": the server is down for a few seconds while a worker waits for a session."""
    live_server.add_sessions("acc1")
    held = other.get_session()
    script = tmp_path / "waiter.py"
    script.write_text(WAITER, encoding="utf-8")
    worker = subprocess.Popen([sys.executable, str(script), live_server.url, live_server.client_key],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                              env=sdk_env())
    stderr: list[str] = []
    drain = threading.Thread(target=lambda: stderr.extend(worker.stderr), daemon=True)
    drain.start()
    try:
        eventually(lambda: any("no free session" in line for line in stderr), what="the worker to wait")
        live_server.stop()
        # Three retries (0.5 + 1 + 2 s): the server stays down a few seconds.
        eventually(lambda: sum("is not answering" in line for line in stderr) >= 3,
                   what="the worker to say the server is not answering, three times")
        live_server.restart()  # same port, same database: the other lease is still there
        other.release_session(held.session_id)
        out, _ = worker.communicate(timeout=60)
    finally:
        worker.kill()
    drain.join(10)
    text = "".join(stderr)
    assert worker.returncode == 0, text
    assert out.strip() == "got acc1"
    assert f"TeleGate at {live_server.url} is not answering; retrying in" in text
    assert "Traceback" not in text


def test_a_held_lease_is_renewed_as_soon_as_the_server_is_back(live_server, caplog):
    [sid] = live_server.add_sessions("acc1")
    with TelegramSessionManagerClient(live_server.url, live_server.client_key) as client:
        lease = client.get_session(ttl=30)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            live_server.stop()
            lease._renew_due = 0  # due now: the keepalive tries at once
            client._poke()
            eventually(lambda: lease._renew_failures >= 2, what="two failed renewals")
            renewals = lease.renewals
            live_server.restart()
            eventually(lambda: lease.renewals > renewals, what="the renewal after the restart")
        assert not lease.lost and client.held == [lease]
        assert live_server.store.get_session(sid)["state"] == "in_use"
        assert "could not renew the lease on session acc1 (trying again in 0.5 s)" in caplog.text


SHORT = """
import sys
from telegram_session_manager import TelegramSessionManagerClient
client = TelegramSessionManagerClient(sys.argv[1], sys.argv[2], connect_wait=float(sys.argv[3]))
client.get_session()
"""


def run_short(tmp_path, url: str, key: str, connect_wait: float = 300) -> subprocess.CompletedProcess:
    script = tmp_path / "short.py"
    script.write_text(SHORT, encoding="utf-8")
    return subprocess.run([sys.executable, str(script), url, key, str(connect_wait)], capture_output=True,
                          text=True, env=sdk_env(), timeout=60, encoding="utf-8")


def test_a_wrong_api_key_is_one_clear_line_after_a_short_traceback(live_server, tmp_path):
    done = run_short(tmp_path, live_server.url, "tg_wrong_key")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("telegram_session_manager.client.AuthenticationError: POST ")
    assert "401 unauthorized" in lines[-1] and "unknown or revoked" in lines[-1]
    assert "telegate keys create" in lines[-1]
    assert len(lines) <= 8, done.stderr  # was ~25 lines of tenacity frames
    assert "tenacity" not in done.stderr and "During handling" not in done.stderr


def test_giving_up_on_a_dead_server_is_one_exception_without_a_chain(live_server, tmp_path):
    url = live_server.url
    live_server.kill()
    done = run_short(tmp_path, url, live_server.client_key, connect_wait=1)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    retries = [line for line in lines if "is not answering; retrying in" in line]
    assert retries and retries[0] == f"TeleGate at {url} is not answering; retrying in 0.5 s (connection refused)"
    assert re.match(rf"telegram_session_manager\.client\.TeleGateConnectionError: TeleGate at {url} "
                    r"is not answering \(connection refused\); waited 1(\.\d)? s \(connect_wait=1\.0\)", lines[-1])
    assert done.stderr.count("Traceback") == 1 and "During handling" not in done.stderr
    assert "tenacity" not in done.stderr and "urllib3" not in done.stderr
    assert len(lines) - len(retries) <= 8, done.stderr


def test_an_authentication_error_carries_the_servers_words_and_the_hint(live_server):
    with TelegramSessionManagerClient(live_server.url, "tg_wrong") as client:
        with pytest.raises(AuthenticationError) as caught:
            client.get_status()
    message = str(caught.value)
    assert caught.value.detail in message and AuthenticationError.hint in message
    files = [entry.path for entry in caught.traceback]
    assert not [path for path in files if "tenacity" in str(path)], files
