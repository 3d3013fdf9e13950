"""The asyncio form of pyrogram_ready.py: ``async with client.pyrogram() as app:``.

    pip install 'telegram-session-manager-client[pyrogram]'
    TELEGATE_URL=https://telegate.example:8443 TELEGATE_API_KEY=KEY python examples/pyrogram_ready_async.py

Several jobs run at once, each with its own leased account (``--jobs``); ``--sessions-dir``,
``--api-id``/``--api-hash`` and ``--offline`` as in pyrogram_ready.py.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys

from pyrogram import errors

from telegram_session_manager import AsyncTelegramSessionManagerClient, NoSessionAvailable

# A console that cannot show a character (an emoji session name on a cp1251 Windows console, or
# output piped to a file there) gets an escape like \U0001f642 instead of a crash.
if hasattr(sys.stdout, "reconfigure"):
    sys.stdout.reconfigure(errors="backslashreplace")


async def one_job(client: AsyncTelegramSessionManagerClient, args: argparse.Namespace, extra: dict) -> None:
    try:
        async with client.pyrogram(connect=not args.offline, sessions_dir=args.sessions_dir,
                                   sleep_threshold=0, **extra) as app:
            if args.offline:
                print(f"built a kurigram client {app.name} (api_id {app.api_id})")
                return
            me = await app.get_me()
            print(f"logged in as {me.username or me.id}")
            # ... the real work: await app.send_message(...), ...
    except errors.FloodWait as e:  # already reported: the account rests for that method
        print(f"flood wait of {e.value} s")


async def run(args: argparse.Namespace) -> int:
    extra = {name: value for name, value in (("api_id", args.api_id), ("api_hash", args.api_hash)) if value}
    async with AsyncTelegramSessionManagerClient(args.url, args.key) as client:
        try:
            await asyncio.gather(*(one_job(client, args, extra) for _ in range(args.jobs)))
        except NoSessionAvailable as e:
            print(f"no account available: {e}")
            return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="an asyncio kurigram worker with ready clients from TeleGate")
    parser.add_argument("--url", default=os.environ.get("TELEGATE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--key", default=os.environ.get("TELEGATE_API_KEY"))
    parser.add_argument("--sessions-dir", help="a pool of .session files: open DIR/<name>.session")
    parser.add_argument("--api-id", type=int)
    parser.add_argument("--api-hash")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--offline", action="store_true", help="build the clients, do not connect")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("give --key or set TELEGATE_API_KEY")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
