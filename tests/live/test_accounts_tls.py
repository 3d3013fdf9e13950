"""Accounts over TLS: a real Caddy (``tls internal``), and a real nginx running the server block of
docs/TLS.md, terminate TLS in front of a real server.

The server listens on every interface (not loopback only) with ``--trusted-proxy
127.0.0.1``: an account goes out only through Caddy, which says https; plain HTTP straight
to the server is refused, and a client off the proxy's address cannot forge
``X-Forwarded-Proto``. Clients trust Caddy's local CA through its root certificate file.
Caddy and nginx are Debian's packages (``.ci/run`` installs them); without one its tests skip,
except under CI, where they fail.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import urllib3

from support import pgtools
from support.accounts import new_account
from support import ROOT, LiveServer, server_env
from telegate._stop import request_stop
from telegate.accounts import new_master_key

START_DEADLINE = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Caddy:
    """``caddy run`` with a Caddyfile: https://localhost:PORT -> the server, a CA of its own under ``home``."""

    def __init__(self, home: Path, upstream_port: int) -> None:
        self.home = home
        self.upstream_port = upstream_port
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log = home / "caddy.log"

    @property
    def root_cert(self) -> Path:
        return self.home / "data" / "pki" / "authorities" / "local" / "root.crt"

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def start(self) -> None:
        for _ in range(5):  # a port picked free may be taken before Caddy binds it: pick again
            self.port, http_port = _free_port(), _free_port()
            (self.home / "Caddyfile").write_text(f"""{{
	admin off
	auto_https disable_redirects
	skip_install_trust
	http_port {http_port}
	storage file_system {self.home / "data"}
}}
https://localhost:{self.port} {{
	tls internal
	reverse_proxy 127.0.0.1:{self.upstream_port}
}}
""", encoding="utf-8")
            env = {**os.environ, "HOME": str(self.home), "XDG_DATA_HOME": str(self.home / "xdg"),
                   "XDG_CONFIG_HOME": str(self.home / "xdg-config")}
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen(["caddy", "run", "--config", str(self.home / "Caddyfile"),
                                              "--adapter", "caddyfile"], stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=env, cwd=self.home)
            if self._ready():
                return
            self.stop()
        pytest.fail(f"caddy did not start:\n{self.log.read_text(encoding='utf-8')[-3000:]}")

    def _ready(self) -> bool:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            if self.root_cert.exists():
                try:
                    reply = self.http().request("GET", self.url + "/healthz", retries=False, timeout=5)
                    if reply.status == 200:
                        return True
                except urllib3.exceptions.HTTPError:
                    pass
            time.sleep(0.1)
        return False

    def http(self, **kwargs: Any) -> urllib3.PoolManager:
        return urllib3.PoolManager(ca_certs=str(self.root_cert), retries=False, timeout=urllib3.Timeout(30), **kwargs)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            request_stop(self.proc)  # SIGINT: Caddy's clean stop
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def proxied(fresh_db: Any, tmp_path: Path) -> Iterator[tuple[LiveServer, Caddy]]:
    if shutil.which("caddy") is None:
        if pgtools.in_ci():
            pytest.fail("CI needs caddy (apt-get install caddy; .ci/run installs it)", pytrace=False)
        pytest.skip("caddy is not installed (apt-get install caddy)")
    env = {**server_env(), "TELEGATE_MASTER_KEY": new_master_key()}
    server = LiveServer(fresh_db(), ("--host", "0.0.0.0", "--trusted-proxy", "127.0.0.1"), env=env)
    caddy = Caddy(tmp_path, server.port)
    try:
        caddy.start()
        yield server, caddy
    finally:
        caddy.stop()
        server.close()


def _post(http: urllib3.PoolManager, url: str, key: str, body: dict, headers: dict | None = None):
    reply = http.request("POST", url, body=json.dumps(body),
                         headers={"X-API-Key": key, "Content-Type": "application/json", **(headers or {})})
    return reply.status, json.loads(reply.data)


def test_accounts_go_out_through_the_tls_proxy_only(proxied):
    server, caddy = proxied
    account = new_account()
    admin_https = caddy.http()
    status, added = _post(admin_https, caddy.url + "/sessions", server.admin_key,
                          {"sessions": [{"name": "acc", "kind": "telethon", "account": account}]})
    assert status == 201, added
    worker = server.store.create_key("worker", "client", accounts=True)

    # Through Caddy (https): the account comes with the lease, and the write-back goes in.
    status, lease = _post(caddy.http(), caddy.url + "/session", worker, {"account": True, "ttl": 60})
    assert status == 200, lease
    assert lease["account"] == account
    status, released = _post(caddy.http(), caddy.url + "/release", worker, {
        "session_id": lease["session_id"], "lease_token": lease["lease_token"],
        "state": {"entities": [{"id": 42, "hash": 4242, "type": "user"}]}})
    assert status == 200, released

    # Plain HTTP straight to the server, from the proxy's own address but without its word: refused.
    direct = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(30))
    status, refused = _post(direct, f"http://127.0.0.1:{server.port}/session", worker, {"account": True})
    assert status == 403 and refused["error"] == "tls_required" and "docs/TLS.md" in refused["detail"]
    # From another address, a forged X-Forwarded-Proto is dropped: refused too.
    forger = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(30), source_address=("127.0.0.2", 0))
    status, refused = _post(forger, f"http://127.0.0.1:{server.port}/session", worker, {"account": True},
                            headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.0.0.1"})
    assert status == 403 and refused["error"] == "tls_required"
    reply = forger.request("GET", f"http://127.0.0.1:{server.port}/sessions/{lease['session_id']}/account",
                           headers={"X-API-Key": server.admin_key, "X-Forwarded-Proto": "https"})
    assert reply.status == 403
    assert server.status()["in_use"] == 0  # refused hand-outs leased nothing

    # The admin reads the account back over https, write-back merged.
    reply = admin_https.request("GET", f"{caddy.url}/sessions/{lease['session_id']}/account",
                                headers={"X-API-Key": server.admin_key})
    assert reply.status == 200
    entities = {entity["id"] for entity in json.loads(reply.data)["account"]["state"]["entities"]}
    assert entities == {777, 42}


def test_the_sdk_leases_through_caddy_trusting_its_root_certificate(proxied, monkeypatch):
    """The SDK (urllib3's default trust store) reaches the server through Caddy with SSL_CERT_FILE."""
    from telegram_session_manager import TelegramSessionManagerClient

    server, caddy = proxied
    server.add_sessions("plain")
    monkeypatch.setenv("SSL_CERT_FILE", str(caddy.root_cert))
    with TelegramSessionManagerClient(caddy.url, server.client_key, auto_wait=False) as client:
        session = client.get_session()
        assert session["session_name"] == "plain"
        assert client.release_session(session["session_id"]) is True


# -- nginx, with the server block of docs/TLS.md ----------------------------------------

_NGINX_BLOCK = re.compile(r"```nginx\n(.*?)```", re.S)


def _self_signed(where: Path) -> tuple[Path, Path]:
    """A certificate for localhost and its key (made with ``cryptography``), as PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = where / "cert.pem", where / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def nginx_proxied(fresh_db: Any, tmp_path: Path) -> Iterator[tuple[LiveServer, str, Path]]:
    """The server behind nginx running the server block of docs/TLS.md (names, paths and ports swapped)."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        if pgtools.in_ci():
            pytest.fail("CI needs nginx (apt-get install nginx; .ci/run installs it)", pytrace=False)
        pytest.skip("nginx is not installed (apt-get install nginx)")
    env = {**server_env(), "TELEGATE_MASTER_KEY": new_master_key()}
    server = LiveServer(fresh_db(), ("--host", "0.0.0.0", "--trusted-proxy", "127.0.0.1"), env=env)
    cert, key = _self_signed(tmp_path)
    block = _NGINX_BLOCK.search((ROOT / "docs" / "TLS.md").read_text(encoding="utf-8")).group(1)
    proc = None
    try:
        for _ in range(5):
            port = _free_port()
            conf = (block.replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
                    .replace("server_name telegate.example.com;", "server_name localhost;")
                    .replace("/etc/letsencrypt/live/telegate.example.com/fullchain.pem", str(cert))
                    .replace("/etc/letsencrypt/live/telegate.example.com/privkey.pem", str(key))
                    .replace("http://127.0.0.1:8000", f"http://127.0.0.1:{server.port}"))
            assert str(cert) in conf and f":{server.port}" in conf and f":{port} ssl" in conf
            temp = tmp_path / "nginx"
            temp.mkdir(exist_ok=True)
            (tmp_path / "nginx.conf").write_text(f"""daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/nginx-error.log;
user root;
events {{}}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{conf}
}}
""", encoding="utf-8")
            proc = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(tmp_path / "nginx.conf"),
                                     "-p", str(tmp_path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            url = f"https://localhost:{port}"
            http = urllib3.PoolManager(ca_certs=str(cert), retries=False, timeout=urllib3.Timeout(10))
            deadline = time.monotonic() + START_DEADLINE
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if http.request("GET", url + "/healthz").status == 200:
                        break
                except urllib3.exceptions.HTTPError:
                    time.sleep(0.1)
            if proc.poll() is None:
                yield server, url, cert
                return
        log = (tmp_path / "nginx-error.log").read_text(encoding="utf-8") if (tmp_path / "nginx-error.log").exists() else ""
        pytest.fail(f"nginx did not start:\n{log[-3000:]}")
    finally:
        if proc is not None and proc.poll() is None:
            request_stop(proc)  # SIGINT: nginx's fast shutdown
            proc.wait(10)
        server.close()


def test_the_nginx_config_of_the_docs_hands_out_accounts_over_tls(nginx_proxied):
    server, url, cert = nginx_proxied
    https = urllib3.PoolManager(ca_certs=str(cert), retries=False, timeout=urllib3.Timeout(30))
    account = new_account()
    status, added = _post(https, url + "/sessions", server.admin_key, {"sessions": [{"name": "acc", "account": account}]})
    assert status == 201, added
    worker = server.store.create_key("worker", "client", accounts=True)
    status, lease = _post(https, url + "/session", worker, {"account": True})
    assert status == 200 and lease["account"] == account, lease
    direct = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(30))
    status, refused = _post(direct, f"http://127.0.0.1:{server.port}/session", worker, {"account": True})
    assert status == 403 and refused["error"] == "tls_required"
