"""Request parsing and validation for the HTTP API: bodies, fields, and the error type.

Every check raises :class:`ApiError`, which the app turns into a JSON error with a
``detail`` that says what to fix. Validation happens before the store is touched, so
a rejected request never changes the pool.
"""
from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Any, Literal, Mapping, overload

from ._text import unsafe_detail
from .store import check_groups

__all__ = ["ApiError", "read_json", "Fields", "iso", "MAX_FLOOD_WAIT", "MAX_TTL"]

MAX_TTL = 86400
MAX_FLOOD_WAIT = 366 * 86400  # Telegram's longest waits are days; a year is surely a typo
MAX_TEXT = 500
MAX_META_BYTES = 16 * 1024
MAX_NAME_FILTERS = 10000  # `name` filters on one GET /sessions: the most rows a page may hold
#: A TL method as Telegram's docs spell it: ``contacts.resolveUsername``, ``messages.getHistory``.
_TL_METHOD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63})?")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class ApiError(Exception):
    """An HTTP error answered as ``{"error": code, "detail": detail, **extra}``."""

    def __init__(self, status: int, code: str, detail: str, *,
                 extra: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.extra}


def bad_request(detail: str) -> ApiError:
    return ApiError(400, "bad_request", detail)


def iso(timestamp: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC string with milliseconds (``...Z``)."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_moment(text: str) -> float:
    """An ISO 8601 time (``2025-06-01T12:00:00Z``; no offset means UTC) as epoch seconds;
    ValueError naming the expected form."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, AttributeError):
        raise ValueError(f"expected an ISO 8601 time such as 2025-06-01T12:00:00Z, got {str(text)[:60]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; send a finite number")


#: One decoder for every request body (``json.loads`` with options builds one per call).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def read_json(environ: Mapping[str, Any], max_body: int) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is ``{}``."""
    length_header = environ.get("CONTENT_LENGTH") or "0"
    try:
        length = int(length_header)
    except ValueError:
        raise bad_request("Content-Length must be a whole number") from None
    if length < 0:
        raise bad_request("Content-Length must not be negative")
    if length > max_body:
        raise ApiError(413, "body_too_large", f"request body is {length} bytes; the limit is {max_body}")
    raw = environ["wsgi.input"].read(length) if length else b""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("request body is not valid UTF-8") from None
    try:
        data = _DECODER.decode(text)
    except RecursionError:
        raise bad_request("request body is nested too deeply") from None
    except ValueError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise bad_request("request body must be a JSON object, like {\"session_id\": 1}")
    return data


class Fields:
    """Typed access to a JSON object's fields; unknown fields are an error (a typo must not pass silently)."""

    def __init__(self, data: Mapping[str, Any], allowed: set[str]) -> None:
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise bad_request(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        self.data = data

    def number(self, name: str, *, low: float, high: float, required: bool = False,
               low_inclusive: bool = True) -> float | None:
        value = self.data.get(name)
        if value is None:
            if required:
                raise bad_request(f"{name} is required")
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad_request(f"{name} must be a number of seconds, got {json.dumps(value)[:50]}")
        too_low = value < low if low_inclusive else value <= low
        if too_low or value > high:
            bound = "at least" if low_inclusive else "more than"
            raise bad_request(f"{name} must be {bound} {low:g} and at most {high:g}, got {value:g}")
        return value

    @overload
    def integer(self, name: str, *, required: Literal[True]) -> int: ...

    @overload
    def integer(self, name: str, *, required: bool = False) -> int | None: ...

    def integer(self, name: str, *, required: bool = False) -> int | None:
        value = self.data.get(name)
        if value is None:
            if required:
                raise bad_request(f"{name} is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(f"{name} must be a whole number, got {json.dumps(value)[:50]}")
        if not 0 < value < 2**63:
            raise bad_request(f"{name} must be a positive whole number")
        return value

    @overload
    def text(self, name: str, *, max_length: int = MAX_TEXT, required: Literal[True]) -> str: ...

    @overload
    def text(self, name: str, *, max_length: int = MAX_TEXT, required: bool = False) -> str | None: ...

    def text(self, name: str, *, max_length: int = MAX_TEXT, required: bool = False) -> str | None:
        value = self.data.get(name)
        if value is None:
            if required:
                raise bad_request(f"{name} is required")
            return None
        if not isinstance(value, str):
            raise bad_request(f"{name} must be a string")
        return check_text(name, value, max_length)

    def method(self, name: str) -> str | None:
        """A TL method name (``contacts.resolveUsername``), lower-cased: Telegram matches them case-insensitively."""
        value = self.text(name, max_length=129)
        if value is not None and not _TL_METHOD.fullmatch(value):
            raise bad_request(f"{name} must be a Telegram API method name such as contacts.resolveUsername,"
                              f" got {json.dumps(value)[:80]}")
        return None if value is None else value.lower()

    def request_id(self, name: str = "request_id") -> str | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not _REQUEST_ID.fullmatch(value):
            raise bad_request(f"{name} must be 1 to 64 characters of letters, digits and . _ : -"
                              " (a fresh uuid4().hex per call is ideal)")
        return value

    def boolean(self, name: str) -> bool | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise bad_request(f"{name} must be true or false")
        return value

    def groups(self, name: str = "groups") -> tuple[str, ...] | None:
        """A list of group names, normalised (lower case, sorted, once each); None when absent."""
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, list):
            raise bad_request(f'{name} must be a list of group names, like ["eu", "premium"]')
        try:
            return check_groups(value, name)
        except ValueError as exc:
            raise bad_request(str(exc)) from None

    def meta(self, name: str = "meta") -> dict | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise bad_request(f"{name} must be a JSON object, like {{\"proxy\": \"socks5://...\"}}")
        if len(json.dumps(value, ensure_ascii=False).encode()) > MAX_META_BYTES:
            raise bad_request(f"{name} must be at most {MAX_META_BYTES} bytes of JSON")
        return value


def check_text(name: str, value: str, max_length: int) -> str:
    if not value.strip():
        raise bad_request(f"{name} must not be empty")
    if len(value) > max_length:
        raise bad_request(f"{name} must be at most {max_length} characters")
    unsafe = unsafe_detail(name, value)
    if unsafe:
        raise bad_request(unsafe)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"{name} must be valid Unicode text") from None
    return value


def parse_id(raw: str) -> int:
    """A session id from a URL segment."""
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 2**63:  # "²".isdigit() is True
        raise bad_request(f"session id must be a positive whole number, got {raw[:40]!r}")
    return int(raw)
