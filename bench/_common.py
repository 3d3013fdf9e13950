"""Shared pieces of the benchmarks: the servers under test, the load generator, the tables.

Every figure the benchmarks print is a ratio taken side by side in one run: the machines
are shared and noisy, and client and server share two cores, so absolute numbers from
two runs cannot be compared, but two servers measured in alternating rounds by the same
load generator can.

Servers (each a real ``waitress`` process with the same settings as ``telegate serve``):

* ``noop``     -- ceiling A: the same routes, answering a fixed JSON body, no database.
* ``sqlite``   -- ceiling B: the same routes, each doing one durable SQLite write (WAL,
                  ``synchronous=FULL``, one ``BEGIN IMMEDIATE ... COMMIT``).
* ``telegate`` -- the real ``python -m telegate serve``.

The load generator is one process: N threads, each with its own keep-alive connection,
started together behind a barrier, stopped by a deadline.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "server", ROOT / "sdk"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from telegate._stop import new_group_flags, request_stop  # noqa: E402 (needs the path above)

STARTUP_DEADLINE = 30.0
_LISTENING = re.compile(r"listening on (http://\S+)")


def server_env(tree: Path | None = None) -> dict[str, str]:
    """The environment of a server process; ``tree`` runs the TeleGate of another checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEGATE_")}
    env["PYTHONUNBUFFERED"] = "1"
    tree = tree or ROOT
    paths = [str(tree / "server"), str(tree / "sdk")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


# -- servers ------------------------------------------------------------------------------


_MAKE_POOL = """
import sys
from telegate.store import open_store
with open_store(sys.argv[1]) as store:
    print(store.create_key("bench", "client"))
    store.add_sessions(f"acc{i:06d}" for i in range(int(sys.argv[2])))
"""


def _make_pool(db: Path, sessions: int, tree: Path | None) -> str:
    """A pool of ``sessions`` and a client key; another tree's pool is made by that tree's code (its schema)."""
    if tree is None:
        from telegate.store import open_store
        with open_store(db) as store:
            key = store.create_key("bench", "client")
            if sessions:
                store.add_sessions(f"acc{i:06d}" for i in range(sessions))
        return key
    made = subprocess.run([sys.executable, "-c", _MAKE_POOL, str(db), str(sessions)], env=server_env(tree),
                          cwd=ROOT, capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise RuntimeError(f"cannot make a pool with the tree {tree}:\n{made.stderr}")
    return made.stdout.strip()


class Server:
    """One server subprocess; its output goes to a file (no pipe to drain in the client)."""

    def __init__(self, kind: str, workdir: Path, *, sessions: int = 64, extra: Sequence[str] = (),
                 label: str | None = None, tree: Path | None = None, share: "Server | None" = None,
                 db: Path | str | None = None, api_key: str | None = None) -> None:
        """``share``: serve the database (and use the key) of that TeleGate server, as a second process.
        ``db``: another database than ``workdir/LABEL.db`` (a postgresql:// URL, say); with
        ``api_key``, that database is ready (key and sessions made by the caller)."""
        if share is not None:
            db, api_key = share.db, share.api_key
        self.kind = kind
        self.label = label or kind
        self.workdir = workdir
        self.db = db if db is not None else workdir / f"{self.label}.db"
        self.log_path = workdir / f"{self.label}.log"
        self.api_key = ""
        self.url = ""
        self.host = "127.0.0.1"
        self.port = 0
        if kind == "telegate":
            # A caller that made the database itself (bench/postgres.py, share=) passes its key.
            self.api_key = api_key if api_key is not None else _make_pool(self.db, sessions, tree)
            cmd = [sys.executable, "-m", "telegate", "serve", "--port", "0", "--db", str(self.db), *extra]
        elif kind in ("noop", "sqlite"):
            self.api_key = "bench-key"
            cmd = [sys.executable, str(Path(__file__).with_name("_ceilings.py")), kind, "--db", str(self.db), *extra]
        else:
            raise ValueError(f"unknown server kind {kind!r}")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=server_env(tree), cwd=ROOT, creationflags=new_group_flags())
        deadline = time.monotonic() + STARTUP_DEADLINE
        while True:
            match = _LISTENING.search(self.log_path.read_text())
            if match:
                self.url = match.group(1)
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"{self.label} server did not start:\n{self.log_path.read_text()}")
            time.sleep(0.02)  # polling a file for the ready line, bounded by the deadline
        self.port = int(self.url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far, from /proc (Linux); 0 elsewhere.

        CPU per cycle barely moves when other work shares the machine, unlike cycles per
        second: the figure to compare two trees by on a busy box.
        """
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kb(self) -> tuple[int, int]:
        """(current RSS, peak RSS) of the server process in KiB, from /proc (Linux)."""
        found = {}
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found[key] = int(value.split()[0])
        except OSError:
            return (0, 0)
        return found.get("VmRSS", 0), found.get("VmHWM", 0)

    def close(self) -> None:
        if self.proc.poll() is None:
            request_stop(self.proc)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Servers:
    """The servers of one run, all in ``where``: leaving the ``with`` closes every one started,
    those started before one that failed to start included (a list built in one expression
    would lose them)."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.started: list[Server] = []

    def start(self, kind: str, **kwargs: Any) -> Server:
        server = Server(kind, self.where, **kwargs)
        self.started.append(server)
        return server

    def __enter__(self) -> "Servers":
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.started:
            server.close()


# -- clients ------------------------------------------------------------------------------


def acquire_body(ttl: float, **more: Any) -> bytes:
    """The JSON body of one acquire, with a fresh ``request_id`` as the SDK sends with each
    (the server then also looks for an earlier lease of that request: part of the real cost)."""
    return json.dumps({"ttl": ttl, "request_id": uuid.uuid4().hex, **more}).encode()


class ThinClient:
    """The thinnest HTTP client: one http.client keep-alive connection, JSON by hand."""

    def __init__(self, server: Server, ttl: float = 60) -> None:
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
        self.headers = {"X-API-Key": server.api_key, "Content-Type": "application/json"}
        self.ttl = ttl

    def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.conn.request("POST", path, body, self.headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def cycle(self) -> bool:
        """Acquire then release; True when a lease was granted."""
        status, data = self._post("/session", acquire_body(self.ttl))
        if status != 200:
            if status == 503:
                return False
            raise RuntimeError(f"acquire answered {status}: {data[:200]!r}")
        lease = json.loads(data)
        release = json.dumps({"session_id": lease["session_id"], "lease_token": lease["lease_token"]}).encode()
        status, data = self._post("/release", release)
        if status != 200:
            raise RuntimeError(f"release answered {status}: {data[:200]!r}")
        return True

    def close(self) -> None:
        self.conn.close()


class Urllib3Client:
    """Raw urllib3 doing the SDK's two requests: the baseline of the SDK overhead.

    A ``PoolManager`` with full URLs, as urllib3's own docs use it (and as the SDK does),
    sending the SDK's headers; JSON encoded and decoded by hand.
    """

    def __init__(self, server: Server, ttl: float = 60) -> None:
        import urllib3
        self.pool = urllib3.PoolManager(maxsize=1, retries=False, timeout=urllib3.Timeout(60))
        self.url = server.url
        self.headers = {"X-API-Key": server.api_key, "Content-Type": "application/json",
                        "Accept": "application/json", "User-Agent": "bench"}
        self.ttl = ttl

    def cycle(self) -> bool:
        reply = self.pool.request("POST", self.url + "/session", body=acquire_body(self.ttl), headers=self.headers)
        if reply.status != 200:
            if reply.status == 503:
                return False
            raise RuntimeError(f"acquire answered {reply.status}: {reply.data[:200]!r}")
        lease = json.loads(reply.data)
        body = json.dumps({"session_id": lease["session_id"], "lease_token": lease["lease_token"]}).encode()
        reply = self.pool.request("POST", self.url + "/release", body=body, headers=self.headers)
        if reply.status != 200:
            raise RuntimeError(f"release answered {reply.status}: {reply.data[:200]!r}")
        return True

    def close(self) -> None:
        self.pool.clear()


class SdkClient:
    """``with client.session():`` through the TeleGate SDK (one client per load thread)."""

    keepalive = True
    #: The ``host`` sent with each acquire (None: the SDK's default, this machine's name; "": none).
    host: str | None = None

    def __init__(self, server: Server, ttl: float = 60) -> None:
        from telegram_session_manager import TelegramSessionManagerClient
        self.client = TelegramSessionManagerClient(server.url, server.api_key, auto_wait=False, ttl=ttl,
                                                   keepalive=self.keepalive, host=self.host)
        self.ttl = ttl

    def cycle(self) -> bool:
        from telegram_session_manager import NoSessionAvailable
        try:
            with self.client.session():
                pass
        except NoSessionAvailable:
            return False
        return True

    def close(self) -> None:
        self.client.close()


class SdkClientNoKeepalive(SdkClient):
    """The SDK with its lease-renewing keepalive thread turned off (to see what that costs)."""

    keepalive = False


CLIENTS: dict[str, Callable[[Server], Any]] = {"thin": ThinClient, "urllib3": Urllib3Client, "sdk": SdkClient,
                                               "sdk-no-keepalive": SdkClientNoKeepalive}


# -- the load generator -------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    cycles: int
    misses: int
    seconds: float
    latencies: list[float]
    server_cpu: float = 0.0  # server CPU seconds over the whole run, warm-up included
    all_cycles: int = 0      # cycles over the whole run, warm-up included

    @property
    def cpu_per_cycle(self) -> float:
        return self.server_cpu / self.all_cycles if self.all_cycles else float("nan")

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_load(server: Server, clients: int, seconds: float, client_kind: str = "thin",
             warmup: float = 0.1) -> Result:
    """``clients`` threads doing acquire+release cycles for ``seconds`` (after a warm-up)."""
    factory = CLIENTS[client_kind]
    barrier = threading.Barrier(clients + 1)
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"cycles": 0, "misses": 0, "all": 0}
    errors: list[BaseException] = []
    window: dict[str, float] = {}

    picks = iter(range(clients))
    pick_lock = threading.Lock()

    def worker() -> None:
        with pick_lock:
            number = next(picks)
        # A group of servers (bench/postgres.py) hands each client one of its members.
        client = factory(server.member(number) if hasattr(server, "member") else server)
        mine: list[float] = []
        done = missed = everything = 0
        try:
            barrier.wait(30)
            start_at, stop_at = window["start"], window["stop"]
            while True:
                began = time.perf_counter()
                if began >= stop_at:
                    break
                granted = client.cycle()
                everything += granted
                if began >= start_at:
                    if granted:
                        done += 1
                        mine.append(time.perf_counter() - began)
                    else:
                        missed += 1
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            client.close()
            with lock:
                latencies.extend(mine)
                counts["cycles"] += done
                counts["misses"] += missed
                counts["all"] += everything

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    cpu_before = server.cpu_seconds()
    for thread in threads:
        thread.start()
    now = time.perf_counter()
    window["start"] = now + warmup
    window["stop"] = now + warmup + seconds
    barrier.wait(30)
    for thread in threads:
        thread.join(seconds + warmup + 120)
    if errors:
        raise RuntimeError(f"load on {server.label} failed: {errors[0]!r}") from errors[0]
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"load on {server.label}: a client hung")
    return Result(counts["cycles"], counts["misses"], seconds, latencies,
                  server.cpu_seconds() - cpu_before, counts["all"])


class Rounds:
    """Per-round results of several servers measured in alternation."""

    def __init__(self, per_server: dict[str, list[Result]]) -> None:
        self.per_server = per_server

    def rate(self, label: str) -> float:
        """Median cycles per second over the rounds."""
        return median([r.rate for r in self.per_server[label]])

    def ratio(self, label: str, baseline: str) -> float:
        """Median over rounds of this server's rate over the baseline's rate in the same round.

        Each round measures every server within a few seconds, so a round's ratio is
        taken under (nearly) the same background load; the median discards rounds
        that a burst of someone else's work distorted.
        """
        pairs = zip(self.per_server[label], self.per_server[baseline])
        return median([a.rate / b.rate for a, b in pairs if b.rate])

    def cpu_per_cycle(self, label: str) -> float:
        """Median over rounds of the server's CPU seconds per cycle."""
        return median([r.cpu_per_cycle for r in self.per_server[label]])

    def cpu_ratio(self, label: str, baseline: str) -> float:
        """Median over rounds of this server's CPU per cycle over the baseline's, same round."""
        pairs = zip(self.per_server[label], self.per_server[baseline])
        return median([a.cpu_per_cycle / b.cpu_per_cycle for a, b in pairs if b.all_cycles and a.all_cycles])

    def round_ratios(self, label: str, baseline: str) -> tuple[str, str]:
        """This server over the baseline in each round: rates, and CPU per cycle (as text)."""
        pairs = list(zip(self.per_server[label], self.per_server[baseline]))
        rates = ", ".join(f"{a.rate / b.rate:.2f}" for a, b in pairs if b.rate)
        cpu = ", ".join(f"{a.cpu_per_cycle / b.cpu_per_cycle:.2f}" for a, b in pairs if a.all_cycles and b.all_cycles)
        return rates, cpu

    def percentile(self, label: str, q: float) -> float:
        merged = Result(0, 0, 0.0, [lat for r in self.per_server[label] for lat in r.latencies])
        return merged.percentile(q)

    def misses(self, label: str) -> int:
        return sum(r.misses for r in self.per_server[label])


def side_by_side(servers: Sequence[Server], clients: int, seconds: float, rounds: int,
                 client_kind: str = "thin") -> Rounds:
    """Measure each server in alternating rounds, rotating the order each round."""
    per_server: dict[str, list[Result]] = {server.label: [] for server in servers}
    for number in range(rounds):
        shift = number % len(servers)
        order = list(servers[shift:]) + list(servers[:shift])
        for server in order:
            per_server[server.label].append(run_load(server, clients, seconds, client_kind))
    return Rounds(per_server)


# -- output -------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (pastes straight into docs/PERFORMANCE.md)."""
    rows = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line([str(h) for h in headers]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def ms(seconds: float) -> float:
    return seconds * 1000.0


def arg_parser(description: str, *, baseline_tree: bool = False) -> argparse.ArgumentParser:
    """The flags every benchmark takes; ``baseline_tree``: also ``--baseline-tree DIR`` (before/after)."""
    parser = argparse.ArgumentParser(description=description)
    if baseline_tree:
        parser.add_argument("--baseline-tree", type=Path, default=None,
                            help="also measure the TeleGate of another checkout (a before/after comparison)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, a second or two in all")
    parser.add_argument("--seconds", type=float, default=None, help="measuring time per round and server")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (median kept)")
    parser.add_argument("--workdir", type=Path, default=None, help="where databases and logs go (default: a temp dir)")
    parser.add_argument("--access-log", choices=("true", "false"), default="true",
                        help="TeleGate's access log (default true, as shipped)")
    return parser


@contextlib.contextmanager
def workspace(path: Path | None) -> Iterator[Path]:
    """Where a run's databases and server logs go: ``--workdir`` if given (kept), else a temporary directory."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="telegate-bench-") as temp:
        yield Path(temp)


def environment_note() -> str:
    import sqlite3
    return (f"python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs,"
            f" load average {os.getloadavg()[0]:.2f}")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
