"""The Bottle app called in process (no sockets), on a clock the test moves."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from telegate import Settings, create_app, open_store

from .clock import FakeClock
from .server import Response


class WsgiCaller:
    """Calls the Bottle app in process (no sockets), with a clock the test controls."""

    def __init__(self, tmp_path: Path, db: Path | str | None = None, **settings: Any) -> None:
        self.clock = FakeClock()
        db = db or tmp_path / "wsgi.db"
        self.store = open_store(db, clock=self.clock)
        self.settings = Settings(db=db, **settings)
        self.app = create_app(self.settings, self.store)
        self.admin_key = self.store.create_key("admin", "admin")
        self.client_key = self.store.create_key("client", "client")

    def __call__(self, method: str, path: str, body: Any = None, *, key: str | None = "client",
                 raw: bytes | None = None, headers: dict[str, str] | None = None,
                 query: str = "") -> Response:
        if raw is None and body is not None:
            raw = json.dumps(body).encode()
        raw = raw or b""
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
            "SERVER_NAME": "test", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.input": io.BytesIO(raw), "wsgi.errors": io.StringIO(), "wsgi.url_scheme": "http",
            "CONTENT_LENGTH": str(len(raw)), "CONTENT_TYPE": "application/json",
        }
        if key is not None:
            environ["HTTP_X_API_KEY"] = {"client": self.client_key, "admin": self.admin_key}.get(key, key)
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        captured: dict[str, Any] = {}

        def start_response(status: str, header_list: list, exc_info: Any = None) -> None:
            captured["status"] = int(status.split()[0])
            captured["headers"] = dict(header_list)

        data = b"".join(self.app(environ, start_response))
        return Response(captured["status"], captured["headers"], data)
