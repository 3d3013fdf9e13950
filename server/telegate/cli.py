"""The ``telegate`` command: serve the pool, manage sessions and keys, show status.

Admin commands (``sessions ...``, ``keys ...``, ``status``) act on a running server over
HTTP (``TELEGATE_URL``, default ``http://127.0.0.1:8000``, with ``TELEGATE_ADMIN_KEY``;
or ``--url`` / ``--key``), or, given ``--db FILE`` or ``TELEGATE_DB``, on that database
file directly with no server. :func:`telegate._admin_client.choose` holds the rules.

Results go to stdout (``KEY=$(telegate keys create w)`` works); messages go to stderr.
An error is one line, ``telegate: error: ...``, and a non-zero exit.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

from . import __version__
from ._admin_client import DEFAULT_URL, Admin, AdminError, choose
from . import _cli_accounts, _cli_list
from ._files import create_private, replace_retrying
from ._logging import safe_output
from ._names import BadName, check_name, name_key
from ._http import parse_moment
from ._progress import Progress
from ._text import mask_secrets, unsafe_detail
from .accounts import VaultError, master_key_source, new_master_key
from .settings import SETTINGS, SettingsError, resolve
from .store import STATES, Store, StoreError, check_groups, open_store

__all__ = ["main", "build_parser"]


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def _db_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--db", metavar="FILE", default=None,
                        help="SQLite database file (default: $TELEGATE_DB or telegate.db)")
    return parent


def _admin_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    where = parent.add_argument_group(
        "where", "By default the command asks the server at $TELEGATE_URL (or " + DEFAULT_URL + ") with the"
                 " admin key in $TELEGATE_ADMIN_KEY. With --db FILE or $TELEGATE_DB it works on that database"
                 " file directly, no server needed.")
    where.add_argument("--url", metavar="URL", default=None,
                       help=f"the server's address (default: $TELEGATE_URL or {DEFAULT_URL})")
    where.add_argument("--key", metavar="KEY", default=None,
                       help="an admin API key (default: $TELEGATE_ADMIN_KEY; the variable keeps it out of"
                            " the process list)")
    where.add_argument("--db", metavar="FILE", default=None,
                       help="work on this SQLite database file instead of a server (default: $TELEGATE_DB)")
    return parent


def _group_list(*texts: str, flag: str = "--groups") -> list[str]:
    """``--groups a,b`` (or ``--group a``, repeated): group names, checked; '' is none."""
    parts = [part for text in texts for part in text.split(",")]
    try:
        return list(check_groups([part for part in parts if part.strip()], flag))
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telegate", description="TeleGate: lease Telegram accounts to workers, one at a time.")
    parser.add_argument("--version", action="version", version=f"telegate {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    db = _admin_parent()

    serve = commands.add_parser(
        "serve", help="run the HTTP server",
        description="Run the HTTP server under waitress. Every setting can also come from the"
                    " TELEGATE_* environment variable shown in brackets; a flag wins over the variable.")
    for setting in SETTINGS:
        default = "none" if setting.default is None else setting.default
        serve.add_argument(setting.flag, dest=setting.name, metavar=setting.metavar or None, default=None,
                           help=f"{setting.help} [{setting.env}, default {default}]")

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
    add.add_argument("--group", metavar="GROUP[,GROUP]", dest="groups", action="append",
                     default=[], help="put the new sessions in this group (repeat, or a,b); keys created with"
                                      " --groups lease only sessions of their groups")
    _cli_accounts.add_arguments(sub, [db])
    lst = sub.add_parser("list", parents=[db], help="list sessions, their state, groups and accounts",
                         description="One line per session: its state, groups, what its account shows (phone,"
                                     " username, premium, proxy host, device; never a secret) and who had it"
                                     " last. A session resting for some methods is resting_scoped, not free:"
                                     " acquires without a purpose skip it.")
    lst.add_argument("--state", choices=STATES)
    form = lst.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true",
                      help='one JSON document: {"sessions": [...], "total": N}')
    form.add_argument("--jsonl", action="store_true", help="one JSON object per line (JSON lines), for streaming")
    grp = sub.add_parser("set-groups", parents=[db], help="replace the groups of sessions",
                         description="Replace the groups of the named sessions (none: --groups '').")
    grp.add_argument("names", nargs="+", metavar="NAME")
    grp.add_argument("--groups", metavar="GROUP,GROUP", required=True,
                     help="the sessions' new groups, comma-separated; '' takes them out of every group")
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
    create.add_argument("--max-leases", metavar="N", type=_positive_int, default=None,
                        help="most leases the key may hold at once (over it: 429 lease_limit); default no limit")
    create.add_argument("--max-waiting", metavar="N", type=_positive_int, default=None,
                        help="most long-polls the key may park in the waiting line at once (over it: 429"
                             " wait_limit); default 4 per --max-leases, or no cap of its own")
    create.add_argument("--accounts", action="store_true",
                        help="the key may receive accounts with its leases (POST /session {\"account\": true},"
                             " over TLS only); default names only")
    create.add_argument("--groups", metavar="GROUP,GROUP", default="",
                        help="confine a client key to the sessions of these groups: it leases, counts and"
                             " sees only those; default every session")
    ksub.add_parser("list", parents=[db], help="list keys (never the keys themselves)")
    revoke = ksub.add_parser("revoke", parents=[db], help="revoke a key by name")
    revoke.add_argument("name")
    revoke.add_argument("--keep-leases", action="store_true",
                        help="let the key's current leases run out instead of ending them")
    undo = ksub.add_parser("undo-reports", parents=[db],
                           help="undo every disable and rest a key reported on release (where nobody reported since)")
    undo.add_argument("name")
    undo.add_argument("--since", metavar="ISO-TIME", default=None,
                      help="only reports from this time on, e.g. 2025-06-01T12:00:00Z (no offset: UTC)")

    commands.add_parser("status", parents=[db], help="pool counts by state")
    vault = commands.add_parser("vault", help="the master key that seals accounts: make one, rotate to a new one")
    vsub = vault.add_subparsers(dest="action", metavar="ACTION")
    vsub.required = True
    vsub.add_parser("keygen", help="print a new master key (base64 of 32 random bytes) on stdout",
                    description="Print a new master key. Keep it apart from the database (a password manager,"
                                " a secrets store); set it as TELEGATE_MASTER_KEY.")
    rotate = vsub.add_parser(
        "rotate", parents=[_db_parent()], help="rewrap every account's data key under the current master key",
        description="Rewrap every account's data key under the current master key (TELEGATE_MASTER_KEY or"
                    " the key file), unwrapping with TELEGATE_PREVIOUS_MASTER_KEYS. Works on the database"
                    " while servers use it; restart the servers with the new key (and the previous ones) first.")
    rotate.add_argument("--master-key-file", metavar="FILE", type=Path, default=None,
                        help="the current master key's file (default: $TELEGATE_MASTER_KEY, else telegate.key"
                             " beside the SQLite database)")
    backup = commands.add_parser("backup", parents=[_db_parent()],
                                 help="copy the database safely, even while serving")
    backup.add_argument("file", type=Path)
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    migrate = commands.add_parser(
        "migrate", parents=[_db_parent()], help="copy a SQLite pool into an empty PostgreSQL database",
        description="Copy every session (leases, flood waits, disabled flags, meta, counters), every key"
                    " (hashes, scopes, limits) and the event history from the SQLite file --db into the"
                    " empty PostgreSQL database --to. Stop the servers first; then start them with"
                    " --db URL. A database that holds anything is refused.")
    migrate.add_argument("--to", required=True, metavar="URL",
                         help="postgresql://user@host:port/dbname of an empty database")
    return parser


def _open(args: argparse.Namespace) -> Store:
    """The database file of ``backup``, which always works on the file."""
    settings = resolve({"db": args.db})
    if isinstance(settings.db, Path) and not settings.db.exists():
        raise CliError(f"database {settings.db} does not exist; pass --db or set TELEGATE_DB")
    return open_store(settings.db)


def _admin(args: argparse.Namespace, environ: Mapping[str, str]) -> Admin:
    creates = (args.command, getattr(args, "action", None)) in {
        ("sessions", "add"), ("sessions", "import"), ("sessions", "import-string"), ("keys", "create")}
    return choose(db=args.db, url=args.url, key=args.key, environ=environ, create=creates)


def _check_names(names: Sequence[str]) -> list[str]:
    """The names to add, blank lines and ``#`` comments dropped; the first broken rule is an error."""
    clean = []
    keys: dict[str, tuple[int, str]] = {}
    for number, name in enumerate(names, 1):
        name = name.strip()
        if not name or name.startswith("#"):
            continue
        try:
            check_name(name, f"name {number}")
        except BadName as exc:
            raise CliError(str(exc)) from None
        first_number, first = keys.setdefault(name_key(name), (number, name))
        if first != name:
            raise CliError(f"names {first_number} {first!r} and {number} {name!r} differ only in case: one file on"
                           " Windows and macOS; keep one of them (name rule: case)")
        clean.append(name)
    return clean


def _read_stdin(stdin: TextIO) -> str:
    """Standard input as UTF-8 (a BOM dropped), whatever the console's code page.

    Python decodes a pipe with the locale's encoding, cp1251 on a Russian Windows, so
    ``Get-Content names.txt | telegate sessions add --from-file -`` would garble every
    Cyrillic name; PowerShell 5.1 also sends a BOM first. So the bytes are read and
    decoded here.
    """
    raw = getattr(stdin, "buffer", None)
    if raw is not None:
        try:
            return raw.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise CliError("standard input is not UTF-8 text (in PowerShell set"
                           " $OutputEncoding = [Text.UTF8Encoding]::new() first)") from None
    text = stdin.read()  # already text (a test's StringIO): only the BOM to drop
    return text[1:] if text.startswith("\ufeff") else text


def _read_names(source: str, stdin: TextIO) -> list[str]:
    # Split on newlines only: splitlines() would also cut at \x0c, \x1c or U+2028, quietly
    # turning one bad name into two; _check_names refuses it instead.
    if source == "-":
        return _read_stdin(stdin).split("\n")
    try:
        # utf-8-sig: Notepad and PowerShell 5.1 begin a file with a BOM, which must not stick to the first name.
        return Path(source).read_text(encoding="utf-8-sig").split("\n")
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise CliError(f"{source} is not UTF-8 text") from None


def _sessions(admin: Admin, args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
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
        groups = _group_list(*args.groups, flag="--group")
        added, existing = admin.add_sessions(names, kind=args.kind, meta=meta, groups=groups)
        err.write(f"added {added} session(s)" + (f", {existing} already registered" if existing else "")
                  + f" ({admin.where})\n")
        return 0
    if args.action in ("import", "import-string", "export"):
        if args.action == "import-string" and not _check_names([args.name]):
            raise CliError("NAME is blank")
        try:
            return _cli_accounts.run(admin, args, err, stdin)
        except _cli_accounts.CommandError as exc:
            raise CliError(str(exc)) from None
    if args.action == "list":
        return _cli_list.list_sessions(admin, args, out)
    if args.action == "set-groups":
        groups = _group_list(args.groups)
        missing = admin.set_groups(_check_names(args.names), groups)
        err.write(f"set the groups of {len(set(args.names)) - len(missing)} session(s) to"
                  f" {', '.join(groups) or 'none'}\n")
        if missing:
            raise CliError(f"not registered: {', '.join(missing)}")
        return 0
    if args.action == "disable" and (unsafe := unsafe_detail("--reason", args.reason)):
        raise CliError(unsafe)
    if args.action == "remove":
        missing = admin.remove_sessions(args.names)
    else:
        missing = admin.set_disabled(args.names, args.action == "disable",
                                     args.reason if args.action == "disable" else None)
    done = len(args.names) - len(missing)
    err.write(f"{args.action}d {done} session(s)\n")
    if missing:
        raise CliError(f"not registered: {', '.join(missing)}")
    return 0


def _keys(admin: Admin, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.action == "create":
        name = args.name.strip()
        if not name or len(name) > 100:
            raise CliError("key name must be 1 to 100 characters")
        if unsafe := unsafe_detail("the key name", name):  # it is the default holder, shown to the admin
            raise CliError(unsafe)
        groups = _group_list(args.groups)
        if args.admin and groups:
            raise CliError("an admin key sees every session: --groups is for client keys")
        key = admin.create_key(name, admin=args.admin, max_leases=args.max_leases, max_waiting=args.max_waiting,
                               accounts=args.accounts, groups=groups)
        out.write(key + "\n")
        limit = f", at most {args.max_leases} lease(s) at once" if args.max_leases else ""
        limit += ", may receive accounts" if args.accounts else ""
        limit += f", confined to group(s) {', '.join(groups)}" if groups else ""
        err.write(f"created {'admin' if args.admin else 'client'} key {name!r}{limit} ({admin.where});"
                  " it is shown only once\n")
    elif args.action == "list":
        keys = admin.list_keys()
        if not keys:
            out.write("no keys\n")
        for row in keys:
            state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
            limit = f"max {row['max_leases']}" if row.get("max_leases") else "no limit"
            held = f"  {row['leases']} lease(s)" if row.get("leases") is not None else ""
            held += "  accounts" if row.get("accounts") else ""
            confined = ",".join(row.get("groups") or ()) or "all"
            out.write(f"{row['name']:<24} {row['scope']:<7} {limit:<10} groups {confined:<12} created {row['created_at']}"
                      f"  {state}{held}\n")
    elif args.action == "undo-reports":
        if args.since is not None:
            try:
                parse_moment(args.since)
            except ValueError as exc:
                raise CliError(f"--since: {exc}") from None
        done = admin.undo_reports(args.name, since=args.since)
        out.write(f"{len(done['enabled'])} session(s) enabled, {len(done['rested'])} rested no more,"
                  f" {done['left_standing']} report(s) left standing (someone reported since)\n")
        err.write(f"undid {done['reports']} report(s) of key {args.name!r} ({admin.where})\n")
    else:
        ended = admin.revoke_key(args.name, keep_leases=args.keep_leases)
        err.write(f"revoked key {args.name!r}" + (f"; {ended} of its lease(s) ended" if ended else "") + "\n")
    return 0


def _status(admin: Admin, out: TextIO) -> int:
    """The counts by state; they add up to the total (resting_scoped: free for some methods only)."""
    status = admin.status()
    line = "  ".join(f"{state}: {status[state]}" for state in ("total",) + STATES)
    out.write(line + "\n")
    if status.get("resting_scoped"):
        out.write(f"{status['resting_scoped']} session(s) rest for some methods only: leasable with another"
                  " purpose, skipped by acquires without one (telegate sessions list --state resting_scoped)\n")
    if status["next_available"]:
        out.write(f"next flood wait ends in {status['next_available_in']:.0f}s ({status['next_available']})\n")
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
            try:
                replace_retrying(temporary, target)
            except PermissionError as exc:
                raise CliError(f"cannot replace {target}: another program keeps it open or it is read-only"
                               f" ({exc.strerror or exc}); close that program (or pick another file) and run"
                               " backup again") from exc
        except BaseException:
            for leftover in (temporary, Path(f"{temporary}-journal")):
                try:  # a failed cleanup is reported, and never hides why the backup failed
                    if os.path.lexists(leftover):
                        os.unlink(leftover)
                except OSError as exc:
                    err.write(f"telegate: warning: could not remove {leftover} ({exc.strerror or exc});"
                              " delete it by hand\n")
            raise
    err.write(f"backed up {store.path} to {target}\n")
    return 0


def _migrate(args: argparse.Namespace, err: TextIO) -> int:
    """Copy the SQLite pool --db into the empty PostgreSQL database --to."""
    from .store import is_database_url

    if not is_database_url(args.to):
        raise CliError(f"--to must be a postgresql:// URL (the empty database to copy into), not {args.to!r}")
    if not isinstance(resolve({"db": args.db}).db, Path):
        raise CliError("--db names the SQLite file to copy from; the PostgreSQL database goes in --to")
    with _open(args) as source, open_store(args.to) as target:
        bar = Progress("migrate", 0, err)
        with bar:
            def shown(done: int, total: int) -> None:
                bar.total = total
                bar.advance(done - bar.done)

            copied = source.copy_into(target, progress=shown)
        status = target.status()
    err.write(f"copied {copied['sessions']} session(s) ({status['in_floodwait']} in flood wait,"
              f" {status['disabled']} disabled), {copied['api_keys']} key(s), {copied['session_rests']}"
              f" scoped rest(s) and {copied['session_events']} event(s) from {source.path} to {target.path}"
              f" in {bar.elapsed:.1f} s; now start the servers with --db {target.path}\n")
    return 0


def _vault(args: argparse.Namespace, out: TextIO, err: TextIO, environ: Mapping[str, str]) -> int:
    if args.action == "keygen":
        out.write(new_master_key() + "\n")
        err.write("a new master key; keep it apart from the database (set it as TELEGATE_MASTER_KEY)\n")
        return 0
    settings = resolve({"db": args.db}, environ)
    if isinstance(settings.db, Path) and not settings.db.exists():
        raise CliError(f"database {settings.db} does not exist; pass --db or set TELEGATE_DB")
    keys = master_key_source(environ, args.master_key_file, settings.db)
    if not keys.available:
        raise CliError(f"no master key to rotate to: set TELEGATE_MASTER_KEY (make one with: telegate vault"
                       f" keygen), or pass --master-key-file (looked for {keys.key_file})")
    with open_store(settings.db, vault=keys.vault(create=False)) as store:
        current = store.vault.current_id()
        before = store.account_key_ids()
        total = sum(n for key_id, n in before.items() if key_id != current)
        with Progress("rewrap", total, err) as bar:  # each batch commits whole: Ctrl-C leaves no half
            done = store.rotate_keys(progress=bar.advance)
        after = store.account_key_ids()
    err.write(f"rewrapped {done} account data key(s) under master key {current};"
              f" {after.get(current, 0)} account(s) in {store.path} now use it\n")
    return 0


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         stdin: TextIO | None = None, environ: Mapping[str, str] | None = None) -> int:
    if out is None:
        out = sys.stdout
        safe_output(out)  # `sessions list > file` on a cp1251 console: escapes, not a traceback
    if err is None:
        err = sys.stderr
        safe_output(err)
    stdin = stdin or sys.stdin
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            from .serve import serve

            overrides = {s.name: getattr(args, s.name) for s in SETTINGS}
            return serve(resolve(overrides, environ), environ=environ, out=err)
        if args.command == "backup":
            return _backup(args, err)
        if args.command == "migrate":
            return _migrate(args, err)
        if args.command == "vault":
            return _vault(args, out, err, environ)
        if args.command in ("sessions", "keys", "status"):
            admin = _admin(args, environ)
            try:
                if args.command == "sessions":
                    return _sessions(admin, args, out, err, stdin)
                if args.command == "keys":
                    return _keys(admin, args, out, err)
                return _status(admin, out)
            finally:
                admin.close()
    except (CliError, AdminError, SettingsError, StoreError, VaultError) as exc:
        err.write(mask_secrets(f"telegate: error: {exc}") + "\n")
        return 1
    except OSError as exc:
        err.write(mask_secrets(f"telegate: error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
                  + "\n")
        return 1
    except KeyboardInterrupt:
        err.write("telegate: interrupted\n")
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
