"""The with-statement: a session for the block, released on every exit.

    python examples/with_statement.py --url http://127.0.0.1:8000 --key KEY [--flood 30]

Inside the block the session is yours (a background thread renews the lease). If
Telegram asks the account to wait, report it (or just let Telethon's FloodWaitError /
Pyrogram's FloodWait propagate out of the block): TeleGate keeps the account out of
the pool until the wait is over. --flood N simulates such a report.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from telegram_session_manager import TelegramSessionManagerClient

# A console that cannot show a character (an emoji session name on a cp1251 Windows console, or
# output piped to a file there) gets an escape like \U0001f642 instead of a crash.
if hasattr(sys.stdout, "reconfigure"):
    sys.stdout.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="lease one session with a with-statement")
    parser.add_argument("--url", default=os.environ.get("TELEGATE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--key", default=os.environ.get("TELEGATE_API_KEY"))
    parser.add_argument("--ttl", type=float, default=60, help="lease TTL in seconds (renewed while held)")
    parser.add_argument("--max-wait", type=float, default=None, help="give up after waiting this long")
    parser.add_argument("--flood", type=float, default=None, help="pretend Telegram said FLOOD_WAIT_<N>")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("give --key or set TELEGATE_API_KEY")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    with TelegramSessionManagerClient(args.url, args.key, max_wait=args.max_wait) as client:
        with client.session(ttl=args.ttl) as s:
            print(f"Using session #{s.session_id} {s.session_name!r} (lease until {s.lease_expires_at})")
            # ... TelegramClient(s.session_name, ...) work goes here ...
            if args.flood is not None:
                s.report_flood_wait(args.flood)
        print(f"Released session #{s.session_id}; pool now: {client.get_status()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
