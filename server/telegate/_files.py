"""Files only their owner may read: the pool database, its -wal/-shm, and backups.

The database holds key hashes and session meta (proxy passwords, for one), so on POSIX
it is created mode 0600 rather than the usual 0644. Creating it ourselves before SQLite
does is enough: SQLite's unix VFS gives every file it makes beside a database (the
``-wal``, ``-shm`` and ``-journal`` files) the database file's own permission bits
(``findCreateFileMode()`` and the ``-shm`` open in ``os_unix.c``; tests/test_hygiene.py
checks it). An empty file is a valid empty SQLite database.

On Windows, POSIX modes do not apply (a file inherits its folder's ACL), so this is a
no-op there and SQLite creates the file as usual.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PRIVATE_MODE", "create_private"]

PRIVATE_MODE = 0o600


def create_private(path: str | os.PathLike[str]) -> bool:
    """Create ``path`` as an empty file readable and writable by its owner only.

    Returns True when it made the file, False when something already existed at
    ``path`` (left exactly as it is, even a dangling symlink: ``O_EXCL`` never follows
    one) or on Windows. The umask can only take bits away, so the result is at most 0600.
    """
    if os.name == "nt":
        return False
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(Path(path), flags, PRIVATE_MODE)
    except FileExistsError:
        return False
    os.close(fd)
    return True
