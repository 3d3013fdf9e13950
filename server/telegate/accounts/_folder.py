"""A folder of accounts as sellers and tools leave it: what each entry is, and why not.

:func:`plan_folder` lists the folder once, cheaply (names and file types only), into
candidates and entries it will not read, each with its reason. :func:`read_candidate`
then reads one candidate (the costly part, so the caller can show progress and stop
between accounts). Nothing in the folder is written to or locked.
"""
from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._names import BadName, check_name, name_key
from .._text import escape
from ._formats import FormatError, NoAuthKey, read_session_file
from ._sidecar import apply_sidecar
from ._tdata import INSTALL_HINT, is_tdata, read_tdata, tdata_available

__all__ = ["Candidate", "Found", "Skipped", "plan_folder", "read_candidate"]

# Files SQLite keeps beside a database while it is open: part of the session, not entries.
_SQLITE_COMPANIONS = (".session-journal", ".session-wal", ".session-shm")


@dataclass
class Candidate:
    """An entry that looks like an account: a ``.session`` (and its ``.json``) or a tdata folder."""

    name: str
    path: Path
    what: str  # "session" or "tdata"
    sidecar: Path | None = None

    @property
    def shown(self) -> str:
        """The folder entry as the admin sees it: ``acc1.session`` or ``desk/``."""
        return escape(self.path.name if self.what == "session" else self.name + "/")


@dataclass
class Found:
    """One account read: its name, kind and Account JSON (None: a name only), and warnings."""

    name: str
    kind: str
    account: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)


@dataclass
class Skipped:
    """An entry not imported, and why (one line for the admin)."""

    shown: str
    reason: str

    def __str__(self) -> str:
        return f"{self.shown}: {self.reason}"


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")  # undecodable bytes in a POSIX file name arrive as lone surrogates
    except UnicodeEncodeError:
        return False
    return True


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a session's name (:mod:`telegate._names`), or None."""
    if not _is_utf8(name):
        return "the name is not valid UTF-8"
    try:
        check_name(name, "the name")
    except BadName as exc:
        return str(exc)
    return None


def plan_folder(folder: Path) -> tuple[list[Candidate], list[Skipped]]:
    """Every entry of ``folder``: the candidates by name, and the entries skipped with reasons.

    Names obey the session-name rules (:mod:`telegate._names`); of two names that differ
    only in case (one file on Windows and macOS) the first in sorted order is kept.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    entries = sorted(folder.iterdir(), key=lambda p: p.name)
    names = {p.name for p in entries}
    candidates: dict[str, Candidate] = {}  # by name_key
    skipped: list[Skipped] = []
    for path in entries:
        shown = escape(path.name)
        try:
            mode = path.stat().st_mode  # follows a symlink: a link to a regular file is fine
        except OSError as exc:
            skipped.append(Skipped(shown, f"cannot read it ({exc.strerror or exc})"))
            continue
        if stat.S_ISDIR(mode) and path.suffix == ".session":
            skipped.append(Skipped(shown, "not a regular file"))
            continue
        if stat.S_ISDIR(mode):
            tdata = path if is_tdata(path) else path / "tdata" if is_tdata(path / "tdata") else None
            if tdata is None:
                skipped.append(Skipped(shown + "/", "a folder with no Telegram Desktop tdata in it (sessions in"
                                                    " subfolders are not read: import that folder itself)"))
                continue
            candidate = Candidate(path.name, tdata, "tdata")
        elif not stat.S_ISREG(mode):
            # Opening a FIFO blocks until a writer shows up; a device may be anything.
            skipped.append(Skipped(shown, "not a regular file"))
            continue
        elif path.suffix == ".session":
            sidecar = path.with_suffix(".json")
            candidate = Candidate(path.stem, path, "session", sidecar if sidecar.name in names else None)
        elif path.suffix == ".json":
            if path.with_suffix(".session").name not in names:
                skipped.append(Skipped(shown, f"a .json with no {escape(path.stem)}.session beside it"))
            continue
        elif path.name.endswith(_SQLITE_COMPANIONS):
            continue
        else:
            skipped.append(Skipped(shown, "not a .session file, a seller's .json or a tdata folder"))
            continue
        problem = _name_problem(candidate.name)
        key = name_key(candidate.name) if problem is None else ""
        if problem:
            skipped.append(Skipped(shown, problem))
        elif key in candidates:
            taken = candidates[key]
            how = "is" if taken.name == candidate.name else "differs only in case from"
            skipped.append(Skipped(shown, f"its name {how} that of {taken.shown}: one file on Windows and macOS"
                                          " (name rule: case)"))
        elif candidate.what == "tdata" and not tdata_available():
            skipped.append(Skipped(shown + "/", INSTALL_HINT))
        else:
            candidates[key] = candidate
    return list(candidates.values()), skipped


def read_candidate(candidate: Candidate) -> list[Found | Skipped]:
    """The account(s) of one candidate (a tdata folder may hold several), or why not."""
    if candidate.what == "tdata":
        try:
            accounts = read_tdata(candidate.path)
        except FormatError as exc:
            return [Skipped(candidate.shown, str(exc))]
        return [Found(candidate.name if number == 1 else f"{candidate.name}-{number}", "unknown", account)
                for number, account in enumerate(accounts, 1)]
    try:
        kind, account = read_session_file(candidate.path)
    except NoAuthKey as exc:
        # The seed's way still works: a worker that keeps its own files leases it by name.
        return [Found(candidate.name, exc.kind or "unknown", None,
                      [f"{candidate.shown}: {exc}: registered by name only, without an account"])]
    except FormatError as exc:
        return [Skipped(candidate.shown, str(exc))]
    warnings = apply_sidecar(candidate.sidecar, account) if candidate.sidecar else []
    return [Found(candidate.name, kind, account, [escape(w) for w in warnings])]
