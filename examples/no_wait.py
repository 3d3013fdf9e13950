"""auto_wait=False: handle NoSessionAvailable yourself (your own retry logic).

    python examples/no_wait.py --url http://127.0.0.1:8000 --key KEY --attempts 3

Tries up to --attempts times; between tries it waits what the exception says. Exits 0
with a session used and released, 2 when it gave up.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from telegram_session_manager import NoSessionAvailable, TelegramSessionManagerClient

# A console that cannot show a character (an emoji session name on a cp1251 Windows console, or
# output piped to a file there) gets an escape like \U0001f642 instead of a crash.
if hasattr(sys.stdout, "reconfigure"):
    sys.stdout.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="lease a session without auto_wait")
    parser.add_argument("--url", default=os.environ.get("TELEGATE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--key", default=os.environ.get("TELEGATE_API_KEY"))
    parser.add_argument("--attempts", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("give --key or set TELEGATE_API_KEY")

    with TelegramSessionManagerClient(base_url=args.url, api_key=args.key, auto_wait=False) as client:
        for attempt in range(1, args.attempts + 1):
            try:
                session = client.get_session()
            except NoSessionAvailable as e:
                print(f"Нет свободной сессии. В Flood Wait: {e.waiting_count}. "
                      f"Ближайшая разблокировка через {e.next_release_in} сек. (in use: {e.in_use})")
                if not e.can_free_up:
                    print("Nothing is in use or in flood wait: waiting cannot help; giving up.")
                    return 2
                if attempt == args.attempts:
                    break
                # Our own policy: the flood wait end if known, else a short poll.
                delay = e.next_release_in if e.next_release_in is not None else (e.retry_after or 1)
                print(f"Attempt {attempt} failed; waiting {delay:.0f} s before attempt {attempt + 1}")
                time.sleep(delay)
                continue
            try:
                print(f"Получена сессия ID={session['session_id']}, имя={session['session_name']}")
                # ... work with the account ...
            finally:
                client.release_session(session["session_id"])
                print("Сессия освобождена")
            return 0
    print(f"No session after {args.attempts} attempts; giving up.")
    return 2


if __name__ == "__main__":
    sys.exit(main())
