"""A kurigram (Pyrogram) worker on any machine: TeleGate hands it a ready client of a leased account.

    pip install 'telegram-session-manager-client[pyrogram]'     # or: pip install './sdk[pyrogram]'
    TELEGATE_URL=https://telegate.example:8443 TELEGATE_API_KEY=KEY python examples/pyrogram_ready.py

kurigram installs under the import name ``pyrogram``, as Pyrogram does: keep only one of the
two in an environment (the ready clients need kurigram). ``client.pyrogram()`` builds a
``Client`` in memory from the leased account (auth key, DC, peers, update state, api_id,
device, proxy); at the end what changed goes back to the server, a FloodWait rests the
account for that method, a dead account is disabled, the lease ends. ``--sessions-dir`` and
``--offline`` as in telethon_ready.py.
"""
from __future__ import annotations

import argparse
import os
import sys

from pyrogram import errors

from telegram_session_manager import NoSessionAvailable, TelegramSessionManagerClient

# A console that cannot show a character (an emoji session name on a cp1251 Windows console, or
# output piped to a file there) gets an escape like \U0001f642 instead of a crash.
if hasattr(sys.stdout, "reconfigure"):
    sys.stdout.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a kurigram worker with ready clients from TeleGate")
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
                with client.pyrogram(connect=not args.offline, sessions_dir=args.sessions_dir,
                                     sleep_threshold=0, **extra) as app:
                    if args.offline:
                        print(f"built a kurigram client {app.name} (api_id {app.api_id})")
                        continue
                    me = app.get_me()
                    print(f"logged in as {me.username or me.id}")
                    # ... the real work: app.send_message(...), app.get_chat_members(...), ...
            except errors.FloodWait as e:  # already reported: the account rests for that method
                print(f"flood wait of {e.value} s; the next job gets another account")
            except NoSessionAvailable as e:
                print(f"no account available: {e}")
                return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
