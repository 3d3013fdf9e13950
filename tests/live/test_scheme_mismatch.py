"""https:// to a plain-HTTP server, and http:// to a TLS one: the SDK and the CLI say which at once.

Before, the SDK waited out its connect_wait saying "timed out" / "connection reset", and
the CLI "may be overloaded". Now the failed request is followed by one probe of the other
scheme, and the answer names the URL to use; nothing is retried (the injected sleep
records no wait, so the test needs no clock).
"""
from __future__ import annotations

import datetime
import socket
import ssl
import threading
from pathlib import Path

import pytest

from support.cli import run
from telegram_session_manager import TelegramSessionManagerClient, TeleGateConnectionError


def test_the_sdk_says_a_plain_http_server_needs_http(live_server, sleeps):
    url = live_server.url.replace("http://", "https://")
    with TelegramSessionManagerClient(url, live_server.client_key, sleep=sleeps, connect_wait=300) as client:
        with pytest.raises(TeleGateConnectionError) as caught:
            client.get_session()
    assert "speaks plain HTTP, not TLS: use http://" in str(caught.value)
    assert sleeps.waits == []  # said on the first failure, not after waiting
    assert "spoke TLS (https://) to this plain-HTTP server" in live_server.log


def test_the_cli_says_a_plain_http_server_needs_http(live_server):
    url = live_server.url.replace("http://", "https://")
    code, out, err = run("status", "--url", url, "--key", live_server.admin_key)
    assert code != 0 and out == ""
    assert "speaks plain HTTP, not TLS: use http://" in err and len(err.strip().splitlines()) == 1


@pytest.fixture
def tls_server(tmp_path: Path):
    """A TLS server that speaks no HTTP (a TLS proxy's port, say): the other way round."""
    cryptography = pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    del cryptography
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                if stop.is_set():  # the teardown's wake-up call
                    return
                try:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(100)
                except (OSError, ssl.SSLError):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        # accept() does not return when the socket is closed under it: a connection wakes it.
        socket.create_connection(listener.getsockname(), timeout=5).close()
        thread.join(timeout=5)
        listener.close()
        assert not thread.is_alive()


def test_the_sdk_says_a_tls_server_needs_https(tls_server, sleeps):
    with TelegramSessionManagerClient(tls_server, "k" * 32, sleep=sleeps, connect_wait=300) as client:
        with pytest.raises(TeleGateConnectionError) as caught:
            client.get_status()
    assert f"speaks TLS (https): use https://{tls_server[len('http://'):]}" in str(caught.value)
    assert sleeps.waits == []


def test_the_cli_says_a_tls_server_needs_https(tls_server):
    code, out, err = run("status", "--url", tls_server, "--key", "k" * 32)
    assert code != 0 and "speaks TLS (https): use https://" in err and len(err.strip().splitlines()) == 1
