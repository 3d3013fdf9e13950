"""Benchmark 7: PostgreSQL: against SQLite, several servers on one database, 100k sessions, failover.

    python bench/postgres.py [--quick] [--seconds S] [--rounds R] [--clients 16] [--pg URL]
                             [--first-only] [--baseline-tree DIR]

Four measurements, each side by side in alternating rounds with one load generator
(thin keep-alive clients doing acquire+release):

1. One server on PostgreSQL against one on SQLite (64 sessions each).
2. Two and three servers on one PostgreSQL database against one server, the same total
   clients spread over them. On two cores this measures what coordinating through the
   database costs, not a speed-up: the servers, PostgreSQL and the load generator share
   the same two cores.
3. One server on PostgreSQL with 100,000 sessions against one with 100.
4. Failover: a worker leasing through server A; A is SIGKILLed at a random moment; the
   time until the worker completes its next lease through server B. Measured with a thin
   client that moves to the next URL on a connection error, and with the SDK given both
   URLs when the SDK takes a list.

``--baseline-tree DIR`` adds the TeleGate of another checkout to measurement 1, on a
database of its own and on SQLite, in the same rounds: this tree against it, CPU per cycle
on each store (server and database). ``--first-only`` stops after measurement 1.

The PostgreSQL server is ``--pg`` (a URL of a database we may CREATE DATABASE from),
else $TELEGATE_TEST_PG, else postgresql://postgres@127.0.0.1:5432/postgres. Databases
made here are dropped at the end.
"""
from __future__ import annotations

import http.client
import os
import random
import secrets
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


class Databases:
    """Throwaway databases on one PostgreSQL server, dropped by close() (or on leaving a ``with``)."""

    def __init__(self, admin_url: str) -> None:
        import psycopg

        self.admin_url = admin_url
        self.admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
        self.prefix = f"telegate_bench_{os.getpid()}_{secrets.token_hex(2)}"
        self.names: list[str] = []

    def create(self, sessions: int, tree: Path | None = None) -> tuple[str, str]:
        """A new database with ``sessions`` sessions and a client key; (URL, key). ``tree``: its
        schema and key made by the TeleGate of that checkout (a baseline of an older schema)."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        from telegate.store import open_store

        name = f"{self.prefix}_{len(self.names)}"
        self.admin.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        info = conninfo_to_dict(self.admin_url)
        user = info.get("user", "")
        auth = f"{user}:{info['password']}@" if info.get("password") else (f"{user}@" if user else "")
        url = f"postgresql://{auth}{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{name}"
        if tree is None:
            with open_store(url) as store:
                key = store.create_key("bench", "client")
        else:
            made = subprocess.run(
                [sys.executable, "-c", "import sys; from telegate.store import open_store\n"
                 "with open_store(sys.argv[1]) as store: print(store.create_key('bench', 'client'))", url],
                env=c.server_env(tree), capture_output=True, text=True, check=True)
            key = made.stdout.strip().splitlines()[-1]
        with psycopg.connect(url, autocommit=True) as conn:  # bulk: one statement for 100k rows
            conn.execute("INSERT INTO sessions (name, created_at) SELECT 'acc' || lpad(n::text, 6, '0'),"
                         " EXTRACT(EPOCH FROM now()) FROM generate_series(0, %s - 1) AS n", (sessions,))
            conn.execute("ANALYZE sessions")
        return url, key

    def backend_cpu(self, url: str) -> float:
        """CPU seconds used so far by the PostgreSQL backends connected to ``url``'s database
        (from /proc: the database runs on this machine here). A backend that has exited is
        no longer counted, so this undercounts a little when connections come and go."""
        dbname = url.rsplit("/", 1)[1].split("?")[0]
        pids = [row[0] for row in self.admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))]
        total = 0.0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def count_database_cpu(self, server: c.Server, url: str) -> None:
        """Make ``server.cpu_seconds()`` include its database's backends, so that CPU per cycle
        compares with a SQLite server's (whose database runs inside the server process)."""
        own = server.cpu_seconds
        server.cpu_seconds = lambda: own() + self.backend_cpu(url)  # type: ignore[method-assign]

    def close(self) -> None:
        for name in self.names:
            try:
                self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:  # keep dropping the others
                print(f"could not drop {name}: {exc}", file=sys.stderr)
        self.admin.close()

    def __enter__(self) -> "Databases":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Group:
    """Servers measured as one: client n talks to member n mod size."""

    def __init__(self, label: str, members: list[c.Server]) -> None:
        self.label = label
        self.members = members

    def member(self, number: int) -> c.Server:
        return self.members[number % len(self.members)]

    def cpu_seconds(self) -> float:
        return sum(member.cpu_seconds() for member in self.members)


def pg_reachable(url: str) -> str | None:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any reason is a reason to skip
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return None


def failover_times(where: Path, databases: Databases, repeats: int, kind: str) -> list[float]:
    """Seconds from SIGKILL of the server in use to the worker's next completed lease (via the other)."""
    url, key = databases.create(16)
    times = []
    backup = c.Server("telegate", where, db=url, api_key=key, label="failover_b", extra=("--access-log", "false"))
    try:
        for _ in range(repeats):
            primary = c.Server("telegate", where, db=url, api_key=key, label="failover_a",
                               extra=("--access-log", "false"))
            try:
                times.append(_one_failover(primary, backup, key, kind))
            finally:
                primary.close()
    finally:
        backup.close()
    return times


def _one_failover(primary: c.Server, backup: c.Server, key: str, kind: str) -> float:
    killed_at: list[float] = []
    recovered: list[float] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    if kind == "sdk":
        from telegram_session_manager import TelegramSessionManagerClient

        client = TelegramSessionManagerClient([primary.url, backup.url], key, ttl=30, keepalive=False)

        def cycle() -> None:
            with client.session():
                pass
    else:
        urls = [(primary.host, primary.port), (backup.host, backup.port)]
        state = {"i": 0, "conn": None}

        def post(path: str, body: bytes) -> tuple[int, bytes]:
            for _ in range(len(urls) * 50):
                if state["conn"] is None:
                    state["conn"] = http.client.HTTPConnection(*urls[state["i"]], timeout=10)
                try:
                    state["conn"].request("POST", path, body, {"X-API-Key": key, "Content-Type": "application/json"})
                    reply = state["conn"].getresponse()
                    return reply.status, reply.read()
                except (OSError, http.client.HTTPException):
                    state["conn"].close()
                    state["conn"] = None
                    state["i"] = (state["i"] + 1) % len(urls)  # the next URL
            raise RuntimeError("no server answered")

        def cycle() -> None:
            import json

            status, data = post("/session", c.acquire_body(30))
            if status != 200:
                raise RuntimeError(f"acquire {status}: {data[:200]!r}")
            lease = json.loads(data)
            post("/release", json.dumps({"session_id": lease["session_id"],
                                         "lease_token": lease["lease_token"]}).encode())

    def work() -> None:
        try:
            while not stop.is_set():
                cycle()
                if killed_at and not recovered:
                    recovered.append(time.perf_counter())
        except BaseException as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    time.sleep(random.uniform(0.3, 0.6))  # leasing through the primary for a random while
    killed_at.append(time.perf_counter())
    primary.proc.kill()
    deadline = time.monotonic() + 60
    while not recovered and not errors and time.monotonic() < deadline:
        time.sleep(0.005)  # polling for the worker's next completed lease, bounded
    stop.set()
    worker.join(30)
    if kind == "sdk":
        client.close()
    if errors:
        raise RuntimeError(f"failover ({kind}) failed: {errors[0]!r}") from errors[0]
    if not recovered:
        raise RuntimeError(f"failover ({kind}): no lease within 60 s of the kill")
    return recovered[0] - killed_at[0]


def sdk_takes_a_list() -> bool:
    try:
        from telegram_session_manager import TelegramSessionManagerClient

        TelegramSessionManagerClient(["http://127.0.0.1:1", "http://127.0.0.1:2"], "k", keepalive=False).close()
    except (TypeError, ValueError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = c.arg_parser(__doc__.splitlines()[0], baseline_tree=True)
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--pg", default=None, help="PostgreSQL URL to create the databases from")
    parser.add_argument("--failovers", type=int, default=None, help="failover repeats (default 5, quick 1)")
    parser.add_argument("--first-only", action="store_true", help="measurement 1 only (PostgreSQL vs SQLite)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.3 if args.quick else 1.0)
    rounds = args.rounds or (1 if args.quick else 7)
    repeats = args.failovers or (1 if args.quick else 5)
    big = 2000 if args.quick else 100_000
    admin_url = args.pg or os.environ.get("TELEGATE_TEST_PG") or DEFAULT_PG
    print(f"# Benchmark 7: PostgreSQL ({c.environment_note()})")
    why = pg_reachable(admin_url)
    if why is not None:
        print(f"# skipped: no PostgreSQL at {admin_url.rsplit('@', 1)[-1]} ({why}); pass --pg URL")
        print(c.table(["measurement", "result"], [["all", "skipped: no PostgreSQL"]]))
        return 0
    print(f"# {args.clients} thin clients, {seconds:g} s per server and round, {rounds} alternating round(s),"
          " medians of per-round ratios")
    quiet = ("--access-log", args.access_log)
    rows = []
    with c.workspace(args.workdir) as where, Databases(admin_url) as databases, c.Servers(where) as running:
        def start(label: str, **kwargs) -> c.Server:
            return running.start("telegate", label=label, extra=quiet, **kwargs)

        # 1. PostgreSQL against SQLite, one server each.
        url, key = databases.create(64)
        sqlite = start("sqlite_1", sessions=64)
        pg = start("pg_1", db=url, api_key=key)
        databases.count_database_cpu(pg, url)
        contenders = [sqlite, pg]
        if args.baseline_tree:
            tree = args.baseline_tree.resolve()
            base_url, base_key = databases.create(64, tree)
            base_pg = start("baseline_pg", db=base_url, api_key=base_key, tree=tree)
            databases.count_database_cpu(base_pg, base_url)
            contenders += [start("baseline_sqlite", sessions=64, tree=tree), base_pg]
        r = c.side_by_side(contenders, args.clients, seconds, rounds)
        if args.baseline_tree:
            for store, this, base in (("PostgreSQL", "pg_1", "baseline_pg"), ("SQLite", "sqlite_1", "baseline_sqlite")):
                rows.append([f"1 server on {store}: this tree / baseline", f"{r.rate(this):.0f} / {r.rate(base):.0f}"
                             " cycles/s", f"{r.ratio(this, base):.2f}x", "-",
                             f"CPU/cycle {r.cpu_per_cycle(this) * 1e6:,.0f} / {r.cpu_per_cycle(base) * 1e6:,.0f} µs,"
                             f" this/baseline {r.cpu_ratio(this, base):.2f} (server + database)"])
            for server in contenders[2:]:
                server.close()
        rows.append(["1 server: PostgreSQL / SQLite", f"{r.rate('pg_1'):.0f} / {r.rate('sqlite_1'):.0f} cycles/s",
                     f"{r.ratio('pg_1', 'sqlite_1'):.2f}x", ">= 0.8x",
                     f"p50 {c.ms(r.percentile('pg_1', 0.5)):.1f} / {c.ms(r.percentile('sqlite_1', 0.5)):.1f} ms;"
                     f" CPU/cycle {r.cpu_per_cycle('pg_1') * 1e6:,.0f} / {r.cpu_per_cycle('sqlite_1') * 1e6:,.0f} µs"
                     " (server + database)"])
        print(f"  PG vs SQLite: {r.rate('pg_1'):.0f} vs {r.rate('sqlite_1'):.0f}/s", file=sys.stderr, flush=True)

        if args.first_only:
            print(c.table(["measurement", "figures", "ratio", "goal", "latency"], rows))
            return 0

        # 2. One, two and three servers on one database (the first is pg_1's database).
        second = start("pg_2", db=url, api_key=key)
        third = start("pg_3", db=url, api_key=key)
        groups = [Group("one", [pg]), Group("two", [pg, second]), Group("three", [pg, second, third])]
        r = c.side_by_side(groups, args.clients, seconds, rounds)
        for label in ("two", "three"):
            rows.append([f"{len(groups[1 if label == 'two' else 2].members)} servers on one database / 1 server",
                         f"{r.rate(label):.0f} / {r.rate('one'):.0f} cycles/s", f"{r.ratio(label, 'one'):.2f}x",
                         "coordination cost (2 cores)",
                         f"p50 {c.ms(r.percentile(label, 0.5)):.1f} ms; CPU/cycle {r.cpu_per_cycle(label) * 1e6:,.0f}"
                         f" µs vs {r.cpu_per_cycle('one') * 1e6:,.0f} (servers + database)"])
        print(f"  servers: {r.rate('one'):.0f} / {r.rate('two'):.0f} / {r.rate('three'):.0f}/s",
              file=sys.stderr, flush=True)
        for server in (second, third, sqlite):
            server.close()

        # 3. 100,000 sessions against 100.
        small_url, small_key = databases.create(100)
        big_url, big_key = databases.create(big)
        small = start("pg_100", db=small_url, api_key=small_key)
        large = start(f"pg_{big}", db=big_url, api_key=big_key)
        r = c.side_by_side([small, large], args.clients, seconds, rounds)
        rows.append([f"{big:,} sessions / 100 (PostgreSQL)",
                     f"{r.rate(large.label):.0f} / {r.rate('pg_100'):.0f} cycles/s",
                     f"{r.ratio(large.label, 'pg_100'):.2f}x", ">= 0.95x",
                     f"p50 {c.ms(r.percentile(large.label, 0.5)):.1f} / {c.ms(r.percentile('pg_100', 0.5)):.1f} ms"])
        print(f"  size: {r.rate('pg_100'):.0f} / {r.rate(large.label):.0f}/s", file=sys.stderr, flush=True)
        for server in (small, large, pg):
            server.close()

        # 4. Failover.
        kinds = ["thin"] + (["sdk"] if sdk_takes_a_list() else [])
        for kind in kinds:
            times = failover_times(where, databases, repeats, kind)
            rows.append([f"failover, {kind} client with two URLs ({repeats}x)",
                         f"median {statistics.median(times):.2f} s, max {max(times):.2f} s", "-", "< 2 s",
                         "kill -9 of the server in use to the next lease done"])
        if "sdk" not in kinds:
            rows.append(["failover, SDK with two URLs", "not measured: this SDK takes one base_url", "-", "< 2 s", ""])
        print(c.table(["measurement", "figures", "ratio", "goal", "latency"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
