"""Long-polls in one server process: parked requests, and how they are woken.

A ``POST /session`` with ``"wait"`` that finds nothing free gets a ticket in the store's
waiting line (``telegate.store._line``: a table, so the line is one for every server
process on the database) and parks here until a session is granted to its ticket or its
wait runs out. Nothing here decides who gets a session; that happens in the store's
transactions, in ticket order. This module only wakes the right request soon after:

* a grant made by this process (its release, or an acquire that served the line first)
  is handed to :meth:`WaitRoom.granted` right after the commit, with its lease, which
  wakes the ticket's request at once: it answers without touching the database;
* a grant made by another process is seen by the room's watcher thread through the
  engine's ``CommitFeed`` (``Engine.commit_feed``), its way of telling that someone else
  committed: SQLite: ``PRAGMA data_version`` polled on a connection of its own (a few
  microseconds a poll); PostgreSQL: ``LISTEN``, woken by the granting transaction's
  ``NOTIFY``. The watcher then reads which of this process's tickets hold a grant;
* sessions that free up by time alone (a flood wait or a lapsed lease ends: no commit
  at all) are served by the watcher at the time the store names (``next_free_at``).

The watcher also renews this process's tickets (``alive_until``) every few seconds: only
tickets of a live process are served, so a server that dies with requests in line does
not get sessions leased to them for long.

The watcher runs only while this process has a parked request. A parked request blocks
on its own event (no CPU) inside the server's ``parked()`` section, which gives the
thread pool a stand-in thread meanwhile (``telegate._channel.Dispatcher``).
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable, Iterable

from .store import ALIVE_FOR, CommitFeed, NoSessionAvailable, PoolStore

__all__ = ["LocalCommitFeed", "WaitRoom", "Place", "LineFull", "new_owner"]

log = logging.getLogger(__name__)

#: The watcher serves the line at least this often while requests wait, whatever the
#: store says about time (a safety net for frees the store cannot foresee).
SAFETY_INTERVAL = 2.0


def new_owner() -> str:
    """A name for this server process in the waiting line: host, pid and a random part."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


class LocalCommitFeed:
    """For a database only this process uses: nothing to watch, waits only end on interrupt."""

    def __init__(self) -> None:
        self._wake = threading.Event()

    def wait(self, timeout: float) -> bool:
        self._wake.wait(max(0.0, timeout))
        self._wake.clear()
        return False

    def interrupt(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._wake.set()


class LineFull(Exception):
    """This poll's place went to a key holding fewer places (the line is full): poll again."""


class Place:
    """A place in this process's line, held by one key's request from admission to answer."""

    __slots__ = ("key", "parked", "evicted")

    def __init__(self, key: Any) -> None:
        self.key = key
        self.parked: _Parked | None = None
        self.evicted = False


class _Parked:
    __slots__ = ("ticket", "event", "lease", "gone", "place")

    def __init__(self, ticket: int, place: Place | None = None) -> None:
        self.ticket = ticket
        self.event = threading.Event()
        self.lease: Any = None  # handed over with a grant made by this process
        self.gone = False  # the worker hung up
        self.place = place

    def hung_up(self) -> None:
        self.gone = True
        self.event.set()


class WaitRoom:
    """The requests of this server process that wait for a session, and their watcher.

    ``store`` is the pool (``claimed``, ``leave_line``, ``keep_alive``, ``granted_for``,
    ``serve_line``); ``feed_factory`` makes the engine's commit feed (on the first wait);
    ``park`` is the server's ``parked()`` context (a no-op in process).
    """

    def __init__(self, store: PoolStore, owner: str, feed_factory: Callable[[], CommitFeed], *,
                 park: Callable[[], AbstractContextManager] | None = None, clock: Callable[[], float] = time.time,
                 ) -> None:
        self.store = store
        self.owner = owner
        self._feed_factory = feed_factory
        self._feed: CommitFeed | None = None
        self._park = park or nullcontext
        self._clock = clock
        self._lock = threading.Lock()
        self._parked: dict[int, _Parked] = {}
        self._places: dict[Any, list[Place]] = {}  # key -> its places, oldest first
        self._taken = 0  # places held now, over every key
        self._watcher: threading.Thread | None = None
        self._watch = threading.Condition(self._lock)
        self._next_due = 0.0  # monotonic time of the next timed pass over the line
        self._next_alive = 0.0  # monotonic time to renew our tickets' alive_until
        self._closed = False

    # -- what the app calls ----------------------------------------------------------------

    @property
    def count(self) -> int:
        """Requests parked in this process now."""
        return len(self._parked)

    def admit(self, key: Any, size: int) -> Place | None:
        """A place in this process's line (``size`` places in all) for a poll of ``key``, or
        None: answer that poll at once.

        Max-min fair: while places are left anyone gets one, so one key alone may fill the
        line. When it is full, a key holding fewer places than another takes the newest
        parked place of the key holding most; that poll answers 503 (:class:`LineFull`)
        and polls again. Give the place back with :meth:`leave`.
        """
        with self._lock:
            if self._taken >= size:
                mine = len(self._places.get(key, ()))
                top = max(self._places, key=lambda k: len(self._places[k]), default=None)
                if top is None or len(self._places[top]) <= mine:
                    return None
                victim = next((p for p in reversed(self._places[top]) if p.parked is not None), None)
                if victim is None:  # none of its places parked yet: nothing to take now
                    return None
                self._drop(victim)
                victim.evicted = True
                victim.parked.event.set()  # type: ignore[union-attr]
            place = Place(key)
            self._places.setdefault(key, []).append(place)
            self._taken += 1
            return place

    def leave(self, place: Place) -> None:
        """The poll holding ``place`` answered: the place is free again."""
        with self._lock:
            if not place.evicted:
                self._drop(place)

    def _drop(self, place: Place) -> None:
        places = self._places.get(place.key)
        if places is not None and place in places:
            places.remove(place)
            self._taken -= 1
            if not places:
                del self._places[place.key]

    def wait(self, ticket: int, seconds: float, next_free_at: float | None = None,
             on_disconnect: Callable[[Callable[[], None]], Callable[[], None]] | None = None,
             place: Place | None = None) -> Any:
        """Park until a lease is granted to ``ticket`` (return it) or ``seconds`` pass (then the
        ticket leaves the line, and the store raises its ``NoSessionAvailable``). When its
        ``place`` (see :meth:`admit`) goes to another key meanwhile, raises :class:`LineFull`.

        ``on_disconnect`` (the server's, see ``telegate._channel.ON_DISCONNECT``): when the
        worker hangs up meanwhile, the ticket leaves the line at once, and a lease granted
        to it in that instant is released to the next in line.
        """
        parked = _Parked(ticket, place)
        forget = on_disconnect(parked.hung_up) if on_disconnect is not None else None
        deadline = time.monotonic() + seconds
        with self._lock:
            self._parked[ticket] = parked
            if place is not None:
                place.parked = parked
            self._schedule(next_free_at)
            self._ensure_watcher()
        try:
            # A local grant needs no database; anything else opens a connection again.
            self.store.release_connection()
            with self._park():
                while True:
                    if parked.gone:
                        return self._abandon(parked)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not parked.event.wait(remaining) or self._closed:
                        break
                    if parked.gone:
                        continue
                    if place is not None and place.evicted and parked.lease is None:
                        lease = self.store.claimed(ticket)
                        if lease is not None:
                            return lease
                        try:
                            return self.store.leave_line(ticket)  # a grant that came first
                        except NoSessionAvailable as exc:  # out of line now
                            raise LineFull() from exc
                    parked.event.clear()
                    if parked.lease is not None:
                        return parked.lease  # granted by this process: nothing to read
                    lease = self.store.claimed(ticket)  # granted by another process
                    if lease is not None:
                        return lease
                # Out of time (or stopping): leave the line, unless a grant came first.
                return parked.lease or self.store.leave_line(ticket)
        finally:
            if forget is not None:
                forget()
            with self._lock:
                if self._parked.get(ticket) is parked:  # not a poll of the same request that took the ticket back
                    del self._parked[ticket]

    def _abandon(self, parked: _Parked) -> None:
        """The worker hung up: out of the line (returns None); a lease it got meanwhile is released."""
        lease = parked.lease
        if lease is None:
            try:
                lease = self.store.leave_line(parked.ticket)
            except Exception:  # NoSessionAvailable: it had nothing, and now is out of line
                return None
        log.info("a waiting worker hung up; session %s goes to the next in line", lease.session_id)
        self.store.release(lease.session_id, lease.lease_token)
        return None

    def granted(self, grants: Iterable[Any]) -> None:
        """Hand this process's grants to their parked requests (call after the commit)."""
        with self._lock:
            for grant in grants:
                if grant.owner == self.owner:
                    parked = self._parked.get(grant.ticket)
                    if parked is not None:
                        parked.lease = grant.lease
                        parked.event.set()

    def close(self) -> None:
        """Stop: parked requests leave the line and answer now; idempotent."""
        with self._lock:
            self._closed = True
            self._watch.notify_all()
            for parked in self._parked.values():
                parked.event.set()
            feed = self._feed
        if feed is not None:
            feed.interrupt()
        if self._watcher is not None:
            self._watcher.join(5)
        if feed is not None:
            feed.close()

    # -- the watcher -------------------------------------------------------------------

    def _schedule(self, next_free_at: float | None) -> None:
        """Serve the line by ``next_free_at`` (store clock) or within the safety interval."""
        now = time.monotonic()
        due = now + SAFETY_INTERVAL
        if next_free_at is not None:
            due = min(due, now + max(0.0, next_free_at - self._clock()) + 0.001)
        if due < self._next_due or self._next_due <= now:
            self._next_due = due
            if self._feed is not None:
                self._feed.interrupt()

    def _ensure_watcher(self) -> None:
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(target=self._run, name="telegate-waiters", daemon=True)
            self._watcher.start()
        else:
            self._watch.notify()

    def _run(self) -> None:
        while True:
            try:
                if not self._watch_once():
                    return
            except Exception:  # a database hiccup must not end the watcher: waiters would hang
                log.exception("waiting line: the watcher failed; trying again in a second")
                time.sleep(1.0)

    def _watch_once(self) -> bool:
        """One turn of the watcher; False when the room is closed."""
        with self._lock:
            while not self._parked and not self._closed:
                self._watch.wait()
            if self._closed:
                return False
            if self._feed is None:
                self._feed = self._feed_factory()
            feed = self._feed
            due = min(self._next_due, self._next_alive)
        committed = feed.wait(max(0.0, due - time.monotonic()))
        now = time.monotonic()
        if now >= self._next_alive:  # we are alive: keep our tickets servable
            self._next_alive = now + ALIVE_FOR / 3
            self.store.keep_alive(self.owner)
        timed = now >= self._next_due
        if committed or timed:  # (timed: a safety net, should a commit go unseen)
            with self._lock:
                first = min(self._parked, default=None)
            if first is not None:
                tickets = self.store.granted_for(self.owner, first)
                with self._lock:
                    for ticket in tickets:
                        parked = self._parked.get(ticket)
                        if parked is not None:
                            parked.event.set()
        if timed:
            grants, next_free_at = self.store.serve_line()
            self.granted(grants)
            with self._lock:
                self._next_due = 0.0
                self._schedule(next_free_at)
        return True
