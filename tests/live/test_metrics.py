"""GET /metrics: Prometheus text format, a key by default, numbers an operator can trust."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import WsgiCaller
from telegate import Settings, create_app, open_store


def scrape(reply) -> dict[tuple[str, tuple], float]:
    """Samples by (name, sorted labels)."""
    assert reply.status == 200, reply
    assert reply.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(reply.data.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def state(samples, name: str) -> float:
    return samples[("telegate_sessions", (("state", name),))]


def test_metrics_need_a_key_by_default(live_server):
    reply = live_server.request("GET", "/metrics", key=None)
    assert reply.status == 401
    assert reply.json["error"] == "unauthorized"
    scrape(live_server.request("GET", "/metrics"))  # a client key is enough
    bearer = {"Authorization": f"Bearer {live_server.client_key}"}  # what Prometheus' authorization: sends
    scrape(live_server.request("GET", "/metrics", key=None, headers=bearer))


def test_metrics_auth_can_be_turned_off(server_factory):
    server = server_factory("--metrics-auth", "false")
    server.add_sessions("acc1")
    samples = scrape(server.request("GET", "/metrics", key=None))
    assert state(samples, "free") == 1
    assert server.request("GET", "/status", key=None).status == 401  # only /metrics opens up


def test_metrics_count_what_workers_do(wsgi):
    wsgi.store.add_sessions(["a", "b", "c"])
    first = wsgi("POST", "/session", {"ttl": 10}).json
    second = wsgi("POST", "/session", {"ttl": 10}).json
    wsgi("POST", "/release", {"session_id": first["session_id"], "lease_token": first["lease_token"],
                              "flood_wait": 120})
    wsgi("PATCH", "/sessions/3", {"disabled": True}, key="admin")
    assert wsgi("POST", "/session").status == 503
    wsgi.clock.advance(11)  # the second lease runs out; the next acquire takes it over
    assert wsgi("POST", "/session").json["session_id"] == second["session_id"]

    samples = scrape(wsgi("GET", "/metrics"))
    assert (state(samples, "free"), state(samples, "in_use"), state(samples, "in_floodwait"),
            state(samples, "disabled")) == (0, 1, 1, 1)
    assert samples[("telegate_leases_granted_total", ())] == 3
    assert samples[("telegate_leases_expired_total", ())] == 1
    assert samples[("telegate_leases_released_total", ())] == 1
    assert samples[("telegate_flood_waits_total", ())] == 1
    assert samples[("telegate_flood_wait_seconds_count", ())] == 1
    assert samples[("telegate_flood_wait_seconds_sum", ())] == 120
    assert samples[("telegate_flood_wait_seconds_bucket", (("le", "60.0"),))] == 0
    assert samples[("telegate_flood_wait_seconds_bucket", (("le", "300.0"),))] == 1
    assert samples[("telegate_acquire_seconds_count", ())] == 4  # every POST /session, 503 included
    assert samples[("telegate_unavailable_total", (("error", "no_session_available"),))] == 1
    assert samples[("telegate_unavailable_total", (("error", "database_unavailable"),))] == 0


def test_pool_counters_agree_across_two_server_processes(server_factory, tmp_path):
    one = server_factory()
    two = server_factory(db_path=one.db_path)
    one.add_sessions("a", "b")
    lease = one.request("POST", "/session").json
    one.request("POST", "/release", {"session_id": lease["session_id"], "flood_wait": 30})
    two.request("POST", "/session")
    for server in (one, two):
        samples = scrape(server.request("GET", "/metrics"))
        assert samples[("telegate_leases_granted_total", ())] == 2
        assert samples[("telegate_flood_waits_total", ())] == 1
        assert state(samples, "in_floodwait") == 1 and state(samples, "in_use") == 1
    # Counted by the process that saw the release, not read from the database:
    assert scrape(one.request("GET", "/metrics"))[("telegate_leases_released_total", ())] == 1
    assert scrape(two.request("GET", "/metrics"))[("telegate_leases_released_total", ())] == 0


def test_each_app_has_its_own_registry(tmp_path):
    with open_store(tmp_path / "x.db") as store:
        for _ in range(3):  # a shared global registry would refuse the second app's metrics
            create_app(Settings(db=tmp_path / "x.db"), store)
    caller = WsgiCaller(tmp_path)
    try:
        caller("POST", "/session")
        assert scrape(caller("GET", "/metrics"))[("telegate_acquire_seconds_count", ())] == 1
    finally:
        caller.store.close()


@pytest.mark.parametrize("path", ["/metrics", "/status"])
def test_database_trouble_is_a_json_503_and_counted(wsgi, path):
    wsgi.store.add_sessions(["a"])
    real = wsgi.store.metric_totals, wsgi.store.status

    def broken(*args, **kwargs):
        from telegate.store import DatabaseError
        raise DatabaseError("database is locked")

    wsgi.store.metric_totals = wsgi.store.status = broken
    try:
        reply = wsgi("GET", path)
    finally:
        wsgi.store.metric_totals, wsgi.store.status = real
    assert reply.status == 503
    assert reply.json["error"] == "database_unavailable"
    samples = scrape(wsgi("GET", "/metrics"))
    assert samples[("telegate_unavailable_total", (("error", "database_unavailable"),))] == 1


def by_scope(samples) -> dict[str, float]:
    return {dict(labels)["scope"]: value for (name, labels), value in samples.items()
            if name == "telegate_flood_waits_by_scope_total"}


def test_flood_waits_are_counted_by_scope_and_scoped_rests_have_their_own_state(wsgi):
    wsgi.store.add_sessions(["a", "b", "c", "d", "e"])
    assert by_scope(scrape(wsgi("GET", "/metrics"))) == {"account": 0}  # there before the first flood wait
    reports = [("contacts.resolveUsername", {"flood_wait": 72000}), ("CONTACTS.RESOLVEUSERNAME", {"flood_wait": 30}),
               ("messages.sendMessage", {"peer_flood": True}), (None, {"flood_wait": 60})]
    for scope, report in reports:
        lease = wsgi("POST", "/session", {"purpose": "messages.getHistory"}).json
        body = {"session_id": lease["session_id"], "lease_token": lease["lease_token"], **report}
        if scope:
            body["flood_scope"] = scope
        assert wsgi("POST", "/release", body).json == {"status": "released"}
        wsgi.clock.advance(1)
    wsgi("POST", "/release", {"session_id": 1, "flood_wait": 5, "flood_scope": "messages.search"})  # not leased: not counted
    samples = scrape(wsgi("GET", "/metrics"))
    assert by_scope(samples) == {"account": 1, "contacts.resolveusername": 2, "messages.sendmessage": 1}
    assert samples[("telegate_flood_waits_total", ())] == 4
    states = {s: state(samples, s) for s in ("free", "in_use", "in_floodwait", "disabled", "resting_scoped")}
    # a and b rest for resolving, c for sending, d account-wide, e for nothing
    assert states == {"free": 1, "in_use": 0, "in_floodwait": 1, "disabled": 0, "resting_scoped": 3}
    assert sum(states.values()) == 5


def test_scope_labels_are_capped_and_ours_cannot_be_spoofed(wsgi, monkeypatch):
    from telegate import metrics as metrics_mod
    monkeypatch.setattr(metrics_mod, "MAX_SCOPE_LABELS", 3)
    wsgi.store.add_sessions(["a"])
    scopes = [f"spam.method{n}" for n in range(6)] + ["spam.method0", "account", "Other"]
    for scope in scopes:
        lease = wsgi("POST", "/session", {"purpose": "messages.getHistory"}).json
        wsgi("POST", "/release", {"session_id": 1, "lease_token": lease["lease_token"], "flood_wait": 1,
                                  "flood_scope": scope})
    assert by_scope(scrape(wsgi("GET", "/metrics"))) == {
        "account": 0, "spam.method0": 2, "spam.method1": 1, "spam.method2": 1, "other": 5}


def test_two_hundred_methods_get_labels_then_other():
    from telegate.metrics import MAX_SCOPE_LABELS, Metrics

    class NoStore:
        def metric_totals(self):
            return dict.fromkeys(("free", "in_use", "in_floodwait", "disabled", "resting_scoped", "leases_granted",
                                  "leases_expired", "flood_waits", "waiting_workers", "oldest_wait"), 0)

    metrics = Metrics(NoStore())
    for n in range(MAX_SCOPE_LABELS + 50):
        metrics.released(30, f"ns.m{n}")
    metrics.released(30, "ns.m0")
    counts = {}
    for family in metrics.registry.collect():
        if family.name == "telegate_flood_waits_by_scope":
            counts = {s.labels["scope"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert MAX_SCOPE_LABELS == 200
    assert len(counts) == 200 + 2 and counts["other"] == 50 and counts["ns.m0"] == 2 and counts["account"] == 0
