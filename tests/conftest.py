"""Fixtures only (what they use lives in the ``support`` package): a real TeleGate server under
waitress, and an in-process WSGI caller.

``live_server`` runs ``python -m telegate serve --port 0`` on a fresh database (see
``support.server.LiveServer``). ``wsgi`` calls the Bottle app in process, with a
clock the test moves, for route details that need no sockets; ``clock`` is such a clock
for a test that builds its own ``Store``.

Both stores: every test that uses a database through these fixtures (``fresh_db``,
``live_server``, ``server_factory``, ``wsgi``) runs once on a SQLite file and once on a
real PostgreSQL (one database per run, emptied before each test; see ``support/pgtools.py``),
with ``[sqlite]`` / ``[postgresql]`` in its id. A module marked ``sqlite_only`` (what it
checks does not depend on the store, or is about the SQLite file) runs on SQLite alone.
``--stores sqlite`` (or ``postgresql``) runs one of them.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from support import FakeClock, LiveServer, Sleeps, WsgiCaller, pgtools


# -- the two stores ---------------------------------------------------------------------

STORES = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--stores", default=",".join(STORES), metavar="LIST",
                     help="stores the database-backed tests run on (default: sqlite,postgresql)")


#: The longest modules, longest first (``--durations`` on both stores, 2 cores). Under
#: pytest-xdist (the README's ``-n 2 --dist loadfile``) each module runs whole in one worker,
#: handed out in collection order as workers come free: these go first, so that neither worker
#: starts a long one while the other is finishing the short ones. Alone, order changes nothing.
LONGEST_FIRST = (
    "test_bench_smoke.py", "test_reliability_exclusion.py", "test_reliability_schemathesis.py",
    "test_accounts_cli.py", "test_accounts_vault.py", "test_reliability_crash.py", "test_sdk_outage.py",
    "test_sdk_keepalive.py", "test_sdk_failover.py", "test_cli.py", "test_reliability_overload.py",
    "test_dashboard.py", "test_postgres_servers.py", "test_cli_http.py", "test_waiting.py",
    "test_hostile_network.py", "test_reliability_worker_crash.py", "test_ready_accounts.py",
    "test_sdk_async.py", "test_sdk_wait.py", "test_hostile_clients.py", "test_packaging.py",
)


@pytest.hookimpl(trylast=True)  # after pytest's own grouping of a module's tests by store
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: within a module, as it was


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):
        # pytest-xdist would hand out the modules with the most tests first, not the longest:
        # keep the order above.
        config.option.loadscopereorder = False
    config.addinivalue_line("markers", "sqlite_only: run on the SQLite store alone (store-independent,"
                                       " or about the SQLite file)")
    config.addinivalue_line("markers", "server_per_test: live_server starts a server of the test's own"
                                       " (the default: one per module, reset between tests)")


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


@pytest.fixture(scope="module")
def module_server(request: pytest.FixtureRequest, db_kind: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module's tests (per store), on a database of its own kept as it was at start."""
    if db_kind == "sqlite":
        db: Path | str = tmp_path_factory.mktemp("module_server") / "telegate.db"
    else:
        db = request.getfixturevalue("pg_databases").create()
    server = LiveServer(db)
    try:
        server.keep_state()
        yield server
    finally:
        server.close()


@pytest.fixture
def live_server(request: pytest.FixtureRequest, db_kind: str) -> Iterator[LiveServer]:
    """A running server on an empty pool, with an admin and a client key.

    The module's server, reset for this test (see ``LiveServer.reset``: the database as
    it was at start, a server the last test killed started again). A test or module
    marked ``server_per_test`` gets a server process of its own instead.
    """
    if not request.node.get_closest_marker("server_per_test"):
        server = request.getfixturevalue("module_server")
        server.reset()
        before = set(threading.enumerate())
        yield server
        server.quiesce([thread for thread in threading.enumerate() if thread not in before])
        return
    server = LiveServer(request.getfixturevalue("fresh_db")())
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


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand, for a store built with ``Store(..., clock=clock)``."""
    return FakeClock()


@pytest.fixture
def wsgi(tmp_path: Path, fresh_db: Any) -> Iterator[WsgiCaller]:
    caller = WsgiCaller(tmp_path, fresh_db("wsgi"))
    try:
        yield caller
    finally:
        caller.store.close()


# -- SDK fixtures ------------------------------------------------------------------------


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
