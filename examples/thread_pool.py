"""A pool of worker threads sharing one client: each job leases a session, works, releases.

    python examples/thread_pool.py --url http://127.0.0.1:8000 --key KEY --threads 16 --jobs 64

More threads than sessions is fine: a thread that finds nothing free waits (and says
so) until another releases. No two threads ever hold the same session.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from telegram_session_manager import TelegramSessionManagerClient

# A console that cannot show a character (an emoji session name on a cp1251 Windows console, or
# output piped to a file there) gets an escape like \U0001f642 instead of a crash.
if hasattr(sys.stdout, "reconfigure"):
    sys.stdout.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a thread pool of TeleGate workers")
    parser.add_argument("--url", default=os.environ.get("TELEGATE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--key", default=os.environ.get("TELEGATE_API_KEY"))
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--work", type=float, default=0.05, help="seconds of pretend work per job")
    parser.add_argument("--poll", type=float, default=None,
                        help="cap every sleep of the client at this many seconds (demo/testing)")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("give --key or set TELEGATE_API_KEY")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(message)s")

    options = {}
    if args.poll is not None:
        options["sleep"] = lambda seconds: time.sleep(min(seconds, args.poll))
    used: dict[str, int] = {}
    lock = threading.Lock()

    with TelegramSessionManagerClient(args.url, args.key, **options) as client:
        def job(number: int) -> None:
            with client.session(ttl=60) as s:
                time.sleep(random.uniform(0, args.work))  # the Telegram work
                with lock:
                    used[s.session_name] = used.get(s.session_name, 0) + 1

        with ThreadPoolExecutor(args.threads, thread_name_prefix="worker") as pool:
            for future in [pool.submit(job, n) for n in range(args.jobs)]:
                future.result()
        print(f"{args.jobs} jobs done on {len(used)} sessions: {dict(sorted(used.items()))}")
        print(f"pool: {client.get_status()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
