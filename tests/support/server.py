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
                                            stderr=subprocess.STDOUT, text=True, env=self.env, cwd=ROOT)

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
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
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
