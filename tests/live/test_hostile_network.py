"""Hostile networks (issue 18: H2, L3, L4): raw sockets on 127.0.0.0/8, no key needed.

An attacker at 127.0.0.2 opens idle sockets, dribbles request heads, or frames a request
two ways; the legitimate client at 127.0.0.1 is served at once all the while. Every wait
here is bounded: a socket the server should close is read with a timeout.
"""
from __future__ import annotations

import socket
import time

import pytest

from support import wait_for_log

ATTACKER = "127.0.0.2"


def _connect(server, source: str = ATTACKER) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.bind((source, 0))
    except OSError:
        sock.close()
        pytest.skip(f"cannot send from {source} here (only Linux routes all of 127.0.0.0/8 to lo)")
    sock.connect(("127.0.0.1", server.port))
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """True when the server closed ``sock`` (EOF or reset) within the socket's timeout."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def _answer(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (bounded by the socket timeout)."""
    chunks = []
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except (ConnectionResetError, socket.timeout):
        pass
    return b"".join(chunks)


def _response(sock: socket.socket) -> bytes:
    """One whole response on a keep-alive connection: its head, then Content-Length bytes of body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed mid-body"
        body += chunk
    return head


def test_one_address_cannot_take_every_connection(server_factory):
    """H2: the attacker's connections beyond --connections-per-ip are closed at once, and a
    worker from another address is served while the attacker holds its share."""
    server = server_factory("--connections-per-ip", "20", "--connection-limit", "40", "--header-timeout", "60")
    held = [_connect(server) for _ in range(20)]
    wait_for_log(server, r"listening")
    extra = [_connect(server) for _ in range(10)]
    try:
        for sock in extra:
            sock.settimeout(5)
            assert _closed_by_server(sock), "a connection beyond the per-address limit stayed open"
        for sock in held[:3]:
            sock.settimeout(0.5)
            assert not _closed_by_server(sock), "a connection within the limit was closed"
        assert server.status()["total"] == 0  # the worker at 127.0.0.1: served at once
        wait_for_log(server, r"closed a connection from 127\.0\.0\.2: it holds 20, its limit")
    finally:
        for sock in held + extra:
            sock.close()


def test_a_request_head_must_come_within_the_header_timeout(server_factory):
    """H2: a socket that sends nothing, or a head one byte at a time, is closed after
    --header-timeout; an idle keep-alive connection between requests is not."""
    server = server_factory("--header-timeout", "1")
    keep_alive = _connect(server, "127.0.0.1")
    keep_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _response(keep_alive).startswith(b"HTTP/1.1 200")
    silent = _connect(server)
    dribbling = _connect(server)
    started = time.monotonic()
    try:
        dribbling.settimeout(0.3)
        closed = False
        for byte in b"GET /status HTTP/1.1\r\nHost: slow.example\r\nX-Pad: " + b"a" * 200:
            try:
                dribbling.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            if _closed_by_server(dribbling):
                closed = True
                break
            assert time.monotonic() - started < 30, "the dribbling head was never cut"
        assert closed
        silent.settimeout(10)
        assert _closed_by_server(silent)
        assert server.status()["total"] == 0  # served at once meanwhile
        time.sleep(1.5)  # longer than the header timeout, idle between requests
        keep_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _response(keep_alive).startswith(b"HTTP/1.1 200")
    finally:
        for sock in (keep_alive, silent, dribbling):
            sock.close()


@pytest.mark.parametrize("head, body", [
    (b"POST /session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n", b"2\r\n{}\r\n0\r\n\r\nGET /status HTTP/1.1\r\nHost: x\r\n\r\n"),
    (b"POST /session HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n", b"{}"),
    (b"POST /session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
     b"zz\r\n{}\r\n0\r\n\r\n"),
], ids=["content-length and chunked", "both on HTTP/1.0", "invalid chunk size"])
def test_a_request_framed_two_ways_gets_400_and_the_connection_closes(live_server, head, body):
    """L4: a request smuggling attempt through a proxy: 400, and nothing after it is read."""
    sock = _connect(live_server, "127.0.0.1")
    try:
        sock.sendall(head + body)
        answer = _answer(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n", 1)[0], answer[:200]
    assert answer.count(b"HTTP/1.") == 1, "a second (smuggled) request was answered"


def test_the_access_log_shows_the_client_address_and_a_trusted_proxys_client(server_factory):
    """L3: the access line starts with the client address; X-Forwarded-For counts only from
    the --trusted-proxy address."""
    direct = server_factory()
    direct.request("GET", "/status", headers={"X-Forwarded-For": "203.0.113.9"})
    wait_for_log(direct, r"telegate\.access: 127\.0\.0\.1 GET /status 200 ")
    assert "203.0.113.9" not in direct.log
    proxied = server_factory("--trusted-proxy", "127.0.0.1")
    proxied.request("GET", "/status", headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
    wait_for_log(proxied, r"telegate\.access: 203\.0\.113\.9 GET /status 200 ")
