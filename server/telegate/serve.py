"""Run the API under waitress: open the store, make sure a key exists, bind, serve until stopped."""
from __future__ import annotations

import logging
import os
import select
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, TextIO

from . import _logging
from ._files import restrict
from .accounts import VaultError, master_key_source
from ._channel import Dispatcher, create_server
from ._files import create_private
from ._sessionfiles import scan_dir
from ._stop import StopHandlers
from .app import access_logged, create_app, default_room
from .settings import Settings, SettingsError
from .store import PoolStore, open_store

if TYPE_CHECKING:
    from .accounts import MasterKeySource

__all__ = ["serve", "bind_socket", "PortInUse", "ensure_key", "waitress_options", "create_server",
           "MIN_ENV_KEY_LENGTH"]

log = logging.getLogger(__name__)

#: Connections the kernel may hold for us before we accept them (it caps this at
#: net.core.somaxconn, 4096 on current Linux): a fleet of a thousand workers that
#: reconnects at once after a restart must fit, since the loop accepts one per turn.
BACKLOG = 2048

#: TELEGATE_ADMIN_KEY becomes an admin key: "admin" or a short word is guessed in minutes.
#: Keys TeleGate makes itself are 46 characters (tg_ + 32 random bytes).
MIN_ENV_KEY_LENGTH = 32


class PortInUse(OSError):
    """The chosen port is taken by another program."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket that no second process can share.

    waitress sets SO_REUSEADDR, which on Windows lets two processes bind one port and
    split its traffic. We bind the socket ourselves: with SO_EXCLUSIVEADDRUSE on
    Windows, with SO_REUSEADDR elsewhere (where it only skips TIME_WAIT).
    """
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve host {host!r}: {exc}") from exc
    family, socktype, proto, _, address = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # Windows
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48, 10048, 10013) or isinstance(exc, PermissionError):
            raise PortInUse(f"cannot listen on {host}:{port}: the port is in use or not allowed"
                            f" ({exc.strerror}); stop the other program or pick another --port") from exc
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def waitress_options(settings: Settings) -> dict:
    """The waitress settings ``serve`` runs with (the benchmarks' ceilings use the same)."""
    return dict(
        threads=settings.threads, connection_limit=_connection_limit(settings.connection_limit), ident="TeleGate",
        # waitress answers bodies far over our limit itself; ours (JSON 413) covers the rest.
        max_request_body_size=max(settings.max_body * 4, 8 * 1024 * 1024),
        clear_untrusted_proxy_headers=True,
        # Behind a reverse proxy: believe its X-Forwarded-For (REMOTE_ADDR, the access log)
        # and X-Forwarded-Proto (wsgi.url_scheme), from that address only.
        **({"trusted_proxy": settings.trusted_proxy, "trusted_proxy_count": 1,
            "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto"}} if settings.trusted_proxy else {}),
        # waitress listens again with its own backlog (default 1024): keep ours.
        backlog=BACKLOG,
        # select() cannot watch a descriptor numbered 1024 or more (FD_SETSIZE): past about
        # a thousand connections waitress's loop would die with "filedescriptor out of
        # range in select()". poll() has no such limit (Windows has no poll(); waitress
        # falls back to select() there, which Python builds for 512 sockets).
        asyncore_use_poll=True,
        # An idle keep-alive connection is closed after this long (a connection with a
        # request in progress never is). Longer than the SDK's lease renewals (a third of
        # the 300 s default TTL) would cost a connection per idle worker for no gain;
        # shorter makes idle workers reconnect more often. waitress's default, stated.
        channel_timeout=120,
        # Keep reading a connection while its request runs, so that a long-poll learns at
        # once that its worker hung up (and leaves the line) instead of being granted a
        # session nobody will use (telegate._channel.ON_DISCONNECT).
        channel_request_lookahead=1)


#: Windows has no poll(): waitress's loop uses select(), which CPython builds there for
#: 512 sockets (the listening one and a few of waitress's own included).
SELECT_CONNECTION_LIMIT = 500


def _connection_limit(wanted: int) -> int:
    """``wanted``, or at most what select() can watch where poll() is missing (Windows)."""
    if hasattr(select, "poll") or wanted <= SELECT_CONNECTION_LIMIT:
        return wanted
    log.warning("--connection-limit %d is more than select() can watch on this system; using %d"
                " (for larger fleets run several servers behind a proxy: docs/SCALING.md)",
                wanted, SELECT_CONNECTION_LIMIT)
    return SELECT_CONNECTION_LIMIT


def ensure_key(store: PoolStore, environ: Mapping[str, str], out: TextIO, db: Path | str = "telegate.db") -> None:
    """Make sure the server can be used: register TELEGATE_ADMIN_KEY (the CLI's name for it; the
    old TELEGATE_API_KEY still works, with a warning), or create a first admin key.

    The first admin key is printed once when ``out`` is a terminal. Anywhere else (a log
    file, journald, a container's log) it would stay readable for as long as the log
    does: then it goes to a new file readable by its owner only (0600) beside the SQLite
    database, or in the working folder for PostgreSQL, and ``out`` names that file.
    """
    env_key, variable = _env_key(environ)
    if env_key and variable == "TELEGATE_API_KEY":
        log.warning("registering TELEGATE_API_KEY as an admin key is deprecated: that variable is the"
                    " workers' key; set TELEGATE_ADMIN_KEY (the CLI's name for the admin key) instead")
    if env_key:
        if not store.has_key(env_key):
            name = "env-admin"
            suffix = 1
            while any(k["name"] == name and k["revoked_at"] is None for k in store.list_keys()):
                suffix += 1
                name = f"env-admin-{suffix}"
            store.create_key(name, "admin", key=env_key)
            log.info("registered %s as admin key %r", variable, name)
        return
    if store.count_keys() == 0:
        key = store.create_key("admin", "admin")
        isatty = getattr(out, "isatty", None)
        if isatty is not None and isatty():
            out.write("\n  No API key existed, so an admin key was created. It is shown only this once:\n\n"
                      f"    {key}\n\n  Keep it safe; create worker keys with: telegate keys create NAME\n\n")
        else:
            path = _write_key_file(key, db)
            out.write(f"\n  No API key existed, so an admin key was created. Output is not a terminal, so it was"
                      f" written to {path} (readable by you only), not here.\n  Read it, keep it safe, then delete"
                      " that file; create worker keys with: telegate keys create NAME\n\n")
        out.flush()


def check_master_key(store: PoolStore, keys: "MasterKeySource") -> None:
    """Refuse to start (one line, :class:`SettingsError`) when the database holds accounts that the
    configured master keys cannot open; nothing is created or changed then."""
    held = store.account_key_ids()
    if not held:
        return
    if not keys.available:
        raise SettingsError(
            f"the database holds {sum(held.values())} account(s) but no master key is configured: set"
            f" TELEGATE_MASTER_KEY, or restore the key file {keys.key_file} (or name it in --master-key-file)")
    try:
        known = store.vault.known_ids()
    except VaultError as exc:
        raise SettingsError(str(exc)) from None
    missing = {key_id: count for key_id, count in held.items() if key_id not in known}
    if missing:
        raise SettingsError(
            f"{sum(missing.values())} account(s) in the database are sealed under master key(s)"
            f" {', '.join(sorted(missing))}, which {keys.describe()} is not (it is {store.vault.current_id()}):"
            " wrong key? Set TELEGATE_MASTER_KEY to the right one, or name the old one in"
            " TELEGATE_PREVIOUS_MASTER_KEYS while you rotate")
def _write_key_file(key: str, db: Path | str) -> Path:
    """Write ``key`` to a new 0600 file (never over an existing one); returns its path."""
    folder, stem = (db.parent, db.name) if isinstance(db, Path) else (Path.cwd(), "telegate")
    for number in range(1000):
        path = folder / (f"{stem}.admin-key" + (f".{number}" if number else ""))
        if create_private(path):
            with open(path, "w", encoding="utf-8") as file:
                file.write(key + "\n")
            return path
    raise SettingsError(f"cannot write the first admin key beside {folder}: {stem}.admin-key and its"
                        " numbered variants exist; remove them, or set TELEGATE_ADMIN_KEY")


def _env_key(environ: Mapping[str, str]) -> tuple[str, str]:
    """The admin key to register and the variable it came from: TELEGATE_ADMIN_KEY, else (deprecated)
    TELEGATE_API_KEY; SettingsError (one line, exit 1) when it is too short to be safe.

    TELEGATE_API_KEY is the workers' key in the SDK's examples (the seed's ``api_key``): a
    machine that runs both a worker and the server must not turn it into an admin key by
    accident, so TELEGATE_ADMIN_KEY, when set, is the only one read.
    """
    variable = "TELEGATE_ADMIN_KEY"
    env_key = environ.get(variable, "").strip()
    if not env_key:
        variable = "TELEGATE_API_KEY"
        env_key = environ.get(variable, "").strip()
    if env_key and len(env_key) < MIN_ENV_KEY_LENGTH:
        raise SettingsError(
            f"{variable} is {len(env_key)} characters; an admin key needs at least {MIN_ENV_KEY_LENGTH}"
            " (make one with: python -c \"import secrets; print(secrets.token_urlsafe(32))\")")
    return env_key, variable


def serve(settings: Settings, *, environ: Mapping[str, str] | None = None, out: TextIO | None = None) -> int:
    """Serve until Ctrl-C, SIGTERM, Ctrl-Break or the console closing (telegate._stop); returns 0 after a clean stop."""
    environ = os.environ if environ is None else environ
    out = out or sys.stderr
    _env_key(environ)  # refuse a weak key before anything is opened or created
    _logging.configure(settings.log_level, settings.log_format, settings.access_log)
    if settings.log_format == "json":
        out = _logging.JsonLines(out)  # type: ignore[assignment]  # every line on stderr is then JSON
    # waitress warns "Task queue depth is N" for every request that waits for a free
    # thread: with more clients than --threads that is nearly every request, one log
    # line each, written by the one thread that does all the socket I/O. Queueing is
    # normal under load; only errors from that logger are worth a line.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    # Our log formats use neither the caller's file and line nor process/thread ids:
    # skip collecting them for every record (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    stops = StopHandlers()  # SIGTERM, Ctrl-Break, the console closing: all stop like Ctrl-C
    keys = master_key_source(environ, settings.master_key_file, settings.db)  # a malformed key: one line
    store = open_store(settings.db, synchronous=settings.synchronous, vault=keys.vault(),
                       handover_grace=settings.handover_grace)
    if isinstance(settings.db, Path):
        restrict(settings.db)  # Windows: a database made by an older TeleGate or copied in has its folder's ACL
    server = room = None
    housekeeping = None
    try:
        check_master_key(store, keys)
        if settings.allow_plain_http_accounts:
            log.warning("--allow-plain-http-accounts: accounts (auth keys, api_hash, proxy and 2FA passwords)"
                        " may travel over plain HTTP; anyone on the network path can read them (docs/TLS.md)")
        ensure_key(store, environ, out, settings.db)
        if settings.sessions_dir is not None:
            found, warnings = scan_dir(settings.sessions_dir)
            for warning in warnings:
                log.warning("%s", warning)
            added, _ = store.add_sessions(found, kinds=found)
            log.info("sessions dir %s: %d session file(s), %d new", settings.sessions_dir, len(found), len(added))
        sock = bind_socket(settings.host, settings.port)
        housekeeping = _Housekeeping(store, settings.event_retention_days * 86400.0)
        housekeeping.start()
        _raise_open_file_limit(settings.connection_limit + 100)
        # Long-polls park on the dispatcher (a stand-in thread each), never on the threads
        # that serve everyone else: see telegate._channel.Dispatcher.
        dispatcher = Dispatcher(settings.threads)
        room = default_room(store, park=dispatcher.parked)
        dispatcher.on_shutdown.append(room.close)
        dispatcher.on_thread_exit.append(store.release_connection)
        server = create_server(access_logged(create_app(settings, store, room=room)), sock,
                               dispatcher=dispatcher, connections_per_ip=settings.connections_per_ip,
                               header_timeout=settings.header_timeout, **waitress_options(settings))
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        out.write(f"TeleGate listening on http://{shown}:{port} (database {store.path},"
                  f" {settings.threads} threads)\n")
        out.flush()
        server.run()  # returns on Ctrl-C and the rest: waitress catches KeyboardInterrupt itself
    except KeyboardInterrupt:  # Ctrl-C before or after waitress's loop: still a clean stop
        pass
    finally:
        if server is not None:
            server.close()
        if housekeeping is not None:
            housekeeping.stop()
        if room is not None:
            room.close()
        store.close()
        stops.restore()  # also tells a console-close handler that the stop is done
    out.write("TeleGate stopped\n")
    out.flush()
    return 0


def _raise_open_file_limit(wanted: int) -> None:
    """Let the process open ``wanted`` files (one per connection, plus the database's).

    Many systems start processes with a soft limit of 1024 open files; past it waitress
    cannot accept() and logs a warning per attempt. The soft limit may be raised up to
    the hard one without privileges; if even that is too low, say so once.
    """
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
        if target < wanted:
            log.warning("this process may open only %d files (ulimit -n; hard limit %s), fewer than"
                        " --connection-limit needs (%d); raise the limit or lower --connection-limit",
                        target, hard, wanted)


class _Housekeeping:
    """Prunes old session events now and then hourly, in a daemon thread that ``stop()`` ends at once."""

    INTERVAL = 3600.0

    def __init__(self, store: PoolStore, retention: float) -> None:
        self.store = store
        self.retention = retention
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telegate-housekeeping", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)  # a prune under way finishes before the store closes

    def _run(self) -> None:
        while True:
            try:
                pruned = self.store.prune_events(self.retention)
                if pruned:
                    log.info("pruned %d session event(s) older than %g days", pruned, self.retention / 86400)
            except Exception as exc:  # a busy or unreachable database: try again next round
                log.warning("pruning session events failed: %s", exc)
            if self._stopped.wait(self.INTERVAL):
                return

