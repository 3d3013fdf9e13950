"""GET /metrics: Prometheus text format, a key by default, numbers an operator can trust."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import WsgiCaller
from telegate import Settings, Store, create_app


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
    with Store(tmp_path / "x.db") as store:
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
