"""A Telethon worker: lease an account from TeleGate, use it, give it back.

    pip install telethon
    python examples/telethon_worker.py --url http://127.0.0.1:8000 --key KEY \
        --api-id 12345 --api-hash 0123456789abcdef --sessions-dir ./sessions

``flood_sleep_threshold=0`` makes Telethon raise every FloodWaitError instead of
sleeping through short ones, so every flood reaches TeleGate: the error propagates out
of ``async with tm.session()``, the account goes into flood wait for exactly
``e.seconds``, and the next job gets another account. A dead account
(AuthKeyUnregisteredError, UserDeactivatedBanError, ...) is disabled the same way.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from telethon import TelegramClient, errors

from telegram_session_manager import AsyncTelegramSessionManagerClient, NoSessionAvailable

# A console that cannot show a character (an emoji session name on a cp1251 Windows console, or
# output piped to a file there) gets an escape like \U0001f642 instead of a crash.
if hasattr(sys.stdout, "reconfigure"):
    sys.stdout.reconfigure(errors="backslashreplace")


async def one_job(tm: AsyncTelegramSessionManagerClient, args: argparse.Namespace) -> None:
    async with tm.session(ttl=120) as s:
        path = os.path.join(args.sessions_dir, s.session_name)
        async with TelegramClient(path, args.api_id, args.api_hash, flood_sleep_threshold=0) as tg:
            me = await tg.get_me()
            print(f"session {s.session_name}: logged in as {me.username or me.id}")
            # ... the real work: tg.send_message(...), tg.get_participants(...), ...


async def run(args: argparse.Namespace) -> int:
    async with AsyncTelegramSessionManagerClient(args.url, args.key, max_wait=args.max_wait) as tm:
        for _ in range(args.jobs):
            try:
                await one_job(tm, args)
            except errors.FloodWaitError as e:
                # Already reported: TeleGate keeps this account out for e.seconds.
                print(f"flood wait of {e.seconds} s; continuing with another account")
            except errors.RPCError as e:
                print(f"Telegram error {type(e).__name__}: {e}")
            except NoSessionAvailable as e:
                print(f"no account available: {e}")
                return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a Telethon worker leasing accounts from TeleGate")
    parser.add_argument("--url", default=os.environ.get("TELEGATE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--key", default=os.environ.get("TELEGATE_API_KEY"))
    parser.add_argument("--api-id", type=int, default=int(os.environ.get("TELEGRAM_API_ID", "0")))
    parser.add_argument("--api-hash", default=os.environ.get("TELEGRAM_API_HASH"))
    parser.add_argument("--sessions-dir", default=os.environ.get("TELEGATE_SESSIONS_DIR", "."))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--max-wait", type=float, default=None)
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("give --key or set TELEGATE_API_KEY")
    if not args.api_id or not args.api_hash:
        parser.error("give --api-id/--api-hash or set TELEGRAM_API_ID/TELEGRAM_API_HASH (from my.telegram.org)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
