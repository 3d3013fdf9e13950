"""One client process of ``bench/fleet.py``: THREADS keep-alive workers against one server.

    python bench/_fleet_client.py cycle --port P --key K --threads T [--hold S] [--wait S]

The parent starts several of these, so that a thousand workers are not a thousand threads
behind one GIL. Protocol on stdin/stdout (one JSON object per line):

1. each worker thread opens its connection; then the process prints ``{"ready": T}``;
2. the parent writes ``{"start": t0, "stop": t1}`` (``time.time()`` values) once every
   client process is ready; workers loop until ``t1`` and count what began after ``t0``;
3. the process prints its result and exits.

Modes:

* ``cycle``: acquire (``ttl`` 60) then release at once, in a loop: throughput.
* ``handoff``: acquire with ``{"wait": W}``, hold the lease ``--hold`` seconds, release,
  repeat: who gets the freed sessions, and how fast (each grant and each release is
  time-stamped, so the parent can match a release to the grant it enabled).
* ``poll``: the same, for a server without long-polls: on a 503, sleep its Retry-After
  (at most 5 s, as the SDK did) and ask again.
* ``once``: one long-poll that waits until the end of the window; a granted lease is
  held to the end, then released (the parent measures the server while they wait).

Only 127.0.0.1; every request has a socket timeout; the run ends at ``t1`` whatever happens.
"""
from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
import uuid


class Worker:
    def __init__(self, port: int, key: str, number: int) -> None:
        self.number = number
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=90)
        self.headers = {"X-API-Key": key, "Content-Type": "application/json"}
        self.cycles = 0
        self.misses = 0
        self.latencies: list[float] = []
        self.grants: list[tuple[float, float, int]] = []  # (asked at, granted at, session id)
        self.releases: list[tuple[float, int]] = []  # (released at, session id)
        self.unserved = 0.0  # how long it had been asking, unserved, when the run ended
        self.error: str | None = None
        self.retry_after = 1.0

    def release(self, lease: dict) -> None:
        status, reply = self.post("/release", {"session_id": lease["session_id"], "lease_token": lease["lease_token"]})
        if status != 200:
            raise RuntimeError(f"release answered {status}: {reply}")

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        self.conn.request("POST", path, json.dumps(body).encode(), self.headers)
        response = self.conn.getresponse()
        data = response.read()
        self.retry_after = float(response.getheader("Retry-After") or 1)
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, {"raw": data[:200].decode("latin-1")}

    def cycle_loop(self, start: float, stop: float) -> None:
        while True:
            began = time.time()
            if began >= stop:
                return
            # A fresh request_id with each acquire, as the SDK sends one.
            status, lease = self.post("/session", {"ttl": 60, "request_id": uuid.uuid4().hex})
            if status != 200:
                if status != 503:
                    raise RuntimeError(f"acquire answered {status}: {lease}")
                if began >= start:
                    self.misses += 1
                continue
            self.release(lease)
            if began >= start:
                self.cycles += 1
                self.latencies.append(time.time() - began)

    def handoff_loop(self, start: float, stop: float, hold: float, wait: float, poll: bool = False) -> None:
        asked = time.time()
        request_id = uuid.uuid4().hex  # one per lease asked for, kept over its tries, as the SDK does
        while True:
            if time.time() >= stop:
                self.unserved = stop - max(asked, start)
                return
            if poll:
                status, lease = self.post("/session", {"ttl": 60, "request_id": request_id})
            else:
                status, lease = self.post("/session", {"ttl": 60, "request_id": request_id,
                                                       "wait": min(wait, max(0.0, stop - time.time()))})
            granted = time.time()
            if status != 200:
                if status != 503:
                    raise RuntimeError(f"acquire answered {status}: {lease}")
                if poll:
                    time.sleep(min(5.0, self.retry_after, max(0.0, stop - granted)))
                continue
            if asked >= start:
                self.grants.append((asked, granted, lease["session_id"]))
            time.sleep(hold)  # the worker's own work on the account
            self.releases.append((time.time(), lease["session_id"]))  # when the release was sent
            self.release(lease)
            if asked >= start:
                self.cycles += 1
            asked = time.time()
            request_id = uuid.uuid4().hex

    def once(self, start: float, stop: float) -> None:
        asked = time.time()
        status, lease = self.post("/session", {"ttl": 120, "request_id": uuid.uuid4().hex,
                                               "wait": min(60.0, max(0.5, stop - asked + 1))})
        granted = time.time()
        if status == 200:
            self.grants.append((asked, granted, lease["session_id"]))
            time.sleep(max(0.0, stop - time.time()))
            self.post("/release", {"session_id": lease["session_id"], "lease_token": lease["lease_token"]})
        elif status == 503:
            self.misses += 1
        else:
            raise RuntimeError(f"acquire answered {status}: {lease}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("cycle", "handoff", "poll", "once"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--first", type=int, default=0, help="number of this process's first worker")
    parser.add_argument("--hold", type=float, default=0.05)
    parser.add_argument("--wait", type=float, default=30.0)
    args = parser.parse_args()
    threading.stack_size(256 * 1024)
    workers = [Worker(args.port, args.key, args.first + i) for i in range(args.threads)]
    for worker in workers:
        worker.conn.connect()
    print(json.dumps({"ready": len(workers)}), flush=True)
    line = sys.stdin.readline()
    if not line:
        return 1
    window = json.loads(line)
    start, stop = window["start"], window["stop"]

    def run(worker: Worker) -> None:
        try:
            if args.mode == "cycle":
                worker.cycle_loop(start, stop)
            elif args.mode == "once":
                worker.once(start, stop)
            else:
                worker.handoff_loop(start, stop, args.hold, args.wait, poll=args.mode == "poll")
        except Exception as exc:  # reported to the parent
            worker.error = repr(exc)
        finally:
            worker.conn.close()

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, stop - time.time()) + 100)
    print(json.dumps({
        "workers": [{"n": w.number, "cycles": w.cycles, "misses": w.misses, "latencies": w.latencies,
                     "grants": w.grants, "releases": w.releases, "unserved": w.unserved, "error": w.error}
                    for w in workers],
        "hung": sum(t.is_alive() for t in threads),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
