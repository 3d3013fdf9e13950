"""``GET /metrics``: the pool in Prometheus text format, on a registry of its own per app.

Two kinds of numbers, kept apart on purpose:

* read from the database at scrape time (sessions by state, leases granted and expired,
  flood waits reported): right however many server processes share the file;
* counted by this process (releases, the flood-wait seconds reported, acquire latency,
  503 answers): they start at zero when the process starts, as Prometheus expects.

A registry per :func:`install_metrics` call (never the global default one), so
``create_app`` can run many times in one process.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterator

import bottle
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .settings import Settings
from .store import STATES, PoolStore

__all__ = ["Metrics", "install_metrics"]

#: Flood waits Telegram hands out run from seconds to a day or more.
FLOOD_WAIT_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 3600, 4 * 3600, 86400, float("inf"))
#: One acquire is one write transaction of the store (SQLite or PostgreSQL): milliseconds,
#: unless the database is contended.
ACQUIRE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, float("inf"))
#: Long-polls wait up to a minute.
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 30, 60, float("inf"))
#: The 503 error codes the API answers with (see app.py).
UNAVAILABLE_ERRORS = ("no_session_available", "database_unavailable")
#: Methods that get their own ``scope`` label on the flood-wait counter; later ones count
#: as ``other``. Workers choose the scope, so without a cap a buggy or hostile one could
#: make Prometheus store a series per made-up method name. Telegram has ~600 methods and
#: a farm floods on a handful.
MAX_SCOPE_LABELS = 200
#: The ``scope`` labels that are not method names.
ACCOUNT_WIDE, OTHER_SCOPES = "account", "other"


class _PoolCollector(Collector):
    """Reads the pool's counts from the store on each scrape."""

    def __init__(self, store: PoolStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        totals = self.store.metric_totals()
        sessions = GaugeMetricFamily("telegate_sessions", "Registered sessions by state.", labels=["state"])
        for state in STATES:
            sessions.add_metric([state], totals[state])
        # Free for some methods only (a scoped flood wait); not in "free", so the states add up to the total.
        sessions.add_metric(["resting_scoped"], totals["resting_scoped"])
        yield sessions
        yield CounterMetricFamily(
            "telegate_leases_granted", "Leases granted (sum of use_count over registered sessions).",
            value=totals["leases_granted"])
        yield CounterMetricFamily(
            "telegate_leases_expired", "Leases that ran out before release and were taken over"
            " (sum of expired_count over registered sessions).", value=totals["leases_expired"])
        yield CounterMetricFamily(
            "telegate_flood_waits", "Flood waits reported on release (sum of flood_count over registered sessions).",
            value=totals["flood_waits"])
        yield GaugeMetricFamily("telegate_waiting_workers",
                                "Long-polls waiting in line for a session now (every server process).",
                                value=totals["waiting_workers"])
        yield GaugeMetricFamily("telegate_oldest_wait_seconds",
                                "How long the longest-waiting long-poll has waited (0 when none waits).",
                                value=totals["oldest_wait"])


class Metrics:
    """The metrics of one app; route handlers call :meth:`released`, hooks do the rest."""

    def __init__(self, store: PoolStore) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_PoolCollector(store))
        self.releases = Counter(
            "telegate_leases_released", "Releases that ended a lease, counted by this process.",
            registry=self.registry)
        self.flood_wait_seconds = Histogram(
            "telegate_flood_wait_seconds", "Flood-wait lengths reported on release, counted by this process.",
            buckets=FLOOD_WAIT_BUCKETS, registry=self.registry)
        self.acquire_seconds = Histogram(
            "telegate_acquire_seconds", "Time to answer POST /session (any status), measured by this process.",
            buckets=ACQUIRE_BUCKETS, registry=self.registry)
        self.wait_seconds = Histogram(
            "telegate_wait_seconds", "Time long-polls spent waiting in line (granted or not), counted by this"
            " process.", buckets=WAIT_BUCKETS, registry=self.registry)
        self.unavailable = Counter(
            "telegate_unavailable", "503 answers by error code, counted by this process.",
            labelnames=["error"], registry=self.registry)
        for code in UNAVAILABLE_ERRORS:
            self.unavailable.labels(code)
        self.flood_waits_by_scope = Counter(
            "telegate_flood_waits_by_scope", "Flood waits reported on release by the method they rest"
            f' ("{ACCOUNT_WIDE}": account-wide; after {MAX_SCOPE_LABELS} methods, "{OTHER_SCOPES}"),'
            " counted by this process.", labelnames=["scope"], registry=self.registry)
        self.flood_waits_by_scope.labels(ACCOUNT_WIDE)
        self.reports_by_key = Counter(
            "telegate_client_reports", "Pool-changing reports on release (kind: disable, flood_wait, scoped_rest,"
            " peer_flood) by the API key that sent them, counted by this process: alert on a key that suddenly"
            f" disables many sessions (after {MAX_SCOPE_LABELS} keys, \"{OTHER_SCOPES}\").",
            labelnames=["key", "kind"], registry=self.registry)
        self._report_keys: set[str] = set()
        self._scopes: set[str] = set()
        self._scopes_lock = threading.Lock()

    def released(self, flood_wait: float | None, scope: str | None = None) -> None:
        """A release ended a lease; ``flood_wait`` is the reported wait, if any, ``scope`` its method."""
        self.releases.inc()
        if flood_wait:
            self.flood_wait_seconds.observe(flood_wait)
            self.flood_waits_by_scope.labels(self._scope_label(scope)).inc()

    def reported(self, key_name: str, kind: str) -> None:
        """Key ``key_name`` reported ``kind`` (disable, flood_wait, scoped_rest, peer_flood) on a release."""
        with self._scopes_lock:
            if key_name not in self._report_keys:
                if len(self._report_keys) >= MAX_SCOPE_LABELS:
                    key_name = OTHER_SCOPES
                else:
                    self._report_keys.add(key_name)
        self.reports_by_key.labels(key_name, kind).inc()

    def _scope_label(self, scope: str | None) -> str:
        if scope is None:
            return ACCOUNT_WIDE
        if scope in (ACCOUNT_WIDE, OTHER_SCOPES):  # a method spelled like our own labels must not pass for them
            return OTHER_SCOPES
        with self._scopes_lock:
            if scope not in self._scopes:
                if len(self._scopes) >= MAX_SCOPE_LABELS:
                    return OTHER_SCOPES
                self._scopes.add(scope)
        return scope

    def waited(self, seconds: float) -> None:
        """A long-poll waited in line this long."""
        self.wait_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def install_metrics(app: bottle.Bottle, settings: Settings, store: PoolStore) -> Metrics:
    """Add ``GET /metrics`` and the request hooks that time acquires and count 503s."""
    metrics = Metrics(store)

    @app.hook("before_request")
    def _start_clock() -> None:
        bottle.request.environ["telegate.started"] = time.perf_counter()

    @app.hook("after_request")
    def _observe() -> None:
        request, response = bottle.request, bottle.response
        if response.status_code == 503:
            code = _error_code(response)
            if code in UNAVAILABLE_ERRORS:
                metrics.unavailable.labels(code).inc()
        if request.method == "POST" and request.path == "/session":
            started = request.environ.get("telegate.started")
            if started is not None:  # the time spent waiting in line is telegate_wait_seconds
                waited = request.environ.get("telegate.waited", 0.0)
                metrics.acquire_seconds.observe(time.perf_counter() - started - waited)

    @app.route("/metrics", "GET", auth="client" if settings.metrics_auth else None)
    def scrape() -> Any:
        return bottle.HTTPResponse(metrics.render(), status=200, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics


def _error_code(response: bottle.BaseResponse) -> str | None:
    """The ``error`` code of a JSON error body (the app's responses keep their body as text)."""
    body = getattr(response, "body", None)
    if not isinstance(body, str):
        return None
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) else None
