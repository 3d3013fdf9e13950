"""The access log: one line per request, as WSGI middleware around the app (``serve`` wraps it)."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from ._text import escape

__all__ = ["access_logged", "access_log", "EVENT"]

access_log = logging.getLogger("telegate.access")

#: The environ entry where a route leaves what its request did, for the access line:
#: ``(format, args)``, e.g. ``("leased session %d (%s) to %s until %s", (7, "acc7", ...))``.
#: One line per request: the access line carries it; with the access log off, the event
#: still gets a line of its own (``telegate.app``), as lease events always did.
EVENT = "telegate.event"

_event_log = logging.getLogger("telegate.app")


def _wsgi_text(value: str) -> str:
    """A WSGI string (bytes as latin-1, PEP 3333) as the UTF-8 text the client meant, when it is UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def access_logged(app: Callable, logger: logging.Logger = access_log) -> Callable:
    """WSGI middleware: one line per request (client address, method, path, status, ms, key name,
    never the key; then what the request did, when its route said: see :data:`EVENT`). The address is the connection's, or the client's that a trusted proxy
    forwarded (``--trusted-proxy``: waitress puts it in ``REMOTE_ADDR``).

    Method, path and key name are escaped like ``repr`` escapes control and format
    characters: a path with ``%0a`` must not write a second, forged line.
    """

    def middleware(environ: dict, start_response: Callable) -> Any:
        started = time.perf_counter()
        status_holder: list[str] = []

        def recording_start_response(status: str, headers: list, exc_info: Any = None) -> Any:
            status_holder.append(status)
            return start_response(status, headers, exc_info)

        try:
            return app(environ, recording_start_response)
        finally:
            event = environ.get(EVENT)
            if not logger.disabled and logger.isEnabledFor(logging.INFO):  # --access-log false: no record at all
                status = status_holder[-1].split(" ", 1)[0] if status_holder else "-"
                waited = environ.get("telegate.waited")  # a long-poll: how long it waited in line
                fmt, args = ("", ()) if event is None else event
                logger.info("%s %s %s %s %.1fms key=%s%s" + (fmt and " " + fmt),
                            escape(environ.get("REMOTE_ADDR") or "-"),
                            escape(environ.get("REQUEST_METHOD") or "-"),
                            escape(_wsgi_text(environ.get("PATH_INFO") or "")),
                            status, (time.perf_counter() - started) * 1000,
                            escape(environ.get("telegate.key_name", "-")),
                            "" if waited is None else f" waited={waited * 1000:.0f}ms", *args)
            elif event is not None and _event_log.isEnabledFor(logging.INFO):
                _event_log.info(event[0], *event[1])

    return middleware
