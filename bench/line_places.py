"""Benchmark 8: waits longer than one long-poll: does a worker that polls again keep its place?

    python bench/line_places.py [--quick] [--seconds S] [--rounds R] [--workers 12] [--sessions 2]
                                [--poll 0.25] [--hold 0.1]

More workers than sessions, each looping: long-poll ``POST /session`` with a short
``wait`` (``--poll``) until it gets a session, hold it ``--hold`` seconds, release. The
line is longer than one poll, so most leases take several polls. Two ways of polling
again, in alternating rounds against one TeleGate server:

* ``request_id``: every poll of one lease sends the same ``request_id`` (what the SDK
  does): a poll that ran out takes its place back.
* ``none``: no ``request_id``: every poll joins the end of the line (the baseline: what
  every poll got before places were kept).

Printed per way: leases, the wait of a lease from its first poll to its grant (p50, p99,
max) and the spread of leases over workers (fewest / most). Ratios are request_id over
none, so below 1 means shorter waits.
"""
from __future__ import annotations

import http.client
import json
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

WAYS = ("request_id", "none")


def run_round(server: c.Server, way: str, workers: int, seconds: float, poll: float, hold: float
              ) -> tuple[list[float], list[int]]:
    """(the wait of every lease granted, leases per worker) of one round."""
    waits: list[float] = []
    counts = [0] * workers
    lock = threading.Lock()
    start = threading.Barrier(workers)
    headers = {"X-API-Key": server.api_key, "Content-Type": "application/json"}

    def work(number: int) -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=poll + 30)
        try:
            start.wait(30)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                body = {"ttl": 60, "wait": poll, "holder": f"w{number}"}
                if way == "request_id":
                    body["request_id"] = uuid.uuid4().hex
                asked = time.monotonic()
                while True:  # poll until granted (the lease's polls share its request_id)
                    conn.request("POST", "/session", json.dumps(body), headers)
                    reply = conn.getresponse()
                    data = json.loads(reply.read())
                    if reply.status == 200:
                        break
                    if reply.status != 503:
                        raise RuntimeError(f"acquire answered {reply.status}: {data}")
                    if time.monotonic() > deadline + 30:
                        return
                waited = time.monotonic() - asked
                time.sleep(hold)  # the worker's job on the account
                conn.request("POST", "/release", json.dumps(
                    {"session_id": data["session_id"], "lease_token": data["lease_token"]}), headers)
                reply = conn.getresponse()
                reply.read()
                if reply.status != 200:
                    raise RuntimeError(f"release answered {reply.status}")
                with lock:
                    waits.append(waited)
                    counts[number] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    return waits, counts


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = c.arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=12, help="workers (more than sessions)")
    parser.add_argument("--sessions", type=int, default=2, help="sessions in the pool")
    parser.add_argument("--poll", type=float, default=0.25, help="each long-poll's wait, seconds")
    parser.add_argument("--hold", type=float, default=0.1, help="how long a worker holds a session, seconds")
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.8 if args.quick else 8.0)
    rounds = args.rounds or (1 if args.quick else 3)
    print(f"# Benchmark 8: polling again keeps a worker's place in line ({c.environment_note()})")
    print(f"# {args.workers} workers, {args.sessions} sessions, polls of {args.poll:g} s, holds of {args.hold:g} s;"
          f" {seconds:g} s per way and round, {rounds} alternating rounds")
    rows, pooled = [], {way: ([], []) for way in WAYS}
    with c.workspace(args.workdir) as where:
        with c.Server("telegate", where, sessions=args.sessions, label="telegate",
                      extra=("--access-log", args.access_log)) as server:
            for number in range(1, rounds + 1):
                for way in WAYS:
                    waits, counts = run_round(server, way, args.workers, seconds, args.poll, args.hold)
                    pooled[way][0].extend(waits)
                    pooled[way][1].extend(counts)
                    rows.append([number, way, len(waits), c.ms(percentile(waits, 0.5)),
                                 c.ms(percentile(waits, 0.99)), c.ms(max(waits, default=float("nan"))),
                                 f"{min(counts)} / {max(counts)}"])
        for way in WAYS:
            waits, counts = pooled[way]
            rows.append(["all", way, len(waits), c.ms(percentile(waits, 0.5)), c.ms(percentile(waits, 0.99)),
                         c.ms(max(waits, default=float("nan"))), f"{min(counts)} / {max(counts)}"])
        print(c.table(["round", "polls again with", "leases", "wait p50 ms", "wait p99 ms", "wait max ms",
                       "leases per worker, fewest / most"], rows))
        kept, baseline = pooled["request_id"][0], pooled["none"][0]
        if kept and baseline:
            print(f"request_id / none: wait p99 {percentile(kept, 0.99) / percentile(baseline, 0.99):.2f} x,"
                  f" wait max {max(kept) / max(baseline):.2f} x, p50 {percentile(kept, 0.5) / percentile(baseline, 0.5):.2f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
