"""Watch the pool: one line of counts every --interval seconds (Ctrl-C to stop).

    python examples/status_monitor.py --url http://127.0.0.1:8000 --key KEY [--sessions]

With an admin key, --sessions also lists the sessions that are not free (who holds
them, flood waits, why disabled).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from telegram_session_manager import PermissionDenied, TelegramSessionManagerClient, TeleGateError

# A console that cannot show a character (an emoji session name on a cp1251 Windows console, or
# output piped to a file there) gets an escape like \U0001f642 instead of a crash.
if hasattr(sys.stdout, "reconfigure"):
    sys.stdout.reconfigure(errors="backslashreplace")


def show(client: TelegramSessionManagerClient, sessions: bool) -> bool:
    """Print one status line (and busy sessions); False when --sessions needs an admin key."""
    s = client.get_status()
    line = (f"{time.strftime('%H:%M:%S')} total {s['total']}  free {s['free']}  in use {s['in_use']}  "
            f"flood wait {s['in_floodwait']}  disabled {s.get('disabled', 0)}")
    if s.get("next_available"):
        line += f"  next free at {s['next_available']}"
    print(line, flush=True)
    if not sessions:
        return True
    for state in ("in_use", "in_floodwait", "disabled"):
        try:
            rows = client.list_sessions(state=state, limit=50)["sessions"]
        except PermissionDenied:
            print("--sessions needs an admin key; showing counts only", file=sys.stderr)
            return False
        for row in rows:
            extra = {"in_use": f"held by {row.get('holder')} until {row.get('lease_expires_at')}",
                     "in_floodwait": f"flood wait until {row.get('flood_wait_until')}",
                     "disabled": f"disabled: {row.get('disabled_reason')}"}[state]
            print(f"    #{row['id']} {row['name']}: {extra}", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="print the TeleGate pool status periodically")
    parser.add_argument("--url", default=os.environ.get("TELEGATE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--key", default=os.environ.get("TELEGATE_API_KEY"))
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=0, help="stop after this many lines (0: run until Ctrl-C)")
    parser.add_argument("--sessions", action="store_true", help="list busy sessions too (admin key)")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("give --key or set TELEGATE_API_KEY")

    with TelegramSessionManagerClient(args.url, args.key) as client:
        shown = 0
        try:
            while True:
                try:
                    if not show(client, args.sessions):
                        args.sessions = False
                except TeleGateError as exc:  # keep watching through a server restart
                    print(f"{time.strftime('%H:%M:%S')} server unavailable: {exc}", flush=True)
                shown += 1
                if args.count and shown >= args.count:
                    return 0
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
