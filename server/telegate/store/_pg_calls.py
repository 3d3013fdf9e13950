"""PostgreSQL: an acquire and a release in one round trip, through the functions of schema 11.

On PostgreSQL ``Store.acquire`` and ``Store.release`` (without a write-back) call one
server-side function each (``schema/postgres/0011.sql``): ``telegate_acquire`` takes the
request's turn (its advisory lock), serves the waiting line, claims (revocation and limit
checks, the ``request_id`` repeat, the SKIP LOCKED pick, the events), reads the sealed
account when asked, and parks a ticket when the caller may wait; ``telegate_release``
proves the holder, ends the lease with its rests, reports and events, and serves the line.
Each is one statement in autocommit (``PostgresEngine.call``): no BEGIN or COMMIT round
trips, one prepared statement. The store's other writes that may free a session serve the
line through ``telegate_serve_line`` in their own transaction (:func:`serve_line`).

The functions do what ``_leases``, ``_line`` and ``_counts`` do on SQLite, statement for
statement; the Python is the spec and the shared test suite runs both. This module turns
the functions' answers into the store's values and exceptions, with the same words.
A release with a write-back (``state``) keeps the Python path: the account is merged and
sealed in Python, inside the release's transaction.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping, Protocol, cast

from . import _line as line
from ._base import (
    Grant, KeyInfo, KeyRevoked, Lease, LeaseLimit, LeaseMismatch, NoSessionAvailable, NotFound, NotLeaseHolder,
    StoreError, Ticket, Tx, WaitLimit,
)

if TYPE_CHECKING:  # pragma: no cover
    from ._pool import _Base as Store

__all__ = ["acquire", "release", "serve_line", "CallRefused", "clean_text"]


class CallRefused(StoreError):
    """A function raised one of the store's refusals (SQLSTATE class ``TG``); mapped below."""

    def __init__(self, sqlstate: str, detail: str | None) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate
        self.detail = detail


_ACQUIRE = (
    "SELECT telegate_acquire(%(now)s::float8, %(ttl)s::float8, %(holder)s::text, %(name)s::text,"
    " %(key_id)s::bigint, %(key_name)s::text, %(lock_key)s::int::boolean, %(request_id)s::text,"
    " %(purpose)s::text, %(kind)s::text, %(host)s::text, %(grace)s::float8, %(account)s::int,"
    " %(groups)s::text[], %(wait)s::float8, %(owner)s::text, %(cap)s::bigint, %(keep)s::bigint) AS answer")

_RELEASE = (
    "SELECT telegate_release(%(now)s::float8, %(sid)s::bigint, %(token)s::text, %(key_id)s::bigint,"
    " %(key_name)s::text, %(admin)s::int::boolean, %(groups)s::text[], %(fw)s::float8, %(scope)s::text,"
    " %(disable)s::text, %(peer_flood)s::int::boolean, %(grace)s::float8) AS answer")


def clean_text(value: str | None) -> str | None:
    """``value`` as PostgreSQL text can hold it: a lone surrogate or a NUL (which no stored
    token holds) becomes U+FFFD, so that it matches nothing instead of failing the call."""
    if value is None:
        return None
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace").replace("\x00", "\ufffd")


class _Calling(Protocol):
    """What this module needs of the engine (``PostgresEngine``)."""

    def call(self, sql: str, params: Mapping[str, Any], *, what: str, idempotent: bool) -> Any: ...

    def fixed_now(self) -> float | None: ...


def _engine(store: "Store") -> _Calling:
    return cast(_Calling, store.engine)


def _lease_limit(key: KeyInfo, limit: int, held: int) -> LeaseLimit:
    return LeaseLimit(f"key {key.name!r} already holds {held} lease(s), its limit (max_leases={limit});"
                      " release one first, or ask an admin to raise the limit", limit=limit, held=held)


def _lease(data: Mapping[str, Any], sealed: Any = None) -> Lease:
    return Lease(int(data["id"]), data["name"], data["lease_token"], float(data["lease_expires_at"]),
                 data["kind"], json.loads(data["meta"]), sealed=sealed)


def _grants(answer: Mapping[str, Any]) -> list[Grant]:
    return [Grant(int(g["ticket"]), g["owner"], int(g["lease"]["id"]), _lease(g["lease"]))
            for g in answer.get("grants") or ()]


def _announce(store: "Store", grants: list[Grant]) -> None:
    if grants:
        for listener in store.grant_listeners:
            listener(grants)


def acquire(store: "Store", ttl: float, holder: str | None, name: str | None, key: KeyInfo | None,
            request_id: str | None, purpose: str | None, wait: float, owner: str | None, keep_polls: int,
            account: bool, kind: str | None, host: str | None) -> Lease | Ticket:
    """``Store.acquire`` on PostgreSQL (``purpose`` lower case already): one call of ``telegate_acquire``."""
    cap = None if key is None or key.is_admin else line.park_cap(key.max_leases, key.max_waiting)
    groups = key.confined if key is not None else ()
    params = {
        "now": _engine(store).fixed_now(), "ttl": ttl, "holder": holder, "name": name,
        "key_id": key.id if key is not None else None, "key_name": key.name if key is not None else None,
        "lock_key": int(key is not None and key.max_leases is not None), "request_id": request_id,
        "purpose": purpose, "kind": kind, "host": host, "grace": store.handover_grace, "account": int(account),
        "groups": list(groups) or None, "wait": wait, "owner": owner, "cap": cap,
        "keep": max(cap or 0, keep_polls)}
    idempotent = request_id is not None and key is not None and key.id is not None
    try:
        answer = _engine(store).call(_ACQUIRE, params, what="acquire", idempotent=idempotent)
    except CallRefused as refused:
        assert key is not None  # only a key is revoked or limited
        if refused.sqlstate == "TGKR1":
            raise KeyRevoked(f"API key {key.name!r} was revoked; ask an admin for a valid key") from None
        at = json.loads(refused.detail or "{}")
        raise _lease_limit(key, at["limit"], at["held"]) from None
    _announce(store, _grants(answer))
    status = answer["status"]
    if status == "lease":
        return _lease(answer["lease"], answer.get("sealed") if account else None)
    if status == "ticket":
        free_at = answer["next_free_at"]
        return Ticket(int(answer["ticket"]), None if free_at is None else float(free_at))
    if status == "wait_limit":
        assert key is not None
        raise WaitLimit(
            f"key {key.name!r} already has {answer['waiting']} poll(s) waiting in line, its cap (max_waiting="
            f"{answer['limit']}{'' if key.max_waiting is not None else ', 4 per max_leases'});"
            " wait for one to end, or ask an admin to raise it (telegate keys create --max-waiting)",
            limit=answer["limit"], waiting=answer["waiting"])
    if status == "limit":
        assert key is not None
        raise _lease_limit(key, answer["limit"], answer["held"])
    now = float(answer["now"])
    rest_end, lease_end = answer["rest_end"], answer["lease_end"]
    refused_now = NoSessionAvailable(
        waiting_count=answer["resting"], flood_waiting=answer["flood_waiting"], purpose=purpose, account=account,
        groups=tuple(groups), in_use=answer["in_use"], total=answer["total"],
        waiting_workers=answer["waiting_workers"],
        next_release_in=None if rest_end is None else max(0.0, float(rest_end) - now),
        next_lease_end_in=None if lease_end is None else max(0.0, float(lease_end) - now), kind=kind)
    if name is not None and kind is None and refused_now.total == 0:
        raise NotFound(f"no session named {name!r}")
    raise refused_now


def release(store: "Store", session_id: int, token: str | None, key: KeyInfo | None, *,
            flood_wait: float | None, scope: str | None, disable: str | None, peer_flood: bool) -> bool:
    """``Store.release`` without a write-back on PostgreSQL: one call of ``telegate_release``."""
    params = {
        "now": _engine(store).fixed_now(), "sid": session_id, "token": clean_text(token),
        "key_id": key.id if key is not None else None, "key_name": key.name if key is not None else None,
        "admin": int(key is not None and key.is_admin),
        "groups": list(key.confined) if key is not None and key.confined else None,
        "fw": flood_wait, "scope": scope, "disable": disable, "peer_flood": int(peer_flood),
        "grace": store.handover_grace}
    try:
        answer = _engine(store).call(_RELEASE, params, what="release", idempotent=True)
    except CallRefused as refused:
        if refused.sqlstate == "TGNH1":
            raise NotLeaseHolder(
                f"session {session_id} is leased by another API key; only its holder (or an admin) can"
                " release, renew or report it") from None
        raise LeaseMismatch(f"lease token is not the current lease of session {session_id}; your lease"
                            " ended (released or expired) and the session was leased again") from None
    _announce(store, _grants(answer))
    return bool(answer["ended"])


def serve_line(tx: Tx, grace: float) -> list[Grant]:
    """The waiting line served in ``tx`` by ``telegate_serve_line`` (it announces its grants)."""
    row = tx.row("SELECT telegate_serve_line(:now::float8, :grace::float8) AS answer", {"now": tx.now, "grace": grace})
    assert row is not None
    return _grants({"grants": row["answer"]})
