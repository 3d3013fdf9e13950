"""Session names: the rules a name obeys, written once for the HTTP API, the CLI and the import.

A session's name is the stem of its ``.session`` file (``sessions_dir/<name>.session``
on a worker, on Linux, macOS or Windows alike), so a name must be a file name there and
mean one file only:

- no path: no ``/``, ``\\`` or NUL, not ``.`` or ``..``, and no leading ``.`` (a hidden file,
  or ``..`` in disguise) -- ``../../etc/passwd`` must never become a path;
- no character Windows refuses in a file name: ``< > : " | ? *`` and control characters
  (``a:b`` would name an alternate data stream of the file ``a``);
- not a Windows device name (``CON``, ``nul``, ``COM1``, ``LPT9``...: ``CON.session`` opens the
  console), as :meth:`pathlib.PureWindowsPath.is_reserved` decides;
- no control or format characters at all (:mod:`telegate._text`: they forge log lines and
  make one name look like another);
- unique regardless of case: ``acc1`` and ``ACC1`` (or ``Акк`` and ``акк``) are one file on
  Windows and macOS, so two of them would let two workers hold one auth key. Names are
  compared by :func:`name_key` (``str.casefold``), which the stores keep in a unique column.

Names registered before these rules stay usable (leases, removal); ``telegate sessions
list`` and the dashboard flag them (:func:`name_problem`) so an admin can fix them.
"""
from __future__ import annotations

import ntpath
import unicodedata
from pathlib import PureWindowsPath
from typing import Sequence

from ._text import unsafe_detail

__all__ = ["MAX_NAME_LENGTH", "BadName", "RULES", "check_name", "name_problem", "describe_problem", "name_key",
           "is_reserved"]

MAX_NAME_LENGTH = 255

#: The rules by code: what a refusal names, and what the docs list (docs/OPERATIONS.md).
RULES = {
    "empty": "a name must not be empty or blank",
    "too_long": f"a name is at most {MAX_NAME_LENGTH} characters",
    "path": 'a name must not contain "/", "\\" or NUL: it is a file name, never a path',
    "dot": 'a name must not be "." or ".." nor start with "." (a hidden file, or a way up a folder)',
    "windows_character": 'a name must not contain any of < > : " | ? * (Windows refuses them in file names;'
                         ' "a:b" is a hidden stream of the file "a")',
    "windows_reserved": "a name must not be a Windows device name (CON, PRN, AUX, NUL, COM1-COM9, LPT1-LPT9,"
                        " also with an extension): the .session file would open the device",
    "control": "a name must not contain control or format characters",
}

_WINDOWS_CHARACTERS = frozenset('<>:"|?*')
_PLAIN_FORBIDDEN = _WINDOWS_CHARACTERS | {"/", "\\"}


class BadName(ValueError):
    """A name breaks a rule: ``rule`` is its code in :data:`RULES`, the message says what to fix."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def name_key(name: str) -> str:
    """What two names must differ in to be two files everywhere: the name, case-folded.

    ``casefold`` rather than ``lower``: ``Straße`` and ``STRASSE`` are one key. Normalised
    to NFC first, so a name typed with a combining accent meets the same name typed whole
    (macOS stores names decomposed).
    """
    return unicodedata.normalize("NFC", name).casefold()


#: What every Windows device name starts with (CON, CONIN$, PRN, AUX, NUL, COM1, LPT1...):
#: names that don't are not reserved, with no path object made (a listing checks every row).
_DEVICE_PREFIXES = frozenset({"CON", "PRN", "AUX", "NUL", "COM", "LPT"})


def is_reserved(name: str) -> bool:
    """Whether ``<name>.session`` is a Windows device (``CON``, ``nul``, ``COM1.x``...) on any Python."""
    if name.lstrip()[:3].upper() not in _DEVICE_PREFIXES:
        return False
    isreserved = getattr(ntpath, "isreserved", None)  # Python 3.13+: is_reserved() is deprecated there
    if isreserved is not None:
        return bool(isreserved(name + ".session"))
    return PureWindowsPath(name + ".session").is_reserved()


def _problem(name: str, field: str) -> BadName | None:
    if (name.isprintable() and name.strip() and len(name) <= MAX_NAME_LENGTH and not name.startswith(".")
            and _PLAIN_FORBIDDEN.isdisjoint(name) and not is_reserved(name)):
        return None  # the common case, in C-speed steps (a listing checks every row)
    shown = repr(name[:40]) + ("..." if len(name) > 40 else "")
    if not name.strip():
        return BadName("empty", f"{field} must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        return BadName("too_long", f"{field} {shown} is over {MAX_NAME_LENGTH} characters")
    if "/" in name or "\\" in name or "\x00" in name:
        return BadName("path", f"{field} {shown} must not contain \"/\", \"\\\" or NUL: a session name is"
                                  " a file name, not a path (name rule: path)")
    if name in (".", "..") or name.startswith("."):
        return BadName("dot", f'{field} {shown} must not be "." or ".." nor start with "."'
                                 " (name rule: dot)")
    unsafe = unsafe_detail(f"{field} {shown}", name)
    if unsafe:
        return BadName("control", f"{unsafe} (name rule: control)")
    bad = sorted(_WINDOWS_CHARACTERS.intersection(name))
    if bad:
        return BadName("windows_character", f"{field} {shown} must not contain {' '.join(bad)}: Windows"
                                               " refuses them in file names (name rule: windows_character)")
    if is_reserved(name):
        return BadName("windows_reserved", f"{field} {shown} is a Windows device name: {name}.session would"
                                              " open the device, not a file (name rule: windows_reserved)")
    return None


def check_name(name: str, field: str = "name") -> str:
    """``name`` if it obeys every rule; else :class:`BadName` naming the first rule it breaks."""
    problem = _problem(name, field)
    if problem is not None:
        raise problem
    return name


def name_problem(name: str) -> str | None:
    """The code of the first rule an already registered ``name`` breaks, or None (for the admin's views)."""
    problem = _problem(name, "name")
    return None if problem is None else problem.rule


def describe_problem(rule: str | None, clash: Sequence[str] = ()) -> str | None:
    """What the admin's views say about a registered name: the clash first, else the rule it breaks."""
    if clash:
        return (f"one file on Windows and macOS with {', '.join(clash)} (names differ only in case):"
                " remove or rename all but one; see docs/OPERATIONS.md, Session names")
    return None if rule is None else RULES[rule] + "; see docs/OPERATIONS.md, Session names"
