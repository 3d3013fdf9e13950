"""The ``telegate`` command: serve the pool, manage sessions and keys, show status.

Results go to stdout (``KEY=$(telegate keys create w)`` works); messages go to stderr.
An error is one line, ``telegate: error: ...``, and a non-zero exit.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

from . import __version__
from ._files import create_private
from ._http import iso
from ._sessionfiles import scan_dir
from ._text import unsafe_detail
from .settings import SETTINGS, SettingsError, resolve
from .store import MAX_NAME_LENGTH, STATES, PoolStore, Store, StoreError

__all__ = ["main", "build_parser"]


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def _db_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--db", metavar="FILE", default=None,
                        help="SQLite database file (default: $TELEGATE_DB or telegate.db)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telegate", description="TeleGate: lease Telegram accounts to workers, one at a time.")
    parser.add_argument("--version", action="version", version=f"telegate {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    db = _db_parent()

    serve = commands.add_parser(
        "serve", help="run the HTTP server",
        description="Run the HTTP server under waitress. Every setting can also come from the"
                    " TELEGATE_* environment variable shown; a flag wins over the variable.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="settings:\n" + "\n".join(
            f"  {s.flag:<20} {s.env:<28} default {s.default!s:<12} {s.help}" for s in SETTINGS))
    for setting in SETTINGS:
        serve.add_argument(setting.flag, dest=setting.name, metavar=setting.metavar or None, default=None,
                           help=f"{setting.help} [{setting.env}, default {setting.default}]")

    sessions = commands.add_parser("sessions", help="add, list, enable, disable and remove sessions")
    sub = sessions.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    add = sub.add_parser("add", parents=[db], help="register session names",
                         description="Register sessions by name (the .session file's stem).")
    add.add_argument("names", nargs="*", metavar="NAME")
    add.add_argument("--from-file", metavar="FILE", help="read names one per line from FILE ('-' for stdin);"
                     " blank lines and lines starting with # are skipped")
    add.add_argument("--kind", choices=("telethon", "pyrogram", "unknown"), default="unknown")
    add.add_argument("--meta", metavar="JSON", help='JSON object handed out with each lease, e.g. \'{"proxy": "..."}\'')
    imp = sub.add_parser("import", parents=[db], help="register every *.session file in a folder",
                         description="Register each *.session file in DIR by its stem; files that are not"
                                     " Telethon or Pyrogram session databases are skipped with a warning.")
    imp.add_argument("dir", metavar="DIR", type=Path)
    lst = sub.add_parser("list", parents=[db], help="list sessions and their state")
    lst.add_argument("--state", choices=STATES)
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    rm = sub.add_parser("remove", parents=[db], help="remove sessions by name")
    rm.add_argument("names", nargs="+", metavar="NAME")
    en = sub.add_parser("enable", parents=[db], help="put disabled sessions back in the pool")
    en.add_argument("names", nargs="+", metavar="NAME")
    dis = sub.add_parser("disable", parents=[db], help="take sessions out of the pool")
    dis.add_argument("names", nargs="+", metavar="NAME")
    dis.add_argument("--reason", default="disabled by admin")

    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    ksub = keys.add_subparsers(dest="action", metavar="ACTION")
    ksub.required = True
    create = ksub.add_parser("create", parents=[db], help="create a key; prints only the key on stdout")
    create.add_argument("name")
    create.add_argument("--admin", action="store_true", help="admin scope (manage sessions); default client")
    ksub.add_parser("list", parents=[db], help="list keys (never the keys themselves)")
    revoke = ksub.add_parser("revoke", parents=[db], help="revoke a key by name")
    revoke.add_argument("name")

    commands.add_parser("status", parents=[db], help="pool counts by state")
    backup = commands.add_parser("backup", parents=[db], help="copy the database safely, even while serving")
    backup.add_argument("file", type=Path)
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    return parser


def _open(args: argparse.Namespace) -> Store:
    settings = resolve({"db": args.db})
    creates = (args.command, getattr(args, "action", None)) in {
        ("sessions", "add"), ("sessions", "import"), ("keys", "create")}
    if not creates and isinstance(settings.db, Path) and not settings.db.exists():
        raise CliError(f"database {settings.db} does not exist; pass --db or set TELEGATE_DB"
                       " (telegate serve, sessions add or keys create makes a new one)")
    return Store(settings.db)


def _check_names(names: Sequence[str]) -> list[str]:
    clean = []
    for number, name in enumerate(names, 1):
        name = name.strip()
        if not name or name.startswith("#"):
            continue
        if len(name) > MAX_NAME_LENGTH:
            raise CliError(f"name {number} is over {MAX_NAME_LENGTH} characters: {name[:40]!r}")
        unsafe = unsafe_detail(f"name {number} {name[:40]!r}", name)
        if unsafe:
            raise CliError(unsafe)
        clean.append(name)
    return clean


def _read_names(source: str, stdin: TextIO) -> list[str]:
    # Split on newlines only: splitlines() would also cut at \x0c, \x1c or U+2028, quietly
    # turning one bad name into two; _check_names refuses it instead.
    if source == "-":
        return stdin.read().split("\n")
    try:
        return Path(source).read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise CliError(f"{source} is not UTF-8 text") from None


def _sessions(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    with _open(args) as store:
        if args.action == "add":
            names = list(args.names)
            if args.from_file:
                names += _read_names(args.from_file, stdin)
            names = _check_names(names)
            if not names:
                raise CliError("no names given; pass NAME... or --from-file FILE")
            meta = None
            if args.meta:
                try:
                    meta = json.loads(args.meta)
                except ValueError as exc:
                    raise CliError(f"--meta is not valid JSON: {exc}") from exc
                if not isinstance(meta, dict):
                    raise CliError('--meta must be a JSON object, like \'{"proxy": "socks5://..."}\'')
            added, existing = store.add_sessions(dict.fromkeys(names), kind=args.kind, meta=meta)
            err.write(f"added {len(added)} session(s)" + (f", {len(existing)} already registered" if existing else "") + "\n")
            return 0
        if args.action == "import":
            try:
                found, warnings = scan_dir(args.dir)
            except FileNotFoundError as exc:
                raise CliError(str(exc)) from exc
            for warning in warnings:
                err.write(f"warning: {warning}\n")
            added, existing = store.add_sessions(found, kinds=found)
            err.write(f"imported {len(added)} session(s) from {args.dir}"
                      + (f", {len(existing)} already registered" if existing else "")
                      + (f", {len(warnings)} file(s) skipped" if warnings else "") + "\n")
            return 0
        if args.action == "list":
            return _list_sessions(store, args, out)
        if args.action == "disable" and (unsafe := unsafe_detail("--reason", args.reason)):
            raise CliError(unsafe)
        if args.action == "remove":
            missing = store.remove_sessions_by_name(args.names)
        else:
            missing = store.set_disabled_by_name(args.names, args.action == "disable", args.reason
                                                 if args.action == "disable" else None)
        done = len(args.names) - len(missing)
        err.write(f"{args.action}d {done} session(s)\n")
        if missing:
            raise CliError(f"not registered: {', '.join(missing)}")
        return 0


def _list_sessions(store: PoolStore, args: argparse.Namespace, out: TextIO) -> int:
    now = store.clock()
    offset, page = 0, 5000
    header = False
    while True:
        rows, total = store.list_sessions(state=args.state, limit=page, offset=offset)
        for row in rows:
            if args.json:
                out.write(json.dumps({k: row[k] for k in ("id", "name", "kind", "state", "holder",
                                                         "disabled_reason", "use_count", "flood_count", "meta")}
                                     | {"lease_expires_at": iso(row["lease_expires_at"]) if row["state"] == "in_use" else None,
                                        "flood_wait_until": iso(row["flood_wait_until"]) if row["state"] == "in_floodwait" else None},
                                     ensure_ascii=False) + "\n")
                continue
            if not header:
                out.write(f"{'ID':>6}  {'NAME':<24} {'KIND':<9} {'STATE':<13} DETAIL\n")
                header = True
            detail = ""
            if row["state"] == "in_use":
                detail = f"{row['holder'] or '?'} for {row['lease_expires_at'] - now:.0f}s more"
            elif row["state"] == "in_floodwait":
                detail = f"flood wait {row['flood_wait_until'] - now:.0f}s more"
            elif row["state"] == "disabled":
                detail = row["disabled_reason"] or ""
            out.write(f"{row['id']:>6}  {row['name']:<24} {row['kind']:<9} {row['state']:<13} {detail}\n")
        offset += len(rows)
        if not rows or offset >= total:
            break
    if not header and not args.json:
        out.write("no sessions" + (f" in state {args.state}" if args.state else "") + "\n")
    return 0


def _keys(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _open(args) as store:
        if args.action == "create":
            name = args.name.strip()
            if not name or len(name) > 100:
                raise CliError("key name must be 1 to 100 characters")
            if unsafe := unsafe_detail("the key name", name):  # it is the default holder, shown to the admin
                raise CliError(unsafe)
            key = store.create_key(name, "admin" if args.admin else "client")
            out.write(key + "\n")
            err.write(f"created {'admin' if args.admin else 'client'} key {name!r}; it is shown only once\n")
        elif args.action == "list":
            keys = store.list_keys()
            if not keys:
                out.write("no keys\n")
            for key in keys:
                state = f"revoked {iso(key['revoked_at'])}" if key["revoked_at"] else "active"
                out.write(f"{key['name']:<24} {key['scope']:<7} created {iso(key['created_at'])}  {state}\n")
        else:
            store.revoke_key(args.name)
            err.write(f"revoked key {args.name!r}\n")
    return 0


def _status(args: argparse.Namespace, out: TextIO) -> int:
    with _open(args) as store:
        status = store.status()
    line = "  ".join(f"{state}: {status[state]}" for state in ("total",) + STATES)
    out.write(line + "\n")
    if status["next_available"]:
        out.write(f"next flood wait ends in {status['next_available'] - time.time():.0f}s"
                  f" ({iso(status['next_available'])})\n")
    return 0


def _backup(args: argparse.Namespace, err: TextIO) -> int:
    """Copy the database to a private temporary file beside FILE, then rename it over FILE.

    FILE never holds half a backup, and the copy is 0600 like the database. An existing
    FILE is replaced only with --force, and never when it looks like a live database.
    """
    target: Path = args.file
    if os.path.lexists(target):
        if not args.force:
            raise CliError(f"{target} exists; pass --force to replace it")
        if target.is_dir():
            raise CliError(f"{target} is a folder; name a file to back up to")
        if os.path.lexists(f"{target}-wal"):
            raise CliError(f"{target} looks like a database in use ({target}-wal exists);"
                           " stop whatever uses it or pick another file")
    with _open(args) as store:
        try:
            same = target.exists() and os.path.samefile(target, store.path)
        except OSError:
            same = False
        if same:
            raise CliError(f"{target} is the database itself; pick another file")
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        if os.path.lexists(temporary):
            os.unlink(temporary)  # left by an earlier run that was killed; the pid is ours now
        create_private(temporary)
        try:
            store.backup(temporary)
            os.replace(temporary, target)
        except BaseException:
            for leftover in (temporary, Path(f"{temporary}-journal")):
                if os.path.lexists(leftover):
                    os.unlink(leftover)
            raise
    err.write(f"backed up {store.path} to {target}\n")
    return 0


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         stdin: TextIO | None = None) -> int:
    out, err, stdin = out or sys.stdout, err or sys.stderr, stdin or sys.stdin
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            from .serve import serve

            overrides = {s.name: getattr(args, s.name) for s in SETTINGS}
            return serve(resolve(overrides), out=err)
        if args.command == "sessions":
            return _sessions(args, out, err, stdin)
        if args.command == "keys":
            return _keys(args, out, err)
        if args.command == "status":
            return _status(args, out)
        if args.command == "backup":
            return _backup(args, err)
    except (CliError, SettingsError, StoreError) as exc:
        err.write(f"telegate: error: {exc}\n")
        return 1
    except OSError as exc:
        err.write(f"telegate: error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "") + "\n")
        return 1
    except KeyboardInterrupt:
        err.write("telegate: interrupted\n")
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
