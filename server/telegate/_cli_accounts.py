"""``telegate sessions import / import-string / export``: accounts in and out of the pool.

The formats are :mod:`telegate.accounts`; where the accounts go is the admin backend
(:mod:`._admin_client`, a server or a database file). Import reads a folder one entry at
a time and stores accounts in batches, each batch whole (one transaction): Ctrl-C stops
between accounts and leaves none half-written. Export writes each file under a private
temporary name and renames it into place.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

from ._admin_client import Admin, AdminError
from ._files import replace_retrying
from ._progress import Progress, is_terminal
from ._text import escape
from .accounts import FormatError, Found, Skipped, apply_sidecar, plan_folder, read_candidate, read_session_string
from .accounts._formats import write_session_file
from ._names import BadName, check_name

__all__ = ["add_arguments", "import_folder", "import_string", "export"]

#: Accounts read before they are stored: a batch is one transaction (or one request).
_STORE_EVERY = 500
#: Bytes of JSON per batch: well within the server's default --max-body of 1 MiB.
_BATCH_BYTES = 512 * 1024
#: The most cached entities one account brings in (the server's cap on one write); the most
#: recently seen are kept.
MAX_IMPORT_ENTITIES = 20_000
#: The largest account (as JSON) sent: one fits a request under the default --max-body of 1 MiB.
_ITEM_BYTES = 768 * 1024
#: Names shown in a list before "and N more".
_SHOWN = 50


class CommandError(Exception):
    """A user-facing failure of these commands: one line, exit status 1."""


class PutResult:
    """What storing did, by name: added, updated, registered already (not changed), refused (why)."""

    def __init__(self) -> None:
        self.added: list[str] = []
        self.updated: list[str] = []
        self.existing: list[str] = []
        self.refused: dict[str, str] = {}

    def take(self, answer: Mapping[str, Any]) -> None:
        for field in ("added", "updated", "existing"):
            getattr(self, field).extend(_name_of(item) for item in answer.get(field) or ())

    @property
    def stored(self) -> int:
        return len(self.added) + len(self.updated) + len(self.existing)


def _name_of(item: Any) -> str:
    return str(item["name"]) if isinstance(item, Mapping) else str(item)


def _bare(item: Mapping[str, Any], update: bool) -> bool:
    """A name and kind alone, which every TeleGate registers (``sessions add``'s way)."""
    return not update and item.get("account") is None and not item.get("groups")


def put_items(admin: Admin, items: Sequence[Mapping[str, Any]], *, update: bool, earlier: int = 0) -> PutResult:
    """Store ``items`` (``{"name", "kind", "groups"?, "account"?}``) in batches, each whole.

    A batch the backend refuses is sent again item by item, so the culprits are named
    (an account over a size limit, a field the server does not take) and the rest go
    in. When every item of a batch is refused for one reason, the reason is not theirs
    (no master key, a server that keeps no accounts): that is the command's error, which
    says how many were stored before it (``earlier`` of them by previous calls).
    """
    result = PutResult()
    bare: dict[str, list[str]] = {}
    for item in items:
        if _bare(item, update):
            bare.setdefault(item["kind"], []).append(item["name"])
    for kind, names in bare.items():
        added, existing = _add_names(admin, names, kind)
        result.take({"added": added, "existing": existing})
    rich = [item for item in items if not _bare(item, update)]
    put = getattr(admin, "put_sessions", None)
    if rich and put is None:
        raise AdminError(f"{admin.where} keeps no accounts (this TeleGate has no put_sessions); upgrade it")
    batch: list[Mapping[str, Any]] = []
    size = 0
    for item in rich:
        weight = len(json.dumps(item, ensure_ascii=False).encode("utf-8")) + 1
        if batch and size + weight > _BATCH_BYTES:
            _put_batch(put, batch, update, result, earlier)
            batch, size = [], 0
        batch.append(item)
        size += weight
    if batch:
        _put_batch(put, batch, update, result, earlier)
    return result


def _add_names(admin: Admin, names: list[str], kind: str) -> tuple[list[str], list[str]]:
    """Register bare names; the names added and the names registered already."""
    before = admin.sessions_named(names)
    admin.add_sessions(names, kind=kind)
    return [n for n in names if n not in before], [n for n in names if n in before]


def _put_batch(put: Any, batch: list[Mapping[str, Any]], update: bool, result: PutResult, earlier: int) -> None:
    try:
        result.take(put(batch, update=update))
        return
    except AdminError as exc:
        if len(batch) == 1 and not (earlier or result.stored):
            raise  # the only account there is: its reason is the command's error
        failures = {batch[0]["name"]: str(exc)} if len(batch) == 1 else {}
    if len(batch) > 1:
        for item in batch:
            try:
                result.take(put([item], update=update))
            except AdminError as one:
                failures[item["name"]] = str(one)
        reasons = set(failures.values())
        if len(failures) == len(batch) and len(reasons) == 1:
            stored = earlier + result.stored
            done = f" ({stored} stored before it; running the command again is safe)" if stored else ""
            raise AdminError(reasons.pop() + done)
    result.refused.update(failures)


def _groups(values: Sequence[str] | None) -> list[str]:
    groups: list[str] = []
    for value in values or ():
        groups += [part.strip() for part in value.split(",") if part.strip()]
    return list(dict.fromkeys(groups))


def add_arguments(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """The three commands' parsers, under ``telegate sessions``."""
    imp = sub.add_parser(
        "import", parents=parents, help="register every account in a folder (.session, seller .json, tdata)",
        description="Register each account in DIR by name: Telethon and Pyrogram .session files (with a"
                    " seller's NAME.json beside NAME.session), and Telegram Desktop tdata folders with the"
                    " telegate[tdata] extra. Every entry not imported is named with the reason.")
    imp.add_argument("dir", metavar="DIR", type=Path)
    _common(imp)
    string = sub.add_parser(
        "import-string", parents=parents, help="register an account from a session string on stdin",
        description="Read a Telethon StringSession or a Pyrogram session string from stdin (never an"
                    " argument: it would show in the process list) and register it as NAME.")
    string.add_argument("name", metavar="NAME")
    string.add_argument("--json", metavar="FILE", type=Path,
                        help="a seller's .json with the account's app, device, proxy and 2FA")
    _common(string)
    exp = sub.add_parser(
        "export", parents=parents, help="write accounts back as .session files",
        description="Write each NAME's account as DIR/NAME.session (mode 0600), readable by Telethon or"
                    " Pyrogram. Existing files are left alone unless --force.")
    exp.add_argument("names", nargs="+", metavar="NAME")
    exp.add_argument("--to", required=True, metavar="DIR", type=Path, help="the folder to write to (created)")
    exp.add_argument("--format", choices=("telethon", "pyrogram"), default=None,
                     help="the library to write for (default: the session's kind, else telethon)")
    exp.add_argument("--json", action="store_true", dest="with_json",
                     help="also write DIR/NAME.json in the sellers' format (app, device, proxy, 2FA)")
    exp.add_argument("--force", action="store_true", help="replace files that exist")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--update", action="store_true",
                        help="refresh names registered already (kind and account); without it they are"
                             " listed as not changed")
    parser.add_argument("--group", action="append", metavar="GROUP",
                        help="put the sessions in GROUP (repeat, or a,b)")


def _item(found: Found, groups: list[str]) -> dict[str, Any]:
    item: dict[str, Any] = {"name": found.name, "kind": found.kind}
    if found.account is not None:
        item["account"] = found.account
    if groups:
        item["groups"] = groups
    return item


def _cap_entities(found: Found, warnings: list[str]) -> None:
    """Keep the most recently seen entities within the server's caps: at most
    :data:`MAX_IMPORT_ENTITIES`, and an account small enough for one request under the
    default --max-body (a cache of some 10,000 entities would otherwise be refused whole)."""
    state = (found.account or {}).get("state") or {}
    entities = state.get("entities") or []
    if not entities:
        return
    state["entities"] = entities[:MAX_IMPORT_ENTITIES]
    while state["entities"] and len(json.dumps(found.account, ensure_ascii=False).encode("utf-8")) > _ITEM_BYTES:
        state["entities"] = state["entities"][:len(state["entities"]) * 3 // 4]
    if len(state["entities"]) < len(entities):
        warnings.append(f"{escape(found.name)}: {len(entities)} cached entities; the {len(state['entities'])}"
                        " most recently seen are kept")


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(escape(n) for n in names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


class _Tally:
    """The import's running result, reported the same way whether it ended or was interrupted."""

    def __init__(self) -> None:
        self.result = PutResult()
        self.with_account = 0
        self.skipped: list[Skipped] = []
        self.warnings: list[str] = []

    def add(self, sent: PutResult, accounts: set[str]) -> None:
        for field in ("added", "updated", "existing"):
            getattr(self.result, field).extend(getattr(sent, field))
        self.result.refused.update(sent.refused)
        self.with_account += sum(1 for name in sent.added + sent.updated if name in accounts)

    def report(self, err: TextIO, where: str, source: str, seconds: float, update: bool) -> None:
        for line in self.warnings:
            err.write(f"warning: {line}\n")
        for skipped in self.skipped:
            err.write(f"warning: skipped {skipped}\n")
        for name, reason in self.result.refused.items():
            err.write(f"warning: skipped {escape(name)}: {where} refused it: {reason}\n")
        r = self.result
        if r.existing and not update:
            err.write(f"not changed ({len(r.existing)} registered already; --update refreshes them):"
                      f" {_names(r.existing)}\n")
        parts = [f"imported {len(r.added)} session(s) from {source}",
                 f"{self.with_account} with an account"]
        if r.updated:
            parts.append(f"{len(r.updated)} updated")
        if r.existing:
            parts.append(f"{len(r.existing)} already registered" + (" (not changed)" if not update else ""))
        failed = len(self.skipped) + len(r.refused)
        if failed:
            parts.append(f"{failed} file(s) skipped")
        err.write(", ".join(parts) + f" in {seconds:.1f} s ({where})\n")


def import_folder(admin: Admin, args: argparse.Namespace, err: TextIO) -> int:
    try:
        candidates, skipped = plan_folder(args.dir)
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from exc
    groups = _groups(args.group)
    tally = _Tally()
    tally.skipped.extend(skipped)
    pending: list[dict[str, Any]] = []
    accounts: set[str] = set()

    def store() -> None:
        if pending:
            tally.add(put_items(admin, pending, update=args.update, earlier=tally.result.stored), accounts)
            pending.clear()
            accounts.clear()

    bar = Progress("import", len(candidates), err)
    try:
        with bar:
            for candidate in candidates:
                for entry in read_candidate(candidate):
                    if isinstance(entry, Skipped):
                        tally.skipped.append(entry)
                        continue
                    tally.warnings.extend(entry.warnings)
                    _cap_entities(entry, tally.warnings)
                    pending.append(_item(entry, groups))
                    if entry.account is not None:
                        accounts.add(entry.name)
                if len(pending) >= _STORE_EVERY:
                    store()
                bar.advance()
            store()
    except KeyboardInterrupt:
        tally.report(err, admin.where, str(args.dir), bar.elapsed, args.update)
        err.write(f"telegate: interrupted after {bar.done} of {bar.total} entries; every account stored is whole."
                  " Run the command again to go on (those stored are listed as not changed)\n")
        return 130
    tally.report(err, admin.where, str(args.dir), bar.elapsed, args.update)
    return 0


def import_string(admin: Admin, args: argparse.Namespace, err: TextIO, stdin: TextIO) -> int:
    name = args.name.strip()
    if is_terminal(stdin):
        err.write("paste the session string, then press Enter and Ctrl-D\n")
    try:
        kind, account = read_session_string(stdin.read(64 * 1024))
    except FormatError as exc:
        raise CommandError(f"stdin is not a session string: {exc}") from None
    if args.json is not None:
        if not args.json.is_file():
            raise CommandError(f"{args.json} is not a file")
        for warning in apply_sidecar(args.json, account):
            err.write(f"warning: {escape(warning)}\n")
    item = _item(Found(name, kind, account), _groups(args.group))
    result = put_items(admin, [item], update=args.update)
    if name in result.refused:
        raise CommandError(f"{admin.where} refused {name!r}: {result.refused[name]}")
    if result.existing:
        raise CommandError(f"{name!r} is registered already and was not changed; pass --update to give it this"
                           " account")
    done = "updated" if result.updated else "imported"
    err.write(f"{done} {name!r} from a {kind} session string ({admin.where})\n")
    return 0


# -- export ---------------------------------------------------------------------------------------


def _file_name_problem(name: str) -> str | None:
    """Why ``name`` (registered before the name rules, maybe) cannot be a file name, or None."""
    try:
        check_name(name, "its name")
    except BadName as exc:
        return f"{exc}; rename the session first"
    return None


_SELLER_FIELDS = (("app_id", "api_id"), ("app_hash", "api_hash"), ("device", "device_model"),
                  ("sdk", "system_version"), ("app_version", "app_version"), ("lang_pack", "lang_pack"),
                  ("lang_code", "lang_code"), ("system_lang_code", "system_lang_code"), ("twoFA", "twofa"),
                  ("phone", "phone"), ("username", "username"), ("is_premium", "premium"), ("id", "user_id"),
                  ("proxy", "proxy"))


def seller_json(account: Mapping[str, Any]) -> dict[str, Any]:
    """The sellers' ``.json`` of ``account`` (what :func:`apply_sidecar` reads back)."""
    return {key: account[field] for key, field in _SELLER_FIELDS if account.get(field) is not None}


def _write_private(path: Path, data: bytes, *, force: bool) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(os.fspath(temporary), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        _place(temporary, path, force=force)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def _place(temporary: Path, path: Path, *, force: bool) -> None:
    """Move the finished ``temporary`` file to ``path``; without ``force`` never over an existing file."""
    if force:
        replace_retrying(temporary, path)
        return
    try:
        os.link(temporary, path)  # fails if something appeared there meanwhile: never overwrites
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links (FAT, some network shares)
        if os.path.lexists(path):
            raise FileExistsError(path) from None
        os.replace(temporary, path)
        return
    os.unlink(temporary)


def export(admin: Admin, args: argparse.Namespace, err: TextIO) -> int:
    names = list(dict.fromkeys(n.strip() for n in args.names))
    folder: Path = args.to
    folder.mkdir(parents=True, exist_ok=True)
    rows = admin.sessions_named(names)
    get = getattr(admin, "get_account", None)
    problems: list[str] = []
    written = 0
    bar = Progress("export", len(names), err)
    try:
        with bar:
            for name in names:
                row = rows.get(name)
                entry = None if row is None else (row["kind"], get(row["id"]) if get else None)
                problem = _export_one(name, entry, folder, args)
                if problem:
                    problems.append(f"{escape(name)}: {problem}")
                else:
                    written += 1
                bar.advance()
    except KeyboardInterrupt:
        err.write(f"telegate: interrupted after {written} file(s); each written file is whole\n")
        return 130
    for problem in problems:
        err.write(f"warning: not exported {problem}\n")
    err.write(f"exported {written} of {len(names)} session(s) to {folder} in {bar.elapsed:.1f} s\n")
    return 1 if problems else 0


def _export_one(name: str, entry: tuple[str, dict[str, Any] | None] | None, folder: Path,
                args: argparse.Namespace) -> str | None:
    if entry is None:
        return "not registered"
    kind, account = entry
    if account is None:
        return "holds no account (registered by name only)"
    problem = _file_name_problem(name)
    if problem:
        return problem
    target = folder / f"{name}.session"
    if os.path.lexists(target) and not args.force:
        return f"{target} exists (--force replaces it)"
    fmt = args.format or (kind if kind in ("telethon", "pyrogram") else "telethon")
    temporary = folder / f".{name}.session.{os.getpid()}.tmp"
    try:
        write_session_file(account, temporary, fmt)
        _place(temporary, target, force=args.force)
    except FormatError as exc:
        return f"its account cannot be written: {exc}"
    except FileExistsError:
        return f"{target} appeared while writing (--force replaces it)"
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)
    if args.with_json:
        data = json.dumps(seller_json(account), ensure_ascii=False, indent=1).encode("utf-8")
        try:
            _write_private(folder / f"{name}.json", data, force=args.force)
        except FileExistsError:
            return f"{folder / (name + '.json')} exists (--force replaces it); the .session was written"
    return None


def run(admin: Admin, args: argparse.Namespace, err: TextIO, stdin: TextIO | None = None) -> int:
    """One of the three commands; :class:`CommandError` and :class:`AdminError` are one-line failures."""
    if args.action == "import":
        return import_folder(admin, args, err)
    if args.action == "import-string":
        return import_string(admin, args, err, stdin or sys.stdin)
    if args.action == "export":
        return export(admin, args, err)
    raise AdminError(f"unknown action {args.action}")
