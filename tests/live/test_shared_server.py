"""The module's shared server, reset between tests, is what a fresh server on a fresh database would be.

``live_server`` hands every test of a module the same ``telegate serve`` process (per store),
reset before each test (``support.server.LiveServer.reset``). Here a test leaves as much
behind as it can (sessions, rests, history, a key, a lease, log lines, a killed process)
and the reset must leave none of it to be seen.
"""
from __future__ import annotations

import threading

from support import LiveServer, eventually, wait_for_log


def fresh_view(server: LiveServer) -> dict:
    """What a test can see of a pool: status, sessions, keys, a first session's id and history."""
    [sid] = server.add_sessions("probe")
    lease = server.request("POST", "/session", {"holder": "probe"}).json
    return {
        "status": {k: v for k, v in server.status().items() if k != "server_time"},
        "sessions": [s["name"] for s in server.request("GET", "/sessions", key="admin").json["sessions"]],
        "keys": sorted(k["name"] for k in server.request("GET", "/keys", key="admin").json["keys"]),
        "session_id": sid,
        "lease_session": lease["session_id"],
        "events": len(server.request("GET", f"/sessions/{sid}/events", key="admin").json["events"]),
    }


def leave_a_mess(server: LiveServer) -> None:
    ids = server.add_sessions("a", "b", "c")
    lease = server.request("POST", "/session", {"name": "a"}).json
    server.request("POST", "/release", {"session_id": ids[0], "lease_token": lease["lease_token"],
                                        "flood_wait": 3600})
    assert server.request("POST", "/session", {"name": "b", "ttl": 3600}).status == 200
    assert server.request("POST", "/keys", {"name": "left-behind"}, key="admin").status == 201
    server.request("GET", "/this-line-must-not-be-seen-again", key=None)
    wait_for_log(server, "this-line-must-not-be-seen-again")  # the access line follows the answer


def test_a_reset_leaves_nothing_of_the_last_test(module_server):
    server = module_server
    server.reset()
    fresh = fresh_view(server)
    assert fresh["session_id"] == 1 and fresh["lease_session"] == 1 and fresh["events"] == 1
    assert fresh["sessions"] == ["probe"] and fresh["status"]["in_use"] == 1
    pid = server.proc.pid
    leave_a_mess(server)

    server.reset()
    assert "this-line-must-not-be-seen-again" not in server.log
    assert fresh_view(server) == fresh
    assert server.proc.pid == pid  # the same process

    leave_a_mess(server)
    server.kill()
    server.reset()  # a killed server is started again, on the same database made fresh
    assert server.proc.poll() is None and server.proc.pid != pid
    assert server.request("GET", "/healthz", key=None).status == 200
    assert fresh_view(server) == fresh


def test_live_server_is_the_module_server_reset(live_server, module_server):
    assert live_server is module_server
    assert live_server.status()["total"] == 0


def test_a_poll_left_parked_is_answered_and_cannot_reach_the_next_test(module_server):
    server = module_server
    server.reset()
    server.add_sessions("only")
    assert server.request("POST", "/session", {"ttl": 3600}).status == 200
    replies: list = []
    poll = threading.Thread(target=lambda: replies.append(server.request("POST", "/session", {"wait": 25})))
    poll.start()
    eventually(lambda: server.status()["waiting_workers"] == 1, what="the poll to park")
    pid = server.proc.pid
    server.quiesce([poll])  # what live_server does after each test
    assert not poll.is_alive() and replies and replies[0].status == 503  # answered by the clean stop
    server.reset()
    assert server.proc.pid != pid and server.status()["waiting_workers"] == 0 and server.status()["total"] == 0
