"""Benchmark: `telegate sessions import` of a folder of accounts with sellers' .json files.

    python bench/import_accounts.py [--quick] [--rounds R] [--accounts 10000] [--baseline-tree DIR]

Makes a folder of ``--accounts`` accounts, half Telethon and half Pyrogram ``.session``
files (written by ``telegate.accounts``, 5 cached entities each) and a seller's ``.json``
beside every one (proxy, device, 2FA). Each round, in alternating order:

* ``read``   -- reading the folder alone in this process (``plan_folder`` + ``read_candidate``
               for every entry): the formats library's share of the import.
* ``import`` -- ``python -m telegate sessions import DIR --db NEW.db`` (the whole command:
               reading, encrypting where the store does, storing in batches), wall time.
* ``names``  -- with ``--baseline-tree``, the same command of that checkout, which (before
               issue 16) registered names only: what keeping the accounts costs on top.

Printed: median seconds of each, accounts per second, and the median per-round ratio
import / names. The master key of the store, if it needs one, comes from a fresh
``TELEGATE_MASTER_KEY`` for the run.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

from telegate.accounts import new_account, plan_folder, read_candidate  # noqa: E402
from telegate.accounts._formats import write_session_file  # noqa: E402


def make_folder(folder: Path, count: int) -> None:
    """``count`` accounts: one file per library written by ``write_session_file``, copied with a fresh key
    each (written without fsync: these are throwaway files)."""
    folder.mkdir(parents=True, exist_ok=True)
    templates = {}
    for kind in ("telethon", "pyrogram"):
        entities = [{"id": 1000 + e, "hash": e * 7919, "type": "user", "username": f"u{e}", "phone": None,
                     "name": None} for e in range(5)]
        account = new_account(dc_id=2, server_address="149.154.167.51", port=443,
                              auth_key=base64.b64encode(os.urandom(256)).decode(), user_id=10_000_000, api_id=2040,
                              state={"entities": entities,
                                     "update_state": {"pts": 1, "qts": 0, "date": 1700000000, "seq": 1}})
        templates[kind] = folder.parent / f"template-{kind}.session"
        if not templates[kind].exists():
            write_session_file(account, templates[kind], kind)
    for number in range(count):
        name = f"acc{number:06d}"
        kind = "telethon" if number % 2 else "pyrogram"
        target = folder / f"{name}.session"
        shutil.copyfile(templates[kind], target)
        conn = sqlite3.connect(target)
        conn.execute("PRAGMA synchronous = OFF")
        with conn:
            conn.execute("UPDATE sessions SET auth_key = ?", (os.urandom(256),))
            if kind == "pyrogram":
                conn.execute("UPDATE sessions SET user_id = ?", (10_000_000 + number,))
        conn.close()
        (folder / f"{name}.json").write_text(json.dumps({
            "app_id": 2040, "app_hash": os.urandom(16).hex(), "device": "Desktop", "sdk": "Windows 10",
            "app_version": "4.8.1 x64", "lang_pack": "tdesktop", "lang_code": "en", "system_lang_pack": "en-US",
            "twoFA": os.urandom(6).hex(), "phone": f"7999{number:07d}", "username": f"seller{number}",
            "is_premium": False, "id": 10_000_000 + number,
            "proxy": ["socks5", "10.0.0.1", 1080 + number % 1000, True, "user", os.urandom(6).hex()]}))


def read_all(folder: Path) -> int:
    candidates, _ = plan_folder(folder)
    return sum(1 for candidate in candidates for _ in read_candidate(candidate))


def run_import(tree: Path, folder: Path, db: Path) -> float:
    env = c.server_env(tree)
    env.setdefault("TELEGATE_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "telegate", "sessions", "import", str(folder), "--db", str(db)],
                          env=env, cwd=tree, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no output)"]
        raise ImportFailed(f"the import of {tree} failed: {lines[-1]}")
    return seconds


class ImportFailed(Exception):
    """The command failed (a tree whose store keeps no accounts, say): said in the table, not hidden."""


def main() -> None:
    parser = c.arg_parser(__doc__.splitlines()[0], baseline_tree=True)
    parser.add_argument("--accounts", type=int, default=None, help="accounts in the folder (default 10000)")
    args = parser.parse_args()
    count = args.accounts or (200 if args.quick else 10_000)
    rounds = args.rounds or (1 if args.quick else 3)
    with c.workspace(args.workdir) as work:
        folder = work / "accounts"
        started = time.perf_counter()
        make_folder(folder, count)
        print(f"# Benchmark: telegate sessions import of {count} accounts with sellers' .json files\n")
        print(f"made the folder in {time.perf_counter() - started:.1f} s", flush=True)
        times: dict[str, list[float]] = {"read": [], "import": [], "names": []}
        ratios = []
        failed = ""
        for number in range(rounds):
            order = ["read", "import", "names"] if number % 2 == 0 else ["names", "import", "read"]
            this: dict[str, float] = {}
            for what in order:
                if what == "read":
                    started = time.perf_counter()
                    assert read_all(folder) == count
                    this[what] = time.perf_counter() - started
                elif what == "import":
                    try:
                        this[what] = run_import(c.ROOT, folder, work / f"new{number}.db")
                    except ImportFailed as exc:
                        failed = str(exc)
                elif args.baseline_tree is not None:
                    this[what] = run_import(args.baseline_tree, folder, work / f"old{number}.db")
            for what, seconds in this.items():
                times[what].append(seconds)
            if "names" in this and "import" in this:
                ratios.append(this["import"] / this["names"])
            print(f"round {number + 1}: " + "  ".join(f"{k} {v:.2f} s" for k, v in this.items())
                  + (f"  import/names {ratios[-1]:.2f}x" if ratios else ""), flush=True)
        print(f"\n| what | median of {rounds} round(s) | accounts/s |")
        print("|---|---:|---:|")
        for what, values in times.items():
            if values:
                median = statistics.median(values)
                print(f"| {what} | {median:.2f} s | {count / median:,.0f} |")
        if ratios:
            print(f"| import / names-only import of {args.baseline_tree} | {statistics.median(ratios):.2f}x | |")
        if failed:
            print(f"| import | {failed} | |")


if __name__ == "__main__":
    main()
