"""Benchmark 4: what the SDK costs: ``with client.session():`` against raw urllib3 doing the same two requests.

    python bench/sdk_overhead.py [--quick] [--seconds S] [--rounds R] [--clients 1,4]

Both clients send the same POST /session and POST /release over one kept-alive urllib3
connection; the SDK adds its error mapping, lease bookkeeping, keepalive thread and
tenacity wrapper. Measured against TeleGate and against ceiling A (a no-op server,
where the client's own cost weighs most), in alternating rounds. The overhead is the
raw rate over the SDK rate (1.00 = free). A third column runs the SDK with
``keepalive=False`` to show what starting the lease-renewing thread costs per lease.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = c.arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4", help="comma-separated client counts")
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.3 if args.quick else 1.0)
    rounds = args.rounds or (1 if args.quick else 7)
    counts = [int(n) for n in args.clients.split(",")][: 1 if args.quick else None]
    print(f"# Benchmark 4: SDK overhead, acquire+release cycles/s ({c.environment_note()})")
    print(f"# {seconds:g} s per client kind and round, {rounds} alternating rounds, median of per-round ratios")
    rows = []
    with c.workspace(args.workdir) as where, c.Servers(where) as running:
        servers = [running.start("telegate", sessions=64, extra=("--access-log", args.access_log)),
                   running.start("noop", label="A_noop")]
        kinds = ["urllib3", "sdk", "sdk-no-keepalive"]
        for server in servers:
            for clients in counts:
                got: dict[str, list[c.Result]] = {kind: [] for kind in kinds}
                for number in range(rounds):
                    shift = number % len(kinds)
                    for kind in kinds[shift:] + kinds[:shift]:
                        got[kind].append(c.run_load(server, clients, seconds, kind))

                def overhead(kind: str) -> float:
                    return c.median([raw.rate / mine.rate for raw, mine in zip(got["urllib3"], got[kind]) if mine.rate])

                def p(kind: str, q: float) -> float:
                    return c.ms(c.Result(0, 0, 0.0, [lat for r in got[kind] for lat in r.latencies]).percentile(q))

                rows.append([server.label, clients, *(c.median([r.rate for r in got[kind]]) for kind in kinds),
                             overhead("sdk"), overhead("sdk-no-keepalive"),
                             p("urllib3", 0.5), p("sdk", 0.5), p("urllib3", 0.99), p("sdk", 0.99)])
        print(c.table(["server", "clients", "raw urllib3 cycles/s", "SDK cycles/s", "SDK, keepalive off",
                       "SDK overhead (raw/SDK)", "overhead, keepalive off",
                       "raw p50 ms", "SDK p50 ms", "raw p99 ms", "SDK p99 ms"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
