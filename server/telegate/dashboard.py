"""The web dashboard: one static page at ``/`` and its files under ``/static/``.

The page holds no data and needs no key. It signs in with an admin key kept in the
tab's ``sessionStorage`` (never in a URL) and drives the admin JSON API
(``/status``, ``/sessions``) from plain JavaScript: no build step, nothing fetched
from outside the server.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import bottle

__all__ = ["install_dashboard", "STATIC_DIR"]

STATIC_DIR = Path(__file__).resolve().parent / "static"

# The page loads only its own script and style, and may only talk to this server.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Revalidate each time, so an upgraded server never runs with yesterday's script.
    "Cache-Control": "no-cache",
}


#: The page's own file types, stated: ``mimetypes`` reads them from the Windows registry,
#: where an installed editor often leaves ``.js`` as ``text/plain``, and under ``nosniff``
#: a browser refuses to run a script served as that (a blank dashboard).
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
          ".png": "image/png", ".ico": "image/x-icon"}


def install_dashboard(app: bottle.Bottle) -> None:
    """Serve ``/`` (the page) and ``/static/<file>`` without a key."""

    def static(filename: str) -> Any:
        mimetype = _TYPES.get(Path(filename).suffix.lower(), "auto")
        return bottle.static_file(filename, root=str(STATIC_DIR), mimetype=mimetype, headers=dict(_SECURITY_HEADERS))

    @app.route("/", "GET", auth=None)
    def index() -> Any:
        return static("index.html")

    @app.route("/static/<filename:path>", "GET", auth=None)
    def static_files(filename: str) -> Any:
        return static(filename)
