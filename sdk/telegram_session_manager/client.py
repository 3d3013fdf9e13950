"""TeleGate client: lease Telegram accounts (.session files) from a TeleGate server.

This module stands alone: it needs only the standard library, urllib3 and tenacity, so
it can be copied into a project as ``client.py`` and imported as
``from client import TelegramSessionManagerClient``.

Quick use::

    client = TelegramSessionManagerClient("http://127.0.0.1:8000", "MY_API_KEY")
    with client.session() as s:            # waits for a free account if needed
        run_worker(s.session_name)         # a FloodWait/dead-account error raised here
                                           # is reported to TeleGate, then re-raised

Everything the server can answer is a :class:`TeleGateError` carrying ``status``,
``method``, ``url`` and ``detail``. Waits for a free session are logged (WARNING, so
they show on the console with no logging set up; pass ``log_waits=False`` to log them
at DEBUG instead) and bounded (``max_wait``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import math
import os
import re
import socket
import ssl
import threading
import time
import uuid
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence
from urllib.parse import urlencode

import tenacity
import urllib3

__all__ = [
    "TelegramSessionManagerClient",
    "Lease",
    "Outcome",
    "RetryPolicy",
    "classify_exception",
    "tl_method",
    "TeleGateError",
    "TeleGateConnectionError",
    "APIError",
    "BadRequest",
    "AuthenticationError",
    "PermissionDenied",
    "NotFound",
    "LeaseLost",
    "NotLeaseHolder",
    "LeaseLimitReached",
    "WaitLimitReached",
    "ServerError",
    "NoSessionAvailable",
    "ClientClosed",
    "__version__",
]

__version__ = "0.1.0"

log = logging.getLogger(__name__)

_MISSING = object()


# --------------------------------------------------------------------------------------
# Exceptions: one base class, one place (``_error_from_response``) maps status to class.
# --------------------------------------------------------------------------------------


class TeleGateError(Exception):
    """Base class of every error the SDK raises.

    ``status`` is the HTTP status (None when no answer came), ``method`` and ``url`` the
    request, ``detail`` the server's explanation, ``error`` its error code and ``body``
    the parsed JSON answer (a dict, possibly empty).
    """

    hint = ""
    server: str | None = None  # the TeleGate base URL the request went to

    def __init__(self, message: str = "", *, status: int | None = None, method: str | None = None,
                 url: str | None = None, detail: str | None = None, error: str | None = None,
                 body: Mapping[str, Any] | None = None) -> None:
        super().__init__(message or detail or self.__class__.__name__)
        self.status = status
        self.method = method
        self.url = url
        self.detail = detail
        self.error = error
        self.body = dict(body or {})

    def __reduce__(self) -> Any:
        # Keyword-only constructors do not survive pickling by default (multiprocessing
        # sends exceptions between processes); rebuild from the instance dict instead.
        # ``reason`` (a urllib3 error holding a connection) is not sent along.
        state = {key: value for key, value in self.__dict__.items() if key != "reason"}
        return (_rebuild_error, (type(self), self.args, state))


def _rebuild_error(cls: type[TeleGateError], args: tuple, state: dict) -> TeleGateError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class TeleGateConnectionError(TeleGateError):
    """The server could not be reached (refused, reset, timed out).

    ``server`` is the TeleGate URL tried, ``reason`` the low-level error (kept here, not
    chained: its traceback says nothing the message does not).
    """

    server: str | None = None
    reason: BaseException | None = None


class ClientClosed(TeleGateError):
    """The client was closed; create a new one."""


class APIError(TeleGateError):
    """The server answered with an error status not covered by a more specific class."""


class BadRequest(APIError):
    """400: the request was rejected as invalid; ``detail`` says which field and why."""


class AuthenticationError(APIError):
    """401: the API key is missing, unknown or revoked."""

    hint = "check api_key (TELEGATE_API_KEY); a TeleGate admin creates keys with `telegate keys create NAME`"


class PermissionDenied(APIError):
    """403: the API key is valid but may not do this (a client key on an admin endpoint)."""

    hint = "this needs an admin key"


class NotFound(APIError):
    """404: no such session (or endpoint)."""


class LeaseLost(APIError):
    """409: the lease is no longer ours: it expired and someone else took the session, or it was released.

    Stop using the account: another worker may be using it now.
    """


class NotLeaseHolder(LeaseLost):
    """409 ``not_lease_holder``: the session is leased under another API key (another worker's).

    Nothing changed: a release, renewal, flood wait or disable only acts on your own lease.
    """

    hint = "you cannot release, renew or report a session another worker's key holds"


class LeaseLimitReached(APIError):
    """429 ``lease_limit``: this API key already holds as many leases as it may (``limit``).

    ``held``: the leases it holds; ``retry_after``: seconds the server advises to wait.
    Under auto_wait, ``get_session()`` waits for one of them to end instead of raising.
    """

    hint = "release a session first, or ask the TeleGate admin for a higher --max-leases"
    limit: int | None = None
    held: int | None = None
    retry_after: float | None = None

    def describe(self) -> str:
        return f"this API key is at its lease limit: {self.detail or f'{self.held} of {self.limit} held'}"


class WaitLimitReached(LeaseLimitReached):
    """429 ``wait_limit``: this API key already has as many long-polls waiting in line as it
    may (``limit``: 4 per ``max_leases``, or its admin-set ``--max-waiting``). Handled like
    :class:`LeaseLimitReached`: under auto_wait, ``get_session()`` waits and asks again.
    ``held`` is the number of polls of the key waiting now."""

    hint = "fewer workers per key wait at once; or ask the TeleGate admin for a higher --max-waiting"

    def describe(self) -> str:
        return f"this API key has as many polls waiting in line as it may: {self.detail or self.limit}"


class ServerError(APIError):
    """5xx: the server failed (after a few retries for 502/503/504)."""


class NoSessionAvailable(TeleGateError):
    """No session can be leased now.

    ``waiting_count``: sessions in flood wait; ``next_release_in``: seconds until the
    earliest flood wait ends (None when none is in flood wait); ``in_use``: sessions
    leased by workers; ``next_lease_end_in``: seconds until the earliest lease expires
    (None when none is in use); ``total``: registered sessions; ``waiting_workers``:
    workers waiting for a session right now (None if the server did not say);
    ``retry_after``: the ``Retry-After`` header in seconds, if any; ``waited``: seconds
    this client waited before giving up (0 without auto_wait); ``purpose``: the TL method
    the lease was asked for, if any (then ``waiting_count`` counts the sessions resting
    for that method or for all); ``kind``: the kind asked for, if any (then every count
    is of that kind).
    """

    def __init__(self, message: str = "", *, waiting_count: int = 0, next_release_in: float | None = None,
                 in_use: int = 0, next_lease_end_in: float | None = None, total: int | None = None,
                 retry_after: float | None = None, waiting_workers: int | None = None, status: int | None = 503, method: str | None = None,
                 url: str | None = None, detail: str | None = None, error: str | None = "no_session_available",
                 body: Mapping[str, Any] | None = None, purpose: str | None = None, kind: str | None = None) -> None:
        self.kind = kind
        self.waiting_count = waiting_count
        self.next_release_in = next_release_in
        self.in_use = in_use
        self.next_lease_end_in = next_lease_end_in
        self.total = total
        self.retry_after = retry_after
        self.waiting_workers = waiting_workers
        self.purpose = purpose
        self.waited = 0.0
        super().__init__(message or self.describe(), status=status, method=method, url=url,
                         detail=detail, error=error, body=body)

    @property
    def can_free_up(self) -> bool:
        """False when waiting is pointless: nothing is in use and nothing is in flood wait."""
        return bool(self.in_use) or self.next_release_in is not None

    def describe(self) -> str:
        if self.kind and self.total == 0:
            return f"no {self.kind} session is registered in this pool (kind={self.kind!r}); nothing to wait for"
        if self.purpose:
            parts = [f"no free session for {self.purpose}: {self.waiting_count} in flood wait (for it or account-wide)"]
        else:
            parts = [f"no free session: {self.waiting_count} in flood wait"]
        if self.next_release_in is not None:
            parts[0] += f" (the first ends in {self.next_release_in:.0f} s)"
        parts.append(f"{self.in_use} in use")
        if self.waiting_workers:
            parts.append(f"{self.waiting_workers} worker{'s' if self.waiting_workers != 1 else ''} waiting")
        if self.total is not None:
            parts.append(f"{self.total} registered")
        return ", ".join(parts)


_STATUS_ERRORS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: LeaseLost,
}

# Answers that mean "try again shortly": a proxy in front of a restarting server, or a
# 503 that is not the pool's own "no session" answer.
_TRANSIENT_STATUSES = frozenset({502, 503, 504})


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def _retry_after(value: str | None) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = moment.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


# Error codes that name a more precise class than their status does.
_CODE_ERRORS: dict[tuple[int, str], type[APIError]] = {
    (409, "not_lease_holder"): NotLeaseHolder,
    (429, "lease_limit"): LeaseLimitReached,
    (429, "wait_limit"): WaitLimitReached,
}


def _error_from_response(status: int, method: str, url: str, body: Mapping[str, Any], text: str,
                         headers: Mapping[str, str], sent: Mapping[str, Any] | None = None) -> TeleGateError:
    """The one place that turns an HTTP error answer into an exception (``sent``: the request's body)."""
    code = body.get("error") if isinstance(body.get("error"), str) else None
    detail = body.get("detail") if isinstance(body.get("detail"), str) else (text.strip()[:300] or None)
    common: dict[str, Any] = dict(status=status, method=method, url=url, detail=detail, error=code, body=body)
    if status == 503 and code == "no_session_available":
        return NoSessionAvailable(
            waiting_count=int(_number(body.get("waiting_count")) or 0),
            next_release_in=_number(body.get("next_release_in")),
            in_use=int(_number(body.get("in_use")) or 0),
            next_lease_end_in=_number(body.get("next_lease_end_in")),
            total=None if _number(body.get("total")) is None else int(body["total"]),
            waiting_workers=None if _number(body.get("waiting_workers")) is None else int(body["waiting_workers"]),
            retry_after=_retry_after(headers.get("Retry-After")),
            purpose=(sent or {}).get("purpose") if isinstance((sent or {}).get("purpose"), str) else None,
            kind=(sent or {}).get("kind") if isinstance((sent or {}).get("kind"), str) else None, **common)
    cls = _CODE_ERRORS.get((status, code or "")) or _STATUS_ERRORS.get(status) or (
        ServerError if status >= 500 else APIError)
    answer = f"{method} {url} -> {status}" + (f" {code}" if code else "")
    if cls is NotLeaseHolder:
        session = (sent or {}).get("session_id")
        message = (f"session {session} is leased by another worker's key; you cannot release, renew or report it "
                   f"({answer}" + (f": {detail})" if detail else ")"))
    elif cls is WaitLimitReached:
        message = f"this API key has as many polls waiting as it may: {detail or 'its cap'} ({answer}; {cls.hint})"
    elif cls is LeaseLimitReached:
        message = f"this API key is at its lease limit: {detail or 'it holds as many leases as it may'} ({answer}; {cls.hint})"
    else:
        message = answer + (f": {detail}" if detail else "") + (f" ({cls.hint})" if cls.hint else "")
    error = cls(message, **common)
    error.transient = status in _TRANSIENT_STATUSES  # type: ignore[attr-defined]  # set on every error this module raises
    if isinstance(error, LeaseLimitReached):
        error.limit = None if _number(body.get("limit")) is None else int(body["limit"])
        held = body.get("held", body.get("waiting"))
        error.held = None if _number(held) is None else int(held)
        error.retry_after = _retry_after(headers.get("Retry-After"))
    return error


def _failure(retry_state: tenacity.RetryCallState) -> Any:
    """The exception of the attempt tenacity asks about: one of ours, raised by the request
    (tenacity asks only after an attempt failed, and retries on our exceptions alone)."""
    return retry_state.outcome.exception() if retry_state.outcome is not None else None


def _is_transient(exc: BaseException) -> bool:
    return bool(getattr(exc, "transient", False))


# --------------------------------------------------------------------------------------
# What an exception raised inside ``with client.session()`` means for the account.
# --------------------------------------------------------------------------------------

# Telethon spells these with an "Error" suffix (FloodWaitError), Pyrogram without.
_FLOOD_NAMES = frozenset({"FloodWait", "FloodPremiumWait"})
# A slow-mode wait is per chat, not an account limit: the account stays usable.
_SLOWMODE_NAMES = frozenset({"SlowModeWait", "SlowmodeWait"})
_DEAD_NAMES = frozenset({
    "AuthKeyUnregistered", "AuthKeyInvalid", "AuthKeyDuplicated", "SessionRevoked", "SessionExpired",
    "UserDeactivated", "UserDeactivatedBan", "PhoneNumberBanned",
})


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a lease ends: plain release, a rest (flood wait or peer flood), or disabled.

    ``flood_wait``: seconds Telegram asked the account to wait; ``peer_flood``: Telegram
    said PEER_FLOOD (a spam limit naming no time: the server rests the account for its
    ``--peer-flood-rest``); ``flood_scope``: the TL method the rest is for, as Telegram's
    docs spell it (``contacts.resolveUsername``), or None for the whole account;
    ``disable``: a reason to stop handing the account out.
    """

    flood_wait: Optional[float] = None
    disable: Optional[str] = None
    flood_scope: Optional[str] = None
    peer_flood: bool = False

    @property
    def action(self) -> str:
        if self.disable is not None:
            return "disable"
        if self.peer_flood:
            return "peer_flood"
        return "flood_wait" if self.flood_wait is not None else "release"

    @property
    def rests(self) -> bool:
        return self.flood_wait is not None or self.peer_flood

    def merge(self, other: Outcome | None) -> Outcome:
        """The stronger of two outcomes: disabling beats a rest, a longer wait beats a shorter.

        Two rests stay scoped only when they are for the same method; otherwise the
        merged rest is account-wide (resting too much is safer than too little).
        """
        if other is None:
            return self
        disable = self.disable if self.disable is not None else other.disable
        waits = [w for w in (self.flood_wait, other.flood_wait) if w is not None]
        scopes = {outcome.flood_scope for outcome in (self, other) if outcome.rests}
        return Outcome(flood_wait=max(waits) if waits else None, disable=disable,
                       flood_scope=scopes.pop() if len(scopes) == 1 else None,
                       peer_flood=self.peer_flood or other.peer_flood)


RELEASE = Outcome()


def _base_name(name: str) -> str:
    return name[:-5] if name.endswith("Error") else name


def classify_exception(exc: BaseException) -> Outcome:
    """What ``exc`` says about the account it was raised for.

    Duck typing, so no Telegram library is imported: the class names along the MRO are
    matched (Telethon's ``FloodWaitError`` and Pyrogram's ``FloodWait`` alike) and the
    wait is read from ``.seconds`` (Telethon), ``.value`` (Pyrogram) or ``.x`` (old
    Pyrogram). Flood waits give ``Outcome(flood_wait=seconds, flood_scope=method)``,
    PEER_FLOOD ``Outcome(peer_flood=True, flood_scope=method)``, dead-account errors
    ``Outcome(disable=<class name>)``, everything else (slow mode included) a plain
    release. The method is read by :func:`tl_method` (None, account-wide, when unknown).
    """
    if not isinstance(exc, Exception):
        return RELEASE
    for cls in type(exc).__mro__:
        name = _base_name(cls.__name__)
        if name in _SLOWMODE_NAMES:
            return RELEASE
        if name in _FLOOD_NAMES:
            seconds = _flood_seconds(exc)
            if seconds is None:
                log.warning("%s carries no usable wait (.seconds/.value/.x); releasing the session plainly",
                            cls.__name__)
                return RELEASE
            return Outcome(flood_wait=seconds, flood_scope=tl_method(exc))
        if name == "PeerFlood":
            return Outcome(peer_flood=True, flood_scope=tl_method(exc))
        if name in _DEAD_NAMES:
            return Outcome(disable=cls.__name__)
    return RELEASE


# A TL method name as the server takes it: "getHistory" or "contacts.resolveUsername".
_TL_METHOD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
# Pyrogram/kurigram keep the method only in the message: '... (caused by "contacts.ResolveUsername")'.
_CAUSED_BY = re.compile(r'\(caused by "([^"]+)"\)')
# Telethon wraps a request in these on the first call of a connection; the cause is inside.
_WRAPPERS = ("Invoke", "InitConnection")


def _checked_method(method: str | None) -> str | None:
    """A TL method name given by the caller (a purpose or a flood scope), checked as the server will."""
    if method is None:
        return None
    if not isinstance(method, str) or len(method) > 100 or not _TL_METHOD.fullmatch(method):
        raise ValueError(f"a TL method name like 'contacts.resolveUsername' or 'getHistory' is needed, "
                         f"got {method!r}")
    return method


def tl_method(exc: BaseException) -> str | None:
    """The TL method a Telegram error was raised for, spelled as Telegram's docs do, or None.

    Telethon: ``exc.request`` is the request object; its class and module name it
    (``telethon.tl.functions.contacts.ResolveUsernameRequest`` -> ``contacts.resolveUsername``,
    unwrapping ``InvokeWithLayerRequest(...)`` and the like). Pyrogram/kurigram: the
    ``rpc_name`` (an attribute in some forks, else the message's ``caused by "..."``),
    ``contacts.ResolveUsername`` -> ``contacts.resolveUsername``. None when it can't be told.
    """
    request = getattr(exc, "request", None)
    if request is not None:
        return _telethon_method(request)
    rpc_name = getattr(exc, "rpc_name", None)
    if not isinstance(rpc_name, str):
        match = _CAUSED_BY.search(str(exc))
        rpc_name = match.group(1) if match else None
    return _method_name(rpc_name) if rpc_name else None


def _telethon_method(request: Any) -> str | None:
    for _ in range(8):
        inner = getattr(request, "query", None)
        if inner is None or not type(request).__name__.startswith(_WRAPPERS):
            break
        request = inner
    cls = type(request)
    if not cls.__name__.endswith("Request") or not isinstance(cls.__module__, str):
        return None
    module = cls.__module__.split(".")
    if "functions" not in module:
        return None
    namespace = module[module.index("functions") + 1:]
    return _method_name(".".join([*namespace, cls.__name__[:-len("Request")]]))


def _method_name(qualified: str) -> str | None:
    """``contacts.ResolveUsername`` -> ``contacts.resolveUsername`` (TL methods start lower-case)."""
    namespace, _, method = qualified.rpartition(".")
    if not method or method.startswith(_WRAPPERS):
        return None  # a wrapper (invokeWithLayer...) names no limit of its own: account-wide
    name = (f"{namespace}." if namespace else "") + method[0].lower() + method[1:]
    return name if len(name) <= 100 and _TL_METHOD.fullmatch(name) else None


def _flood_seconds(exc: BaseException) -> float | None:
    for attribute in ("seconds", "value", "x"):
        value = getattr(exc, attribute, None)
        if value is None or isinstance(value, bool):
            continue
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


# --------------------------------------------------------------------------------------
# Leases
# --------------------------------------------------------------------------------------


class Lease(dict):
    """A leased session. A dict (``lease["session_name"]``, as the seed guide uses it) with attributes.

    Keys: ``session_id``, ``session_name``, ``lease_token``, ``lease_expires_at``, and
    whatever else the server sent (``ttl``, ``kind``, ``meta``). Attributes: the same
    names, plus ``lost``/``lost_reason`` (set by the keepalive when the server says the
    lease is no longer ours), ``released`` and ``renewals``.
    """

    def __init__(self, data: Mapping[str, Any], ttl: float | None = None) -> None:
        super().__init__(data)
        self.lost = False
        self.lost_reason: str | None = None
        self.released = False
        self.renewals = 0
        self.outcome: Outcome | None = None
        self._state: dict | None = None  # what a ready client changed in the account: written back on release
        self._releasing = False  # a release is in flight
        self._abandoned = False  # the release failed at the end of a block: stop renewing, keep the token
        requested = _number(self.get("ttl"))
        self._ttl = float(requested if requested is not None else (ttl if ttl is not None else 300))
        self._renew_due = time.monotonic() + self._ttl / 3
        self._renew_failures = 0

    session_id = property(lambda self: self["session_id"], doc="The session's id in the pool.")
    session_name = property(lambda self: self["session_name"], doc="The .session name (Telethon/Pyrogram).")
    lease_token = property(lambda self: self.get("lease_token"), doc="Fencing token of this lease.")
    lease_expires_at = property(lambda self: self.get("lease_expires_at"), doc="ISO 8601 UTC expiry.")
    purpose = property(lambda self: self.get("purpose"), doc="The TL method this lease was asked for, or None.")
    kind = property(lambda self: self.get("kind", "unknown"), doc="telethon, pyrogram or unknown.")
    meta = property(lambda self: self.get("meta") or {}, doc="Free-form data the admin attached.")

    @property
    def ttl(self) -> float:
        """Lease time to live in seconds; the keepalive renews at a third of it."""
        return self._ttl

    def report_flood_wait(self, seconds: float, method: str | None = None) -> None:
        """Telegram asked this account to wait ``seconds``: the release will put it in flood wait.

        ``method``: the TL method that hit the limit (``"contacts.resolveUsername"``); the
        account then rests for that method only and stays leasable for other purposes.
        The lease is kept until it is released (the end of the ``with`` block, or
        ``release_session``) so no other worker gets the account while you still use it.
        """
        rest = _number(seconds)
        if rest is None or rest < 0:
            raise ValueError("seconds must be a number >= 0")
        self.outcome = Outcome(flood_wait=rest, flood_scope=_checked_method(method)).merge(self.outcome)

    def report_peer_flood(self, method: str | None = None) -> None:
        """Telegram said PEER_FLOOD: the release rests the account (for ``method`` only, if given)
        for the server's ``--peer-flood-rest`` (a day by default)."""
        self.outcome = Outcome(peer_flood=True, flood_scope=_checked_method(method)).merge(self.outcome)

    def report_dead(self, reason: str = "reported dead") -> None:
        """The account is unusable (banned, revoked, ...): the release disables it with ``reason``."""
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("reason must be a non-empty string")
        self.outcome = Outcome(disable=reason).merge(self.outcome)

    def _mark_lost(self, reason: str) -> None:
        self.lost = True
        self.lost_reason = reason

    @property
    def _renewable(self) -> bool:
        return not (self.lost or self.released or self._releasing or self._abandoned)


# --------------------------------------------------------------------------------------
# Retry and wait policy
# --------------------------------------------------------------------------------------


# Less of max_wait left than this: give up rather than send a long-poll of a few milliseconds.
_LEAST_WAIT = 0.05


def _whole_seconds(seconds: float) -> float:
    """Round a server-advised wait up to whole seconds, at least 1 (as Retry-After does)."""
    return float(max(1, math.ceil(seconds - 1e-6)))


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Every retry and wait decision of the client, in one object.

    Transient failures (connection refused/reset/timeout, 502, 504, a 503 that is not
    the pool's answer) are retried ``transient_attempts - 1`` times after
    ``transient_backoff``, ``2 * transient_backoff``, ... seconds (at most
    ``transient_backoff_max``). Under auto_wait they are waited out instead, for up to
    the client's ``connect_wait`` seconds, the backoff growing to ``connect_backoff_max``.

    Waiting for a free session (auto_wait), per 503 ``no_session_available`` answer:

    * nothing in use and nothing in flood wait (empty pool, all disabled): give up now;
    * sessions in use (they come back when released or when their lease expires): the
      next try is a long-poll, ``POST /session {"wait": s}``: the server holds it until a
      session is free for this caller (waiters are served first come, first served) or
      ``s`` passes. ``s`` is ``long_poll`` (30 s), never more than the time until the
      first flood wait or lease ends (but at least ``poll_min``);
    * only flood waits block (nothing in use): sleep until the first ends
      (``next_release_in``, rounded up to whole seconds), then try again;
    * ``max_wait`` (seconds, None = no limit) bounds the total: a wait that would cross
      it is shortened to the time left, or, when only a flood wait can free a session
      and it ends too late, the client gives up at once.

    A 429 ``lease_limit`` (this key holds all the leases it may) is waited out with a
    long-poll that the server holds until one of the key's leases ends (said once); a
    server that answers it at once is paced by its ``Retry-After``, else ``poll_min``
    doubling up to ``poll_max``.
    """

    transient_attempts: int = 4
    transient_backoff: float = 0.5
    transient_backoff_max: float = 4.0
    connect_backoff_max: float = 10.0
    poll_min: float = 1.0
    poll_max: float = 10.0
    long_poll: float = 30.0

    def __post_init__(self) -> None:
        if self.transient_attempts < 1:
            raise ValueError("transient_attempts must be at least 1")
        if not 0 < self.poll_min <= self.poll_max:
            raise ValueError("need 0 < poll_min <= poll_max")
        if not 0 < self.long_poll <= 60:
            raise ValueError("long_poll must be more than 0 and at most 60 seconds (the server's limit)")

    def backoff(self, attempt: int, waiting: bool) -> float:
        """The pause after failed attempt number ``attempt`` (1, 2, ...) of one request."""
        cap = self.connect_backoff_max if waiting else self.transient_backoff_max
        return min(cap, self.transient_backoff * 2 ** (attempt - 1))

    def limit_step(self, exc: LeaseLimitReached, waits: int, remaining: float | None,
                   answered_early: bool) -> _Step | None:
        """The next try after a 429 lease_limit: a long-poll, which the server holds in its
        waiting line until one of the key's leases ends (it serves the waiter then); after a
        server that answered the last long-poll at once (an older one), a paced sleep first.
        None (give up) when ``max_wait`` is used up."""
        if remaining is not None and remaining < _LEAST_WAIT:
            return None
        if isinstance(exc, WaitLimitReached):  # the key parks all the polls it may: a long-poll would not park
            wait = self.limit_wait(exc, waits, remaining)
            return None if wait is None else _Step(sleep=wait)
        hold = self.long_poll if remaining is None else min(self.long_poll, remaining)
        if not answered_early:
            return _Step(long_poll=round(hold, 3))
        wait = self.limit_wait(exc, waits, remaining)
        return None if wait is None else _Step(sleep=wait, long_poll=round(hold, 3))

    def limit_wait(self, exc: LeaseLimitReached, waits: int, remaining: float | None) -> float | None:
        """The sleep after a 429 lease_limit (``waits`` of them so far this call), or None to give up."""
        wait = exc.retry_after if exc.retry_after else min(self.poll_max, self.poll_min * 2 ** waits)
        if remaining is None:
            return wait
        return min(wait, remaining) if remaining >= _LEAST_WAIT else None

    def next_step(self, exc: NoSessionAvailable, remaining: float | None) -> _Step | None:
        """What to do after a 503 ``no_session_available``: a sleep, a long-poll, or None to give up."""
        if not exc.can_free_up or (remaining is not None and remaining < _LEAST_WAIT):
            return None
        if not exc.in_use:
            # Only flood waits block: nothing can free a session before the first ends.
            wait = _whole_seconds(exc.next_release_in or 0)
            if remaining is not None and wait > remaining:
                return None
            return _Step(sleep=wait)
        hold = self.long_poll
        for ends_in in (exc.next_release_in, exc.next_lease_end_in):
            if ends_in is not None:
                hold = min(hold, max(self.poll_min, _whole_seconds(ends_in)))
        if remaining is not None:
            hold = min(hold, remaining)
        return _Step(long_poll=round(hold, 3))


@dataclasses.dataclass(frozen=True)
class _Step:
    """The next try of a waiting get_session: after ``sleep`` seconds, holding for ``long_poll`` (or not)."""

    sleep: float = 0.0
    long_poll: Optional[float] = None


class _Patience:
    """How one request rides out a server that does not answer: tenacity's retry, stop, wait and log hooks.

    Not waiting (auto_wait off, or closing): ``transient_attempts`` tries in all. Waiting
    (auto_wait): tries until ``connect_wait`` seconds have passed (None: for ever). Each
    retry is logged in one line; giving up rewrites the message to say what to check.
    """

    def __init__(self, policy: RetryPolicy, waiting: bool, connect_wait: float | None, log_waits: bool) -> None:
        self.policy = policy
        self.waiting = waiting
        self.connect_wait = connect_wait
        self.level = logging.WARNING if log_waits else logging.DEBUG
        self.started = time.monotonic()
        self.waited = 0.0
        self._plans: dict[int, float | None] = {}

    def elapsed(self) -> float:
        return max(self.waited, time.monotonic() - self.started)  # an injected fake sleep counts too

    def plan(self, retry_state: tenacity.RetryCallState) -> float | None:
        number = retry_state.attempt_number
        if number not in self._plans:
            backoff = self.policy.backoff(number, self.waiting)
            pause: float | None = backoff
            if not self.waiting:
                pause = backoff if number < self.policy.transient_attempts else None
            elif self.connect_wait is not None:
                remaining = self.connect_wait - self.elapsed()
                pause = min(backoff, remaining) if remaining > 0 else None
            self._plans[number] = pause
        return self._plans[number]

    def retry(self, retry_state: tenacity.RetryCallState) -> bool:
        return _is_transient(_failure(retry_state))

    def stop(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.plan(retry_state) is None

    def wait(self, retry_state: tenacity.RetryCallState) -> float:
        return self.plan(retry_state) or 0.0

    def before_sleep(self, retry_state: tenacity.RetryCallState) -> None:
        exc = _failure(retry_state)
        pause = self.plan(retry_state) or 0.0
        self.waited += pause
        if isinstance(exc, TeleGateConnectionError):
            log.log(self.level, "TeleGate at %s is not answering; retrying in %g s (%s)", exc.server, pause,
                    exc.detail)
        else:
            log.log(self.level, "TeleGate at %s answered %s %s: %s; retrying in %g s", exc.server, exc.status,
                    exc.error or "", exc.detail, pause)

    def gave_up(self, exc: TeleGateError) -> TeleGateError:
        """The exception the caller gets: for a silent server, what was tried and what to check."""
        if isinstance(exc, TeleGateConnectionError) and _is_transient(exc):
            tried = (f"waited {round(self.elapsed(), 1):g} s (connect_wait={self.connect_wait})" if self.waiting
                     else f"tried {len(self._plans)} times")
            exc.args = (f"TeleGate at {exc.server} is not answering ({exc.detail}); {tried}. Check that the "
                        f"server is running (telegate serve), that base_url has its address and port, and "
                        f"that nothing in between (firewall, proxy) blocks it",)
        return exc

    def kwargs(self, sleep: Callable[[float], Any]) -> dict[str, Any]:
        return dict(retry=self.retry, stop=self.stop, wait=self.wait, sleep=sleep,
                    before_sleep=self.before_sleep, reraise=True)


class _AutoWait:
    """Per-call state of one waiting ``get_session``: tenacity's retry, stop, wait and log hooks.

    After each "no session" answer the policy picks the next step; a long-poll is carried
    to the next try through :meth:`body`. Every wait is logged, saying what it waits for.
    """

    def __init__(self, policy: RetryPolicy, max_wait: float | None, log_waits: bool) -> None:
        self.policy = policy
        self.max_wait = max_wait
        self.level = logging.WARNING if log_waits else logging.DEBUG
        self.started = time.monotonic()
        self.slept = 0.0
        self.limit_waits = 0
        self.long_poll: float | None = None  # the "wait" the next try sends
        self._sent_at = 0.0
        self._plans: dict[int, _Step | None] = {}

    def elapsed(self) -> float:
        # The larger of the real time and the sum of sleeps, so an injected fake sleep
        # still uses up max_wait.
        return max(self.slept, time.monotonic() - self.started)

    def body(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """The body of the next try: ``base`` plus the long-poll ``wait`` when one was planned."""
        self._sent_at = time.monotonic()
        return dict(base) if self.long_poll is None else {**base, "wait": self.long_poll}

    def plan(self, retry_state: tenacity.RetryCallState) -> _Step | None:
        # tenacity asks wait and stop in an order that changed across versions; decide
        # once per attempt and let both read the same decision.
        number = retry_state.attempt_number
        if number not in self._plans:
            exc = _failure(retry_state)
            remaining = None if self.max_wait is None else self.max_wait - self.elapsed()
            if isinstance(exc, LeaseLimitReached):
                step = self.policy.limit_step(exc, self.limit_waits, remaining, self._answered_early())
                self.limit_waits += 1
            else:
                step = self.policy.next_step(exc, remaining)
                if step is not None and step.long_poll is not None and self._answered_early():
                    # The server did not hold the last long-poll: pause so as not to spin.
                    pause = self.policy.poll_min if remaining is None else min(self.policy.poll_min, remaining)
                    step = dataclasses.replace(step, sleep=pause)
            self._plans[number] = step
            if step is None:
                exc.waited = round(self.elapsed(), 1)
                self._log_give_up(exc)
        return self._plans[number]

    def _answered_early(self) -> bool:
        return self.long_poll is not None and time.monotonic() - self._sent_at < self.long_poll / 2

    def retry(self, retry_state: tenacity.RetryCallState) -> bool:
        return isinstance(_failure(retry_state), (NoSessionAvailable, LeaseLimitReached))

    def stop(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.plan(retry_state) is None

    def wait(self, retry_state: tenacity.RetryCallState) -> float:
        step = self.plan(retry_state)
        return step.sleep if step else 0.0

    def before_sleep(self, retry_state: tenacity.RetryCallState) -> None:
        exc = _failure(retry_state)
        step = self.plan(retry_state) or _Step()
        elapsed = self.elapsed()
        so_far = f" (waited {elapsed:.0f} s so far)" if elapsed >= 1 else ""
        self.slept += step.sleep
        self.long_poll = step.long_poll
        if isinstance(exc, LeaseLimitReached):
            if self.limit_waits > 1:  # said once per call: the wait goes on until one ends
                log.debug("TeleGate: still at this key's lease limit; waiting on%s", so_far)
                return
            what = "waiting for one of this key's leases to end" + (
                f" (up to max_wait={self.max_wait:g} s)" if self.max_wait is not None else "")
        elif step.long_poll is not None:
            what = (f"waiting {step.sleep:g} s, then " if step.sleep else "waiting ") + (
                f"up to {step.long_poll:g} s for a session to be released") + (
                " or a flood wait to end" if exc.next_release_in is not None else "")
        else:
            what = f"waiting {step.sleep:g} s for the flood wait to end"
        log.log(self.level, "TeleGate: %s; %s%s", exc.describe(), what, so_far)

    def _log_give_up(self, exc: NoSessionAvailable | LeaseLimitReached) -> None:
        if isinstance(exc, NoSessionAvailable) and not exc.can_free_up:
            why = "nothing is in use or in flood wait, so none will free up"
        else:
            why = f"max_wait={self.max_wait:g} s would be exceeded"
        log.log(self.level, "TeleGate: %s; giving up: %s", exc.describe(), why)

    def kwargs(self, sleep: Callable[[float], Any]) -> dict[str, Any]:
        return dict(retry=self.retry, stop=self.stop, wait=self.wait, sleep=sleep,
                    before_sleep=self.before_sleep, reraise=True)


# --------------------------------------------------------------------------------------
# Transport: one HTTP exchange, shared by the sync and the async client.
# --------------------------------------------------------------------------------------


def default_host() -> str:
    """This machine's name, sent with each acquire: the server keeps an account on the host
    that used it last, and moves one without a proxy to another host only after a grace."""
    return socket.gethostname()[:200]


#: The kinds ``get_session(kind=...)`` may ask for: the library that opens the session.
KINDS = ("telethon", "pyrogram")


def _checked_kind(kind: str | None) -> str | None:
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)} (or None for any), got {kind!r}")
    return kind


def default_holder() -> str:
    """``host:pid``, so the server (and its admin) can tell who holds a session."""
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


def _server_url(url: Any) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ValueError("base_url must be the server URL, like http://127.0.0.1:8000 (or a list of them)")
    parsed = urllib3.util.parse_url(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
    return url.strip().rstrip("/")


class _Transport:
    """urllib3 pool + auth + JSON; ``send`` makes one request and maps its answer.

    With several server URLs, ``send`` uses the current one and, when it does not answer
    at all (refused, reset, timed out), moves on to the next (saying so) within the same
    call; the one that answers stays current. Each URL is tried at most once per call:
    waiting out a dead fleet is the retry policy's job.
    """

    def __init__(self, base_url: str | Sequence[str], api_key: str, *,
                 timeout: float | urllib3.Timeout = 30.0, pool_maxsize: int = 32) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url) if base_url is not None else []
        if not urls:
            raise ValueError("base_url must be the server URL, like http://127.0.0.1:8000 (or a list of them)")
        self.base_urls = tuple(_server_url(url) for url in urls)
        self._current = 0
        self._switch = threading.Lock()
        if not isinstance(api_key, str) or not api_key:
            raise ValueError("api_key must be a non-empty string")
        if isinstance(timeout, (int, float)):
            timeout = urllib3.Timeout(connect=min(10.0, float(timeout)), read=float(timeout))
        self.headers = {
            "X-API-Key": api_key,
            "Accept": "application/json",
            "User-Agent": f"telegram-session-manager/{__version__} urllib3/{urllib3.__version__}",
        }
        # maxsize: one kept-alive connection per thread of a worker pool; block=False
        # lets bursts open extra connections instead of waiting.
        self.timeout = timeout
        self.pool = urllib3.PoolManager(num_pools=4 + len(self.base_urls), maxsize=pool_maxsize, block=False,
                                        timeout=timeout, retries=False)

    @property
    def base_url(self) -> str:
        """The server URL in use now."""
        return self.base_urls[self._current]

    def send(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        count = len(self.base_urls)
        start = self._current
        for step in range(count):
            index = (start + step) % count
            try:
                data = self._send_to(self.base_urls[index], method, path, body)
            except TeleGateConnectionError as exc:
                if count == 1 or not _is_transient(exc):
                    raise
                if step + 1 == count:
                    exc.server = " or ".join(self.base_urls[(start + n) % count] for n in range(count))
                    raise
                self._move_on(index, exc)
                continue
            except TeleGateError:
                self._current = index  # it answered, with an error: it is up
                raise
            self._current = index
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    def _move_on(self, index: int, exc: TeleGateConnectionError) -> None:
        """URL ``index`` did not answer: make the next one current (once, whichever thread sees it first)."""
        following = (index + 1) % len(self.base_urls)
        with self._switch:
            if self._current != index:
                return
            self._current = following
        log.warning("TeleGate at %s is not answering (%s); switching to %s", self.base_urls[index], exc.detail,
                    self.base_urls[following])

    def _send_to(self, base_url: str, method: str, path: str, body: Mapping[str, Any] | None) -> dict[str, Any]:
        url = base_url + path
        headers = dict(self.headers)
        payload = None
        if body is not None:
            payload = json.dumps(body, allow_nan=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        timeout = self.timeout
        hold = _number((body or {}).get("wait"))
        if hold and isinstance(timeout.read_timeout, (int, float)):
            # A long-poll is answered up to ``wait`` seconds late, by design.
            timeout = urllib3.Timeout(connect=timeout.connect_timeout, read=timeout.read_timeout + hold)
        try:
            response = self.pool.request(method, url, body=payload, headers=headers, retries=False,
                                         redirect=False, timeout=timeout)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            error = _connection_error(method, url, exc)
            error.server = base_url
            raise error from None
        text = response.data.decode("utf-8", "replace") if response.data else ""
        try:
            data = json.loads(text) if text.strip() else {}
        except ValueError:
            data = None
        if response.status == 400 and url.startswith("http://") and "https" in text[:300].lower():
            # A TLS server's own answer to plain HTTP ("Client sent an HTTP request to an HTTPS server").
            fix = f"the server at {base_url} speaks TLS (https): use https://{base_url[len('http://'):]}"
            raise TeleGateConnectionError(f"{method} {url} failed: {fix}", method=method, url=url, detail=fix)
        if not 200 <= response.status < 300:
            failure = _error_from_response(response.status, method, url, data if isinstance(data, dict) else {},
                                           text, response.headers, body)
            failure.server = base_url
            raise failure
        if not isinstance(data, dict):
            raise APIError(f"{method} {url} -> {response.status} but the answer is not a JSON object: {text[:200]!r}",
                           status=response.status, method=method, url=url, detail=text[:300])
        return data

    def close(self) -> None:
        self.pool.clear()


#: Seconds a probe of the other scheme may take (see :func:`scheme_mismatch`).
PROBE_TIMEOUT = 2.0


def _speaks(host: str, port: int, tls: bool) -> bool:
    """Whether ``host:port`` completes a TLS handshake (``tls``) or answers plain HTTP."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as sock:
            if tls:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE  # only asks "is this TLS at all?"; nothing is sent
                with context.wrap_socket(sock, server_hostname=host):
                    return True
            sock.sendall(b"HEAD /healthz HTTP/1.0\r\nHost: " + host.encode("idna") + b"\r\n\r\n")
            return sock.recv(5) == b"HTTP/"
    except (OSError, ValueError, UnicodeError):
        return False


def scheme_mismatch(url: str, reason: BaseException) -> str | None:
    """What to tell a user whose request to ``url`` failed with ``reason`` because the server
    speaks the other scheme (https:// to a plain-HTTP server, or http:// to a TLS one); None
    when that is not it. One quick probe of the other scheme, made only after such a failure.
    """
    parsed = urllib3.util.parse_url(url)
    if not parsed.host or isinstance(reason, urllib3.exceptions.NewConnectionError):
        return None  # nothing listens there (refused, unreachable): not a question of scheme
    host = parsed.host.strip("[]")
    if parsed.scheme == "https":
        port = parsed.port or 443
        if isinstance(reason, (urllib3.exceptions.SSLError, urllib3.exceptions.TimeoutError,
                               urllib3.exceptions.ProtocolError, ConnectionError, socket.timeout, ssl.SSLError)) \
                and _speaks(host, port, tls=False):
            return (f"the server at {parsed.host}:{port} speaks plain HTTP, not TLS: use "
                    f"http://{parsed.host}:{port} (or put a TLS proxy in front of it; see docs/TLS.md)")
        return None
    port = parsed.port or 80
    if isinstance(reason, (urllib3.exceptions.ProtocolError, ConnectionError)) and _speaks(host, port, tls=True):
        return f"the server at {parsed.host}:{port} speaks TLS (https): use https://{parsed.host}:{port}"
    return None


def _connection_error(method: str, url: str, exc: BaseException) -> TeleGateConnectionError:
    reason = getattr(exc, "reason", None) or exc  # MaxRetryError wraps the real reason
    transient = isinstance(reason, (urllib3.exceptions.TimeoutError, urllib3.exceptions.NewConnectionError,
                                    urllib3.exceptions.ProtocolError, ConnectionError, socket.timeout))
    if isinstance(reason, urllib3.exceptions.SSLError):
        transient = False
    mismatch = scheme_mismatch(url, reason)
    if mismatch is not None:
        # Said at once, never retried: waiting would only end in "timed out" or "reset".
        error = TeleGateConnectionError(f"{method} {url} failed: {mismatch}", method=method, url=url,
                                        detail=mismatch)
        error.reason = reason
        error.transient = False  # type: ignore[attr-defined]
        return error
    error = TeleGateConnectionError(
        f"{method} {url} failed: {reason} (is the TeleGate server running at this address?)",
        method=method, url=url, detail=_short_reason(reason))
    error.reason = reason
    error.transient = transient  # type: ignore[attr-defined]  # set on every error this module raises
    return error


def _short_reason(reason: BaseException) -> str:
    """``connection refused`` rather than urllib3's ``<HTTPConnection object at 0x...>: Failed to ...``."""
    chain = [reason, getattr(reason, "__cause__", None), getattr(reason, "__context__", None)]
    for cause in chain:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
    # (urllib3's NewConnectionError is a ConnectTimeoutError too: tell refusals apart first.)
    if any(isinstance(cause, (socket.timeout, urllib3.exceptions.TimeoutError)) for cause in chain):
        if not isinstance(reason, urllib3.exceptions.NewConnectionError) or "timed out" in str(reason):
            return "timed out"
    text = str(reason)
    return text.split(": ", 1)[1] if text.startswith("<") and ": " in text else text


def _query(params: Mapping[str, Any]) -> str:
    clean = {key: value for key, value in params.items() if value is not None}
    return "?" + urlencode(clean) if clean else ""


# --------------------------------------------------------------------------------------
# The shared core: every decision the sync and the asyncio client make, in one place.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class _AcquireCall:
    """One ``get_session()`` call: the body it sends and, under auto_wait, its wait state."""

    ttl: Optional[float]
    body: dict
    waiting: Optional[_AutoWait]


class _ClientCore:
    """What both clients decide alike; each client subclass only does its I/O.

    As tenacity's ``BaseRetrying`` holds the decisions its sync and asyncio loops share,
    this class decides what to send (request bodies), how to read the answers (leases,
    renewals, lost leases), what an exception raised in a ``with`` block means for the
    account, what to log, and which tenacity policy each call runs under.
    :class:`TelegramSessionManagerClient` (threads) and ``AsyncTelegramSessionManagerClient``
    (asyncio) only send requests, sleep, and wake their keepalive.

    The pass-through calls at the end (``get_status``, the admin helpers) are written once
    here: they return whatever ``_request`` returns, a dict in the sync client and an
    awaitable in the asyncio one.
    """

    # The sync client guards ``_leases`` with an RLock; asyncio needs no lock.
    _lock: Any = contextlib.nullcontext()

    def __init__(self, base_url: str | Sequence[str], api_key: str, auto_wait: bool, *, ttl: float | None,
                 max_wait: float | None, holder: str | None, keepalive: bool, log_waits: bool,
                 timeout: float | urllib3.Timeout, retry_policy: RetryPolicy | None, sleep: Callable[[float], Any],
                 pool_maxsize: int, connect_wait: float | None, host: str | None = None) -> None:
        if connect_wait is not None and (_number(connect_wait) is None or connect_wait < 0):
            raise ValueError("connect_wait must be a number of seconds >= 0, or None to wait for ever")
        self._transport = _Transport(base_url, api_key, timeout=timeout, pool_maxsize=pool_maxsize)
        self.auto_wait = auto_wait
        self.ttl = ttl
        self.max_wait = max_wait
        self.holder = holder if holder is not None else default_holder()
        #: The machine name sent with each acquire ("" sends none).
        self.host = host if host is not None else default_host()
        self.keepalive = keepalive
        self.log_waits = log_waits
        self.retry_policy = retry_policy or RetryPolicy()
        self.connect_wait = connect_wait
        self._sleep = sleep
        # The latest lease per session id, until a release succeeds. Lost leases stay
        # here so that release_session(id) still sends their (stale) token: without a
        # token the server would end whatever lease is current, another worker's.
        self._leases: dict[int, Lease] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url} holding {len(self.held)}>"

    @property
    def base_url(self) -> str:
        """The server URL in use now (with a list of URLs, the one that last answered)."""
        return self._transport.base_url

    @property
    def base_urls(self) -> tuple[str, ...]:
        """Every server URL this client may use, in the order given."""
        return self._transport.base_urls

    # -- what the clients implement -----------------------------------------------------

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
                 wait_out: bool | None = None) -> Any:
        """One request, its transient failures retried (``wait_out``: waited out; None: per auto_wait)."""
        raise NotImplementedError

    def _poke(self) -> None:
        """Wake the keepalive: the set of held leases changed."""
        raise NotImplementedError

    # -- requests -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("this TeleGate client is closed; create a new one")

    def _patience(self, wait_out: bool | None) -> _Patience:
        """The retry policy of one request (for sync ``Retrying`` or ``AsyncRetrying``)."""
        waiting = self.auto_wait if wait_out is None else wait_out
        return _Patience(self.retry_policy, waiting, self.connect_wait, self.log_waits)

    # -- acquire --------------------------------------------------------------------------

    def _acquire_call(self, ttl: float | None, name: str | None, auto_wait: bool | None,
                      max_wait: Any, purpose: str | None = None, kind: str | None = None,
                      extra: Mapping[str, Any] | None = None) -> _AcquireCall:
        ttl = self.ttl if ttl is None else ttl
        body = _acquire_body(ttl, name, self.holder)
        if purpose is not None:
            body["purpose"] = _checked_method(purpose)
        if _checked_kind(kind) is not None:
            body["kind"] = kind
        if self.host:
            body["host"] = self.host
        body.update(extra or {})
        # One per call, the same on every retry of it: a POST /session whose answer was
        # lost (a read timeout, a dropped connection, a failover) is sent again safely,
        # and the server hands back the lease it already granted instead of a second one.
        body["request_id"] = uuid.uuid4().hex
        if not (self.auto_wait if auto_wait is None else auto_wait):
            return _AcquireCall(ttl, body, None)
        limit = self.max_wait if max_wait is _MISSING else max_wait
        return _AcquireCall(ttl, body, _AutoWait(self.retry_policy, limit, self.log_waits))

    def _leased(self, data: Mapping[str, Any], call: _AcquireCall) -> Lease:
        lease = Lease(data, call.ttl)
        if "purpose" in call.body:
            lease.setdefault("purpose", call.body["purpose"])
        log.debug("TeleGate: leased session %s (#%s) for %g s", lease.session_name, lease.session_id, lease.ttl)
        return lease

    def _orphan_release_body(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A lease granted to a call that was cancelled meanwhile: the body that gives it straight back."""
        lease = Lease(data)
        log.warning("TeleGate: get_session() was cancelled after session %s was leased; releasing it",
                    lease.session_name)
        return self._release_begin(lease, lease.session_id, RELEASE)

    # -- release --------------------------------------------------------------------------

    def _release_begin(self, lease: Lease | None, session_id: int, report: Outcome) -> dict[str, Any]:
        """The body of ``POST /release``; from now on the keepalive leaves the lease alone."""
        if lease is not None:
            report = report.merge(lease.outcome)
            lease._releasing = True
        body: dict[str, Any] = {"session_id": session_id}
        if lease is not None and lease.lease_token:
            body["lease_token"] = lease.lease_token
        if report.peer_flood:
            body["peer_flood"] = True  # the server's rest for PEER_FLOOD; it takes no seconds beside it
        elif report.flood_wait is not None:
            body["flood_wait"] = report.flood_wait
        if report.rests and report.flood_scope is not None:
            body["flood_scope"] = report.flood_scope
        if report.disable is not None:
            body["disable"] = report.disable[:500]  # the server's limit; a long reason must not block disabling
        if lease is not None and lease._state and lease.lease_token:
            body["state"] = lease._state  # fenced by the token: a stale lease writes nothing
        return body

    @staticmethod
    def _state_refused(body: Mapping[str, Any], exc: BaseException) -> dict[str, Any] | None:
        """The release body without its state, when the server refused the state (400/413):
        the release itself must still happen. None when the refusal was not about the state."""
        if "state" not in body or not isinstance(exc, APIError) or exc.status not in (400, 413):
            return None
        log.error("TeleGate: the server refused the state written back for session %s (%s); releasing it"
                  " without", body.get("session_id"), exc.detail or exc)
        return {key: value for key, value in body.items() if key != "state"}

    def _release_failed(self, lease: Lease | None, exc: BaseException) -> None:
        if lease is not None:
            if isinstance(exc, LeaseLost):
                lease._mark_lost(exc.detail or "lease_mismatch")
            else:
                lease._releasing = False  # maybe still ours (the server may not have heard us): keep renewing
        self._poke()

    def _release_done(self, lease: Lease | None, session_id: int, body: Mapping[str, Any]) -> bool:
        if lease is not None:
            lease.released = True
            self._forget(lease)
        else:
            self._poke()
        name = lease.session_name if lease is not None else session_id
        scope = f" for {body['flood_scope']}" if "flood_scope" in body else ""
        if "disable" in body:
            log.warning("TeleGate: session %s disabled on release: %s", name, body["disable"])
        elif body.get("peer_flood"):
            log.warning("TeleGate: session %s released after PEER_FLOOD: it rests%s for the server's "
                        "peer-flood rest", name, scope or " (the whole account)")
        elif body.get("flood_wait"):
            log.warning("TeleGate: session %s released into a flood wait of %g s%s", name, body["flood_wait"], scope)
        else:
            log.debug("TeleGate: session %s released", name)
        return True

    # -- the end of a ``with client.session()`` block -----------------------------------

    def _block_outcome(self, lease: Lease, exc: BaseException | None) -> Outcome | None:
        """What the release at the end of the block reports; None when already released."""
        if lease.released:
            return None
        outcome = RELEASE if exc is None else classify_exception(exc)
        if exc is not None and outcome.action != "release":
            scope = f" for {outcome.flood_scope}" if outcome.rests and outcome.flood_scope else ""
            if outcome.rests and not scope:
                scope = " for the whole account (the method could not be told)"
            log.info("TeleGate: %s raised in the block of session %s -> %s%s", type(exc).__name__,
                     lease.session_name, outcome.action, scope)
        return outcome.merge(lease.outcome)

    def _block_release_failed(self, lease: Lease, error: TeleGateError) -> None:
        """The release at the end of a block failed: say so; the block's own exception (if any) wins."""
        if isinstance(error, LeaseLost):
            log.error("TeleGate: the lease on session %s was lost before the end of the block (%s); "
                      "another worker may have used the account meanwhile", lease.session_name, error.detail)
            return
        lease._abandoned = True  # stop renewing: the server frees it when the lease expires
        self._poke()
        log.error("TeleGate: could not release session %s (%s); it returns to the pool when its "
                  "lease expires in at most %g s", lease.session_name, error, lease.ttl)

    # -- renew and keepalive --------------------------------------------------------------

    def _renew_body(self, lease: Lease, ttl: float | None) -> dict[str, Any]:
        return {"session_id": lease.session_id, "lease_token": lease.lease_token, "ttl": ttl or lease.ttl}

    def _renewed(self, lease: Lease, data: Mapping[str, Any]) -> Lease:
        lease._renew_due = time.monotonic() + lease.ttl / 3
        lease._renew_failures = 0
        lease.renewals += 1
        if "lease_expires_at" in data:
            lease["lease_expires_at"] = data["lease_expires_at"]
        return lease

    def _renew_rejected(self, lease: Lease, exc: BaseException) -> None:
        """A renew failed; a 409 or 404 means the lease is gone."""
        if isinstance(exc, (LeaseLost, NotFound)):
            self._lost(lease, exc)

    def _lost(self, lease: Lease, exc: TeleGateError) -> None:
        if lease.released or lease._releasing:
            return  # being released: a renew racing the release is no loss
        reason = exc.detail or str(exc)
        # Said before it is flagged: whoever sees `lease.lost` can find the line already.
        log.error("TeleGate: lost the lease on session %s (#%s): %s. Stop using this account: another "
                  "worker may have it now.", lease.session_name, lease.session_id, reason)
        lease._mark_lost(reason)
        self._poke()

    def _keepalive_failed(self, lease: Lease, exc: BaseException) -> None:
        """A keepalive renewal failed: a lost lease was flagged already; anything else is tried again soon."""
        if isinstance(exc, (LeaseLost, NotFound)):
            return
        # Soon (0.5 s, doubling), and never later than a tenth of the TTL: several tries
        # fit before the lease could expire, and a restarted server hears from us at once.
        lease._renew_failures += 1
        retry_in = max(0.2, min(lease.ttl / 10, 0.5 * 2 ** (lease._renew_failures - 1)))
        lease._renew_due = time.monotonic() + retry_in
        if isinstance(exc, TeleGateError):
            log.warning("TeleGate: could not renew the lease on session %s (trying again in %.1f s): %s",
                        lease.session_name, retry_in, exc)
        else:  # never let the keepalive die silently with leases held
            log.error("TeleGate: unexpected error renewing session %s", lease.session_name,
                      exc_info=(type(exc), exc, exc.__traceback__))

    def _renewable(self) -> list[Lease]:
        with self._lock:
            return [lease for lease in self._leases.values() if lease._renewable]

    def _due(self, active: list[Lease], now: float) -> tuple[list[Lease], float]:
        """The leases to renew now, and the seconds until the next one is due."""
        due = [lease for lease in active if lease._renew_due <= now]
        return due, min(lease._renew_due for lease in active) - now

    @property
    def held(self) -> list[Lease]:
        """The leases this client holds now (the keepalive renews these)."""
        return self._renewable()

    def _forget(self, lease: Lease) -> None:
        with self._lock:
            if self._leases.get(lease.session_id) is lease:
                del self._leases[lease.session_id]
        self._poke()

    def _to_release_on_close(self) -> list[Lease]:
        with self._lock:
            return [lease for lease in self._leases.values() if not (lease.released or lease.lost)]

    def _close_release_failed(self, lease: Lease, exc: TeleGateError) -> None:
        log.warning("TeleGate: could not release session %s on close: %s", lease.session_name, exc)

    # -- calls that only pass through (a dict in the sync client, an awaitable in asyncio) --

    def get_status(self) -> Any:
        """Pool counts: ``total``, ``free``, ``in_use``, ``in_floodwait``, ``disabled``, ``next_available``."""
        return self._request("GET", "/status")

    def add_sessions(self, names: list[str], kind: str | None = None, meta: Mapping[str, Any] | None = None) -> Any:
        """Register sessions by name (admin): ``{"added": [{"id", "name"}], "existing": [names]}``."""
        body: dict[str, Any] = {"names": list(names)}
        if kind is not None:
            body["kind"] = kind
        if meta is not None:
            body["meta"] = dict(meta)
        return self._request("POST", "/sessions", body)

    def list_sessions(self, state: str | None = None, limit: int | None = None, offset: int | None = None) -> Any:
        """``{"sessions": [...], "total": n}`` (admin); ``state`` is free, in_use, in_floodwait or disabled."""
        return self._request("GET", "/sessions" + _query({"state": state, "limit": limit, "offset": offset}))

    def session_info(self, session_id: int) -> Any:
        """One session's row (admin)."""
        return self._request("GET", f"/sessions/{int(session_id)}")

    def update_session(self, session_id: int, **fields: Any) -> Any:
        """PATCH a session (admin): ``disabled=True, reason=...``, ``clear_flood_wait=True`` or ``meta={...}``."""
        return self._request("PATCH", f"/sessions/{int(session_id)}", fields)

    def remove_session(self, session_id: int) -> Any:
        """Remove a session from the pool (admin)."""
        return self._request("DELETE", f"/sessions/{int(session_id)}")

    def healthz(self) -> Any:
        return self._request("GET", "/healthz")


def _ready() -> Any:
    """The ready-client module, imported when first used (it needs Telethon or kurigram)."""
    # By name, not a relative import: client.py copied alone (no package) must still import.
    if not __package__:
        raise ImportError("ready clients (client.telethon(), client.pyrogram()) need the telegram_session_manager"
                          " package, not client.py copied alone: pip install telegram-session-manager-client")
    return importlib.import_module(f"{__package__}.ready")


def _report(flood_wait: float | None, disable: str | None, flood_scope: str | None, peer_flood: bool) -> Outcome:
    """What a caller of ``release_session`` reports, checked."""
    if flood_scope is not None and flood_wait is None and not peer_flood:
        raise ValueError("flood_scope goes with flood_wait or peer_flood")
    return Outcome(flood_wait=flood_wait, disable=disable, flood_scope=_checked_method(flood_scope),
                   peer_flood=bool(peer_flood))


def _acquire_body(ttl: float | None, name: str | None, holder: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if ttl is not None:
        body["ttl"] = ttl
    if holder:
        body["holder"] = holder
    if name is not None:
        body["name"] = name
    return body


# --------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------


class TelegramSessionManagerClient(_ClientCore):
    """Synchronous TeleGate client; thread-safe (one client can serve a pool of worker threads).

    ``auto_wait``: when no session is free, ``get_session()`` waits what the server
    advises and tries again (see :class:`RetryPolicy`), logging each wait; with
    ``auto_wait=False`` it raises :class:`NoSessionAvailable` at once. ``max_wait``
    bounds the total wait in seconds. ``ttl``: lease time to live asked of the server
    (None: the server's default). Held leases are renewed by a background thread at a
    third of their TTL (``keepalive=False`` turns that off). ``sleep`` is the function
    used for every wait (tests inject a recorder).
    """

    def __init__(self, base_url: str | Sequence[str], api_key: str, auto_wait: bool = True, *,
                 ttl: float | None = None,
                 max_wait: float | None = None, holder: str | None = None, keepalive: bool = True,
                 log_waits: bool = True, timeout: float | urllib3.Timeout = 30.0,
                 retry_policy: RetryPolicy | None = None, sleep: Callable[[float], Any] = time.sleep,
                 pool_maxsize: int = 32, connect_wait: float | None = 300.0, host: str | None = None) -> None:
        super().__init__(base_url, api_key, auto_wait, ttl=ttl, max_wait=max_wait, holder=holder,
                         keepalive=keepalive, log_waits=log_waits, timeout=timeout, retry_policy=retry_policy,
                         sleep=sleep, pool_maxsize=pool_maxsize, connect_wait=connect_wait, host=host)
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._keepalive_thread: threading.Thread | None = None

    # -- I/O ------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
                 wait_out: bool | None = None) -> dict[str, Any]:
        self._check_open()
        patience = self._patience(wait_out)
        try:
            return tenacity.Retrying(**patience.kwargs(self._sleep))(self._transport.send, method, path, body)
        except TeleGateError as exc:
            raise patience.gave_up(exc).with_traceback(None) from None  # the retry machinery adds nothing

    def _request_once(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self._check_open()
        return self._transport.send(method, path, body)

    def _nap(self, seconds: float) -> None:
        if seconds > 0:  # a long-poll follows at once: no zero-second "wait" to record
            self._sleep(seconds)

    # -- the seed's API -----------------------------------------------------------------

    def get_session(self, ttl: float | None = None, name: str | None = None, *, purpose: str | None = None,
                    auto_wait: bool | None = None, max_wait: Any = _MISSING, kind: str | None = None,
                    _extra: Mapping[str, Any] | None = None) -> Lease:
        """Lease a free session; returns a dict with ``session_id`` and ``session_name`` (a :class:`Lease`).

        ``name`` leases that particular session. ``purpose``: the TL method you will call
        (``"messages.getHistory"``); sessions resting for that method are skipped, those
        resting only for others are not. With auto_wait (the default) waits until one is
        free, logging each wait; raises :class:`NoSessionAvailable` when nothing can free
        up or ``max_wait`` is used up. ``kind`` (``"telethon"`` or ``"pyrogram"``) leases only
        sessions of that kind (a kind no session has is answered at once). Release it with
        ``release_session``.
        """
        call = self._acquire_call(ttl, name, auto_wait, max_wait, purpose, kind, _extra)
        if call.waiting is None:
            data = self._request("POST", "/session", call.body, wait_out=False)
        else:
            waiting = call.waiting
            try:
                data = tenacity.Retrying(**waiting.kwargs(self._nap))(
                    lambda: self._request("POST", "/session", waiting.body(call.body), wait_out=True))
            except TeleGateError as exc:
                raise exc.with_traceback(None) from None
        lease = self._leased(data, call)
        self._hold(lease)
        return lease

    def release_session(self, session_id: int, flood_wait: float | None = None, disable: str | None = None, *,
                        flood_scope: str | None = None, peer_flood: bool = False) -> bool:
        """Give a session back; returns True (also for an unknown or already free id, as the seed says).

        ``flood_wait``: seconds Telegram asked the account to wait; the pool keeps it out
        until then (for ``flood_scope`` only, a TL method like ``"contacts.resolveUsername"``,
        when given). ``peer_flood=True``: Telegram said PEER_FLOOD; the server rests the
        account for its ``--peer-flood-rest``. ``disable``: a reason; the pool stops
        handing the session out. The lease token of a session this client leased is sent
        along, so a lease that was lost (expired and taken by another worker) raises
        :class:`LeaseLost` instead of releasing the other worker's lease.
        """
        with self._lock:
            lease = self._leases.get(session_id)
        return self._release(lease, session_id, _report(flood_wait, disable, flood_scope, peer_flood))

    def _release(self, lease: Lease | None, session_id: int, report: Outcome = RELEASE, *,
                 wait_out: bool | None = None) -> bool:
        body = self._release_begin(lease, session_id, report)
        try:
            try:
                self._request("POST", "/release", body, wait_out=wait_out)
            except TeleGateError as exc:
                plain = self._state_refused(body, exc)
                if plain is None:
                    raise
                body = plain
                self._request("POST", "/release", body, wait_out=wait_out)
        except BaseException as exc:
            self._release_failed(lease, exc)
            raise
        return self._release_done(lease, session_id, body)

    # -- beyond the seed ----------------------------------------------------------------

    @contextlib.contextmanager
    def session(self, ttl: float | None = None, name: str | None = None, *, purpose: str | None = None,
                auto_wait: bool | None = None, max_wait: Any = _MISSING, kind: str | None = None) -> Iterator[Lease]:
        """``with client.session() as s:`` lease a session for the block; it is released on every exit.

        An exception raised in the block still propagates, and tells the release what
        happened: a Telegram flood wait rests the session for that long, for the method
        that hit it (account-wide when it can't be told); PEER_FLOOD rests it for the
        server's peer-flood rest; a dead-account error disables it (see
        :func:`classify_exception`). ``s.report_flood_wait()``, ``s.report_peer_flood()``
        and ``s.report_dead()`` do the same without an exception. ``purpose`` and ``kind``: as
        for :meth:`get_session`.
        """
        lease = self.get_session(ttl, name, purpose=purpose, auto_wait=auto_wait, max_wait=max_wait, kind=kind)
        try:
            yield lease
        except BaseException as exc:
            self._finish(lease, exc)
            raise
        else:
            self._finish(lease, None)

    def telethon(self, purpose: str | None = None, connect: bool = True, *, sessions_dir: Any = None,
                 ttl: float | None = None, name: str | None = None, max_wait: Any = _MISSING,
                 **kwargs: Any) -> contextlib.AbstractContextManager[Any]:
        """``with client.telethon() as tg:`` a Telethon ``TelegramClient`` of a leased account, connected.

        The lease asks for the account (``"account": true``; the key needs ``--accounts``),
        and the client is built in memory from it: auth key and DC, entity cache, update
        state, api_id/api_hash, device fingerprint and proxy (python-socks; an account with
        a proxy never connects directly). ``kwargs`` go to ``TelegramClient`` and override
        those. ``connect=False`` builds it without connecting. With ``sessions_dir`` (or
        ``TELEGATE_SESSIONS_DIR``) it leases a Telethon session instead and opens
        ``sessions_dir/<name>.session`` (a missing file is an error; nothing is created).
        At the end: disconnect, write back what changed (account mode), report a flood
        wait with its method, PEER_FLOOD or a dead account as ``session()`` does, release.
        Needs ``telegram_session_manager.ready`` (the package, not client.py alone).
        """
        return _ready().sync_block(self, "telethon", purpose, connect, sessions_dir,
                                   {"ttl": ttl, "name": name, "max_wait": max_wait}, kwargs)

    def pyrogram(self, purpose: str | None = None, connect: bool = True, *, sessions_dir: Any = None,
                 ttl: float | None = None, name: str | None = None, max_wait: Any = _MISSING,
                 **kwargs: Any) -> contextlib.AbstractContextManager[Any]:
        """``with client.pyrogram() as app:`` a kurigram ``Client`` of a leased account (see :meth:`telethon`)."""
        return _ready().sync_block(self, "pyrogram", purpose, connect, sessions_dir,
                                   {"ttl": ttl, "name": name, "max_wait": max_wait}, kwargs)

    def _finish(self, lease: Lease, exc: BaseException | None) -> None:
        """Release at the end of a ``with`` block; never raises (the lease expires by TTL anyway)."""
        outcome = self._block_outcome(lease, exc)
        if outcome is None:
            return
        try:
            self._release(lease, lease.session_id, outcome)
        except TeleGateError as error:
            self._block_release_failed(lease, error)

    def renew(self, lease: Lease, ttl: float | None = None) -> Lease:
        """Extend ``lease`` now (the keepalive does it for you); raises :class:`LeaseLost` if it is gone."""
        return self._renew(lease, ttl, self._request)

    def _renew(self, lease: Lease, ttl: float | None, request: Callable[..., dict[str, Any]]) -> Lease:
        try:
            data = request("POST", "/renew", self._renew_body(lease, ttl))
        except TeleGateError as exc:
            self._renew_rejected(lease, exc)
            raise
        return self._renewed(lease, data)

    # -- keepalive ------------------------------------------------------------------------

    def _hold(self, lease: Lease) -> None:
        with self._lock:
            self._leases[lease.session_id] = lease
            if not self.keepalive or self._closed:
                return
            if self._keepalive_thread is None:
                self._keepalive_thread = threading.Thread(
                    target=self._keepalive_loop, name="telegate-keepalive", daemon=True)
                self._keepalive_thread.start()
            else:
                self._wake.notify_all()

    def _poke(self) -> None:
        with self._lock:
            self._wake.notify_all()

    #: Seconds the keepalive thread stays parked after the last lease ends. A worker that
    #: leases again at once reuses it instead of starting a thread per lease (measured:
    #: SDK overhead 1.18x -> ~1.05x of raw urllib3 with one worker in a tight loop).
    keepalive_linger = 2.0

    def _keepalive_loop(self) -> None:
        idle_since: float | None = None
        while True:
            with self._lock:
                active = self._renewable()
                now = time.monotonic()
                if not active and not self._closed:
                    idle_since = now if idle_since is None else idle_since
                    left = idle_since + self.keepalive_linger - now
                    if left > 0:
                        self._wake.wait(left)  # a new lease or close() wakes it early
                        continue
                if self._closed or not active:
                    self._keepalive_thread = None
                    return
                idle_since = None
                due, next_in = self._due(active, now)
                if not due:
                    self._wake.wait(next_in)  # woken early by a new lease, a release or close()
                    continue
            for lease in due:
                if not lease._renewable or self._closed:
                    continue
                # One attempt per tick (not the injectable sleep's backoff): a failed renew
                # is simply tried again soon, several times before the lease could expire.
                try:
                    self._renew(lease, None, self._request_once)
                except Exception as exc:
                    self._keepalive_failed(lease, exc)

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Release what this client still holds, stop the keepalive, close connections. Idempotent."""
        with self._lock:
            if self._closed:
                return
        for lease in self._to_release_on_close():
            try:
                self._release(lease, lease.session_id, wait_out=False)
            except TeleGateError as exc:
                self._close_release_failed(lease, exc)
        with self._lock:
            self._closed = True
            self._leases.clear()
            self._wake.notify_all()
            thread = self._keepalive_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._transport.close()

    def __enter__(self) -> TelegramSessionManagerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
