"""The history check that the exclusion tests rely on catches a double lease, and allows a takeover.

The load itself (16 threads, one and two server processes, both stores, a hostile mix of
operations) is in ``test_reliability_exclusion.py`` and ``test_postgres_servers.py``.
"""
from __future__ import annotations

import pytest

from support.history import Holding, LeaseHistory


def test_history_check_catches_a_double_lease():
    history = LeaseHistory()
    history.holdings = [Holding(1, "a", "x", 0.0, 1.0, 30, released=5.0),
                        Holding(1, "b", "y", 2.0, 3.0, 30, released=4.0),
                        Holding(2, "c", "z", 0.0, 1.0, 30, released=9.0)]
    assert [(a.token, b.token) for a, b in history.overlaps()] == [("a", "b")]
    with pytest.raises(AssertionError, match="double lease"):
        history.check()


def test_history_check_allows_takeover_after_ttl():
    history = LeaseHistory()
    history.holdings = [Holding(1, "a", "x", 0.0, 0.1, 1.0), Holding(1, "b", "y", 1.5, 1.6, 30, released=2.0)]
    history.check()
