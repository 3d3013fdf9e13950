"""Log set-up for ``telegate serve``: text or JSON lines on stderr."""
from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any

from ._text import mask_secrets

__all__ = ["configure", "safe_output", "JsonLines"]


def safe_output(stream: Any) -> None:
    """Let ``stream`` write any text: what its encoding can't show becomes a ``\\x``/``\\u`` escape.

    For output that is not a terminal (a pipe, a file, a service's log): a Windows console
    redirected to a file writes in its ANSI code page (cp1251, cp1252...), where an emoji or
    another script raises UnicodeEncodeError. A terminal is left alone (Python writes the
    Windows console in UTF-16; a POSIX terminal's locale is the user's choice).
    """
    reconfigure = getattr(stream, "reconfigure", None)
    try:
        if reconfigure is not None and not stream.isatty():
            reconfigure(errors="backslashreplace")
    except (OSError, ValueError):  # closed, or detached: nothing to write to anyway
        pass


class TextFormatter(logging.Formatter):
    """Plain lines; a database password in any message (a driver's, say) is masked."""

    _second: tuple[int, str] = (-1, "")  # the last second written, as text: one strftime a second

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's)
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second, text = self._second
        if second != int(record.created):
            second = int(record.created)
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = (second, text)
        return f"{text},{int(record.msecs):03d}"  # logging's default_msec_format


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # ASCII only: under NSSM stderr is a file in the ANSI code page (cp1251 on a Russian
        # Windows), where a name like "🙂 bot" can't be written as is; \ud83d\ude42 escapes
        # read back as the same JSON string everywhere.
        return mask_secrets(json.dumps(entry, ensure_ascii=True))


def configure(level: str = "info", fmt: str = "text", access_log: bool = True) -> None:
    safe_output(sys.stderr)  # a text log line never fails on a character the file's code page lacks
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("telegate", "waitress"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    logging.getLogger("telegate.access").disabled = not access_log


class JsonLines:
    """A text stream that writes each line given to it as a JSON log line (for ``serve``'s own lines).

    With ``--log-format json`` everything ``serve`` writes to stderr is JSON, so a log
    collector (or NSSM's log file) never meets a line it can't parse: the "listening"
    and "stopped" lines, and the first start's admin key, go through here.
    """

    def __init__(self, stream: Any, logger: str = "telegate.serve") -> None:
        self.stream = stream
        self.logger = logger
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if line.strip():
                entry = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "level": "info",
                         "logger": self.logger, "message": line.strip()}
                self.stream.write(json.dumps(entry, ensure_ascii=True) + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
