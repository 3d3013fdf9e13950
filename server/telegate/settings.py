"""One table of server settings shared by CLI flags, ``TELEGATE_*`` variables and kwargs.

Like waitress's ``adjustments.py``: every setting is declared once here (name, type,
default, help), and :func:`resolve` turns flags, the environment and keyword arguments
into one frozen :class:`Settings` object. Nothing reads the environment at import time.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from .store import is_database_url

__all__ = ["SETTINGS", "Setting", "Settings", "SettingsError", "resolve", "env_name"]

N = TypeVar("N", int, float)


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the setting."""


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    convert.__name__ = "|".join(choices)
    return convert


def _in_range(kind: Callable[[Any], N], low: N, high: N, words: str, label: str) -> Callable[[Any], N]:
    """A converter to ``kind`` that refuses values outside ``low``..``high`` (``words``: what
    the error calls them); ``label`` names it in ``--help``."""
    def convert(value: Any) -> N:
        number = kind(value)
        if not low <= number <= high:
            shown = (f"{low}", f"{high}") if kind is int else (f"{low:g}", f"{high:g}")
            raise ValueError(f"expected {words} from {shown[0]} to {shown[1]}, got {value!r}")
        return number

    convert.__name__ = label
    return convert


def _ranged_int(low: int, high: int) -> Callable[[Any], int]:
    return _in_range(int, low, high, "a whole number", "int")


def _database(value: Any) -> Path | str:
    """A SQLite file path, or a PostgreSQL URL kept as text (a Path would fold its '//')."""
    text = str(value)
    if is_database_url(text):
        return text
    if not text.strip():
        raise ValueError("expected a file path or a postgresql:// URL")
    return Path(value)


def _seconds(low: float, high: float) -> Callable[[Any], float]:
    return _in_range(float, low, high, "seconds", "seconds")


def _optional_text(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


def _optional_path(value: Any) -> Path | None:
    if value is None or str(value) == "":
        return None
    return Path(value)


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    convert: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return env_name(self.name)


def env_name(name: str) -> str:
    return "TELEGATE_" + name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "127.0.0.1", "Address to listen on; 0.0.0.0 listens on every interface.", "ADDR"),
    Setting("port", _ranged_int(0, 65535), 8000, "TCP port; 0 picks a free one (the real port is printed).", "PORT"),
    Setting("db", _database, Path("telegate.db"),
            "Where the pool and the API keys live: a SQLite file, or a postgresql://user@host:port/dbname URL"
            " (several servers can share one PostgreSQL database).", "FILE|URL"),
    Setting("threads", _ranged_int(1, 256), 8, "Worker threads that answer requests.", "N"),
    Setting("lease_ttl", _ranged_int(1, 86400), 300, "Lease time in seconds when a client does not ask for one.", "SECONDS"),
    Setting("sessions_dir", _optional_path, None, "Folder of .session files registered (by file stem) at start.", "DIR"),
    Setting("max_body", _ranged_int(1024, 64 * 1024 * 1024), 1024 * 1024, "Largest request body in bytes; larger ones get 413.", "BYTES"),
    Setting("connection_limit", _ranged_int(1, 100000), 4000, "Most client connections open at once (waitress); an SDK worker holds up to two.", "N"),
    Setting("connections_per_ip", _ranged_int(0, 100000), 2000,
            "Most connections open at once from one client address; more are closed at once (0: no limit)."
            " The default fits a fleet of 1,000 SDK workers behind one NAT address; a --trusted-proxy has none.", "N"),
    Setting("header_timeout", _seconds(0.1, 3600), 10.0,
            "Seconds a connection has to send a complete request head (from its first byte, or from connecting);"
            " slower ones are closed. Idle keep-alive connections keep their own 120 s timeout.", "SECONDS"),
    Setting("trusted_proxy", _optional_text, None,
            "Address of a reverse proxy whose X-Forwarded-For and X-Forwarded-Proto are believed (* for any);"
            " the access log then shows the real client address, and accounts travel only through it, over"
            " https (docs/TLS.md).", "ADDR"),
    Setting("max_waiters", _ranged_int(0, 100000), 1000, "Most long-polls (POST /session with wait) parked at once in this process; more are answered at once.", "N"),
    Setting("peer_flood_rest", _ranged_int(1, 366 * 86400), 86400,
            "Seconds a session rests after PEER_FLOOD (Telegram's spam limit names no wait), for the method that hit it.",
            "SECONDS"),
    Setting("handover_grace", _ranged_int(0, 3600), 15,
            "Seconds after its lease ends before an account without a proxy is leased to another host than the one"
            " that used it last (Telegram must see the old connection closed first); 0 turns it off.", "SECONDS"),
    Setting("max_client_rest", _ranged_int(1, 366 * 86400), 7 * 86400,
            "Longest rest (flood wait, PEER_FLOOD) a client key may report, in seconds; longer ones are clamped"
            " to it and logged. Admin keys may report longer.", "SECONDS"),
    Setting("event_retention_days", _ranged_int(1, 3650), 30, "Days each session's history (GET /sessions/ID/events) is kept.",
            "DAYS"),
    Setting("synchronous", _choice("full", "normal"), "full", "SQLite synchronous mode: full survives power loss, normal only process crashes.", "MODE"),
    Setting("log_level", _choice("debug", "info", "warning", "error"), "info", "Least severe log level written.", "LEVEL"),
    Setting("log_format", _choice("text", "json"), "text", "Log line format.", "FORMAT"),
    Setting("access_log", _bool, True, "Write one line per request (method, path, status, ms, key name).", "BOOL"),
    Setting("metrics_auth", _bool, True, "Require an API key on GET /metrics.", "BOOL"),
    Setting("master_key_file", _optional_path, None,
            "File of the master key that seals accounts (when TELEGATE_MASTER_KEY is not set); by default"
            " telegate.key beside the SQLite database, created on first need. Back it up apart from the database.",
            "FILE"),
    Setting("allow_plain_http_accounts", _bool, False,
            "Hand out accounts over plain HTTP on a non-loopback listener too (a warning at every start).", "BOOL"),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


def _default(name: str) -> Any:
    return _BY_NAME[name].default


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting, resolved; the defaults are the table's (:data:`SETTINGS`)."""

    host: str = _default("host")
    port: int = _default("port")
    db: Path | str = _default("db")
    threads: int = _default("threads")
    lease_ttl: int = _default("lease_ttl")
    sessions_dir: Path | None = _default("sessions_dir")
    max_body: int = _default("max_body")
    connection_limit: int = _default("connection_limit")
    connections_per_ip: int = _default("connections_per_ip")
    header_timeout: float = _default("header_timeout")
    trusted_proxy: str | None = _default("trusted_proxy")
    max_waiters: int = _default("max_waiters")
    peer_flood_rest: int = _default("peer_flood_rest")
    handover_grace: int = _default("handover_grace")
    max_client_rest: int = _default("max_client_rest")
    event_retention_days: int = _default("event_retention_days")
    synchronous: str = _default("synchronous")
    log_level: str = _default("log_level")
    log_format: str = _default("log_format")
    access_log: bool = _default("access_log")
    metrics_auth: bool = _default("metrics_auth")
    master_key_file: Path | None = _default("master_key_file")
    allow_plain_http_accounts: bool = _default("allow_plain_http_accounts")


if [field.name for field in dataclasses.fields(Settings)] != [setting.name for setting in SETTINGS]:
    raise RuntimeError("Settings and SETTINGS name different settings: declare each in both, in one order")


def resolve(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build :class:`Settings`: explicit ``overrides`` win, then ``TELEGATE_*`` variables, then defaults.

    ``None`` in ``overrides`` means "not given" (an argparse flag left out).
    """
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    unknown = set(overrides) - set(_BY_NAME)
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = overrides.get(setting.name)
        source = setting.flag
        if raw is None and setting.env in environ:
            raw, source = environ[setting.env], setting.env
        if raw is None:
            values[setting.name] = setting.default
            continue
        try:
            values[setting.name] = setting.convert(raw)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{source}: {exc}") from exc
    return Settings(**values)
