"""Run a command whose output goes to a terminal (a pseudo-terminal), as a user's shell would.

``telegate serve`` prints the first admin key only when its output is a terminal; tests
that read that key start it here. POSIX only (``pty``): those tests skip on Windows.
"""
from __future__ import annotations

import os
import subprocess
from typing import Any, Iterator

__all__ = ["on_terminal"]


def on_terminal(command: list[str], **popen: Any) -> tuple[subprocess.Popen, Iterator[str]]:
    """Start ``command`` with stdout and stderr on a new pseudo-terminal; (process, its lines).

    The lines are text with the terminal's ``\\r\\n`` turned back into ``\\n``; they end when the
    process closes the terminal (exits).
    """
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(command, stdout=slave, stderr=slave, **popen)
    finally:
        os.close(slave)

    def lines() -> Iterator[str]:
        pending = b""
        try:
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every writer closed the terminal
                    chunk = b""
                if not chunk:
                    break
                pending += chunk.replace(b"\r\n", b"\n")
                *done, pending = pending.split(b"\n")
                for line in done:
                    yield line.decode("utf-8", "replace") + "\n"
            if pending:
                yield pending.decode("utf-8", "replace")
        finally:
            os.close(master)

    return proc, lines()
