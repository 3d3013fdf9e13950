"""A Telethon worker on any machine: TeleGate hands it a ready client of a leased account.

    pip install 'telegram-session-manager-client[telethon]'     # or: pip install './sdk[telethon]'
    TELEGATE_URL=https://telegate.example:8443 TELEGATE_API_KEY=KEY python examples/telethon_ready.py

The server keeps each account (auth key, DC, api_id/api_hash, device fingerprint, proxy,
entity cache, update state): ``client.telethon()`` builds a ``TelegramClient`` from it in
memory, connected through the account's own proxy. Nothing is on this machine's disk. At the
end of the block the entities met and the update state go back to the server, a
FloodWaitError rests the account for that method only, a dead account is disabled, and the
lease ends. The worker key needs ``telegate keys create NAME --accounts``.

A pool of .session files (no accounts on the server): ``--sessions-dir DIR`` (or
TELEGATE_SESSIONS_DIR) opens ``DIR/<name>.session`` of a Telethon session instead;
``--api-id``/``--api-hash`` where the sessions' meta has none. ``--offline`` builds the
client without connecting (what the tests run).
"""
from __future__ import annotations

import argparse
import os
import sys

from telethon import errors

from telegram_session_manager import NoSessionAvailable, TelegramSessionManagerClient

# A console that cannot show a character (an emoji session name on a cp1251 Windows console, or
# output piped to a file there) gets an escape like \U0001f642 instead of a crash.
if hasattr(sys.stdout, "reconfigure"):
    sys.stdout.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a Telethon worker with ready clients from TeleGate")
    parser.add_argument("--url", default=os.environ.get("TELEGATE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--key", default=os.environ.get("TELEGATE_API_KEY"))
    parser.add_argument("--sessions-dir", help="a pool of .session files: open DIR/<name>.session")
    parser.add_argument("--api-id", type=int, help="for .session files whose meta has none")
    parser.add_argument("--api-hash")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--offline", action="store_true", help="build the client, do not connect")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("give --key or set TELEGATE_API_KEY")
    extra = {name: value for name, value in (("api_id", args.api_id), ("api_hash", args.api_hash)) if value}

    with TelegramSessionManagerClient(args.url, args.key) as client:
        for _ in range(args.jobs):
            try:
                with client.telethon(connect=not args.offline, sessions_dir=args.sessions_dir,
                                     flood_sleep_threshold=0, **extra) as tg:
                    if args.offline:
                        print(f"built a Telethon client on DC {tg.session.dc_id} (api_id {tg.api_id})")
                        continue
                    me = tg.get_me()
                    print(f"logged in as {me.username or me.id}")
                    # ... the real work: tg.send_message(...), tg.get_participants(...), ...
            except errors.FloodWaitError as e:  # already reported: the account rests for that method
                print(f"flood wait of {e.seconds} s; the next job gets another account")
            except NoSessionAvailable as e:
                print(f"no account available: {e}")
                return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
