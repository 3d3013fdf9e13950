"""Progress of long CLI work (import, export, vault rotate, migrate): a bar on a terminal.

On a terminal the bar is redrawn in place on stderr, at most ten times a second::

    import  [##########..........]  5,120/10,000  51%  1,830/s  ETA 0:03

and erased when the work ends, so the command's own summary line follows on a clean line.
When stderr is not a terminal (a pipe, a log file, CI) nothing is drawn: the command
writes its one summary line, with :attr:`Progress.elapsed` in it. Use it either way::

    with Progress("rotate", total, err) as bar:      # callback style
        for row in rows:
            ...
            bar.advance()

    for item in track(items, "export", err):         # iterator style
        ...

A ``KeyboardInterrupt`` inside ends the bar on its own line and propagates: the caller
says what was done before it (work is committed in whole units, so nothing is half-done).
"""
from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator, TextIO, TypeVar

__all__ = ["Progress", "track", "is_terminal"]

T = TypeVar("T")


def is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or fake stream
        return False


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counts done out of ``total``, drawn as a bar when ``stream`` is a terminal."""

    def __init__(self, what: str, total: int, stream: TextIO, *, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, width: int = 24, interval: float = 0.1) -> None:
        self.what = what
        self.total = max(0, int(total))
        self.done = 0
        self.stream = stream
        self.tty = is_terminal(stream) if tty is None else tty
        self.clock = clock
        self.width = width
        self.interval = interval
        self.started = clock()
        self._drawn_at: float | None = None
        self._drawn = False

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def advance(self, count: int = 1) -> None:
        """``count`` more units done; redraws when the last drawing is old enough (or at the end)."""
        self.done += count
        if not self.tty:
            return
        now = self.clock()
        if self._drawn_at is None or now - self._drawn_at >= self.interval or self.done >= self.total:
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The bar as text: what, bar, counts, percent, rate and ETA."""
        now = self.clock() if now is None else now
        total = max(self.total, self.done)
        share = self.done / total if total else 1.0
        filled = int(share * self.width)
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        eta = _clock((total - self.done) / rate) if rate > 0 and self.done < total else ("0:00" if total else "-")
        return (f"{self.what}  [{'#' * filled}{'.' * (self.width - filled)}]  {self.done:,}/{total:,}"
                f"  {share:4.0%}  {rate:,.0f}/s  ETA {eta}")

    def _draw(self, now: float) -> None:
        self.stream.write("\r" + self.line(now) + "\x1b[K")
        self.stream.flush()
        self._drawn_at = now
        self._drawn = True

    def close(self, *, keep: bool = False) -> None:
        """Erase the bar (or, with ``keep``, end its line so it stays on screen)."""
        if self.tty and self._drawn:
            self.stream.write("\n" if keep else "\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        if self.tty:
            self._draw(self.clock())
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        # Interrupted or failed: leave the bar up, so the admin sees how far it got.
        self.close(keep=kind is not None)


def track(items: Iterable[T], what: str, stream: TextIO, *, total: int | None = None,
          tty: bool | None = None) -> Iterator[T]:
    """Yield ``items`` while a :class:`Progress` counts them (``total`` defaults to ``len(items)``)."""
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    with Progress(what, total, stream, tty=tty) as bar:
        for item in items:
            yield item
            bar.advance()
