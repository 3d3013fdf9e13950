"""Benchmark 1: acquire+release cycles per second over HTTP, TeleGate against its ceilings.

    python bench/http_cycle.py [--quick] [--seconds S] [--rounds R] [--clients 1,4,16]

Ceiling A is a no-op Bottle route, ceiling B the same route doing one durable SQLite
write per request; TeleGate does the real work (auth, one atomic claim, one release).
All three run under waitress with identical settings and are driven by the same load
generator in alternating rounds, with a thin http.client client and through the SDK.

``--baseline-tree DIR`` adds the TeleGate of another checkout (made with that tree's own
code, so an older schema works) and compares both ways: cycles per second, and the
server's CPU time per cycle (from /proc), which a busy machine disturbs far less.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = c.arg_parser(__doc__.splitlines()[0], baseline_tree=True)
    parser.add_argument("--clients", default="1,4,16", help="comma-separated client counts")
    parser.add_argument("--client-kinds", default="thin,sdk", help="thin, sdk, urllib3 (comma-separated)")
    parser.add_argument("--sessions", type=int, default=64, help="sessions in TeleGate's pool")
    parser.add_argument("--telegate-args", default="", help="extra flags for telegate serve (space-separated)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.3 if args.quick else 1.0)
    rounds = args.rounds or (1 if args.quick else 7)
    counts = [int(n) for n in args.clients.split(",")]
    kinds = args.client_kinds.split(",")
    if args.quick:
        counts = counts[:1] + counts[-1:] if len(counts) > 1 else counts
    print(f"# Benchmark 1: acquire+release cycles/s ({c.environment_note()})")
    print(f"# {seconds:g} s per server and round, {rounds} alternating round(s), medians of per-round ratios; pool of {args.sessions} sessions")
    telegate_flags = ("--access-log", args.access_log, *args.telegate_args.split())
    with c.workspace(args.workdir) as where, c.Servers(where) as running:
        servers = [running.start("noop", label="A_noop"),
                   running.start("sqlite", label="B_sqlite"),
                   running.start("telegate", sessions=args.sessions, extra=telegate_flags, label="telegate")]
        if args.baseline_tree:
            servers.append(running.start("telegate", sessions=args.sessions, tree=args.baseline_tree.resolve(),
                                         extra=telegate_flags, label="baseline"))
        rows, rounds_seen = [], []
        for kind in kinds:
            for clients in counts:
                r = c.side_by_side(servers, clients, seconds, rounds, kind)
                rows.append([kind, clients, r.rate("A_noop"), r.rate("B_sqlite"), r.rate("telegate"),
                             r.ratio("telegate", "A_noop"), r.ratio("telegate", "B_sqlite"),
                             c.ms(r.percentile("telegate", 0.5)), c.ms(r.percentile("telegate", 0.99)),
                             c.ms(r.percentile("B_sqlite", 0.5)), c.ms(r.percentile("B_sqlite", 0.99))])
                if args.baseline_tree:
                    rows[-1] += [r.rate("baseline"), r.ratio("baseline", "A_noop"), r.ratio("baseline", "B_sqlite"),
                                 r.ratio("telegate", "baseline"),
                                 round(r.cpu_per_cycle("telegate") * 1e6), round(r.cpu_per_cycle("baseline") * 1e6),
                                 r.cpu_ratio("telegate", "baseline")]
                print(f"  {kind} x{clients}: " + "  ".join(f"{label} {r.rate(label):.0f}/s" for label in r.per_server),
                      file=sys.stderr, flush=True)
                if args.baseline_tree:
                    rounds_seen.append([kind, clients, r.round_ratios("telegate", "A_noop")[0],
                                        r.round_ratios("baseline", "A_noop")[0], *r.round_ratios("telegate", "baseline")])
        headers = ["client", "clients", "A cycles/s", "B cycles/s", "TeleGate cycles/s", "TG/A", "TG/B",
                   "TG p50 ms", "TG p99 ms", "B p50 ms", "B p99 ms"]
        if args.baseline_tree:
            headers += ["baseline cycles/s", "baseline/A", "baseline/B", "TG/baseline",
                        "TG CPU µs/cycle", "baseline CPU µs/cycle", "TG/baseline CPU"]
        print(c.table(headers, rows))
        if rounds_seen:
            print("\nEvery round: TeleGate and the baseline over ceiling A; TeleGate over the baseline"
                  " (cycles/s; CPU per cycle):\n")
            print(c.table(["client", "clients", "TG/A by round", "baseline/A by round",
                           "TG/baseline cycles/s by round", "TG/baseline CPU by round"], rounds_seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
