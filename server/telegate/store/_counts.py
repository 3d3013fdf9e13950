"""Counting the pool: the operator's view (status, metrics) and a refused caller's view.

Invariants:

* One read, one statement: every count in a view comes from one snapshot, so the counts
  add up (``free`` is what is left of ``total`` after the other states).
* The operator's counts come from ONE query (:func:`pool_counts`): ``status`` and
  ``/metrics`` ask it for different extra columns, never their own SQL.
* A caller that found nothing is counted in the transaction of its failed claim
  (:func:`unavailable`): a count taken later could already see the releases that came
  after the claim, and tell it that nothing is in use when the pool was just busy.
"""
from __future__ import annotations

from typing import Any, Sequence

from . import _line as line
from ._base import NoSessionAvailable, Tx
from ._sql import (
    ANY, HANDING_OVER, IS_DISABLED, IS_FLOODWAIT, IS_FREE, IS_IN_USE, IS_RESTING_SCOPED, RESTING, RESTING_FOR, Fit,
    count, in_groups,
)

__all__ = ["pool_counts", "unavailable"]


def pool_counts(tx: Tx, *, purpose: str | None = None, sums: bool = False,
                groups: Sequence[str] = ()) -> dict[str, Any]:
    """Sessions by state (``total``, ``disabled``, ``in_use``, ``in_floodwait``, ``resting_scoped``,
    ``free``) and ``next_available`` (the soonest end of a flood wait), in one statement.

    ``free`` means leasable by anyone; ``resting_scoped`` counts the sessions that rest for
    some methods but may be leased for others. With ``purpose`` (lower case),
    ``free_for_purpose`` counts the sessions a lease for it could get. With ``sums``, the
    per-session counters summed over the sessions registered now (``leases_granted``,
    ``leases_expired``, ``flood_waits``): every server sharing the database sees the same.
    With ``groups`` (a confined key's), only the sessions in those groups count.
    """
    confined, group_params = in_groups(groups)
    extra = ""
    if purpose:
        extra += f", {count(f'{IS_FREE} AND NOT EXISTS ({RESTING_FOR})')} AS free_for_purpose"
    if sums:
        extra += (", COALESCE(SUM(use_count), 0) AS leases_granted, COALESCE(SUM(expired_count), 0)"
                  " AS leases_expired, COALESCE(SUM(flood_count), 0) AS flood_waits")
    row = tx.row(f"""
        SELECT COUNT(*) AS total,
               {count(IS_DISABLED)} AS disabled,
               {count(IS_IN_USE)} AS in_use,
               {count(IS_FLOODWAIT)} AS in_floodwait,
               {count(IS_RESTING_SCOPED)} AS resting_scoped,
               MIN(CASE WHEN {IS_FLOODWAIT} THEN flood_wait_until END) AS next_available
               {extra}
        FROM sessions WHERE 1 = 1{confined}""", {"now": tx.now, "purpose": purpose, **group_params})
    assert row is not None  # an aggregate without GROUP BY always answers
    data = dict(row)
    data["free"] = (data["total"] - data["disabled"] - data["in_use"] - data["in_floodwait"]
                    - data["resting_scoped"])
    return data


def unavailable(tx: Tx, name: str | None, purpose: str | None, fit: Fit = ANY,
                groups: Sequence[str] = ()) -> tuple[NoSessionAvailable, int]:
    """The counts a caller that found nothing needs: what is busy, what rests, and until when;
    and how many sessions that caller could lease right now (see ``_leases.claim``).

    A session rests for this caller when it is in an account-wide flood wait, or (not
    leased, not disabled) rests for the caller's purpose, or for any method when the
    caller gave none. ``name``: only the session so named; ``fit.kind``: only sessions of
    that kind (none of it: ``total`` 0, answered at once, never waited for);
    ``fit.account``: only sessions holding an account (the caller asked for one). For
    ``fit.host``, a free account that another host's lease left less than the handover
    grace ago counts as in use until the grace ends. ``groups`` (a confined key's): only the
    sessions in those groups count, so to that key the others do not exist.
    """
    resting = RESTING_FOR if purpose else RESTING
    scoped_end = resting.replace("SELECT 1", "SELECT MAX(r.until)")
    confined, group_params = in_groups(groups)
    filters = (["name = :name"] if name is not None else []) + (["kind = :kind"] if fit.kind is not None else []) \
        + (["has_account = 1"] if fit.account else [])
    where = "WHERE " + " AND ".join(["1 = 1", *filters]) + confined
    handing_over = f"{IS_FREE} AND {HANDING_OVER}" if fit.host is not None else "1 = 0"
    row = tx.row(f"""
        SELECT COUNT(*) AS total,
               {count(IS_IN_USE)} AS in_use,
               {count(f"{handing_over} AND NOT EXISTS ({resting})")} AS handing_over,
               MIN(CASE WHEN {handing_over} THEN avail_at + :grace END) AS handover_end,
               {count(f"{IS_FLOODWAIT} OR ({IS_FREE} AND EXISTS ({resting}))")} AS resting,
               {count(IS_FLOODWAIT)} AS flood_waiting,
               MIN(CASE WHEN {IS_FLOODWAIT} OR ({IS_FREE} AND EXISTS ({resting}))
                        THEN GREATEST(COALESCE(flood_wait_until, 0), COALESCE(({scoped_end}), 0)) END)
                   AS rest_end,
               MIN(CASE WHEN {IS_IN_USE} THEN lease_expires_at END) AS lease_end,
               {count(f"{IS_FREE} AND NOT EXISTS ({resting})")} AS free
        FROM sessions {where}""", {"now": tx.now, "name": name, "purpose": purpose, **fit.params(), **group_params})
    assert row is not None  # an aggregate without GROUP BY always answers
    rest_end, lease_end = row["rest_end"], row["lease_end"]
    if row["handover_end"] is not None:
        lease_end = row["handover_end"] if lease_end is None else min(lease_end, row["handover_end"])
    waiting_workers, _ = line.line_stats(tx)
    return NoSessionAvailable(
        waiting_count=row["resting"], flood_waiting=row["flood_waiting"], purpose=purpose, account=fit.account,
        groups=tuple(groups),
        in_use=row["in_use"] + row["handing_over"], total=row["total"], waiting_workers=waiting_workers,
        next_release_in=None if rest_end is None else max(0.0, rest_end - tx.now),
        next_lease_end_in=None if lease_end is None else max(0.0, lease_end - tx.now),
        kind=fit.kind), row["free"] - row["handing_over"]
