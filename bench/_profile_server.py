"""Where one TeleGate server's Python time goes under load: py-spy on the server, 16 thin clients.

    python bench/_profile_server.py [--tree DIR] [--clients 16] [--seconds 30] [--out prof.txt]

Starts ``telegate serve`` on SQLite (64 sessions, the access log on, as shipped) from this
checkout or ``--tree``, records it with ``py-spy record --gil`` (only the thread holding
the GIL: the server's Python CPU, not its waits) while thin keep-alive clients loop
acquire (with a ``request_id``) + release, and prints two Markdown tables: the share of
samples under a few entry points (inclusive), and the functions the samples were in
(self). Not a benchmark (no ratio; the smoke test does not run it): a profile to compare
two trees by, taken one after the other.
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

#: (what, a frame that marks it): inclusive shares.
GROUPS = (("waitress's loop (`Server.run`)", "Server.run ("),
          ("a request on its thread (`WSGITask.execute`)", "WSGITask.execute ("),
          ("Bottle (`Bottle.__call__`)", "Bottle.__call__ ("),
          ("the routes (`acquire`, `release`)", "create_app.<locals>."),
          ("store writes (`SQLiteEngine.write`)", "SQLiteEngine.write ("),
          ("authentication (`_authorise`)", "_ApiPlugin._authorise ("),
          ("logging (`Logger.info`)", "Logger.info ("),
          ("JSON (`json/`)", "json/"),
          ("request parsing (`HTTPChannel.received`)", "HTTPChannel.received ("))


def _short(frame: str) -> str:
    match = re.match(r"(.*?) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    function, path = match.groups()
    path = re.sub(r"^.*?/(site-packages|server)/", "", path)
    return f"{function} ({re.sub(r'^.*/lib/python3[.][0-9]+/', '', path)})"


def summarise(raw: Path, top: int = 12) -> str:
    total, inclusive, own = 0, collections.Counter(), collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        for what, mark in GROUPS:
            if mark in stack:
                inclusive[what] += n
        own[_short(stack.split(";")[-1])] += n
    share = lambda n: f"{100 * n / max(1, total):.1f} %"  # noqa: E731
    out = [f"{total} samples", "", c.table(["under", "share"], [[w, share(inclusive[w])] for w, _ in GROUPS]), "",
           c.table(["function (self)", "share"], [[f"`{f}`", share(n)] for f, n in own.most_common(top)])]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=None, help="profile the TeleGate of this checkout")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=None, help="keep py-spy's raw samples here")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with c.workspace(None) as where, c.Servers(where) as running:
        server = running.start("telegate", sessions=64, extra=("--access-log", "true"), label="profiled",
                               tree=None if args.tree is None else args.tree.resolve())
        raw = args.out or where / "profile.txt"
        recorder = subprocess.Popen([spy, "record", "--pid", str(server.pid), "--format", "raw", "-o", str(raw),
                                     "--duration", str(int(args.seconds)), "--rate", "200", "--gil", "--nonblocking"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # py-spy attached
        result = c.run_load(server, args.clients, args.seconds - 1, "thin")
        recorder.wait(args.seconds + 60)
        print(f"# Profile: {args.clients} thin clients, {result.cycles / result.seconds:.0f} cycles/s, server CPU"
              f" {1e6 * result.server_cpu / max(1, result.all_cycles):.0f} µs/cycle ({c.environment_note()})")
        print(summarise(raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
