"""Files that hold secrets: the pool database, its -wal/-shm, and backups, readable by their owner only.

The database holds key hashes and session meta (proxy passwords, for one), so on POSIX
it is created mode 0600 rather than the usual 0644. Creating it ourselves before SQLite
does is enough: SQLite's unix VFS gives every file it makes beside a database (the
``-wal``, ``-shm`` and ``-journal`` files) the database file's own permission bits
(``robust_open()`` with the mode from ``findCreateFileMode()``, and the ``-shm`` open, in
``os_unix.c``; tests/live/test_safe_files_and_text.py checks it). An empty file is a valid empty SQLite database.

On Windows the mode means nothing (0600 only clears the read-only flag): a new file takes
its folder's ACL, and a folder made under ``C:\\`` gives Authenticated Users *Modify*. So
there every secret file we create is restricted with ``icacls`` to its owner, SYSTEM and
the Administrators group, named by SID (group names are translated on a Russian Windows:
"Администраторы"), with the inherited entries removed; the database's ``-wal`` and
``-shm`` are made the same way before SQLite opens them (SQLite's Windows VFS would give
them the folder's ACL). When ``icacls`` fails, one warning says which command to run.
docs/WINDOWS.md gives the commands that lock down the whole folder.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["PRIVATE_MODE", "create_private", "restrict", "icacls_command", "powershell_line", "current_user_sid",
           "SYSTEM_SID", "ADMINISTRATORS_SID", "precreate_companions", "replace_retrying", "REPLACE_DELAYS"]

log = logging.getLogger(__name__)

PRIVATE_MODE = 0o600

#: Well-known SIDs, the same on every Windows whatever its language.
SYSTEM_SID = "S-1-5-18"
ADMINISTRATORS_SID = "S-1-5-32-544"

_SID = re.compile(r"S-1-[0-9]+(?:-[0-9]+)+")

#: Paths whose failed lock-down was reported already: one warning per file and process.
_WARNED: set[str] = set()


def current_user_sid(run: Callable[..., Any] = subprocess.run) -> str | None:
    """The SID of the account this process runs as (``whoami /user``), or None when it can't be read."""
    try:
        done = run(["whoami", "/user", "/fo", "csv", "/nh"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    found = _SID.search(bytes(done.stdout or b"").decode("ascii", "replace"))  # the OEM code page: the SID is ASCII
    return found.group(0) if done.returncode == 0 and found else None


@functools.lru_cache(maxsize=4)
def _sid_of_this_process(run: Callable[..., Any]) -> str | None:
    """:func:`current_user_sid`, asked once per process (a file made later needs the same answer)."""
    return current_user_sid(run)


def icacls_command(path: str | Path, owner_sid: str, *, folder: bool = False) -> list[str]:
    """The ``icacls`` that leaves ``path`` to ``owner_sid``, SYSTEM and Administrators alone (full control).

    ``/inheritance:r`` drops what the folder passed down (Authenticated Users, Users);
    ``/grant:r`` replaces any entry of the three. A folder's grants are inherited by what
    is made in it later (``(OI)(CI)``).
    """
    inherit = "(OI)(CI)" if folder else ""
    grants = [f"*{sid}:{inherit}(F)" for sid in dict.fromkeys((owner_sid, SYSTEM_SID, ADMINISTRATORS_SID))]
    return ["icacls", str(path), "/inheritance:r", "/grant:r", *grants]


def powershell_line(command: Sequence[str]) -> str:
    """``command`` as a line to paste into PowerShell (5.1 too): every argument in single quotes.

    Unquoted, PowerShell would read ``(F)`` as an expression and split ``*S-1-5-18:(F)``.
    """
    return " ".join("'" + part.replace("'", "''") + "'" if part != command[0] else part for part in command)


def restrict(path: str | Path, *, folder: bool = False, platform: str = sys.platform,
             run: Callable[..., Any] = subprocess.run) -> bool:
    """On Windows, restrict ``path``'s ACL to its owner, SYSTEM and Administrators; True when done.

    Elsewhere nothing to do (the file's mode, set when it was made, does it). A failure is
    a warning (once per path) with the command an administrator can run, not an error:
    the server still works, its files are only as open as their folder.
    """
    if platform != "win32":
        return True
    sid = _sid_of_this_process(run)
    command = icacls_command(path, sid or "%USERSID%", folder=folder)
    reason = "could not read this account's SID (whoami /user)" if sid is None else ""
    if sid is not None:
        try:
            done = run(command, capture_output=True, timeout=60)
            if done.returncode != 0:
                output = bytes(done.stdout or b"") + bytes(done.stderr or b"")
                reason = f"icacls exited with {done.returncode}: " + output.decode("ascii", "replace").strip()[:200]
        except (OSError, subprocess.SubprocessError) as exc:
            reason = f"icacls did not run: {exc}"
    if not reason:
        return True
    if str(path) not in _WARNED:
        _WARNED.add(str(path))
        log.warning("%s is readable by every local user its folder lets in (%s); to leave it to its owner,"
                    " SYSTEM and Administrators, run in an elevated PowerShell: %s%s", path, reason,
                    powershell_line(command),
                    " (with %USERSID% the SID that `whoami /user` shows)" if sid is None else "")
    return False


def create_private(path: str | Path) -> bool:
    """Create ``path`` empty with mode 0600 if nothing is there yet; True when it made the file.

    The mode is given to ``os.open`` itself, so the file is never readable by others, not
    even for a moment (the umask can only take bits away). Anything already at ``path`` is
    left as it is, even a dangling symlink: ``O_EXCL`` never follows one to create its
    target. On Windows the mode only sets the read-only flag, which 0600 leaves off, so the
    new file's ACL is restricted by :func:`restrict`.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(os.fspath(path), flags, PRIVATE_MODE)
    except FileExistsError:
        return False
    os.close(fd)
    restrict(path)
    return True


def precreate_companions(database: str | Path, platform: str = sys.platform) -> None:
    """On Windows, make the database's ``-wal`` and ``-shm`` private before SQLite makes them.

    SQLite opens a ``-wal`` or ``-shm`` that exists (an empty one is valid: no frames, an
    index to build) rather than creating it, so the files keep the ACL given here. On POSIX
    SQLite copies the database file's mode to them itself.
    """
    if platform != "win32":
        return
    for suffix in ("-wal", "-shm"):
        create_private(f"{database}{suffix}")


#: Waits between tries of :func:`replace_retrying` (about 6 s in all): long enough for a
#: virus scanner or a backup agent to let go of a file it just opened.
REPLACE_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.0)


def replace_retrying(source: str | Path, target: str | Path, *, delays: Sequence[float] = REPLACE_DELAYS,
                     sleep: Callable[[float], None] = time.sleep,
                     replace: Callable[[Any, Any], None] = os.replace) -> None:
    """``os.replace(source, target)``, tried again while ``target`` is held open by another program.

    On Windows, replacing a file that something has open (an antivirus scanning the
    last backup, a backup agent, an editor) fails with ``PermissionError`` (WinError 5 or
    32) until it lets go. Each wait is logged; after the last try the error is raised.
    """
    for attempt, delay in enumerate([*delays, None], 1):
        try:
            replace(source, target)
            return
        except PermissionError as exc:
            if delay is None:
                raise
            log.warning("cannot replace %s yet (%s): another program has it open; try %d of %d in %.2fs",
                        target, exc.strerror or exc, attempt + 1, len(delays) + 1, delay)
            sleep(delay)
