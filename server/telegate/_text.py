"""Text that ends up in front of the admin: refuse invisible characters, escape them in logs.

Holders, disable reasons and session names are shown by the dashboard, ``sessions list``
and the log. A newline or ESC in them forges lines or drives the terminal; a format
character (U+202E RIGHT-TO-LEFT OVERRIDE, zero-width spaces, U+FEFF) makes one name
look like another. So text a client or a file name sets may hold neither Unicode
category Cc (control) nor Cf (format), nor the line and paragraph separators U+2028 and
U+2029 (Zl, Zp: ``str.splitlines`` and many viewers break lines there). What we only log
is escaped instead.
"""
from __future__ import annotations

import functools
import re
import unicodedata

__all__ = ["UNSAFE_CATEGORIES", "find_unsafe", "unsafe_detail", "escape", "text_pattern", "mask_secrets"]

# user:password@ in a URL (any scheme), and password=... in a libpq key/value string.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*):[^@\s/?#]*@")
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """``text`` with the passwords of database URLs (``postgresql://u:SECRET@h``) and of
    ``password=SECRET`` parameters replaced by ``***``: for banners, logs and errors."""
    if "@" not in text and "assword" not in text and "ASSWORD" not in text:
        return text  # the fast path: nearly every log line
    return _KV_PASSWORD.sub(r"\g<head>***", _URL_PASSWORD.sub(r"\g<head>:***@", text))

UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
_ESCAPED_CATEGORIES = UNSAFE_CATEGORIES | {"Cs"}  # lone surrogates: refused elsewhere as invalid text

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def find_unsafe(text: str) -> tuple[int, str] | None:
    """The index and the first control, format or line-separator character in ``text``, or None."""
    if text.isprintable():  # C-speed fast path: printable text has no Cc or Cf at all
        return None
    for index, char in enumerate(text):
        if unicodedata.category(char) in UNSAFE_CATEGORIES:
            return index, char
    return None


def unsafe_detail(field: str, text: str) -> str | None:
    """Why ``text`` is refused for ``field`` (naming the character and its position from 1), or None."""
    found = find_unsafe(text)
    if found is None:
        return None
    index, char = found
    name = unicodedata.name(char, "")
    return (f"{field} must not contain control or format characters"
            f" (U+{ord(char):04X}{' ' + name if name else ''} at position {index + 1})")


def _escape_char(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    if unicodedata.category(char) not in _ESCAPED_CATEGORIES:
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape(text: str) -> str:
    """``text`` with control and format characters (and backslashes) escaped the way ``repr`` does.

    The result is one line whatever the input, and reads back unambiguously.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(map(_escape_char, text))


@functools.lru_cache(maxsize=None)
def text_pattern() -> str:
    """A regular expression for the text the API accepts: not blank, no refused BMP character.

    For the OpenAPI document, whose patterns are ECMA-262: every character is a
    ``\\uXXXX`` escape, read alike by Python's ``re`` and JavaScript. The few refused
    characters outside the BMP (tags U+E0001, U+E0020-E007F, some musical and
    hieroglyph format controls) are left out of the pattern, since a JavaScript regex
    without the ``u`` flag cannot name them; the server refuses them all the same.
    Built once per process from this Python's Unicode tables (~15 ms).
    """
    ranges: list[list[int]] = []
    for code in range(0x10000):
        if unicodedata.category(chr(code)) in UNSAFE_CATEGORIES:
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    refused = "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)
    return f"^[^{refused}]*[^\\s{refused}][^{refused}]*$"
