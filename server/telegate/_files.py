"""Files that hold secrets: created readable by their owner only (POSIX modes; Windows ignores them)."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["create_private"]


def create_private(path: str | Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist yet; an existing file is left as it is.

    The mode is given to ``os.open`` itself, so the file is never readable by others, not
    even for a moment. On Windows the mode only sets the read-only flag, which 0600 leaves off.
    """
    try:
        fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
