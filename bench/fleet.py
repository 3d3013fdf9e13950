"""Benchmark 5: fleet scale: hundreds of keep-alive workers, and workers waiting their turn.

    python bench/fleet.py [--quick] [--parts scale,handoff,idle] [--workers 8,100,400,1000]
                          [--seconds S] [--rounds R] [--baseline-tree DIR]

Part ``scale``: N keep-alive workers (threads spread over several client processes, each
with its own connection, all connected before the clock starts) loop acquire -> release
on a pool of at least N sessions. TeleGate is measured against itself at N = 8 and
against ceiling A (the no-op Bottle route, served exactly as ``telegate serve`` serves)
at the same N, in alternating rounds; every round is printed, not only medians, because
the failure this benchmark exists for (waitress's main loop spinning) was bimodal: some
rounds fine, others at a tenth of the rate with the server at 100 % CPU. The server's
CPU time per cycle (from /proc) is printed beside each rate.

Part ``handoff``: a pool of 3 sessions and 24 workers that long-poll (``"wait"``), hold
each lease 50 ms and release it: the time from a release to the grant it enabled (p50,
p99), each worker's lease count (min over mean: 1.00 is perfectly fair), and the longest
wait.

Part ``idle``: 1,000 workers long-polling on a pool of 10 sessions that are all leased
(and held): the server's RSS and CPU while they wait.

Servers and clients run on 127.0.0.1 only; every run is bounded in time and in count.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

CLIENT = Path(__file__).with_name("_fleet_client.py")
WORKERS_PER_PROCESS = 125
READY_DEADLINE = 120.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Fleet:
    """What one run of N workers against one server did."""

    workers: list[dict[str, Any]]
    seconds: float
    server_cpu: float  # CPU seconds the server used inside the window

    @property
    def cycles(self) -> int:
        return sum(w["cycles"] for w in self.workers)

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_cycle(self) -> float:
        return 1000 * self.server_cpu / self.cycles if self.cycles else float("nan")

    def percentile(self, q: float) -> float:
        return c.Result(0, 0, 0.0, [lat for w in self.workers for lat in w["latencies"]]).percentile(q)


def run_fleet(server: c.Server, workers: int, seconds: float, mode: str = "cycle", *,
              warmup: float = 0.5, hold: float = 0.05, wait: float = 30.0,
              during: Any = None) -> Fleet:
    """``workers`` keep-alive workers against ``server`` for ``seconds`` after ``warmup``.

    ``during(start, stop)``, when given, runs in this process inside the window (e.g. to
    sample the server) instead of sleeping through it.
    """
    processes = max(1, min(8, math.ceil(workers / WORKERS_PER_PROCESS)))
    shares = [workers // processes + (i < workers % processes) for i in range(processes)]
    env = c.server_env()
    procs: list[subprocess.Popen] = []
    try:
        first = 0
        for share in shares:
            cmd = [sys.executable, str(CLIENT), mode, "--port", str(server.port), "--key", server.api_key,
                   "--threads", str(share), "--first", str(first), "--hold", str(hold), "--wait", str(wait)]
            procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                          env=env, cwd=c.ROOT))
            first += share
        deadline = time.monotonic() + READY_DEADLINE
        for proc in procs:  # each prints {"ready": n} once its connections are open
            line = proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise RuntimeError(f"a client process of {server.label} did not get ready")
        start = time.time() + warmup
        stop = start + seconds
        for proc in procs:
            proc.stdin.write(json.dumps({"start": start, "stop": stop}) + "\n")
            proc.stdin.flush()
        time.sleep(max(0.0, start - time.time()))
        cpu_before = cpu_seconds(server.pid)
        if during is not None:
            during(start, stop)
        time.sleep(max(0.0, stop - time.time()))
        cpu_after = cpu_seconds(server.pid)
        results: list[dict[str, Any]] = []
        for proc in procs:
            out, _ = proc.communicate(timeout=stop - time.time() + 150)
            if proc.returncode != 0 or not out.strip():
                raise RuntimeError(f"a client process of {server.label} failed (status {proc.returncode})")
            data = json.loads(out.strip().splitlines()[-1])
            if data["hung"]:
                raise RuntimeError(f"{data['hung']} worker(s) of {server.label} hung")
            results.extend(data["workers"])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    errors = [w["error"] for w in results if w["error"]]
    if errors:
        raise RuntimeError(f"{len(errors)} worker(s) against {server.label} failed, e.g. {errors[0]}")
    return Fleet(results, seconds, cpu_after - cpu_before)


# -- part 1: scale ---------------------------------------------------------------------------


def part_scale(args: Any, where: Path, counts: Sequence[int], seconds: float, rounds: int) -> None:
    pool = max(counts) + 8
    extra = ("--access-log", args.access_log)
    servers = [c.Server("telegate", where, sessions=pool, extra=extra, label="telegate"),
               c.Server("noop", where, label="A_noop")]
    if args.baseline_tree:
        servers.append(c.Server("telegate", where, sessions=pool, extra=extra, label="baseline",
                                tree=args.baseline_tree.resolve()))
    labels = [s.label for s in servers]
    got: dict[tuple[str, int], list[Fleet]] = {(label, n): [] for label in labels for n in counts}
    try:
        for number in range(rounds):
            shift = number % len(servers)
            order = servers[shift:] + servers[:shift]
            for n in counts:
                for server in order:
                    fleet = run_fleet(server, n, seconds)
                    got[server.label, n].append(fleet)
                    print(f"  round {number + 1} N={n} {server.label}: {fleet.rate:.0f} cycles/s,"
                          f" server CPU {fleet.cpu_ms_per_cycle:.1f} ms/cycle", file=sys.stderr, flush=True)
    finally:
        for server in servers:
            server.close()
    base_n = counts[0]
    print(f"\n## scale: acquire+release cycles/s, pool of {pool}, every round"
          f" (TG/N={base_n}: this round's TeleGate rate over its rate at N={base_n} in the same round)\n")
    headers = ["N", "round", "TeleGate cycles/s", "A cycles/s", "TG/A", f"TG/N={base_n}",
               "TG CPU ms/cycle", "A CPU ms/cycle", "TG p50 ms", "TG p99 ms"]
    if args.baseline_tree:
        headers += ["baseline cycles/s", "baseline/A", "baseline CPU ms/cycle", "baseline p99 ms"]
    rows = []
    for n in counts:
        for number in range(rounds):
            tg, a = got["telegate", n][number], got["A_noop", n][number]
            tg_base = got["telegate", base_n][number]
            row = [n, number + 1, tg.rate, a.rate, tg.rate / a.rate if a.rate else float("nan"),
                   tg.rate / tg_base.rate if tg_base.rate else float("nan"),
                   tg.cpu_ms_per_cycle, a.cpu_ms_per_cycle, c.ms(tg.percentile(0.5)), c.ms(tg.percentile(0.99))]
            if args.baseline_tree:
                b = got["baseline", n][number]
                row += [b.rate, b.rate / a.rate if a.rate else float("nan"), b.cpu_ms_per_cycle,
                        c.ms(b.percentile(0.99))]
            rows.append(row)
    print(c.table(headers, rows))


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = c.arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--parts", default="scale", help="scale, handoff, idle (comma-separated)")
    parser.add_argument("--workers", default="8,100,400,1000", help="worker counts for the scale part")
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="also measure the TeleGate of another checkout (a before/after comparison)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.5 if args.quick else 2.0)
    rounds = args.rounds or (1 if args.quick else 3)
    counts = [int(n) for n in args.workers.split(",")]
    if args.quick:
        counts = [8, 40]
    parts = args.parts.split(",")
    temp = c.workdir(args.workdir)
    where = Path(temp.name) if temp else args.workdir
    where.mkdir(parents=True, exist_ok=True)
    print(f"# Benchmark 5: fleet scale ({c.environment_note()})")
    print(f"# {seconds:g} s per server and round after a 0.5 s warm-up, {rounds} alternating round(s);"
          f" up to {WORKERS_PER_PROCESS} workers per client process")
    try:
        if "scale" in parts:
            part_scale(args, where, counts, seconds, rounds)
    finally:
        if temp:
            temp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
