"""Stopping a server cleanly, on POSIX and on Windows: the one place that names stop signals.

``serve`` turns every way of asking it to stop into the KeyboardInterrupt that Ctrl-C
raises (waitress's loop returns on it, and ``serve`` closes everything in order):

- Ctrl-C (SIGINT), everywhere; SIGTERM on POSIX (``kill``, systemd, Docker);
- Ctrl-Break (SIGBREAK), on Windows;
- the console window closed, the user logging off, Windows shutting down
  (``CTRL_CLOSE_EVENT``, ``CTRL_LOGOFF_EVENT``, ``CTRL_SHUTDOWN_EVENT``). The ``signal``
  module can't serve these: Windows ends the process as soon as a console handler
  returns, and Python's own handler returns at once. So a handler registered with
  ``SetConsoleCtrlHandler`` asks the main thread to stop and then waits (up to
  :data:`CLOSE_GRACE` seconds, inside the 5 s Windows allows) for the stop to finish.

Whoever starts a server and wants it to stop the way Ctrl-C does calls
:func:`request_stop` (SIGINT on POSIX; ``CTRL_BREAK_EVENT`` on Windows, where a child
started with :func:`new_group_flags` gets it alone). Tests and benchmarks use it too, and
a lint test (tests/test_windows.py) keeps bare ``signal.SIGTERM``/``SIGINT`` out of
everything else.
"""
from __future__ import annotations

import _thread
import logging
import signal
import subprocess
import sys
import threading
from typing import Any, Callable

__all__ = ["StopHandlers", "stop_signals", "request_stop", "new_group_flags", "CLOSE_GRACE", "WORST_CASE_STOP"]

log = logging.getLogger(__name__)

#: Seconds the console-close handler holds Windows off while the server stops (Windows
#: allows 5 s for CTRL_CLOSE_EVENT, then ends the process whatever it is doing).
CLOSE_GRACE = 4.5

#: The longest a clean stop takes, in seconds: the loop notices within its 1 s select
#: timeout, the request threads get 5 s to finish (telegate._channel.Dispatcher.shutdown),
#: and a prune of old events under way gets 5 s (serve._Housekeeping.stop). Service
#: managers must wait longer than this before they kill (docs/WINDOWS.md, NSSM).
WORST_CASE_STOP = 1 + 5 + 5

# Console control events (wincon.h).
_CTRL_CLOSE_EVENT, _CTRL_LOGOFF_EVENT, _CTRL_SHUTDOWN_EVENT = 2, 5, 6


def stop_signals(platform: str = sys.platform) -> list[str]:
    """The names of the signals that stop ``serve`` on ``platform`` (Ctrl-C's SIGINT included)."""
    return ["SIGINT", "SIGBREAK"] if platform == "win32" else ["SIGINT", "SIGTERM"]


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class StopHandlers:
    """Installed by ``serve`` in the main thread for as long as it runs; ``restore()`` undoes it.

    ``stopped()`` tells a console-close handler that the stop is done, so it lets Windows go on.
    """

    def __init__(self, *, platform: str = sys.platform, interrupt_main: Callable[[], None] = _thread.interrupt_main,
                 ) -> None:
        self._previous: dict[int, Any] = {}
        self._done = threading.Event()
        self._interrupt_main = interrupt_main
        self._console_handler: Any = None
        self.platform = platform
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only; a server in a thread is stopped by its owner
        for name in stop_signals(platform):
            number = getattr(signal, name, None)
            if number is None:
                continue
            if name == "SIGINT" and signal.getsignal(number) is signal.default_int_handler:
                continue  # Python raises KeyboardInterrupt for it already
            self._previous[number] = signal.signal(number, _raise_keyboard_interrupt)
        if platform == "win32" and sys.platform == "win32":
            self._install_console_handler()

    def on_console_event(self, event: int) -> bool:
        """What the console handler does with ``event``: True when it handled it (close, log-off, shutdown)."""
        if event not in (_CTRL_CLOSE_EVENT, _CTRL_LOGOFF_EVENT, _CTRL_SHUTDOWN_EVENT):
            return False  # Ctrl-C and Ctrl-Break: the signal handlers above
        log.warning("the console is closing (event %d): stopping", event)
        self._interrupt_main()
        self._done.wait(CLOSE_GRACE)
        return True

    def _install_console_handler(self) -> None:  # pragma: no cover - Windows only
        import ctypes
        from ctypes import wintypes

        handler_type = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)  # type: ignore[attr-defined]  # Windows only
        self._console_handler = handler_type(lambda event: bool(self.on_console_event(event)))
        if not ctypes.windll.kernel32.SetConsoleCtrlHandler(self._console_handler, True):  # type: ignore[attr-defined]  # Windows only
            log.warning("could not watch for the console closing (SetConsoleCtrlHandler failed); closing the"
                        " window will end the server abruptly: stop it with Ctrl-C or Ctrl-Break")
            self._console_handler = None

    def stopped(self) -> None:
        """The server has stopped: a waiting console-close handler may return."""
        self._done.set()

    def restore(self) -> None:
        self.stopped()
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()
        if self._console_handler is not None:  # pragma: no cover - Windows only
            import ctypes

            ctypes.windll.kernel32.SetConsoleCtrlHandler(self._console_handler, False)  # type: ignore[attr-defined]  # Windows only
            self._console_handler = None


def new_group_flags(platform: str = sys.platform) -> int:
    """``creationflags`` for a child that :func:`request_stop` must reach alone (its own group on Windows)."""
    return getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200) if platform == "win32" else 0


def request_stop(proc: subprocess.Popen, platform: str = sys.platform) -> None:
    """Ask ``proc`` (a ``telegate serve``) to stop the way Ctrl-C stops it.

    POSIX: SIGINT. Windows: ``CTRL_BREAK_EVENT`` to the child's process group (start it
    with ``creationflags=new_group_flags()``), which ``serve`` handles as SIGBREAK;
    ``terminate()`` there would be TerminateProcess, an abrupt kill.
    """
    if proc.poll() is not None:
        return
    if platform == "win32":
        proc.send_signal(getattr(signal, "CTRL_BREAK_EVENT", 1))
    else:
        proc.send_signal(signal.SIGINT)
