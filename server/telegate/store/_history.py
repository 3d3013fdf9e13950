"""Each session's history (``session_events``): one row per lease, release, flood wait,
renewal run and admin change, written in the transaction of the change it records.

Invariants:

* A change and its event commit together (same transaction), or neither does.
* A lease is named in the history by :func:`lease_tag`, a digest of its token that proves
  nothing if read, never by the token.
* Renewals in a row share one event (see ``_leases.renewed``).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from ._base import Tx

__all__ = ["EVENT", "event_params", "record", "changed_and_logged", "lease_tag"]

#: A history row; its parameters come from :func:`event_params` (prefixed, so that it can
#: share a statement with the change it records).
EVENT = ("INSERT INTO session_events (session_id, at, type, key_name, holder, detail)"
         " VALUES (:event_session, :event_at, :event_type, :event_key, :event_holder, :event_detail)")


def event_params(tx: Tx, session_id: int, kind: str, *, key_name: str | None = None,
                 holder: str | None = None, detail: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"event_session": session_id, "event_at": tx.now, "event_type": kind, "event_key": key_name,
            "event_holder": holder,
            "event_detail": json.dumps(detail or {}, ensure_ascii=False, separators=(",", ":"))}


def record(tx: Tx, session_id: int, kind: str, *, key_name: str | None = None,
           holder: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
    """Add an event of type ``kind`` to the history of ``session_id``, in ``tx``."""
    tx.run(EVENT, event_params(tx, session_id, kind, key_name=key_name, holder=holder, detail=detail))


def changed_and_logged(tx: Tx, writes_in_with: bool, change: str, params: Mapping[str, Any],
                       event: Mapping[str, Any], returning: str | None = None) -> Mapping[str, Any] | None:
    """Run ``change`` (an UPDATE of one session, without RETURNING) and record ``event``
    (from :func:`event_params`); the changed row's ``returning`` columns, if asked for.

    One statement where the database can run both (``writes_in_with``, PostgreSQL: a
    data-modifying ``WITH``), two where it cannot (SQLite). On PostgreSQL each statement
    is a round trip and ~150 µs of CPU between the server and its backend, and every
    lease and release writes its event: folding them takes 2 of an acquire+release's 15
    statements. SQLite runs statements as function calls, so two cost little there.
    """
    if writes_in_with:
        row = tx.row(f"WITH changed AS ({change} RETURNING {returning or 'id'}), logged AS ({EVENT})"
                     " SELECT * FROM changed", {**params, **event})
        return row if returning else None
    if returning:
        row = tx.row(f"{change} RETURNING {returning}", params)
    else:
        tx.run(change, params)  # RETURNING would cost SQLite a result table nobody reads
        row = None
    tx.run(EVENT, event)
    return row


def lease_tag(token: str) -> str:
    """A lease's name in the history: a digest of its token, which proves nothing if read."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:16]
