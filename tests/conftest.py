"""Shared fixtures: a real TeleGate server under waitress, and an in-process WSGI caller.

``live_server`` runs ``python -m telegate serve --port 0`` on a fresh database, reads
the real port from its output (never a fixed port, never a sleep: a deadline), and
shows the server's output if it died. ``wsgi`` calls the Bottle app in process, with a
clock the test moves, for route details that need no sockets; ``clock`` is such a clock
for a test that builds its own ``Store``.

Both stores: every test that uses a database through these fixtures (``fresh_db``,
``live_server``, ``server_factory``, ``wsgi``) runs once on a SQLite file and once on a
real PostgreSQL (one database per run, emptied before each test; see ``pgtools.py``),
with ``[sqlite]`` / ``[postgresql]`` in its id. A module marked ``sqlite_only`` (what it
checks does not depend on the store, or is about the SQLite file) runs on SQLite alone.
``--stores sqlite`` (or ``postgresql``) runs one of them.
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

import pgtools
from telegate import Settings, Store, create_app
from telegate._stop import new_group_flags, request_stop

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
    """One ``telegate serve`` subprocess over one database (a file or a URL); restartable on the same port."""

    def __init__(self, db_path: Path | str, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
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
                                            stderr=subprocess.STDOUT, text=True, encoding="utf-8", env=self.env,
                                            cwd=ROOT, creationflags=new_group_flags())

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
        """Ctrl-C (Ctrl-Break on Windows): the server's clean stop."""
        if self.proc and self.proc.poll() is None:
            request_stop(self.proc)
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


# -- the two stores ---------------------------------------------------------------------

STORES = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--stores", default=",".join(STORES), metavar="LIST",
                     help="stores the database-backed tests run on (default: sqlite,postgresql)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: run on the SQLite store alone (store-independent,"
                                       " or about the SQLite file)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_kind" not in metafunc.fixturenames:
        return
    chosen = [kind.strip() for kind in metafunc.config.getoption("stores").split(",") if kind.strip()]
    unknown = set(chosen) - set(STORES)
    if unknown:
        raise pytest.UsageError(f"--stores: unknown store(s) {', '.join(sorted(unknown))}; use {', '.join(STORES)}")
    if metafunc.definition.get_closest_marker("sqlite_only"):
        chosen = [kind for kind in chosen if kind == "sqlite"]
    metafunc.parametrize("db_kind", chosen, indirect=True, scope="module")


@pytest.fixture(scope="module")
def db_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        pgtools.require_postgres()
    return request.param


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[pgtools.Databases]:
    """This run's PostgreSQL databases, made on first use and all dropped at the end."""
    pgtools.require_postgres()
    databases = pgtools.Databases()
    try:
        yield databases
    finally:
        databases.drop_all()


@pytest.fixture
def fresh_db(request: pytest.FixtureRequest, db_kind: str, tmp_path: Path) -> Any:
    """``fresh_db(name="")``: an empty database for this test: a file path, or a PostgreSQL URL.

    The same name gives the same database within the test; another name, another database.
    """
    made: dict[Any, Path | str] = {}

    def make(name: Any = "") -> Path | str:
        if name not in made:
            if db_kind == "sqlite":
                made[name] = tmp_path / f"telegate{name}.db"
            else:
                databases = request.getfixturevalue("pg_databases")
                made[name] = databases.reset(databases.numbered(len(made)))
        return made[name]

    return make


@pytest.fixture
def pg_url(pg_databases: pgtools.Databases) -> str:
    """An empty PostgreSQL database for a test about PostgreSQL alone (skips without one)."""
    return pg_databases.reset(pg_databases.scratch())


@pytest.fixture(scope="module")
def module_db(request: pytest.FixtureRequest, db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An empty database of the module's own, for servers shared by a module's tests."""
    if db_kind == "sqlite":
        return tmp_path_factory.mktemp("module_db") / "telegate.db"
    return request.getfixturevalue("pg_databases").create()


@pytest.fixture
def live_server(fresh_db: Any) -> Iterator[LiveServer]:
    server = LiveServer(fresh_db())
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def server_factory(fresh_db: Any) -> Iterator[Any]:
    """Start servers with extra ``serve`` flags: ``server_factory("--lease-ttl", "2")``.

    Each server gets a database of its own unless ``db_path`` names another's (``first.db_path``).
    """
    servers: list[LiveServer] = []

    def make(*args: str, db_path: Path | str | None = None) -> LiveServer:
        server = LiveServer(db_path or fresh_db(len(servers)), args)
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


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand, for a store built with ``Store(..., clock=clock)``."""
    return FakeClock()


class WsgiCaller:
    """Calls the Bottle app in process (no sockets), with a clock the test controls."""

    def __init__(self, tmp_path: Path, db: Path | str | None = None, **settings: Any) -> None:
        self.clock = FakeClock()
        db = db or tmp_path / "wsgi.db"
        self.store = Store(db, clock=self.clock)
        self.settings = Settings(db=db, **settings)
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
def wsgi(tmp_path: Path, fresh_db: Any) -> Iterator[WsgiCaller]:
    caller = WsgiCaller(tmp_path, fresh_db("wsgi"))
    try:
        yield caller
    finally:
        caller.store.close()


def eventually(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll the test's own state until ``predicate()`` holds; fail after ``timeout`` seconds (a bound, not a wait)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


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
