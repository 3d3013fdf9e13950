"""``telegate sessions list``: the operator's table of sessions, or JSON (one document or lines).

Each line: the session's state, groups, what its account shows (phone, username, premium,
proxy host, device; never a secret), who had it last, and why it is not free.
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Mapping, TextIO

from ._admin_client import Admin

__all__ = ["list_sessions"]

_JSON_FIELDS = ("id", "name", "kind", "state", "holder", "disabled_reason", "use_count", "flood_count", "meta",
                "lease_expires_at", "flood_wait_until", "rests", "groups", "leased_at", "last_holder",
                "has_account", "phone", "username", "premium", "device", "proxy_host", "name_problem")


def _json_row(row: Mapping[str, object], ascii_only: bool) -> str:
    return json.dumps({k: row[k] for k in _JSON_FIELDS}, ensure_ascii=ascii_only)


def _detail(row: Mapping[str, object]) -> str:
    """Why the session is not free, in words, and a name registered before the name rules."""
    detail = _why_not_free(row)
    if row.get("name_problem"):  # a name registered before the rules: flagged until fixed
        detail = (f"{detail}; " if detail else "") + f"NAME: {row['name_problem']}"
    return detail


def _why_not_free(row: Mapping[str, object]) -> str:
    if row["state"] == "in_use":
        return f"{row['holder'] or '?'} for {row['lease_remaining'] or 0:.0f}s more"
    if row["state"] == "in_floodwait":
        return f"flood wait {row['flood_wait_remaining'] or 0:.0f}s more"
    if row["state"] == "disabled":
        return str(row["disabled_reason"] or "")
    if row["state"] == "resting_scoped":
        rests: list[dict[str, Any]] = row["rests"]  # type: ignore[assignment]
        return "resting for " + ", ".join(f"{rest['scope']} {rest['remaining'] or 0:.0f}s more" for rest in rests)
    return ""


#: The table's columns: (header, the cell of a row); the last one is not padded.
_COLUMNS: tuple[tuple[str, object], ...] = (
    ("ID", lambda r: str(r["id"])),
    ("NAME", lambda r: r["name"]),
    ("KIND", lambda r: r["kind"]),
    ("STATE", lambda r: r["state"]),
    ("GROUPS", lambda r: ",".join(r["groups"])),
    ("ACCOUNT", lambda r: "yes" if r["has_account"] else "no"),
    ("PHONE", lambda r: r["phone"] or ""),
    ("USERNAME", lambda r: f"@{r['username']}" if r["username"] else ""),
    ("PREMIUM", lambda r: "" if r["premium"] is None else ("yes" if r["premium"] else "no")),
    ("PROXY", lambda r: r["proxy_host"] or ""),
    ("DEVICE", lambda r: r["device"] or ""),
    ("LAST LEASED", lambda r: (r["leased_at"] or "")[:19].replace("T", " ")),
    ("BY", lambda r: r["last_holder"] or ""),
    ("DETAIL", _detail),
)
_MAX_WIDTH = 40  # a longer cell overflows its column rather than widen every line


def list_sessions(admin: Admin, args: argparse.Namespace, out: TextIO) -> int:
    rows = admin.iter_sessions(args.state)
    # JSON to an output that is not UTF-8 (a file on a cp1251 console) is kept ASCII (\uXXXX
    # escapes): the backslashreplace fallback would write \U0001f642, which is not JSON.
    encoding = (getattr(out, "encoding", None) or "utf-8").lower().replace("-", "").replace("_", "")
    ascii_only = encoding not in ("utf8", "utf8sig")
    if args.jsonl:
        for row in rows:
            out.write(_json_row(row, ascii_only) + "\n")
        return 0
    if args.json:  # one document, written as it streams in
        out.write('{"sessions": [')
        total = 0
        for row in rows:
            out.write(("," if total else "") + "\n  " + _json_row(row, ascii_only))
            total += 1
        out.write(("\n" if total else "") + f'], "total": {total}}}\n')
        return 0
    cells = [[cell(row) for _, cell in _COLUMNS] for row in rows]  # type: ignore[operator]
    if not cells:
        out.write("no sessions" + (f" in state {args.state}" if args.state else "") + "\n")
        return 0
    widths = [min(_MAX_WIDTH, max(len(header), *(len(line[n]) for line in cells)))
              for n, (header, _) in enumerate(_COLUMNS)]
    for line in [[header for header, _ in _COLUMNS], *cells]:
        padded = [text.rjust(widths[0]) if n == 0 else text.ljust(widths[n]) for n, text in enumerate(line[:-1])]
        out.write(("  ".join(padded) + "  " + line[-1]).rstrip() + "\n")
    return 0
