"""Client reports: what a key did to the pool through its releases, recorded so one command undoes it.

A client key that leases a session may report on release that the session must rest
(``flood_wait``, account-wide or for one method; ``peer_flood``) or stop (``disable``).
Each such report is a row here, with its key, in the release's transaction. An admin who
finds a key misbehaving (leaked, buggy, hostile) runs :func:`undo`: every session the key
disabled is enabled again, and every rest it set is cleared, unless someone reported on
that session since (another key's later report, or an admin's change, stands).

Plain functions of a transaction, like the store's other parts. The table,
``client_reports``, is schema version 6 (``schema/*/0006.sql``).
"""
from __future__ import annotations

from typing import Any

from . import _history as history
from ._base import NotFound, Tx

__all__ = ["record", "undo"]

def record(tx: Tx, key_id: int, key_name: str, session_id: int, *, disable: bool,
           rest: float | None, scope: str | None) -> None:
    """Record a release's reports: a disable, and/or a rest of ``rest`` seconds (for ``scope``)."""
    if disable:
        tx.run("INSERT INTO client_reports (key_id, key_name, session_id, at, kind)"
               " VALUES (:key_id, :key_name, :sid, :now, 'disable')",
               {"key_id": key_id, "key_name": key_name, "sid": session_id, "now": tx.now})
    if rest:
        tx.run("INSERT INTO client_reports (key_id, key_name, session_id, at, kind, scope, until)"
               " VALUES (:key_id, :key_name, :sid, :now, 'rest', :scope, :until)",
               {"key_id": key_id, "key_name": key_name, "sid": session_id, "now": tx.now, "scope": scope,
                "until": tx.now + rest})


def undo(tx: Tx, key_name: str, since: float | None, *, by: str | None) -> dict[str, Any]:
    """Undo the reports of the key(s) called ``key_name`` made at or after ``since``.

    A disable is undone when the session is still disabled and the last disable or
    enable of it was that key's; a rest when the latest report of that rest (the same
    session and scope) is that key's. Either way the report is marked undone; one left
    standing is counted. Returns what changed: ``enabled`` and ``rested`` (session ids
    whose rests were cleared), ``left_standing`` (reports someone else overrode) and
    ``reports`` (how many were looked at). :class:`NotFound` when the name never reported
    and is no key's.
    """
    reports = tx.rows("""
        SELECT id, session_id, kind, scope FROM client_reports
        WHERE key_name = :name AND undone_at IS NULL AND at >= :since ORDER BY id""",
        {"name": key_name, "since": since if since is not None else 0})
    if not reports and tx.row("SELECT 1 AS x FROM api_keys WHERE name = :name", {"name": key_name}) is None:
        raise NotFound(f"no key named {key_name!r}")
    enabled: list[int] = []
    rested: list[int] = []
    standing = 0
    for report in reports:
        sid = report["session_id"]
        if report["kind"] == "disable":
            last = tx.row("SELECT key_name FROM session_events WHERE session_id = :sid AND type IN ('disable', 'enable')"
                          " ORDER BY id DESC LIMIT 1", {"sid": sid})
            current = tx.row("SELECT disabled FROM sessions WHERE id = :sid", {"sid": sid})
            if current is not None and current["disabled"] and last is not None and last["key_name"] == key_name:
                tx.run("UPDATE sessions SET disabled = 0, disabled_reason = NULL WHERE id = :sid", {"sid": sid})
                history.record(tx, sid, "enable", key_name=by, detail={"undo_reports_of": key_name})
                if sid not in enabled:
                    enabled.append(sid)
            elif current is not None and current["disabled"]:
                standing += 1
        else:
            scope_test = "scope = :scope" if report["scope"] is not None else "scope IS NULL"
            latest = tx.row(f"SELECT id, key_name FROM client_reports WHERE session_id = :sid AND kind = 'rest'"
                            f" AND {scope_test} ORDER BY id DESC LIMIT 1", {"sid": sid, "scope": report["scope"]})
            if latest is not None and latest["id"] != report["id"] and latest["key_name"] != key_name:
                standing += 1
            else:
                _clear_rest(tx, sid, report["scope"])
                if sid not in rested:
                    rested.append(sid)
                history.record(tx, sid, "clear_flood_wait", key_name=by,
                               detail={"undo_reports_of": key_name, "scope": report["scope"]})
        tx.run("UPDATE client_reports SET undone_at = :now WHERE id = :id", {"now": tx.now, "id": report["id"]})
    return {"enabled": enabled, "rested": rested, "left_standing": standing, "reports": len(reports)}


def _clear_rest(tx: Tx, session_id: int, scope: str | None) -> None:
    if scope is None:
        tx.run("""UPDATE sessions SET flood_wait_until = NULL,
                  avail_at = GREATEST(COALESCE(lease_expires_at, 0), COALESCE(last_released_at, 0))
                  WHERE id = :sid""", {"sid": session_id})
        return
    tx.run("DELETE FROM session_rests WHERE session_id = :sid AND scope = :scope", {"sid": session_id, "scope": scope})
    tx.run("""UPDATE sessions SET rest_until = COALESCE((SELECT MAX(until) FROM session_rests r
                                                      WHERE r.session_id = sessions.id), 0)
              WHERE id = :sid""", {"sid": session_id})
