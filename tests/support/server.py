"""A real TeleGate server for the tests: ``telegate serve --port 0`` in a subprocess, and its answers.

``LiveServer`` runs ``python -m telegate serve --port 0`` on a database, reads the real
port from its output (never a fixed port, never a sleep: a deadline), and shows the
server's output if it died.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import urllib3

from telegate import open_store
from telegate._stop import new_group_flags, request_stop

from . import dbstate

ROOT = Path(__file__).resolve().parents[2]
STARTUP_DEADLINE = 30.0
_LISTENING = re.compile(r"TeleGate listening on (http://\S+)")


class Response:
    def __init__(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data

    @property
    def json(self) -> Any:
        return json.loads(self.data)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.data[:200]!r}>"


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEGATE_")}
    env["PYTHONUNBUFFERED"] = "1"
    paths = [str(ROOT / "server"), str(ROOT / "sdk")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


class LiveServer:
    """One ``telegate serve`` subprocess over one database (a file or a URL); restartable on the same port."""

    def __init__(self, db_path: Path | str, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.db_path = db_path
        self.args = args
        self.env = env or server_env()
        self.store = open_store(db_path)
        suffix = "" if not self.store.count_keys() else f"-{os.getpid()}-{id(self)}"
        self.admin_key = self.store.create_key("test-admin" + suffix, "admin")
        self.client_key = self.store.create_key("test-client" + suffix, "client")
        self.port = 0
        self.url = ""
        self._resets = 0
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []
        self.http = urllib3.PoolManager(maxsize=32, retries=False, timeout=urllib3.Timeout(30))
        self.start()

    # -- process control ----------------------------------------------------------------

    def start(self) -> None:
        cmd = [sys.executable, "-m", "telegate", "serve", "--port", str(self.port),
               "--db", str(self.db_path), *self.args]
        self.output = []
        ready = threading.Event()
        self.proc = proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True, encoding="utf-8", env=self.env,
                                            cwd=ROOT, creationflags=new_group_flags())

        def drain() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                self.output.append(line)
                match = _LISTENING.search(line)
                if match:
                    self.url = match.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + STARTUP_DEADLINE
        while not ready.wait(0.05):
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"server did not start in {STARTUP_DEADLINE}s:\n{self.log}")
        if proc.poll() is not None and not self.url:
            pytest.fail(f"server exited with {proc.returncode}:\n{self.log}")
        self.port = int(self.url.rsplit(":", 1)[1])

    @property
    def log(self) -> str:
        return "".join(self.output)

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """Ctrl-C (Ctrl-Break on Windows): the server's clean stop."""
        if self.proc and self.proc.poll() is None:
            request_stop(self.proc)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        self.stop()
        self.http.clear()
        self.store.close()

    # -- one server for a module's tests -------------------------------------------------

    def keep_state(self) -> None:
        """Remember the database as it is now (just started: schema and the two keys), for :meth:`reset`."""
        self._clean = dbstate.snapshot(self.db_path)

    def reset(self) -> None:
        """Make this server what a fresh one on a fresh database would be, for the next test.

        A server the last test killed or stopped is started again (on a new port). The
        database gets back exactly the content :meth:`keep_state` saw (every table emptied,
        ids restarting where they did). The output starts after a request the server logs
        now: every line of an earlier test's requests came before it, so none can be read
        as this test's.
        """
        if self.proc is None or self.proc.poll() is not None:
            self.port = 0
            self.start()
        dbstate.restore(self.db_path, self._clean)
        self._resets += 1
        marker = f"/_test_reset_{os.getpid()}_{self._resets}"
        reply = self.request("GET", marker, key=None)
        assert reply.status < 500, reply
        deadline = time.monotonic() + STARTUP_DEADLINE
        while True:
            lines = list(self.output)
            at = next((n for n, line in enumerate(lines) if marker in line), None)
            if at is not None:
                self.output = lines[at + 1:]
                return
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not log {marker}:\n{self.log}")
            time.sleep(0.005)

    # -- helpers ------------------------------------------------------------------------

    def add_sessions(self, *names: str, **kwargs: Any) -> list[int]:
        added, existing = self.store.add_sessions(names, **kwargs)
        assert not existing, f"already registered: {existing}"
        return [row["id"] for row in added]

    def status(self) -> dict[str, Any]:
        return self.request("GET", "/status").json

    def request(self, method: str, path: str, body: Any = None, *, key: str | None = "client",
                raw: bytes | None = None, headers: dict[str, str] | None = None) -> Response:
        """One HTTP request; ``key`` is "client", "admin", None (no key) or a literal key."""
        sent = dict(headers or {})
        if key is not None:
            sent["X-API-Key"] = {"client": self.client_key, "admin": self.admin_key}.get(key, key)
        if raw is None and body is not None:
            raw = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        reply = self.http.request(method, self.url + path, body=raw, headers=sent)
        return Response(reply.status, dict(reply.headers), reply.data)


LOG_DEADLINE = 10.0


def wait_for_log(server: LiveServer, pattern: str) -> re.Match:
    """The server's output is read by a thread: poll it until ``pattern`` shows, with a deadline."""
    deadline = time.monotonic() + LOG_DEADLINE
    while True:
        match = re.search(pattern, server.log)
        if match:
            return match
        if time.monotonic() > deadline:
            pytest.fail(f"no log line matching {pattern!r} in:\n{server.log}")
        time.sleep(0.02)
