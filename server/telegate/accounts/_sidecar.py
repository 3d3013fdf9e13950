"""A seller's ``NAME.json`` beside ``NAME.session``: app, device, proxy, 2FA and profile.

The sellers' format, as the popular account shops write it::

    {"app_id": 2040, "app_hash": "b18441a1...", "device": "Desktop", "sdk": "Windows 10",
     "app_version": "4.8.1 x64", "lang_pack": "tdesktop", "lang_code": "en",
     "system_lang_code": "en-US" (or "system_lang_pack"), "twoFA": "...", "phone": "7999...",
     "username": "...", "is_premium": false, "id": 12345,
     "proxy": ["socks5", "1.2.3.4", 1080, true, "user", "pass"] | {...} | "socks5://..."}

Anything else in the file (names, avatars, dates, spam-block flags) is ignored. A field
that is missing or of the wrong type is a warning naming the file and the field, never
a crash, and never its value (it may be a password).
"""
from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["apply_sidecar", "proxy_url", "MAX_SIDECAR_BYTES"]

#: A seller's json is a few hundred bytes; anything this big is not one (and is not read whole).
MAX_SIDECAR_BYTES = 1024 * 1024

# The fields whose absence leaves the account half-usable: without api_id/api_hash it can't
# log in, without the device fingerprint a library's default one replaces the seller's.
_EXPECTED = ("app_id", "app_hash", "device", "sdk", "app_version")

# PySocks' proxy type numbers, which some sellers write instead of names.
_PROXY_TYPES = {1: "socks4", 2: "socks5", 3: "http", "socks4": "socks4", "socks5": "socks5", "http": "http",
                "https": "http", "socks5h": "socks5", "socks4a": "socks4"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())  # "2040": what was meant is plain
    return None


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    return None


def _as_secret(value: Any) -> str | None:
    """A 2FA password, which sellers sometimes write as a number (kept as its digits, unstripped)."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "0", "1", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    return None


def _as_hash(value: Any) -> str | None:
    text = _as_text(value)
    if text is None or len(text) != 32:
        return None
    try:
        int(text, 16)
    except ValueError:
        return None
    return text.lower()


def _as_phone(value: Any) -> str | None:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else _as_text(value)
    if text is None:
        return None
    digits = text.replace(" ", "").replace("-", "").replace("(", "").replace(")", "")
    if digits.startswith("+"):
        digits = digits[1:]
    return "+" + digits if digits.isdigit() else None


def _as_username(value: Any) -> str | None:
    text = _as_text(value)
    return text.lstrip("@") or None if text else None


def proxy_url(value: Any) -> str | None:
    """A seller's proxy (list, dict or URL) as one URL ``scheme://user:pass@host:port``.

    ``None`` for "no proxy" (null, empty); raises ``ValueError`` (with no secret in it)
    for anything else that is not a proxy.
    """
    if value in (None, "", [], {}):
        return None
    if isinstance(value, str):
        parts = urllib.parse.urlsplit(value.strip())
        scheme = _PROXY_TYPES.get(parts.scheme.lower())
        try:
            port = parts.port
        except ValueError:
            raise ValueError("its port is not a number") from None
        if not scheme or not parts.hostname or not port:
            raise ValueError("not a proxy URL like socks5://user:pass@host:port")
        return _url(scheme, parts.hostname, port, urllib.parse.unquote(parts.username or "") or None,
                    urllib.parse.unquote(parts.password or "") or None)
    if isinstance(value, list):
        if len(value) < 3:
            raise ValueError('a list needs at least ["socks5", host, port]')
        fields = list(value) + [None] * (6 - len(value))
        scheme_value, host, port, _rdns, user, password = fields[:6]
    elif isinstance(value, dict):
        lowered = {str(k).lower(): v for k, v in value.items()}

        def pick(*names: str) -> Any:
            return next((lowered[n] for n in names if lowered.get(n) not in (None, "")), None)

        scheme_value = pick("proxy_type", "scheme", "type", "protocol")
        host, port = pick("addr", "hostname", "host", "server", "ip"), pick("port")
        user, password = pick("username", "user", "login"), pick("password", "pass")
        if scheme_value is None:
            scheme_value = "socks5"
    else:
        raise ValueError(f"{_kind(value)}, not a list, an object or a URL")
    scheme = _PROXY_TYPES.get(scheme_value.lower() if isinstance(scheme_value, str) else scheme_value)
    if scheme is None:
        raise ValueError("its type is not socks5, socks4 or http")
    port_number = _as_int(port)
    if not isinstance(host, str) or not host.strip() or port_number is None or not 0 < port_number < 65536:
        raise ValueError("it lacks a host or a port number")
    return _url(scheme, host.strip(), port_number, _as_secret(user), _as_secret(password))


def _url(scheme: str, host: str, port: int, user: str | None, password: str | None) -> str:
    auth = ""
    if user:
        auth = urllib.parse.quote(user, safe="")
        if password:
            auth += ":" + urllib.parse.quote(password, safe="")
        auth += "@"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{auth}{host}:{port}"


# json key -> (account field, converter, what it should be)
_FIELDS: dict[str, tuple[str, Callable[[Any], Any], str]] = {
    "app_id": ("api_id", _as_int, "a number"),
    "app_hash": ("api_hash", _as_hash, "32 hex digits"),
    "device": ("device_model", _as_text, "text"),
    "sdk": ("system_version", _as_text, "text"),
    "app_version": ("app_version", _as_text, "text"),
    "lang_pack": ("lang_pack", _as_text, "text"),
    "lang_code": ("lang_code", _as_text, "text"),
    "system_lang_code": ("system_lang_code", _as_text, "text"),
    "system_lang_pack": ("system_lang_code", _as_text, "text"),
    "twoFA": ("twofa", _as_secret, "text"),
    "phone": ("phone", _as_phone, "a phone number"),
    "username": ("username", _as_username, "text"),
    "is_premium": ("premium", _as_bool, "true or false"),
    "id": ("user_id", _as_int, "a number"),
}


def apply_sidecar(path: Path, account: dict[str, Any]) -> list[str]:
    """Fill ``account`` from the seller's json at ``path``; the warnings, each naming the file.

    The json wins over the session file for what both hold (api_id), except the user id,
    which the session's auth key belongs to: a different ``id`` is a warning.
    """
    shown = path.name
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SIDECAR_BYTES + 1)
    except OSError as exc:
        return [f"{shown}: cannot read it ({exc.strerror or exc}); the session is imported without it"]
    if len(raw) > MAX_SIDECAR_BYTES:
        return [f"{shown}: over {MAX_SIDECAR_BYTES // 1024} KiB, not a seller's json; the session is imported"
                " without it"]
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        return [f"{shown}: not UTF-8 text; the session is imported without it"]
    except RecursionError:
        return [f"{shown}: nested too deep to be a seller's json; the session is imported without it"]
    except json.JSONDecodeError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})"
        return [f"{shown}: not valid JSON{where}; the session is imported without it"]
    if not isinstance(data, dict):
        return [f"{shown}: {_kind(data)}, not a JSON object; the session is imported without it"]
    return _apply(shown, data, account)


def _apply(shown: str, data: Mapping[str, Any], account: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    missing = [key for key in _EXPECTED if data.get(key) in (None, "")
               and not (key == "app_id" and account.get("api_id"))]
    for key, (field, convert, wanted) in _FIELDS.items():
        if key not in data or data[key] in (None, ""):
            continue
        value = convert(data[key])
        if value is None:
            problems.append(f"{key} is {_kind(data[key])}, not {wanted}")
            continue
        if field == "user_id" and account.get("user_id") not in (None, value):
            problems.append("id differs from the session's user id (the session's is kept)")
            continue
        account[field] = value
    if "proxy" in data:
        try:
            account["proxy"] = proxy_url(data["proxy"])
        except ValueError as exc:
            problems.append(f"proxy is not usable: {exc}")
    lines = []
    if missing:
        lines.append(f"{shown}: missing {', '.join(missing)}")
    if problems:
        lines.append(f"{shown}: " + "; ".join(problems) + " (ignored)")
    return lines
