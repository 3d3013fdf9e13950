"""Leases: claim, release, renew, and who may do each; plain functions of a transaction.

A claim picks the least recently used free session and updates it inside one write
transaction (``BEGIN IMMEDIATE`` on SQLite, a row lock taken with ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL). Leases expire lazily: a lease whose ``lease_expires_at`` has
passed simply stops counting, and the next claim takes the session over with a fresh
token. Claims scan the partial index on ``(avail_at, id)`` from the start (or on
``(GREATEST(avail_at, rest_until), id)`` without a purpose), so the least recently used
free session is found in O(log n) even with 100,000 sessions, most of them busy or resting.
On PostgreSQL an acquire and a release run these steps server-side instead, in one call each
(schema 11's functions, ``_pg_calls``); the functions follow this module statement for
statement, and a release with a write-back (``state``) still runs :func:`release` here.

Invariants:

* Never two holders: a session has at most one live lease (``lease_token``), and every
  change to it is made under the row's lock in a write transaction.
* A lease belongs to the API key that took it (``lease_key_id``): only that key (with or
  without the token) or an admin key may end, renew or report it (:func:`holder_check`).
* A key confined to groups (``KeyInfo.groups``) claims, counts and finds by name or id only
  the sessions of its groups (and the leases it holds): to it, the others do not exist.
* Never a lost release: a release that landed but whose answer was lost is answered the
  same when retried (:func:`released_before`); an unknown id or a session nobody holds
  changes nothing.
* A flood wait never shortens one already running; rests only lengthen.
* Every lease, release, expiry, flood wait and renewal run leaves its event, in the same
  transaction (``_history``).
* A key's ``max_leases`` is counted under its row's lock (PostgreSQL), so concurrent
  claims and renewals of one key count in turn.
"""
from __future__ import annotations

import hmac
import json
import secrets
from typing import Any, Callable, Mapping

from . import _counts as counts
from . import _history as history
from . import _line as line
from . import _reports as reports
from ._base import (
    Engine, Grant, KeyInfo, KeyRevoked, Lease, LeaseLimit, LeaseMismatch, NoSessionAvailable, NotFound,
    NotLeaseHolder, SessionDisabled, Tx,
)
from ._sql import ANY, IS_FREE, LEASE_COLUMNS, PLAIN_AVAIL, RESTING_FOR, Fit, in_groups, key_groups, lease_from

__all__ = ["claim", "serve_line", "release", "renew", "holder_check", "leases_held", "at_limit", "key_name",
           "visible"]

_CLAIM_ORDER = "ORDER BY avail_at, id LIMIT 1 /*skip_locked*/"
# A claim without a purpose may not take a session resting for any method: it walks
# the index on (GREATEST(avail_at, rest_until), id), where such sessions sort by the
# end of their last rest, instead of stepping over them at the front of (avail_at, id)
# (with 6,000 of 10,000 sessions resting that made these claims 12 x slower).
_PLAIN_ORDER = f"ORDER BY {PLAIN_AVAIL}, id LIMIT 1 /*skip_locked*/"
_CLAIM = """
    UPDATE sessions
    SET lease_token = :token, lease_expires_at = :now + :ttl, avail_at = :now + :ttl,
        leased_at = :now, holder = :holder, lease_key_id = :key_id, request_id = :request_id,
        last_host = :host, use_count = use_count + 1,
        expired_count = expired_count + CASE WHEN lease_token IS NULL THEN 0 ELSE 1 END
    WHERE id = :id"""
_RELEASE = """
    UPDATE sessions
    SET lease_token = NULL, lease_expires_at = NULL, holder = NULL, lease_key_id = NULL,
        request_id = NULL, last_released_at = :now,
        flood_wait_until = CASE WHEN :fw > 0 THEN GREATEST(COALESCE(flood_wait_until, 0), :now + :fw)
                                ELSE flood_wait_until END,
        flood_count = flood_count + CASE WHEN :any_fw > 0 THEN 1 ELSE 0 END,
        disabled = CASE WHEN :disable = 1 THEN 1 ELSE disabled END,
        disabled_reason = CASE WHEN :disable = 1 THEN :reason ELSE disabled_reason END,
        avail_at = GREATEST(:now, COALESCE(flood_wait_until, 0),
                            CASE WHEN :fw > 0 THEN :now + :fw ELSE 0 END),
        rest_until = GREATEST(rest_until, :rest_until)
    WHERE id = :id"""


def claim(tx: Tx, engine: Engine, ttl: float, holder: str | None, name: str | None,
          key: KeyInfo | None, request_id: str | None, purpose: str | None,
          fit: Fit = ANY) -> Lease | NoSessionAvailable:
    """The claim of one acquire (or of a waiting ticket), in ``tx``: the lease, or the counts
    of a pool with nothing for this caller.

    ``request_id`` (with ``key``): while that key's lease taken with it lives, the same
    lease again. ``purpose`` (lower case): skip sessions resting for that method; without
    it, sessions resting for any method are skipped. ``fit.account``: only sessions holding an
    account (``has_account``), and the lease's event says it was handed out with it. A key
    confined to groups claims and counts the sessions of its groups alone.
    Raises :class:`KeyRevoked` and :class:`LeaseLimit`.
    """
    # ``fit``: only sessions of its kind, and the handover grace between hosts (see
    # ``_sql.Fit``; the least recently used first still, so rotation stays even).
    key_id = key.id if key is not None else None
    groups = key.confined if key is not None else ()
    target = ("name = :name AND " if name is not None else "") + fit.where()
    if purpose:
        where, order = f"{target}{IS_FREE} AND NOT EXISTS ({RESTING_FOR})", _CLAIM_ORDER
    else:
        where, order = f"{target}{IS_FREE} AND {PLAIN_AVAIL} <= :now", _PLAIN_ORDER
    confined, group_params = in_groups(groups)
    pick = [f"SELECT id, lease_token, lease_key_id, holder FROM sessions WHERE {where}{confined} {order}"]
    if groups:
        pick.insert(0, _front_pick(where, order, in_groups(groups, probe=True)[0]))
    params: dict[str, Any] = {
        "token": secrets.token_urlsafe(18), "ttl": ttl, "holder": holder, "name": name,
        "key_id": key_id, "request_id": request_id, "purpose": purpose, "now": tx.now, **fit.params(),
        **group_params}
    limit = None
    if key is not None:
        # The key was authenticated in an earlier read: a revocation that committed
        # since then must not be outrun by a lease it would never end. The key row is
        # locked (PostgreSQL) only for keys with a limit, whose claims must count in turn.
        current = tx.row("SELECT revoked_at, max_leases FROM api_keys WHERE id = :key_id"
                         + (" /*for_update*/" if key.max_leases is not None else ""), params)
        if current is None or current["revoked_at"] is not None:
            raise KeyRevoked(f"API key {key.name!r} was revoked; ask an admin for a valid key")
        limit = current["max_leases"]
    if request_id is not None and key_id is not None:
        again = tx.row(f"""
            SELECT {LEASE_COLUMNS} FROM sessions
            WHERE lease_key_id = :key_id AND request_id = :request_id
              AND lease_expires_at > :now AND disabled = 0""", params)
        if again is not None:
            return lease_from(again)
    if key is not None and limit is not None:
        held = leases_held(tx, key_id)
        if held >= limit:
            raise LeaseLimit(
                f"key {key.name!r} already holds {held} lease(s), its limit (max_leases={limit});"
                " release one first, or ask an admin to raise the limit",
                limit=limit, held=held)
    candidate = _pick(tx, pick, params)
    picks = 1
    while candidate is None:
        # Count in the same transaction (see _counts.unavailable).
        #
        # On PostgreSQL the count holds no lock and blocks nobody: the pick above
        # found no row, so this transaction has locked none, and a plain SELECT reads
        # an MVCC snapshot (no table scan under a lock, even on 100k sessions). The
        # pick passed over rows that other transactions had locked (SKIP LOCKED): a
        # claim about to take one, or a release about to free one. When the count
        # (a newer snapshot) shows a session free for us, such a release has landed:
        # pick again (still SKIP LOCKED: a pick that waited for locks could lock rows
        # it then passes over, and deadlock with another) rather than answer 503
        # "nothing in use" to a busy pool. SQLite serialises writers, so there the
        # count never finds one free.
        refused, free = counts.unavailable(tx, name, purpose, fit, groups)
        if not free:
            return refused
        if picks > 1:
            # Still every free-looking session locked: other claims are taking them
            # right now. Count them as in use, so the caller waits (and retries) rather
            # than reads "nothing in use, nothing resting" as "nothing will free up".
            refused.in_use += free
            return refused
        candidate = _pick(tx, pick, params)
        picks += 1
    params["id"] = candidate["id"]
    if candidate["lease_token"] is not None:
        history.record(tx, candidate["id"], "expired", holder=candidate["holder"],
                       key_name=key_name(tx, candidate["lease_key_id"]),
                       detail={"lease": history.lease_tag(candidate["lease_token"])})
    event = history.event_params(tx, candidate["id"], "lease", key_name=key.name if key else None, holder=holder,
                                 detail={"ttl": ttl, "lease": history.lease_tag(params["token"]),
                                         **({"purpose": purpose} if purpose else {}),
                                         **({"account": True} if fit.account else {})})
    row = history.changed_and_logged(tx, engine.writes_in_with, _CLAIM, params, event, returning=LEASE_COLUMNS)
    assert row is not None  # the row was picked (and locked) in this transaction
    return lease_from(row)


#: Free sessions at the front of the claim order that a confined key's claim looks at first.
CONFINED_FRONT = 64


def _front_pick(where: str, order: str, member: str) -> str:
    """A confined key's first try: its least recently used free session, if it is among the
    first :data:`CONFINED_FRONT` free sessions in claim order (``member``: the group probe).

    A confined pick takes two bounded steps. This one is cheap when the key's groups are a
    good share of the pool. When none of the front is its own, the second step goes through
    its groups' members (as costly as its groups are large), never walking past every idle
    session of other groups ahead of its own. Both find the same session when this finds one.
    """
    order_by = order.replace(" LIMIT 1 /*skip_locked*/", "")
    front = f"SELECT id FROM sessions WHERE {where} {order_by} LIMIT {CONFINED_FRONT}"
    return (f"SELECT id, lease_token, lease_key_id, holder FROM sessions"
            f" WHERE id IN ({front}) AND {where}{member} {order}")


def _pick(tx: Tx, pick: list[str], params: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The row of the first of the pick's statements that finds one (see :func:`_front_pick`)."""
    for statement in pick:
        row = tx.row(statement, params)
        if row is not None:
            return row
    return None


def serve_line(tx: Tx, engine: Engine, grace: float = 0.0) -> list[Grant]:
    """Hand what is free to waiting tickets, in fair order, in ``tx``; announce any grant
    to the other server processes (the engine's commit feed). ``grace``: the handover
    grace between hosts (see ``_sql.Fit``)."""
    grants = line.serve_line(tx, lambda tx, waiter: _claim_for_waiter(tx, engine, waiter, grace))
    if grants:
        engine.announce(tx)
    return grants


def _claim_for_waiter(tx: Tx, engine: Engine, waiter: Mapping[str, Any], grace: float = 0.0) -> Lease | str:
    """The claim for a waiting ticket, or why none (see ``_line.Claim``)."""
    key = None
    if waiter["key_id"] is not None:
        row = tx.row("SELECT id, name, scope, max_leases, accounts, groups FROM api_keys"
                     " WHERE id = :id AND revoked_at IS NULL", {"id": waiter["key_id"]})
        if row is None:  # revoked while waiting: nothing for it (its wait ends by itself)
            return "key"
        key = KeyInfo(row["name"], row["scope"], row["id"], row["max_leases"], accounts=bool(row["accounts"]),
                      groups=key_groups(row["groups"]))
        if waiter["request_id"] is not None and not engine.try_turn(tx, row["id"], waiter["request_id"]):
            return "turn"  # a retry of its request is being served right now: that one gets the lease
    try:
        outcome = claim(tx, engine, float(waiter["ttl"]), waiter["holder"], waiter["name"], key,
                        waiter["request_id"], waiter["purpose"],
                        Fit(waiter["kind"], waiter["host"], grace, bool(waiter["account"])))
    except LeaseLimit:  # its key holds all it may: the next release of that key serves it
        return "key"
    except KeyRevoked:  # revoked while waiting: nothing for it (its wait ends by itself)
        return "key"
    return "fit" if isinstance(outcome, NoSessionAvailable) else outcome


def holder_check(tx: Tx, session_id: int, token: str | None, key: KeyInfo | None) -> Mapping[str, Any] | None:
    """The session's row (locked) when ``key`` (with ``token``) holds its current lease; else None or an error.

    None: unknown id, or no live lease the caller could mean (free, or a lapsed lease
    under another token, or another key's lapsed lease), so nothing should change.
    Raises :class:`NotLeaseHolder` when another client key holds the lease,
    :class:`LeaseMismatch` when the caller's own key holds it under another token.

    A token proves the lease only together with the key that took it: a client key
    showing another key's token (leaked through a log, a shared queue) is not the
    holder. A lease recorded without a key (taken by an internal caller, or before
    the upgrade that added ownership) is proved by its token alone. Without a token,
    the key must be the lease's. Admin keys (and internal callers, ``key=None``) may
    end any lease. To a key confined to groups, a session outside them that it does not
    hold is as unknown (None): it learns nothing of it, not even that another key holds it.
    """
    row = tx.row("SELECT id, disabled, lease_token, lease_expires_at, lease_key_id, holder"
                 " FROM sessions WHERE id = :id /*for_update*/", {"id": session_id})
    if row is None or row["lease_token"] is None:
        return None
    if key is not None and row["lease_key_id"] != key.id and not visible(tx, session_id, key):
        return None
    live = (row["lease_expires_at"] or 0) > tx.now
    privileged = key is None or key.is_admin
    owner = key is not None and row["lease_key_id"] == key.id
    # Bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
    if token is not None and hmac.compare_digest(
            row["lease_token"].encode(), token.encode("utf-8", "surrogatepass")):
        if privileged or owner or row["lease_key_id"] is None:
            return row
    if not live:
        return None
    if token is not None and released_before(tx, session_id, token, key):
        return None  # a retry of a release that landed, its answer lost: nothing more to do
    if not privileged and not owner:
        raise NotLeaseHolder(
            f"session {session_id} is leased by another API key; only its holder (or an admin) can"
            " release, renew or report it")
    if token is None:
        return row
    raise LeaseMismatch(f"lease token is not the current lease of session {session_id}; your lease"
                        " ended (released or expired) and the session was leased again")


def released_before(tx: Tx, session_id: int, token: str, key: KeyInfo | None) -> bool:
    """Whether the holder of ``token`` (under ``key``) ended that lease itself, with the token
    (looked up among the session's latest events).

    A worker whose release landed but whose answer was lost (its server died, a proxy
    dropped the connection) sends the release again, maybe to another server, when
    the session may already be someone else's. That is not a lost lease: the retry
    is answered as the first try was. A lease ended by an admin, by another worker's
    release by session id alone, or by expiry, still answers 409 to its old holder:
    that worker did lose it. Looked up only when a token does not match, and among the
    session's last 1,000 events, so it stays cheap.
    """
    if key is None:
        return False
    tag = history.lease_tag(token)
    releases = tx.rows("""
        SELECT detail FROM (
            SELECT type, key_name, detail FROM session_events WHERE session_id = :id
            ORDER BY id DESC LIMIT 1000) latest
        WHERE type = 'release' AND key_name = :key AND detail LIKE :tag""",
        {"id": session_id, "key": key.name, "tag": f"%{tag}%"})
    # Ended with its token, so by its holder: workers often share one key, and another
    # worker's release by session id alone (the original client's way) ended this lease
    # from under its holder, who must hear so.
    return any(json.loads(row["detail"]) == {"lease": tag, "with_token": True} for row in releases)


def release(tx: Tx, engine: Engine, session_id: int, token: str | None, key: KeyInfo | None, *,
            flood_wait: float | None, scope: str | None, disable: str | None, peer_flood: bool,
            write_state: Callable[[Tx], None] | None = None) -> bool:
    """End the lease (see :func:`holder_check` for who may), optionally resting the session
    (for the method ``scope``, lower case, or all) or disabling it; True when a lease ended.

    ``write_state``: the holder's write-back, run in this transaction once the lease is
    proved; a lease that is over writes nothing (:class:`LeaseMismatch`), except the retry
    of a release that landed (its state was written with it).
    """
    row = holder_check(tx, session_id, token, key)
    if write_state is not None:
        if row is None:
            if token is not None and released_before(tx, session_id, token, key):
                return False
            _stale_state(tx, session_id)
        write_state(tx)
    if row is None:
        return False
    now = tx.now
    account_wide = flood_wait if flood_wait is not None and scope is None else None
    who = {"key_name": key.name if key else key_name(tx, row["lease_key_id"]), "holder": row["holder"]}
    ended = {"lease": history.lease_tag(row["lease_token"]), **({"with_token": True} if token is not None else {})}
    history.changed_and_logged(
        tx, engine.writes_in_with, _RELEASE,
        {"now": now, "id": session_id, "fw": account_wide or 0, "any_fw": flood_wait or 0,
         "disable": 1 if disable else 0, "reason": disable,
         "rest_until": now + flood_wait if scope is not None and flood_wait else 0},
        history.event_params(tx, session_id, "release", **who, detail=ended))
    if scope is not None and flood_wait:
        tx.run("DELETE FROM session_rests WHERE session_id = :id AND until <= :now",
               {"id": session_id, "now": now})
        tx.run("""
            INSERT INTO session_rests (session_id, scope, until) VALUES (:id, :scope, :until)
            ON CONFLICT (session_id, scope) DO UPDATE SET until = GREATEST(session_rests.until, excluded.until)""",
               {"id": session_id, "scope": scope, "until": now + flood_wait})
    if flood_wait:
        detail: dict[str, Any] = {"seconds": flood_wait, "scope": scope}
        if peer_flood:
            detail["peer_flood"] = True
        history.record(tx, session_id, "flood_wait", **who, detail=detail)
    if disable:
        history.record(tx, session_id, "disable", **who, detail={"reason": disable})
    if key is not None and key.id is not None and (disable or flood_wait):
        reports.record(tx, key.id, key.name, session_id, disable=bool(disable), rest=flood_wait, scope=scope)
    return True


def renew(tx: Tx, session_id: int, token: str, ttl: float, key: KeyInfo | None,
          write_state: Callable[[Tx], None] | None = None) -> float:
    """Extend the lease held under ``token`` to now + ``ttl``; the new expiry.

    A lease that lapsed but was not taken over may still be renewed: the token is still
    the session's, so nobody else can hold it (the key's limit counts again then).
    """
    row = holder_check(tx, session_id, token, key)
    if row is None or row["lease_token"] != token:
        exists = tx.row("SELECT disabled FROM sessions WHERE id = :id", {"id": session_id})
        if exists is None or (row is None and not visible(tx, session_id, key)):
            raise NotFound(f"no session with id {session_id}")
        raise LeaseMismatch(f"lease token is not the current lease of session {session_id};"
                            " it was released or taken over")
    if row["disabled"]:
        raise SessionDisabled(f"session {session_id} was disabled; stop using it and release it")
    if row["lease_expires_at"] <= tx.now and row["lease_key_id"] is not None:
        # Renewing a lease that ran out takes it again: the key's limit counts now
        # (locked, as claims lock it, so a claim and a renewal count in turn).
        limit = tx.row("SELECT max_leases FROM api_keys WHERE id = :id /*for_update*/",
                       {"id": row["lease_key_id"]})
        if limit and limit["max_leases"] is not None \
                and leases_held(tx, row["lease_key_id"]) >= limit["max_leases"]:
            raise LeaseMismatch(
                f"the lease on session {session_id} ran out, and its key holds {limit['max_leases']}"
                f" other lease(s), its limit (max_leases={limit['max_leases']}): it can't be renewed;"
                " stop using the session")
    if write_state is not None:
        write_state(tx)
    expires = tx.row("""
        UPDATE sessions SET lease_expires_at = :now + :ttl, avail_at = :now + :ttl
        WHERE id = :id RETURNING lease_expires_at""",
        {"now": tx.now, "ttl": ttl, "id": session_id})
    assert expires is not None  # the row is locked by holder_check
    _renewed(tx, session_id, ttl, holder=row["holder"],
             key_name=key.name if key else key_name(tx, row["lease_key_id"]))
    return float(expires["lease_expires_at"])


def _renewed(tx: Tx, session_id: int, ttl: float, *, holder: str | None, key_name: str | None) -> None:
    """Record a renewal; renewals in a row (nothing else happened in between) share one event.

    The SDK renews every third of the TTL: a session leased all day would otherwise
    write ~900 events a day, burying the leases and flood waits an admin looks for.
    The shared event keeps the latest renewal's time and counts them all.
    """
    last = tx.row("SELECT id, type, detail FROM session_events WHERE session_id = :id"
                  " ORDER BY id DESC LIMIT 1", {"id": session_id})
    if last is None or last["type"] != "renew":
        history.record(tx, session_id, "renew", key_name=key_name, holder=holder, detail={"ttl": ttl, "count": 1})
        return
    count = int(json.loads(last["detail"]).get("count", 1)) + 1
    tx.run("UPDATE session_events SET at = :at, key_name = :key, holder = :holder, detail = :detail"
           " WHERE id = :eid",
           {"at": tx.now, "key": key_name, "holder": holder, "eid": last["id"],
            "detail": json.dumps({"ttl": ttl, "count": count}, separators=(",", ":"))})


def _stale_state(tx: Tx, session_id: int) -> None:
    """A write-back whose lease is over: nothing is written, and the holder hears so."""
    if tx.row("SELECT 1 AS x FROM sessions WHERE id = :id", {"id": session_id}) is None:
        raise NotFound(f"no session with id {session_id}")
    raise LeaseMismatch(f"lease token is not the current lease of session {session_id}; your lease ended"
                        " (released, expired or taken over), so its state was not written")


def at_limit(tx: Tx, key_id: int) -> LeaseLimit | None:
    """A :class:`LeaseLimit` to raise when the key ``key_id`` holds its ``max_leases`` already."""
    row = tx.row("SELECT name, max_leases FROM api_keys WHERE id = :id", {"id": key_id})
    if row is None or row["max_leases"] is None:
        return None
    held = leases_held(tx, key_id)
    if held < row["max_leases"]:
        return None
    return LeaseLimit(f"key {row['name']!r} still holds {held} lease(s), its limit (max_leases="
                      f"{row['max_leases']}); release one first, or ask an admin to raise the limit",
                      limit=row["max_leases"], held=held)


def leases_held(tx: Tx, key_id: int | None) -> int:
    """Live leases of the key ``key_id`` (disabled sessions' do not count)."""
    row = tx.row("SELECT COUNT(*) AS n FROM sessions WHERE lease_key_id = :key_id"
                 " AND lease_expires_at > :now AND disabled = 0", {"key_id": key_id, "now": tx.now})
    return int(row["n"]) if row else 0


def visible(tx: Tx, session_id: int, key: KeyInfo | None) -> bool:
    """Whether ``key`` may see session ``session_id`` (always, unless it is confined to groups)."""
    groups = key.confined if key is not None else ()
    if not groups:
        return True
    confined, params = in_groups(groups, probe=True)
    return tx.row(f"SELECT 1 AS x FROM sessions WHERE id = :id{confined}", {"id": session_id, **params}) is not None


def key_name(tx: Tx, key_id: int | None) -> str | None:
    """The name of the key ``key_id`` (revoked or not), for the history."""
    if key_id is None:
        return None
    row = tx.row("SELECT name FROM api_keys WHERE id = :id", {"id": key_id})
    return None if row is None else row["name"]
