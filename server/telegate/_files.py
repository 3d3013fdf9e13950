"""Files that hold secrets: the pool database, its -wal/-shm, and backups, readable by their owner only.

The database holds key hashes and session meta (proxy passwords, for one), so on POSIX
it is created mode 0600 rather than the usual 0644. Creating it ourselves before SQLite
does is enough: SQLite's unix VFS gives every file it makes beside a database (the
``-wal``, ``-shm`` and ``-journal`` files) the database file's own permission bits
(``robust_open()`` with the mode from ``findCreateFileMode()``, and the ``-shm`` open, in
``os_unix.c``; tests/live/test_safe_files_and_text.py checks it). An empty file is a valid empty SQLite database.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PRIVATE_MODE", "create_private"]

PRIVATE_MODE = 0o600


def create_private(path: str | Path) -> bool:
    """Create ``path`` empty with mode 0600 if nothing is there yet; True when it made the file.

    The mode is given to ``os.open`` itself, so the file is never readable by others, not
    even for a moment (the umask can only take bits away). Anything already at ``path`` is
    left as it is, even a dangling symlink: ``O_EXCL`` never follows one to create its
    target. On Windows the mode only sets the read-only flag, which 0600 leaves off; the
    file takes its folder's ACL.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(os.fspath(path), flags, PRIVATE_MODE)
    except FileExistsError:
        return False
    os.close(fd)
    return True
