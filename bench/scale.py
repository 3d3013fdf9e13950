"""Benchmark 2: does the pool size matter? Acquire+release over HTTP with 10, 1,000 and 100,000 sessions.

    python bench/scale.py [--quick] [--seconds S] [--rounds R] [--clients 8] [--sizes 10,1000,100000]

Three TeleGate servers, one per pool size, plus ceilings A and B, all measured by the
same load generator in alternating rounds. Printed: cycles per second, the ratio of
each pool size to the smallest, and each server's resident memory (RSS now and peak)
after the run. Fewer clients than the smallest pool, so every acquire is granted.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = c.arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (fewer than the smallest pool)")
    parser.add_argument("--sizes", default="10,1000,100000", help="pool sizes, comma-separated")
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.3 if args.quick else 1.0)
    rounds = args.rounds or (1 if args.quick else 7)
    sizes = [int(n) for n in args.sizes.split(",")]
    if args.quick:
        sizes = sorted({min(n, 1000) for n in sizes})
    clients = min(args.clients, min(sizes))
    print(f"# Benchmark 2: pool size, acquire+release cycles/s over HTTP ({c.environment_note()})")
    print(f"# {clients} thin clients, {seconds:g} s per server and round, {rounds} alternating rounds, medians")
    with c.workspace(args.workdir) as where, c.Servers(where) as running:
        servers = [running.start("noop", label="A_noop"), running.start("sqlite", label="B_sqlite")]
        for size in sizes:
            servers.append(running.start("telegate", sessions=size, label=f"telegate_{size}",
                                         extra=("--access-log", args.access_log)))
        r = c.side_by_side(servers, clients, seconds, rounds)
        smallest = f"telegate_{sizes[0]}"
        rows = []
        for server in servers:
            rss, peak = server.rss_kb()
            rows.append([server.label, r.rate(server.label), r.ratio(server.label, smallest),
                         r.ratio(server.label, "A_noop"), r.ratio(server.label, "B_sqlite"),
                         c.ms(r.percentile(server.label, 0.5)), c.ms(r.percentile(server.label, 0.99)),
                         rss / 1024, peak / 1024])
        print(c.table(["server", "cycles/s", f"x {smallest}", "x A", "x B", "p50 ms", "p99 ms",
                       "RSS MB", "peak RSS MB"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
