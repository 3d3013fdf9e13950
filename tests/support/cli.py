"""The ``telegate`` command as the tests run it: in process (``main``), or as a real subprocess."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from telegate.cli import main

from .server import ROOT, server_env


def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, stdin=io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


def run_process(*argv: str, env: dict | None = None, cwd: Path | None = None, stdin: str = "",
                ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "telegate", *argv], input=stdin, capture_output=True,
                          text=True, env={**server_env(), **(env or {})}, cwd=cwd or ROOT, timeout=60, encoding="utf-8")
