"""A recorded lease history and the check that no two holders ever overlapped.

Each client records, on one monotonic clock, when it *believed* it held a session:
from the moment the grant reached it until it sent the release, cut short at the
request time plus the TTL (after that the server may rightly hand the session on).
Two belief windows on one session that overlap are a double lease: exactly the
``AUTH_KEY_DUPLICATED`` a user would suffer.
"""
from __future__ import annotations

import dataclasses
import threading
import time


@dataclasses.dataclass
class Holding:
    session_id: int
    token: str
    holder: str
    requested: float
    granted: float
    ttl: float
    released: float | None = None

    @property
    def end(self) -> float:
        limit = self.requested + self.ttl
        return limit if self.released is None else min(self.released, limit)


class LeaseHistory:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.holdings: list[Holding] = []
        self._open: dict[str, Holding] = {}

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def granted(self, session_id: int, token: str, holder: str, requested: float, ttl: float) -> None:
        holding = Holding(session_id, token, holder, requested, self.now(), ttl)
        with self._lock:
            self.holdings.append(holding)
            self._open[token] = holding

    def releasing(self, token: str) -> None:
        """Call just before sending the release: from here the holder no longer uses the session."""
        at = self.now()
        with self._lock:
            holding = self._open.pop(token, None)
        if holding is not None:
            holding.released = at

    def overlaps(self) -> list[tuple[Holding, Holding]]:
        by_session: dict[int, list[Holding]] = {}
        for holding in self.holdings:
            by_session.setdefault(holding.session_id, []).append(holding)
        found = []
        for holdings in by_session.values():
            holdings.sort(key=lambda h: h.granted)
            latest_end = None
            latest = None
            for holding in holdings:
                if latest is not None and holding.granted < latest_end:
                    found.append((latest, holding))
                if latest_end is None or holding.end > latest_end:
                    latest_end, latest = holding.end, holding
        return found

    def check(self) -> None:
        tokens = [h.token for h in self.holdings]
        assert len(tokens) == len(set(tokens)), "a lease token was handed out twice"
        overlaps = self.overlaps()
        assert not overlaps, f"{len(overlaps)} double lease(s), first: {overlaps[0]}"
