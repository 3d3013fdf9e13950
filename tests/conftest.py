"""Shared fixtures: a real TeleGate server under waitress, and an in-process WSGI caller.

``live_server`` runs ``python -m telegate serve --port 0`` on a fresh SQLite file, reads
the real port from its output (never a fixed port, never a sleep: a deadline), and
shows the server's output if it died. ``wsgi`` calls the Bottle app in process, with a
clock the test moves, for route details that need no sockets.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import urllib3

from telegate import Settings, Store, create_app

ROOT = Path(__file__).resolve().parent.parent
STARTUP_DEADLINE = 30.0
_LISTENING = re.compile(r"TeleGate listening on (http://\S+)")


class Response:
    def __init__(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data

    @property
    def json(self) -> Any:
        return json.loads(self.data)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.data[:200]!r}>"


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEGATE_")}
    env["PYTHONUNBUFFERED"] = "1"
    paths = [str(ROOT / "server"), str(ROOT / "sdk")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


class LiveServer:
    """One ``telegate serve`` subprocess over one database file; restartable on the same port."""

    def __init__(self, db_path: Path, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.db_path = db_path
        self.args = args
        self.env = env or server_env()
        self.store = Store(db_path)
        suffix = "" if not self.store.count_keys() else f"-{os.getpid()}-{id(self)}"
        self.admin_key = self.store.create_key("test-admin" + suffix, "admin")
        self.client_key = self.store.create_key("test-client" + suffix, "client")
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []
        self.http = urllib3.PoolManager(maxsize=32, retries=False, timeout=urllib3.Timeout(30))
        self.start()

    # -- process control ----------------------------------------------------------------

    def start(self) -> None:
        cmd = [sys.executable, "-m", "telegate", "serve", "--port", str(self.port),
               "--db", str(self.db_path), *self.args]
        self.output = []
        ready = threading.Event()
        self.proc = proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True, env=self.env, cwd=ROOT)

        def drain() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                self.output.append(line)
                match = _LISTENING.search(line)
                if match:
                    self.url = match.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + STARTUP_DEADLINE
        while not ready.wait(0.05):
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"server did not start in {STARTUP_DEADLINE}s:\n{self.log}")
        if proc.poll() is not None and not self.url:
            pytest.fail(f"server exited with {proc.returncode}:\n{self.log}")
        self.port = int(self.url.rsplit(":", 1)[1])

    @property
    def log(self) -> str:
        return "".join(self.output)

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        self.stop()
        self.http.clear()
        self.store.close()

    # -- helpers ------------------------------------------------------------------------

    def add_sessions(self, *names: str, **kwargs: Any) -> list[int]:
        added, existing = self.store.add_sessions(names, **kwargs)
        assert not existing, f"already registered: {existing}"
        return [row["id"] for row in added]

    def status(self) -> dict[str, Any]:
        return self.request("GET", "/status").json

    def request(self, method: str, path: str, body: Any = None, *, key: str | None = "client",
                raw: bytes | None = None, headers: dict[str, str] | None = None) -> Response:
        """One HTTP request; ``key`` is "client", "admin", None (no key) or a literal key."""
        sent = dict(headers or {})
        if key is not None:
            sent["X-API-Key"] = {"client": self.client_key, "admin": self.admin_key}.get(key, key)
        if raw is None and body is not None:
            raw = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        reply = self.http.request(method, self.url + path, body=raw, headers=sent)
        return Response(reply.status, dict(reply.headers), reply.data)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path / "telegate.db")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """Start servers with extra ``serve`` flags: ``server_factory("--lease-ttl", "2")``."""
    servers: list[LiveServer] = []

    def make(*args: str, db_path: Path | None = None) -> LiveServer:
        server = LiveServer(db_path or tmp_path / f"telegate{len(servers)}.db", args)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.close()


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class WsgiCaller:
    """Calls the Bottle app in process (no sockets), with a clock the test controls."""

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.clock = FakeClock()
        self.store = Store(tmp_path / "wsgi.db", clock=self.clock)
        self.settings = Settings(db=tmp_path / "wsgi.db", **settings)
        self.app = create_app(self.settings, self.store)
        self.admin_key = self.store.create_key("admin", "admin")
        self.client_key = self.store.create_key("client", "client")

    def __call__(self, method: str, path: str, body: Any = None, *, key: str | None = "client",
                 raw: bytes | None = None, headers: dict[str, str] | None = None,
                 query: str = "") -> Response:
        if raw is None and body is not None:
            raw = json.dumps(body).encode()
        raw = raw or b""
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
            "SERVER_NAME": "test", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.input": io.BytesIO(raw), "wsgi.errors": io.StringIO(), "wsgi.url_scheme": "http",
            "CONTENT_LENGTH": str(len(raw)), "CONTENT_TYPE": "application/json",
        }
        if key is not None:
            environ["HTTP_X_API_KEY"] = {"client": self.client_key, "admin": self.admin_key}.get(key, key)
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        captured: dict[str, Any] = {}

        def start_response(status: str, header_list: list, exc_info: Any = None) -> None:
            captured["status"] = int(status.split()[0])
            captured["headers"] = dict(header_list)

        data = b"".join(self.app(environ, start_response))
        return Response(captured["status"], captured["headers"], data)


@pytest.fixture
def wsgi(tmp_path: Path) -> Iterator[WsgiCaller]:
    caller = WsgiCaller(tmp_path)
    try:
        yield caller
    finally:
        caller.store.close()


# -- SDK fixtures ------------------------------------------------------------------------


class Sleeps:
    """An injected ``sleep``: records each wait instead of sleeping, then runs ``action``."""

    def __init__(self, action=None) -> None:
        self.waits: list[float] = []
        self.action = action

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.action is not None:
            self.action(len(self.waits))


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def admin(live_server):
    """An SDK client with the admin key."""
    from telegram_session_manager import TelegramSessionManagerClient

    with TelegramSessionManagerClient(live_server.url, live_server.admin_key) as client:
        yield client


@pytest.fixture
def other(live_server):
    """Another worker, holding sessions (no keepalive)."""
    from telegram_session_manager import TelegramSessionManagerClient

    with TelegramSessionManagerClient(live_server.url, live_server.client_key, keepalive=False) as client:
        yield client
