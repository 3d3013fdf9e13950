"""Benchmark 7: fleet scale: hundreds of keep-alive workers, and workers waiting their turn.

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


def run_fleet(server: c.Server | Sequence[c.Server], workers: int, seconds: float, mode: str = "cycle", *,
              warmup: float = 0.5, hold: float = 0.05, wait: float = 30.0,
              during: Any = None) -> Fleet:
    """``workers`` keep-alive workers against ``server`` for ``seconds`` after ``warmup``.

    Several servers (processes on one database): the client processes take turns among
    them, and the CPU is the sum of theirs. ``during(start, stop)``, when given, runs in
    this process inside the window (e.g. to sample the server) instead of sleeping through it.
    """
    servers = [server] if isinstance(server, c.Server) else list(server)
    server = servers[0]
    processes = max(len(servers), min(8, math.ceil(workers / WORKERS_PER_PROCESS)))
    shares = [workers // processes + (i < workers % processes) for i in range(processes)]
    env = c.server_env()
    procs: list[subprocess.Popen] = []
    try:
        first = 0
        for number, share in enumerate(shares):
            target = servers[number % len(servers)]
            cmd = [sys.executable, str(CLIENT), mode, "--port", str(target.port), "--key", target.api_key,
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
        cpu_before = sum(cpu_seconds(s.pid) for s in servers)
        if during is not None:
            during(start, stop)
        time.sleep(max(0.0, stop - time.time()))
        cpu_after = sum(cpu_seconds(s.pid) for s in servers)
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
    with c.Servers(where) as running:
        servers = [running.start("telegate", sessions=pool, extra=extra, label="telegate"),
                   running.start("noop", label="A_noop")]
        if args.baseline_tree:
            servers.append(running.start("telegate", sessions=pool, extra=extra, label="baseline",
                                         tree=args.baseline_tree.resolve()))
        labels = [s.label for s in servers]
        got: dict[tuple[str, int], list[Fleet]] = {(label, n): [] for label in labels for n in counts}
        for number in range(rounds):
            shift = number % len(servers)
            order = servers[shift:] + servers[:shift]
            for n in counts:
                for server in order:
                    fleet = run_fleet(server, n, seconds)
                    got[server.label, n].append(fleet)
                    print(f"  round {number + 1} N={n} {server.label}: {fleet.rate:.0f} cycles/s,"
                          f" server CPU {fleet.cpu_ms_per_cycle:.1f} ms/cycle", file=sys.stderr, flush=True)
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


# -- part 2: handoff ------------------------------------------------------------------------


def handoff_figures(fleet: Fleet) -> dict[str, float]:
    """Release-to-grant latencies, lease counts per worker, the longest wait."""
    releases: dict[int, list[float]] = {}
    for worker in fleet.workers:
        for at, session_id in worker["releases"]:
            releases.setdefault(session_id, []).append(at)
    for times in releases.values():
        times.sort()
    handoffs = []
    for worker in fleet.workers:
        for asked, granted, session_id in worker["grants"]:
            before = [r for r in releases.get(session_id, ()) if r <= granted]
            if before and asked < before[-1]:  # it was waiting when that release was sent
                handoffs.append(granted - before[-1])
    counts = [len(w["grants"]) for w in fleet.workers]
    mean = sum(counts) / len(counts) if counts else 0.0
    waits = [granted - asked for w in fleet.workers for asked, granted, _ in w["grants"]]
    waits += [w["unserved"] for w in fleet.workers]  # still asking when the round ended
    result = c.Result(0, 0, 0.0, handoffs)
    return {"leases": sum(counts), "handoffs": len(handoffs), "p50": c.ms(result.percentile(0.5)),
            "p99": c.ms(result.percentile(0.99)), "max": c.ms(max(handoffs, default=float("nan"))),
            "min_count": min(counts, default=0), "mean_count": mean, "max_count": max(counts, default=0),
            "fairness": min(counts) / mean if mean else float("nan"),
            "longest_wait": max(waits, default=float("nan"))}


def part_handoff(args: Any, where: Path, seconds: float, rounds: int, workers: int = 24, pool: int = 3,
                 hold: float = 0.05) -> None:
    extra = ("--access-log", args.access_log)
    rows = []

    def label(server: Any) -> str:
        return "telegate_2proc" if isinstance(server, list) else server.label

    with c.Servers(where) as running:
        first = running.start("telegate", sessions=pool, extra=extra, label="telegate_handoff")
        servers: list[Any] = [first]
        modes = {"telegate_handoff": "handoff"}
        if not args.quick:  # the same, with the workers split over two server processes on one file
            second = running.start("telegate", extra=extra, label="telegate_2proc_b", share=first)
            servers.append([first, second])
            modes["telegate_2proc"] = "handoff"
        if args.baseline_tree:  # no long-poll there: workers sleep Retry-After (at most 5 s) and ask again
            servers.append(running.start("telegate", sessions=pool, extra=extra, label="baseline_poll",
                                         tree=args.baseline_tree.resolve()))
            modes["baseline_poll"] = "poll"
        for number in range(rounds):
            for server in (servers if number % 2 == 0 else servers[::-1]):
                fleet = run_fleet(server, workers, seconds, modes[label(server)], hold=hold, wait=30.0)
                f = handoff_figures(fleet)
                rows.append([label(server), number + 1, f["leases"], f["handoffs"], f["p50"], f["p99"], f["max"],
                             f["min_count"], f["mean_count"], f["max_count"], f["fairness"], f["longest_wait"],
                             fleet.server_cpu / seconds * 100])
                print(f"  handoff round {number + 1} {label(server)}: p50 {f['p50']:.1f} ms, p99 {f['p99']:.1f} ms,"
                      f" min/mean {f['fairness']:.2f}", file=sys.stderr, flush=True)
    print(f"\n## handoff: pool of {pool}, {workers} workers each holding a lease {hold * 1000:.0f} ms, {seconds:g} s"
          " a round (release->grant: from sending a release to the grant it enabled reaching a worker that"
          " was waiting)\n")
    print(c.table(["server", "round", "leases", "handoffs", "release->grant p50 ms", "p99 ms", "max ms",
                   "min leases/worker", "mean", "max", "min/mean", "longest wait s", "server CPU %"], rows))


# -- part 3: idle waiters --------------------------------------------------------------------


def part_idle(args: Any, where: Path, waiters: int, pool: int = 10, quiet: float = 3.0) -> None:
    import http.client
    server = c.Server("telegate", where, sessions=pool, extra=("--access-log", args.access_log), label="telegate_idle")
    rows = []
    try:
        holders = []
        for _ in range(pool):  # every session held for the whole run
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            conn.request("POST", "/session", json.dumps({"ttl": 600}).encode(),
                         {"X-API-Key": server.api_key, "Content-Type": "application/json"})
            holders.append((conn, json.loads(conn.getresponse().read())))
        status_conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)

        def status() -> dict[str, Any]:
            status_conn.request("GET", "/status", headers={"X-API-Key": server.api_key})
            return json.loads(status_conn.getresponse().read())

        rss_idle = server.rss_kb()[0]
        cpu = cpu_seconds(server.pid)
        time.sleep(quiet)  # the server with nobody waiting, as the reference
        cpu_idle = (cpu_seconds(server.pid) - cpu) / quiet
        figures: dict[str, float] = {}

        def during(start: float, stop: float) -> None:
            deadline = time.time() + READY_DEADLINE
            while status()["waiting_workers"] < waiters and time.time() < deadline:
                time.sleep(0.1)  # polling the server's own count, bounded by the deadline
            figures["in_line"] = status()["waiting_workers"]
            figures["oldest_wait"] = status()["oldest_wait"] or 0.0
            before = cpu_seconds(server.pid)
            time.sleep(min(quiet, max(0.0, stop - time.time() - 1.5)))
            figures["cpu"] = (cpu_seconds(server.pid) - before) / quiet
            figures["rss"] = server.rss_kb()[0]
            latencies = []
            for conn, lease in holders:  # releases are served at once, whoever waits
                began = time.perf_counter()
                conn.request("POST", "/release", json.dumps({"session_id": lease["session_id"],
                                                             "lease_token": lease["lease_token"]}).encode(),
                             {"X-API-Key": server.api_key, "Content-Type": "application/json"})
                conn.getresponse().read()
                latencies.append(time.perf_counter() - began)
            figures["release_p50"] = c.ms(sorted(latencies)[len(latencies) // 2])
            figures["release_max"] = c.ms(max(latencies))

        room = max(3.0, 20.0 * waiters / 1000)  # to line the workers up: 20 s for a thousand
        window = room + quiet
        fleet = run_fleet(server, waiters, window, "once", during=during, warmup=0.2)
        granted = sum(len(w["grants"]) for w in fleet.workers)
        rows.append([waiters, pool, int(figures["in_line"]), rss_idle / 1024, figures["rss"] / 1024,
                     (figures["rss"] - rss_idle) / waiters, cpu_idle * 100, figures["cpu"] * 100,
                     figures["release_p50"], figures["release_max"], granted])
    finally:
        server.close()
    print(f"\n## idle waiters: {waiters} workers long-polling on a pool of {pool} sessions all held;"
          f" server measured for {quiet:g} s once all are in line, then the {pool} holders release\n")
    print(c.table(["waiters", "pool", "in line", "RSS MB before", "RSS MB waiting", "KB per waiter",
                   "server CPU % nobody waiting", f"server CPU % {waiters} waiting", "release p50 ms",
                   "release max ms", "leases granted in the cascade"], rows))


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = c.arg_parser(__doc__.splitlines()[0], baseline_tree=True)
    parser.add_argument("--parts", default="scale,handoff,idle", help="scale, handoff, idle (comma-separated)")
    parser.add_argument("--workers", default="8,100,400,1000", help="worker counts for the scale part")
    parser.add_argument("--waiters", type=int, default=1000, help="long-polling workers in the idle part")
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.5 if args.quick else 2.0)
    rounds = args.rounds or (1 if args.quick else 3)
    counts = [int(n) for n in args.workers.split(",")]
    if args.quick:
        counts = [8, 40]
    parts = args.parts.split(",")
    print(f"# Benchmark 7: fleet scale ({c.environment_note()})")
    print(f"# {seconds:g} s per server and round after a 0.5 s warm-up, {rounds} alternating round(s);"
          f" up to {WORKERS_PER_PROCESS} workers per client process")
    with c.workspace(args.workdir) as where:
        if "scale" in parts:
            part_scale(args, where, counts, seconds, rounds)
        if "handoff" in parts:
            part_handoff(args, where, 1.5 if args.quick else max(seconds, 10.0), rounds)
        if "idle" in parts:
            part_idle(args, where, 30 if args.quick else args.waiters, quiet=0.5 if args.quick else 3.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
