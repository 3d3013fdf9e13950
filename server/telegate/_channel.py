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
"""
from __future__ import annotations

import socket
from typing import Any, Callable

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

__all__ = ["Channel", "Server", "create_server"]


class Channel(HTTPChannel):
    """waitress's HTTP channel that is writable only when a write can make progress."""

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


class Server(TcpWSGIServer):
    """waitress's TCP server, serving each connection with :class:`Channel`."""

    channel_class = Channel


def create_server(app: Callable, sock: socket.socket, **options: Any) -> Server:
    """A :class:`Server` on the listening socket ``sock``, like ``waitress.create_server(app, sockets=[sock])``."""
    adj = Adjustments(sockets=[sock], **options)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    return Server(app, {}, True, sock, dispatcher=dispatcher, adj=adj, bind_socket=False,
                  sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))
