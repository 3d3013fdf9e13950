"""README.md runs as written: its shell and Python blocks, in order, against a live server.

Every ```bash / ```sh / ```python block is run in the README's order, shell blocks by
bash with ``set -euo pipefail``, each block starting from the environment the previous
one left (as in one terminal). Only what cannot be known in advance is replaced, and
each replacement is checked to still match the README, so a change there fails here:

* the install block (venv + ``pip install .``): the test puts a ``telegate`` command and
  ``python`` for this checkout on PATH instead (CI's own ``pip install '.[test]'`` is the
  install that is tested);
* ``telegate serve``: run in the background the same way, in the "clone" folder, with
  ``--port 0`` (the README's port choice; tests never use fixed ports); its printed
  address replaces ``http://127.0.0.1:8000`` and its printed admin key replaces ``tg_...``;
* the test-suite block (``python -m pytest``) is not run: it is this suite.

The second terminal's blocks run in a folder other than the server's, which must stay
empty of databases.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from support import ROOT, STARTUP_DEADLINE, server_env
from support.terminal import on_terminal
from telegate._stop import request_stop
from telegate.store import open_store

README = ROOT / "README.md"
BLOCK = re.compile(r"^```(bash|sh|python)\n(.*?)^```", re.M | re.S)
KEY = re.compile(r"\btg_[A-Za-z0-9_-]{43}\b")

INSTALL = "python3 -m venv .venv\n. .venv/bin/activate\npip install .\n"
SERVE = "telegate serve"
SUITE = "pip install '.[test]' && python -m pytest -n 2 --dist loadfile"
URL_PLACEHOLDER = "http://127.0.0.1:8000"
KEY_PLACEHOLDER = "tg_..."
BLOCK_TIMEOUT = 120


def readme_blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def _command(code: str) -> str:
    """A block's commands without comments or blank lines."""
    lines = (line.split(" #", 1)[0].strip() for line in code.splitlines() if not line.lstrip().startswith("#"))
    return "\n".join(line for line in lines if line)


class Serve:
    """``telegate serve`` in the background, as the README starts it, with its output read as it comes."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        # In a terminal, as a user runs it: only there does serve print the first admin key.
        self.proc, stream = on_terminal([*shlex.split(command), "--port", "0"], cwd=cwd, env=env,
                                        stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self.url = ""
        ready = threading.Event()

        def drain() -> None:
            for line in stream:
                self.lines.append(line)
                match = re.search(r"TeleGate listening on (http://\S+)", line)
                if match:
                    self.url = match.group(1)
                    ready.set()
            ready.set()

        self.reader = threading.Thread(target=drain, daemon=True)
        self.reader.start()
        if not ready.wait(STARTUP_DEADLINE) or not self.url:
            self.stop()
            pytest.fail(f"`{command}` did not start:\n{self.output}")
        keys = KEY.findall(self.output)
        assert len(keys) == 1, f"the first start prints one admin key:\n{self.output}"
        self.admin_key = keys[0]

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int | None:
        """Ctrl-C, as the README says."""
        if self.proc.poll() is None:
            request_stop(self.proc)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.reader.join(5)
        return self.proc.returncode


def _tools(bin_dir: Path) -> None:
    """``telegate`` and ``python`` on PATH, as the README's ``pip install .`` in a venv leaves them."""
    bin_dir.mkdir()
    for name, args in (("telegate", '-m telegate "$@"'), ("python", '"$@"')):
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {args}\n', encoding="utf-8")
        tool.chmod(0o755)


def _read_env(path: Path) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in path.read_bytes().decode().split("\0") if "=" in item)
    return {name: value for name, value in pairs if not name.startswith("BASH_FUNC_")}


def _check(what: str, proc: subprocess.CompletedProcess) -> None:
    report = f"{what} failed ({proc.returncode}):\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, report
    assert "Traceback" not in proc.stdout + proc.stderr, report
    assert "telegate: error" not in proc.stderr, report
    assert not re.search(r'"error"\s*:', proc.stdout), report  # curl -s prints a JSON error and exits 0


@pytest.mark.skipif(os.name == "nt", reason="the README's blocks are POSIX shell")
def test_readme_blocks_run_in_order(tmp_path):
    blocks = readme_blocks()
    commands = [_command(code) for _, code in blocks]
    assert commands.count(SERVE) == 1, "the README starts the server with `telegate serve`"
    assert INSTALL.strip() in commands, "the README installs with venv + pip install ."
    assert SUITE in commands, "the README's test command (what .ci/run runs) changed"
    ci_run = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert SUITE.split(" && ")[1] in ci_run, ".ci/run runs the README's test command"
    assert sum(KEY_PLACEHOLDER in code for _, code in blocks) == 1, "one place takes the admin key serve printed"
    assert sum(URL_PLACEHOLDER in code for _, code in blocks) == 1, "one place says where the server listens"
    assert len(blocks) >= 5

    clone, terminal_2 = tmp_path / "clone", tmp_path / "terminal-2"
    clone.mkdir()
    terminal_2.mkdir()
    _tools(tmp_path / "bin")
    env = server_env()
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env_file = tmp_path / "env"
    serve: Serve | None = None
    cwd = clone
    outputs: list[str] = []
    try:
        for number, ((language, code), command) in enumerate(zip(blocks, commands), 1):
            what = f"README block {number} ({language}):\n{code}"
            if command == INSTALL.strip():
                assert serve is None, "install comes before serve"
                continue
            if command == SUITE:
                continue
            if command == SERVE:
                serve = Serve(command, clone, env)
                cwd = terminal_2  # "Open a second terminal (in any folder)"
                continue
            assert serve is not None, f"{what}\nruns before the server is started"
            code = code.replace(URL_PLACEHOLDER, serve.url).replace(KEY_PLACEHOLDER, serve.admin_key)
            script = tmp_path / f"block{number}.{'py' if language == 'python' else 'sh'}"
            if language == "python":
                script.write_text(code, encoding="utf-8")
                argv = ["python", str(script)]
            else:
                script.write_text(f"set -euo pipefail\n{code}\nenv -0 > {shlex.quote(str(env_file))}\n",
                                  encoding="utf-8")
                argv = ["bash", str(script)]
            proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT,
                                  stdin=subprocess.DEVNULL, encoding="utf-8")
            _check(what, proc)
            outputs.append(proc.stdout)
            if language != "python":
                env = _read_env(env_file)
        assert serve is not None
        # What the walkthrough promised happened, on the server the README started:
        assert env.get("TELEGATE_ADMIN_KEY") == serve.admin_key
        assert KEY.fullmatch(env.get("WORKER_KEY", "")), "keys create printed the key alone"
        everything = "".join(outputs)
        assert re.search(r'"session_name":"acc\d"', everything), "curl leased a session"
        assert '"in_floodwait":1' in everything, "the flood wait shows in /status"
        assert "working with acc" in everything and "\nTrue\n" in everything, "the SDK block leased and released"
        assert list(terminal_2.iterdir()) == [], "the second terminal's folder got no database"
        # Run again, the block that makes the worker key stops at the error (keys create exits 1
        # on an existing name), rather than go on with an empty WORKER_KEY.
        (number, code), = [(n, c) for n, (_, c) in enumerate(blocks, 1) if "keys create worker-1" in c]
        script = tmp_path / f"block{number}-again.sh"
        script.write_text("set -euo pipefail\n" + code.replace(URL_PLACEHOLDER, serve.url)
                          .replace(KEY_PLACEHOLDER, serve.admin_key) + "\necho REACHED-THE-END\n", encoding="utf-8")
        again = subprocess.run(["bash", str(script)], cwd=terminal_2, env=env, capture_output=True, text=True,
                               encoding="utf-8", timeout=BLOCK_TIMEOUT, stdin=subprocess.DEVNULL)
        assert again.returncode == 1 and "an active key named 'worker-1' exists" in again.stderr, again
        assert "REACHED-THE-END" not in again.stdout and "STATE" not in again.stdout, again
    finally:
        code = serve.stop() if serve is not None else None
    assert code == 0 and "TeleGate stopped" in serve.output, serve.output
    with open_store(clone / "telegate.db") as store:
        names = [row["name"] for row in store.list_sessions()[0]]
        assert names == ["acc1", "acc2", "acc3"]
        assert {row["name"] for row in store.list_keys()} == {"admin", "worker-1"}
