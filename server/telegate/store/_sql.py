"""The pool's shared vocabulary: state predicates, row shapes and statement padding.

Written once in the store's dialect (``:named`` parameters, ``GREATEST``, ``/*skip_locked*/``),
used by every part (``_leases``, ``_catalogue``, ``_keys``, ``_counts``, ``_history``).

A session's state, in the order the predicates below check it (a NULL time counts as
"long ago"): disabled; in use (a lease that has not run out); in flood wait (an
account-wide rest); resting for some methods (scoped rests: plain acquires skip it); free. ``avail_at`` is the moment a session can next be handed out
(lease end, flood-wait end, or its last release); ``rest_until`` the end of its latest
scoped rest (rests only lengthen, so it is the max of ``session_rests.until``).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Optional, Sequence, TypeVar

from ._base import Lease

__all__ = ["IS_DISABLED", "IS_IN_USE", "IS_FLOODWAIT", "IS_FREE", "IS_RESTING_SCOPED", "STATE_SQL", "RESTING",
           "RESTING_FOR", "PLAIN_AVAIL", "count", "padded", "session_row", "lease_from", "LEASE_COLUMNS",
           "in_groups", "key_groups", "Fit", "HANDOVER_OK", "HANDING_OVER"]

T = TypeVar("T")

IS_DISABLED = "disabled = 1"
IS_IN_USE = "disabled = 0 AND COALESCE(lease_expires_at, 0) > :now"
IS_FLOODWAIT = (
    "disabled = 0 AND COALESCE(lease_expires_at, 0) <= :now AND COALESCE(flood_wait_until, 0) > :now"
)
IS_FREE = (
    "disabled = 0 AND avail_at <= :now AND COALESCE(lease_expires_at, 0) <= :now"
    " AND COALESCE(flood_wait_until, 0) <= :now"
)
#: A scoped rest that is still running; ``RESTING_FOR`` narrows it to the method ``:purpose``.
RESTING = "SELECT 1 FROM session_rests r WHERE r.session_id = sessions.id AND r.until > :now"
RESTING_FOR = RESTING + " AND r.scope = :purpose"
#: Free of leases and flood waits, but resting for some methods: plain acquires skip it, so
#: the admin's view must not call it free (issue 18, M1).
IS_RESTING_SCOPED = f"{IS_FREE} AND EXISTS ({RESTING})"
STATE_SQL = (
    f"CASE WHEN {IS_DISABLED} THEN 'disabled' WHEN {IS_IN_USE} THEN 'in_use'"
    f" WHEN {IS_FLOODWAIT} THEN 'in_floodwait' WHEN {IS_RESTING_SCOPED} THEN 'resting_scoped' ELSE 'free' END"
)
#: When a session can next be leased without a purpose (past every scoped rest too).
PLAIN_AVAIL = "GREATEST(avail_at, rest_until)"

#: A claim from host ``:host`` may take this session: that host used it last, or no known
#: host did, or its account has a proxy (Telegram sees the proxy's address wherever the
#: worker runs), or its last lease ended ``:grace`` seconds ago (see :class:`Fit`).
HANDOVER_OK = "(last_host IS NULL OR last_host = :host OR proxy_bound = 1 OR avail_at <= :now - :grace)"
#: A free session kept from host ``:host`` by the handover grace (the negation, for free rows).
HANDING_OVER = "last_host IS NOT NULL AND last_host <> :host AND proxy_bound = 0 AND avail_at > :now - :grace"


@dataclasses.dataclass(frozen=True)
class Fit:
    """What else a claim must fit: its ``kind`` (telethon, pyrogram), and its ``host``.

    An account without a proxy that another host used goes to ``host`` only ``grace``
    seconds after that host's lease ended (released or lapsed: ``avail_at``), so Telegram
    sees the old connection closed before the auth key shows up from a new address (it
    may answer AUTH_KEY_DUPLICATED for good). Its last host may take it back at once.
    Without a host (old clients) no grace applies; the claim records the host it saw.
    ``account``: only sessions holding an account (``has_account``; POST /session
    ``"account": true``).
    """

    kind: Optional[str] = None
    host: Optional[str] = None
    grace: float = 0.0
    account: bool = False

    def where(self) -> str:
        """Conditions (each followed by AND) a session must meet."""
        return ("kind = :kind AND " if self.kind is not None else "") + (
            f"{HANDOVER_OK} AND " if self.host is not None else "") + (
            "has_account = 1 AND " if self.account else "")

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, "host": self.host, "grace": self.grace}


ANY = Fit()

#: The columns a :class:`Lease` is made of (see :func:`lease_from`).
LEASE_COLUMNS = "id, name, lease_token, lease_expires_at, kind, meta"


def count(predicate: str) -> str:
    """An aggregate counting the rows where ``predicate`` holds (0 over no rows)."""
    return f"COALESCE(SUM(CASE WHEN {predicate} THEN 1 ELSE 0 END), 0)"


def in_groups(groups: Sequence[str], *, probe: bool = False) -> tuple[str, dict[str, str]]:
    """``AND`` the session (a row of ``sessions``) is in one of ``groups``, and its parameters;
    nothing for no groups (a key confined to none sees every session).

    By default through the groups' members (the index on ``(name, session_id)``, each
    member looked up by id): as costly as the groups are large, whatever else the pool
    holds. ``probe``: one look-up in the group index per row instead, for a statement that
    looks at a few rows only.
    """
    if not groups:
        return "", {}
    params = {f"grp{number}": group for number, group in enumerate(groups)}
    marks = ", ".join(f":{mark}" for mark in params)
    if probe:
        return (f" AND EXISTS (SELECT 1 FROM session_groups g WHERE g.session_id = sessions.id"
                f" AND g.name IN ({marks}))"), params
    return f" AND id IN (SELECT session_id FROM session_groups WHERE name IN ({marks}))", params


def key_groups(stored: str | None) -> tuple[str, ...]:
    """A key's groups from its ``api_keys.groups`` column (a JSON list; NULL for none)."""
    return tuple(json.loads(stored)) if stored else ()


def padded(group: list[T]) -> list[T]:
    """``group`` (not empty) grown to a power-of-two length by repeating its first item.

    Statements built from a group (``IN (:n0, ...)``, ``VALUES (...), ...``) then come in a
    handful of shapes, each prepared and cached once, whatever the group's size. The
    repeated item must be harmless: a duplicate in ``IN``, a row that conflicts with its
    first copy and is skipped.
    """
    size = 1 << (len(group) - 1).bit_length()
    return group + group[:1] * (size - len(group))


def session_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A session row as the API shows it: ``disabled`` a bool, ``meta`` decoded."""
    data = dict(row)
    data["disabled"] = bool(data["disabled"])
    if "has_account" in data:
        data["has_account"] = bool(data["has_account"])
    data["meta"] = json.loads(data["meta"])
    return data


def lease_from(row: Mapping[str, Any]) -> Lease:
    """The :class:`Lease` of a row of :data:`LEASE_COLUMNS`."""
    return Lease(row["id"], row["name"], row["lease_token"], row["lease_expires_at"],
                 row["kind"], json.loads(row["meta"]))
