"""TeleGate's waitress server: waitress's own, with a channel that does not busy-loop.

waitress serves every connection from one thread (the main loop: ``select``/``poll``
over all sockets, reading requests and flushing answers) and runs the app in a pool of
task threads. Before each turn, the loop asks every channel ``readable()`` and
``writable()``; a channel that says it is writable is handed to ``handle_write`` as soon
as its socket can take bytes, which for an idle keep-alive socket is at once.

The defect (waitress 3.0.2, ``HTTPChannel.writable``): a channel whose task thread is in
the middle of ``write_soon`` (it has appended its answer to the output buffer and holds
``outbuf_lock`` while it sends) reports itself writable; ``handle_write`` then only
*tries* the lock (``_flush_some_if_lockable``), fails, and returns. The socket is still
writable, so the next ``poll`` returns at once and the same thing happens again. While it
spins, the main loop holds the GIL for a pass over every connection per turn, and the task
thread that holds the lock needs the GIL to finish its send and let it go. With a few
hundred keep-alive connections this feeds itself: measured on TeleGate, the loop turned
20,000 to 35,000 times a second, every ``handle_write`` found the lock taken, and
throughput fell from ~600 to 0-70 acquire+release cycles a second in some runs and not in
others (docs/PERFORMANCE.md, "Fleet scale"). It is the same family as Pylons/waitress
issue 418 (a channel that stays writable while ``handle_write`` cannot make progress,
there because the channel was no longer connected; fixed upstream by PR 435), but a
different path, still present in 3.0.2.

The fix is the invariant the loop relies on: ``writable()`` is true only when
``handle_write`` can make progress. While a task runs on the channel, ``handle_write``
does something only if it can take ``outbuf_lock`` (and at least ``send_bytes`` are
buffered), so the channel says "not writable" when it cannot. Nothing is left unsent: a
task thread flushes its own output inside ``write_soon`` and pulls the loop's trigger
when it leaves bytes behind, and ``service()`` pulls it again when the task ends, after
which the channel is writable as before. When the task waits for the loop to drain a
buffer over the high watermark it waits on the condition, which releases the lock, so the
loop can still drain it.

Applied only to the server :func:`create_server` builds (a subclass, not a patch of
waitress's class), so other waitress servers in the same process are untouched.

The same server paces its loop when a turn gets expensive (many connections: see
:class:`Server`), and runs its tasks on a :class:`Dispatcher` that lets a request park (a
long-poll waiting for a session) without taking a thread from everyone else.

Hostile networks (issue 18): the server closes a connection at once when its address
already holds ``connections_per_ip`` of them (a trusted proxy's address excepted), and
closes one whose request head is not complete ``header_timeout`` seconds after it began
(or after the connection opened): idle or dribbling sockets cannot fill the connection
limit and keep everyone else out. A request carrying both ``Content-Length`` and
``Transfer-Encoding`` is refused (400, connection closed): a proxy in front could read
its body one way and we the other (request smuggling).
"""
from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.server import TcpWSGIServer
from waitress import wasyncore
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask

log = logging.getLogger(__name__)

__all__ = ["Channel", "Dispatcher", "Server", "create_server", "ON_DISCONNECT"]

#: WSGI environ key of ``Channel.on_disconnect`` (call it with a callback; it returns the
#: function that takes the callback back). Needs ``channel_request_lookahead`` >= 1, so
#: that the loop keeps reading a connection while its request runs and sees it close.
ON_DISCONNECT = "telegate.on_disconnect"


class _Task(WSGITask):
    channel: Channel

    def get_environment(self) -> dict:
        environ = super().get_environment()
        environ[ON_DISCONNECT] = self.channel.on_disconnect
        return environ



#: The ``error`` code of each answer waitress gives a request it could not read.
_FRAMING_ERRORS = {400: "bad_request", 413: "request_too_large", 431: "request_head_too_large"}


class _ErrorTask(ErrorTask):
    """waitress's answer to a request it could not read (bad framing, a head or body over its
    limits), as JSON like every other TeleGate error: ``{"error", "detail"}``."""

    def execute(self) -> None:
        error = self.request.error  # type: ignore[attr-defined]  # waitress's ErrorTask gets a request with .error
        detail = f"{error.reason}: {error.body}"
        if error.code == 431:
            detail += ("; the request line and headers must stay under the server's limit (for"
                       " GET /sessions, ask for fewer name= at once)")
        body = json.dumps({"error": _FRAMING_ERRORS.get(error.code, "bad_request"), "detail": detail}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers = [*self.response_headers, ("Content-Type", "application/json")]
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Parser(HTTPRequestParser):
    """waitress's request parser, refusing a request framed two ways (RFC 9112 6.3: a
    server MAY reject it, and must close the connection after it)."""

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        # HTTP/1.1: waitress has popped Transfer-Encoding and set ``chunked``; HTTP/1.0
        # leaves the header in place (and would use Content-Length).
        if "CONTENT_LENGTH" in self.headers and (self.chunked or "TRANSFER_ENCODING" in self.headers):
            self.connection_close = True
            raise ParsingError("a request may carry Content-Length or Transfer-Encoding, not both")


class Channel(HTTPChannel):
    """waitress's HTTP channel that is writable only when a write can make progress,
    tells a long request (a long-poll) when its client has gone, counts its address's
    connections, and times its request heads."""

    task_class = _Task
    error_task_class = _ErrorTask
    parser_class = _Parser
    _disconnect_hooks: list[Callable[[], None]] | None = None
    _counted: str | None = None  # the address whose count this channel holds

    def __init__(self, server: Any, sock: socket.socket, addr: Any, adj: Adjustments, map: Any = None) -> None:
        #: When the request head in progress began (monotonic), None while none is: a
        #: new connection owes one from the moment it opened.
        self.head_since: float | None = time.monotonic()
        super().__init__(server, sock, addr, adj, map)
        counts = getattr(server, "per_address", None)
        if counts is not None and isinstance(addr, tuple) and getattr(self, "_fileno", None) is not None:
            self._counted = addr[0]
            counts[self._counted] = counts.get(self._counted, 0) + 1

    _heard = False  # the connection has sent its first bytes

    def received(self, data: bytes) -> bool:
        if not self._heard and data:
            self._heard = True
            if data[:1] == b"\x16" and data[1:2] == b"\x03":
                # A TLS handshake (https://) sent to this plain-HTTP server. waitress would
                # wait for a request line that never comes, and the client would time out
                # after many seconds saying nothing useful. Closing now fails its handshake
                # at once; the SDK and the CLI then find the server speaks plain HTTP and say so.
                self.logger.warning("a client at %s spoke TLS (https://) to this plain-HTTP server; it must use"
                                    " http://, or reach the server through a TLS proxy (docs/TLS.md)",
                                    self.addr[0] if isinstance(self.addr, tuple) else self.addr)
                self.will_close = True
                return False
        before = self.request
        result = super().received(data)
        request = self.request
        if request is None or request.headers_finished:
            self.head_since = None
        elif request is not before and self.head_since is None:
            self.head_since = time.monotonic()
        return result

    def del_channel(self, map: Any = None) -> None:
        super().del_channel(map)
        counted, self._counted = self._counted, None
        if counted is not None:
            counts: dict[str, int] = getattr(self.server, "per_address")
            left = counts.get(counted, 1) - 1
            if left > 0:
                counts[counted] = left
            else:
                counts.pop(counted, None)

    def on_disconnect(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (from the loop thread: keep it short) when this connection closes."""
        if self._disconnect_hooks is None:
            self._disconnect_hooks = []
        self._disconnect_hooks.append(callback)
        if not self.connected:
            callback()

        def forget() -> None:
            hooks = self._disconnect_hooks
            if hooks is not None and callback in hooks:
                hooks.remove(callback)
        return forget


    def handle_close(self) -> None:
        hooks, self._disconnect_hooks = self._disconnect_hooks, None
        super().handle_close()
        for hook in hooks or ():
            try:
                hook()
            except Exception:  # a hook must not break the loop
                self.logger.exception("disconnect hook failed")

    def writable(self) -> bool:
        if self.requests and not (self.will_close or self.close_when_flushed):
            # A task is queued or running on this channel: handle_write would only call
            # _flush_some_if_lockable, which does nothing below send_bytes or while the
            # task thread holds outbuf_lock. Asking to be woken then is a busy loop.
            if self.total_outbufs_len < self.adj.send_bytes:
                return False
            if not self.outbuf_lock.acquire(False):
                return False
            self.outbuf_lock.release()
        return bool(super().writable())


class Dispatcher(ThreadedTaskDispatcher):
    """waitress's thread pool, plus :meth:`parked` for requests that wait a long time.

    waitress runs every request on one pool of ``threads`` threads, first come first
    served. A long-poll that simply blocked one of them would take it from everyone:
    eight waiting workers would leave no thread to serve the release they wait for. A
    request that is about to wait enters ``parked()``: the pool starts one more thread
    for as long as it waits (a compensating thread, like a fork-join pool's managed
    blocking), so ``threads`` threads always serve the rest. A parked thread blocks on
    an event and costs no CPU; its memory is a thread stack (about 16 KB resident).
    The caller bounds how many requests may park (``--max-waiters``).
    """

    def __init__(self, threads: int) -> None:
        super().__init__()
        self.base_threads = threads
        self._parked = 0
        self._park_lock = threading.Lock()
        self._stopping = False
        #: Called first when the server stops (e.g. to end parked waits before the join).
        self.on_shutdown: list[Callable[[], None]] = []
        #: Called in a pool thread that is about to end (e.g. to close its database connection).
        self.on_thread_exit: list[Callable[[], None]] = []
        self.set_thread_count(threads)

    def handler_thread(self, thread_no: int) -> None:
        try:
            super().handler_thread(thread_no)
        finally:  # this thread stops (the pool shrinks after a parked request ended)
            for hook in self.on_thread_exit:
                hook()

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        # From here on a parked request that ends leaves the thread count alone: raising
        # it back to ``threads`` after the pool was told to stop would start threads that
        # nothing stops (the stop then waited out its timeout: "thread(s) still running").
        with self._park_lock:
            self._stopping = True
        for hook in self.on_shutdown:
            hook()
        return super().shutdown(cancel_pending, timeout)  # type: ignore[arg-type]  # seconds; the stub says int

    @property
    def parked_count(self) -> int:
        return self._parked

    @contextmanager
    def parked(self) -> Iterator[None]:
        with self._park_lock:
            self._parked += 1
            if not self._stopping:
                self.set_thread_count(self.base_threads + self._parked)
        try:
            yield
        finally:
            with self._park_lock:
                self._parked -= 1
                # One thread beyond the base stops the next time it is idle (not this
                # one necessarily: it still has its answer to write).
                if not self._stopping:
                    self.set_thread_count(self.base_threads + self._parked)


class Server(TcpWSGIServer):
    """waitress's TCP server, serving each connection with :class:`Channel`, its loop paced.

    Each turn of waitress's loop asks every connection whether it is readable and
    writable: with a thousand keep-alive workers a turn costs about a millisecond of
    Python, under the GIL, whatever happens on the sockets. When requests come faster
    than turns, each turn handles a few events and the loop takes most of the GIL from
    the threads that answer requests; slower answers mean fewer events per turn, so more
    turns per request: a slide we measured to 60 cycles/s at 1,000 workers. So after a
    turn that cost more than :attr:`pace_above` seconds the loop sleeps
    :attr:`pace_factor` times that (at most :attr:`pace_most`), GIL released: it then
    takes at most a quarter of the time, and each turn serves the events of the pause
    at once. With few connections turns are cheap and nothing changes.

    A turn's cost is its wall time on ``perf_counter`` less the time spent waiting in
    ``select``/``poll`` (:func:`_poll_turn`). ``thread_time`` would be simpler, but on
    Windows it moves in 15.6 ms steps (the scheduler's tick): nearly every turn would read
    0 and a few 15.6 ms, so the pacing would be all or nothing.
    """

    channel_class = Channel
    pace_above = 0.0002
    pace_factor = 3.0
    pace_most = 0.005
    _clock = staticmethod(time.perf_counter)
    _sleep = staticmethod(time.sleep)
    #: Most connections from one address (0: no limit); addresses in ``unlimited`` have none.
    connections_per_ip = 0
    unlimited: frozenset[str] = frozenset()
    #: Seconds a request head may take (None: no deadline); checked every ``head_check`` s.
    header_timeout: float | None = None
    head_check = 0.25
    _refused_logged = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: Open connections by client address (the loop thread's alone).
        self.per_address: dict[str, int] = {}
        super().__init__(*args, **kwargs)

    def handle_accept(self) -> None:
        """waitress's accept, closing at once a connection whose address holds its share."""
        try:
            accepted = self.accept()
            if accepted is None:
                return
            conn, addr = accepted
        except OSError:
            if self.adj.log_socket_errors:
                self.logger.warning("server accept() threw an exception", exc_info=True)
            return
        limit = self.connections_per_ip
        if limit and isinstance(addr, tuple) and addr[0] not in self.unlimited \
                and self.per_address.get(addr[0], 0) >= limit:
            conn.close()
            now = time.monotonic()
            if now - self._refused_logged > 10:  # one line per 10 s, however many come
                self._refused_logged = now
                log.warning("closed a connection from %s: it holds %d, its limit (--connections-per-ip)",
                            addr[0], limit)
            return
        try:
            self.set_socket_options(conn)
        except OSError:
            conn.close()
            return
        self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)  # type: ignore[attr-defined]

    def _close_slow_heads(self) -> None:
        """Close the connections whose request head is overdue (none of them has a request running)."""
        cutoff = time.monotonic() - self.header_timeout  # type: ignore[operator]
        channels: dict[int, Any] = self.active_channels  # type: ignore[assignment]
        for channel in list(channels.values()):
            since = getattr(channel, "head_since", None)
            if since is not None and since < cutoff and not channel.requests:
                log.info("closed a connection from %s: no complete request head within %g s (--header-timeout)",
                         channel.addr[0] if isinstance(channel.addr, tuple) else channel.addr, self.header_timeout)
                channel.handle_close()

    def run(self) -> None:
        try:
            self._paced_loop()
        except (SystemExit, KeyboardInterrupt):
            self.task_dispatcher.shutdown()

    def _paced_loop(self) -> None:
        """``wasyncore.loop`` (same poll, same timeout), sleeping after expensive turns."""
        use_poll = self.adj.asyncore_use_poll and hasattr(select, "poll")
        timeout: float = self.adj.asyncore_loop_timeout
        socket_map = self._map  # type: ignore[attr-defined]  # wasyncore's map; not in the stub
        if self.header_timeout is not None:
            timeout = min(timeout, self.head_check)
        next_check = 0.0
        while socket_map:
            spent = _poll_turn(timeout, socket_map, self._clock, use_poll)
            if self.header_timeout is not None:
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + self.head_check
                    self._close_slow_heads()
            if spent > self.pace_above:
                self._sleep(min(spent * self.pace_factor, self.pace_most))


def _poll_turn(timeout: float, socket_map: dict, clock: Callable[[], float], use_poll: bool) -> float:
    """One turn of ``wasyncore.poll2`` (``poll``) or ``wasyncore.poll`` (``select``); returns its work time.

    The same steps as waitress's functions (ask each channel what it waits for, wait,
    handle the events), timed by ``clock`` except for the wait itself.
    """
    began = clock()
    items = list(socket_map.items())
    if use_poll:
        pollster = select.poll()
        for fd, obj in items:
            flags = 0
            if obj.readable():
                flags |= select.POLLIN | select.POLLPRI
            if obj.writable() and not obj.accepting:  # accepting sockets are never writable
                flags |= select.POLLOUT
            if flags:
                pollster.register(fd, flags)
        waiting = clock()
        try:
            events = pollster.poll(None if timeout is None else int(timeout * 1000))
        except InterruptedError:
            events = []
        resumed = clock()
        for fd, flags in events:
            obj = socket_map.get(fd)
            if obj is not None:
                wasyncore.readwrite(obj, flags)
        return clock() - resumed + (waiting - began)
    readable, writable, either = [], [], []
    for fd, obj in items:
        is_r, is_w = obj.readable(), obj.writable()
        if is_r:
            readable.append(fd)
        if is_w and not obj.accepting:
            writable.append(fd)
        if is_r or is_w:
            either.append(fd)
    waiting = clock()
    if not either:
        time.sleep(timeout)
        return waiting - began
    try:
        readable, writable, either = select.select(readable, writable, either, timeout)
    except InterruptedError:
        return waiting - began
    resumed = clock()
    for fds, handle in ((readable, wasyncore.read), (writable, wasyncore.write), (either, wasyncore._exception)):  # type: ignore[attr-defined]  # not in the stub
        for fd in fds:
            obj = socket_map.get(fd)
            if obj is not None:
                handle(obj)
    return clock() - resumed + (waiting - began)


def create_server(app: Callable, sock: socket.socket, *, dispatcher: Dispatcher | None = None,
                  connections_per_ip: int = 0, header_timeout: float | None = None, **options: Any) -> Server:
    """A :class:`Server` on the listening socket ``sock``, like ``waitress.create_server(app, sockets=[sock])``.

    ``dispatcher`` is the thread pool to run requests on (made of ``threads`` threads
    when not given); pass one when the app needs its :meth:`Dispatcher.parked`.
    ``connections_per_ip`` (0: none) and ``header_timeout`` (None: none) are the limits
    of the module's docstring; a ``trusted_proxy`` address (not ``*``) has no per-address limit.
    """
    adj = Adjustments(sockets=[sock], **options)
    if dispatcher is None:
        dispatcher = Dispatcher(adj.threads)
    server = Server(app, {}, True, sock, dispatcher=dispatcher, adj=adj, bind_socket=False,
                    sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))
    server.connections_per_ip = connections_per_ip
    server.header_timeout = header_timeout
    proxy = options.get("trusted_proxy")
    if proxy and proxy != "*":
        server.unlimited = frozenset({proxy})
    return server
