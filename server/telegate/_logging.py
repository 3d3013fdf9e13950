"""Log set-up for ``telegate serve``: text or JSON lines on stderr."""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from ._text import mask_secrets

__all__ = ["configure"]


class TextFormatter(logging.Formatter):
    """Plain lines; a database password in any message (a driver's, say) is masked."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


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
        return mask_secrets(json.dumps(entry, ensure_ascii=False))


def configure(level: str = "info", fmt: str = "text", access_log: bool = True) -> None:
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
