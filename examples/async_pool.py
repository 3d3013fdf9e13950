"""An asyncio worker pool: N coroutines share one AsyncTelegramSessionManagerClient.

    python examples/async_pool.py --url http://127.0.0.1:8000 --key KEY --workers 8 --jobs 32

Each job is ``async with client.session() as s: ...``; a worker that finds no free
session waits (logged, with asyncio.sleep, so the other workers keep running).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys

from telegram_session_manager import AsyncTelegramSessionManagerClient

# A console that cannot show a character (an emoji session name on a cp1251 Windows console, or
# output piped to a file there) gets an escape like \U0001f642 instead of a crash.
if hasattr(sys.stdout, "reconfigure"):
    sys.stdout.reconfigure(errors="backslashreplace")


async def worker(number: int, client: AsyncTelegramSessionManagerClient, jobs: asyncio.Queue,
                 work: float, done: dict[str, int]) -> None:
    while True:
        try:
            job = jobs.get_nowait()
        except asyncio.QueueEmpty:
            return
        async with client.session(ttl=60) as s:
            await asyncio.sleep(random.uniform(0, work))  # the Telegram work
            done[s.session_name] = done.get(s.session_name, 0) + 1
            print(f"worker {number}: job {job} on session {s.session_name}")


async def run(args: argparse.Namespace) -> int:
    options = {}
    if args.poll is not None:
        async def quick_sleep(seconds: float) -> None:
            await asyncio.sleep(min(seconds, args.poll))
        options["sleep"] = quick_sleep
    async with AsyncTelegramSessionManagerClient(args.url, args.key, **options) as client:
        jobs: asyncio.Queue = asyncio.Queue()
        for job in range(args.jobs):
            jobs.put_nowait(job)
        done: dict[str, int] = {}
        await asyncio.gather(*(worker(n, client, jobs, args.work, done) for n in range(args.workers)))
        print(f"{args.jobs} jobs done on {len(done)} sessions: {dict(sorted(done.items()))}")
        print(f"pool: {await client.get_status()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="an asyncio pool of TeleGate workers")
    parser.add_argument("--url", default=os.environ.get("TELEGATE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--key", default=os.environ.get("TELEGATE_API_KEY"))
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--work", type=float, default=0.05, help="seconds of pretend work per job")
    parser.add_argument("--poll", type=float, default=None,
                        help="cap every sleep of the client at this many seconds (demo/testing)")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("give --key or set TELEGATE_API_KEY")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
