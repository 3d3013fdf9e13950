"""The catalogue: which sessions exist, what they look like, and the admin's changes to them.

Plain functions of a transaction. Invariants:

* A name is registered once (``UNIQUE``), and once regardless of case (``name_key``, see
  ``_namekeys.py``); adding names that exist changes nothing of them.
* Removing a session removes its rests and its history with it, in one transaction.
* Every admin change (disable, enable, clearing a flood wait, new groups) leaves its event.
* A change that may make a session leasable (enabling it, clearing its rests) is
  reported to the caller (``True`` from :func:`update`), which serves the waiting line
  in the same transaction.
* Listings page by id; a page and its total come from one read.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Sequence

from . import _history as history
from .._names import name_problem
from ._namekeys import fill_name_keys, key_of, name_clashes
from ._base import KeyInfo, NotFound, Tx
from ._sql import STATE_SQL, padded, session_row

__all__ = ["add", "update", "set_proxy_bound", "set_disabled_by_name", "forget", "page", "named", "one", "find_id",
           "events", "prune"]

#: Names looked up per statement by :func:`named`: a power of two, under the 999
#: parameters a statement may have in SQLite before 3.32 (which some Pythons still ship).
NAMES_PER_QUERY = 512
#: Sessions added per INSERT by :func:`add` (three parameters each).
ROWS_PER_INSERT = 256

#: What the admin views show of a session's account: plain columns of ``accounts``
#: (``_accounts.py``) beside its sealed secrets.
PROFILE_COLUMNS = ("phone", "username", "premium", "device", "proxy_host")

_SESSION_COLUMNS = (
    "id, name, kind, meta, disabled, disabled_reason, holder, leased_at, lease_expires_at,"
    " flood_wait_until, use_count, flood_count, expired_count, created_at, last_released_at, has_account,"
    " (SELECT name FROM api_keys WHERE api_keys.id = sessions.lease_key_id) AS lease_key,"
    # Who had it last: the holder of its latest lease (the history keeps it after the release).
    " (SELECT e.holder FROM session_events e WHERE e.session_id = sessions.id AND e.type = 'lease'"
    " ORDER BY e.id DESC LIMIT 1) AS last_holder,"
    f" {STATE_SQL} AS state")


# -- changes ------------------------------------------------------------------------------

def add(tx: Tx, names: Iterable[str], *, kind: str, meta: dict | None,
        kinds: Mapping[str, str] | None, groups: Sequence[str] = ()) -> tuple[list[dict[str, Any]], list[str]]:
    """Register sessions by name, each in ``groups``: ``(added, existing)``, the new rows (id
    and name) in the caller's order, and the names that were already registered (left as
    they were, their groups too)."""
    wanted = list(names)
    meta_json = json.dumps(meta or {}, ensure_ascii=False)
    # Many rows per INSERT: one statement per name cost a round trip each, 13 s for
    # 100,000 names on PostgreSQL. Groups are padded (the repeated row conflicts with its
    # first and is skipped).
    ids: dict[str, int] = {}
    distinct = list(dict.fromkeys(wanted))
    for start in range(0, len(distinct), ROWS_PER_INSERT):
        group = padded(distinct[start:start + ROWS_PER_INSERT])
        params: dict[str, Any] = {"meta": meta_json, "now": tx.now}
        for number, name in enumerate(group):
            params[f"n{number}"] = name
            params[f"f{number}"] = key_of(name)
            params[f"k{number}"] = (kinds or {}).get(name, kind)
        values = ", ".join(f"(:n{number}, :f{number}, :k{number}, :meta, :now)" for number in range(len(group)))
        # No conflict target: a name registered already, or one differing only in case
        # (its name_key taken), is skipped alike.
        for row in tx.rows(f"INSERT INTO sessions (name, name_key, kind, meta, created_at) VALUES {values}"
                           " ON CONFLICT DO NOTHING RETURNING id, name", params):
            ids[row["name"]] = row["id"]
    if groups:
        insert_groups(tx, list(ids.values()), groups)
    added: list[dict[str, Any]] = []
    existing: list[str] = []
    for name in wanted:  # in the caller's order; a name given twice is new once
        if name in ids:
            added.append({"id": ids.pop(name), "name": name})
        else:
            existing.append(name)
    return added, existing


def set_groups(tx: Tx, session_id: int, groups: Sequence[str], who: str | None) -> None:
    """Replace the groups (checked, sorted) of session ``session_id``; a change leaves a
    ``groups`` event naming ``who`` made it."""
    params = {"id": session_id}
    old = [row["name"] for row in tx.rows(
        "SELECT name FROM session_groups WHERE session_id = :id ORDER BY name", params)]
    if old != list(groups):
        tx.run("DELETE FROM session_groups WHERE session_id = :id", params)
        insert_groups(tx, [session_id], groups)
        history.record(tx, session_id, "groups", key_name=who, detail={"groups": list(groups), "was": old})


def insert_groups(tx: Tx, session_ids: Sequence[int], groups: Sequence[str]) -> None:
    """Put each of ``session_ids`` in each of ``groups`` (a few hundred rows per INSERT)."""
    pairs = [(sid, group) for sid in session_ids for group in groups]
    for start in range(0, len(pairs), ROWS_PER_INSERT):
        chunk = pairs[start:start + ROWS_PER_INSERT]
        params: dict[str, Any] = {}
        for number, (sid, group) in enumerate(chunk):
            params[f"s{number}"], params[f"g{number}"] = sid, group
        values = ", ".join(f"(:s{number}, :g{number})" for number in range(len(chunk)))
        tx.run(f"INSERT INTO session_groups (session_id, name) VALUES {values}"
               " ON CONFLICT (session_id, name) DO NOTHING", params)


def update(tx: Tx, session_id: int, *, disabled: bool | None, reason: str | None, clear_flood_wait: bool,
           meta: dict | None, key: KeyInfo | None, groups: Sequence[str] | None = None) -> bool:
    """Enable or disable, clear flood waits (account-wide and scoped), or replace the meta or
    the groups (checked, sorted) of one session; True when the change may have made it
    leasable to someone waiting (serve the line). New groups take effect for the next
    claim: a lease held now stays its holder's."""
    params = {"id": session_id, "reason": reason or "disabled by admin"}
    if tx.row("SELECT 1 AS x FROM sessions WHERE id = :id", params) is None:
        raise NotFound(f"no session with id {session_id}")
    who = key.name if key else None
    if disabled is True:
        tx.run("UPDATE sessions SET disabled = 1, disabled_reason = :reason WHERE id = :id", params)
        history.record(tx, session_id, "disable", key_name=who, detail={"reason": params["reason"]})
    elif disabled is False:
        tx.run("UPDATE sessions SET disabled = 0, disabled_reason = NULL WHERE id = :id", params)
        history.record(tx, session_id, "enable", key_name=who)
    if clear_flood_wait:
        tx.run("""UPDATE sessions SET flood_wait_until = NULL, rest_until = 0,
                  avail_at = GREATEST(COALESCE(lease_expires_at, 0), COALESCE(last_released_at, 0))
                  WHERE id = :id""", params)
        tx.run("DELETE FROM session_rests WHERE session_id = :id", params)
        history.record(tx, session_id, "clear_flood_wait", key_name=who)
    if meta is not None:
        tx.run("UPDATE sessions SET meta = :meta WHERE id = :id",
               {"id": session_id, "meta": json.dumps(meta, ensure_ascii=False)})
    if groups is not None:
        set_groups(tx, session_id, groups, who)
    # Enabled, rested, or in a waiting key's groups now: maybe free for a waiter.
    return disabled is False or clear_flood_wait or groups is not None


def set_proxy_bound(tx: Tx, session_id: int, bound: bool) -> bool:
    """Mark whether the session's account has a proxy of its own (``_sql.Fit``); False: no such session."""
    return bool(tx.run("UPDATE sessions SET proxy_bound = :bound WHERE id = :id",
                       {"id": session_id, "bound": 1 if bound else 0}))


def set_disabled_by_name(tx: Tx, names: Sequence[str], disabled: bool, reason: str | None) -> list[str]:
    """Disable or enable sessions by name; the names that are not registered."""
    missing = []
    for name in names:
        row = tx.row(
            "UPDATE sessions SET disabled = :disabled, disabled_reason = :reason WHERE name = :name"
            " RETURNING id",
            {"disabled": int(disabled), "reason": (reason or "disabled by admin") if disabled else None,
             "name": name})
        if row is None:
            missing.append(name)
        else:
            history.record(tx, row["id"], "disable" if disabled else "enable",
                           detail={"reason": reason or "disabled by admin"} if disabled else None)
    return missing


def forget(tx: Tx, where: str, params: Mapping[str, Any]) -> list[int]:
    """Remove the sessions matching ``where``, with their accounts, rests and history; their ids."""
    ids = [row["id"] for row in tx.rows(f"DELETE FROM sessions WHERE {where} RETURNING id", params)]
    for sid in ids:
        tx.run("DELETE FROM accounts WHERE session_id = :id", {"id": sid})
        tx.run("DELETE FROM session_rests WHERE session_id = :id", {"id": sid})
        tx.run("DELETE FROM session_groups WHERE session_id = :id", {"id": sid})
        tx.run("DELETE FROM session_events WHERE session_id = :id", {"id": sid})
    if ids:
        fill_name_keys(tx)  # a name that shared a file with a removed one is unique now
    return ids


def prune(tx: Tx, older_than: float) -> int:
    """Delete events recorded more than ``older_than`` seconds ago; how many.

    Scoped rests that have ended go too: they no longer count anywhere, and a session's
    next scoped flood wait only sweeps its own.
    """
    tx.run("DELETE FROM session_rests WHERE until <= :now", {"now": tx.now})
    return tx.run("DELETE FROM session_events WHERE at < :cut", {"cut": tx.now - older_than})


# -- listings -----------------------------------------------------------------------------

def _with_rests(tx: Tx, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Session rows with ``rests`` (the methods each one rests for now, soonest end first),
    ``groups`` (sorted), ``name_clash`` (the other sessions whose names mean the same file, see
    ``_namekeys.py``) and ``name_problem`` (the name rule a name registered before the rules
    breaks, or None)."""
    sessions = [session_row(row) for row in rows]
    by_id = {session["id"]: session for session in sessions}
    clashes = name_clashes(tx) if sessions else {}
    for session in sessions:
        session["rests"] = []
        session["name_clash"] = clashes.get(session["name"], [])
        session["name_problem"] = name_problem(session["name"])
        session["groups"] = []
        session.update(dict.fromkeys(PROFILE_COLUMNS))
    if by_id:
        ids = ", ".join(str(int(sid)) for sid in by_id)  # ints from the database: safe to inline
        for rest in tx.rows(f"SELECT session_id, scope, until FROM session_rests"
                            f" WHERE until > :now AND session_id IN ({ids}) ORDER BY until",
                            {"now": tx.now}):
            by_id[rest["session_id"]]["rests"].append({"scope": rest["scope"], "until": rest["until"]})
        for group in tx.rows(f"SELECT session_id, name FROM session_groups WHERE session_id IN ({ids})"
                             " ORDER BY session_id, name"):
            by_id[group["session_id"]]["groups"].append(group["name"])
        # The account's plain profile columns (never a secret), beside the sealed account.
        for account in tx.rows(f"SELECT session_id, {', '.join(PROFILE_COLUMNS)} FROM accounts"
                               f" WHERE session_id IN ({ids})"):
            by_id[account["session_id"]].update({column: account[column] for column in PROFILE_COLUMNS})
    return sessions


def page(tx: Tx, *, state: str | None, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """A page of sessions (by id, of ``state`` if given) and how many match in all."""
    where = f"WHERE {STATE_SQL} = :state" if state else ""
    params = {"now": tx.now, "state": state, "limit": limit, "offset": offset}
    rows = tx.rows(f"SELECT {_SESSION_COLUMNS} FROM sessions {where}"
                   " ORDER BY id LIMIT :limit OFFSET :offset", params)
    total = tx.row(f"SELECT COUNT(*) AS n FROM sessions {where}", params)
    return _with_rests(tx, rows), int(total["n"]) if total else 0


def named(tx: Tx, names: Sequence[str], *, state: str | None, limit: int, offset: int,
          ) -> tuple[list[dict[str, Any]], int]:
    """The sessions of ``names`` (unknown names are skipped), paged by id like :func:`page`.

    One indexed look-up per name, so the cost follows the names asked for, not the pool.
    Names go in :func:`padded` groups, so no group nears a database's limit on parameters.
    """
    wanted = list(dict.fromkeys(names))
    also = f"AND {STATE_SQL} = :state" if state else ""
    rows: list[Mapping[str, Any]] = []
    for start in range(0, len(wanted), NAMES_PER_QUERY):
        group = padded(wanted[start:start + NAMES_PER_QUERY])
        params: dict[str, Any] = {f"n{number}": name for number, name in enumerate(group)}
        marks = ", ".join(f":n{number}" for number in range(len(group)))
        rows += tx.rows(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE name IN ({marks}) {also}",
                        {**params, "now": tx.now, "state": state})
    rows.sort(key=lambda row: row["id"])
    return _with_rests(tx, rows[offset:offset + limit]), len(rows)


def one(tx: Tx, session_id: int) -> dict[str, Any]:
    """The session ``session_id`` as listings show it; :class:`NotFound` if there is none."""
    rows = _with_rests(tx, tx.rows(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = :id",
                                   {"now": tx.now, "id": session_id}))
    if not rows:
        raise NotFound(f"no session with id {session_id}")
    return rows[0]


def find_id(tx: Tx, name: str) -> int | None:
    row = tx.row("SELECT id FROM sessions WHERE name = :name", {"name": name})
    return None if row is None else int(row["id"])


def events(tx: Tx, session_id: int, *, limit: int, before: int | None) -> list[dict[str, Any]]:
    """The session's history, newest first; ``before`` (an event id) pages further back."""
    if tx.row("SELECT 1 AS x FROM sessions WHERE id = :id", {"id": session_id}) is None:
        raise NotFound(f"no session with id {session_id}")
    older = "AND id < :before" if before is not None else ""
    rows = [dict(row) for row in tx.rows(
        f"SELECT id, at, type, key_name, holder, detail FROM session_events"
        f" WHERE session_id = :id {older} ORDER BY id DESC LIMIT :limit",
        {"id": session_id, "before": before, "limit": limit})]
    for row in rows:
        row["detail"] = json.loads(row["detail"])
    return rows
