"""schemathesis against the live server, driven by the server's own /openapi.json.

schemathesis generates the cases (hypothesis strategies built from the document) and
checks the answers; the test drives hypothesis itself rather than through
schemathesis's pytest plugin, whose hooks follow pytest's private internals.

Every operation of the document is fuzzed (valid and invalid data, with an admin key so
the requests get past authentication) against one live server. Two promises are
checked on every answer: no server error (5xx other than the documented 503s), and
the answer fits the document (status code, content type, headers, body schema).
The only 5xx allowed is the documented 503 ``no_session_available``.
"""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

import hypothesis  # noqa: E402  (schemathesis depends on it)

from support import LiveServer  # noqa: E402

pytestmark = pytest.mark.reliability

#: Examples per operation and generation mode: enough to find shape bugs, bounded in time.
MAX_EXAMPLES = 40


@pytest.fixture(scope="module")
def fuzzed_server(module_db):
    # On both stores: PostgreSQL types what SQLite does not (a value out of a column's range
    # is an error there), so the fuzzer's odd values must meet both.
    server = LiveServer(module_db, ("--access-log", "false"))
    server.add_sessions(*(f"acc{i}" for i in range(20)))
    try:
        yield server
    finally:
        server.close()


def no_server_error(ctx, response, case):
    """No 5xx, except the documented 503 of an exhausted pool (the fuzzer leases a lot)."""
    if response.status_code < 500:
        return None
    if response.status_code == 503:
        try:
            if response.json().get("error") == "no_session_available":
                return None
        except ValueError:
            pass
    raise AssertionError(f"server error {response.status_code}: {response.text[:300]}")


CHECKS = [
    no_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]


def _fuzz(operation, mode, server) -> None:
    """Up to MAX_EXAMPLES cases of one operation in one generation mode, each checked."""

    @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck),
                         phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        wait = case.body.get("wait") if isinstance(case.body, dict) else None
        if isinstance(wait, (int, float)) and not isinstance(wait, bool) and 0.2 < wait <= 60:
            # A valid long-poll on an exhausted pool holds its answer up to 60 s: keep it short.
            case.body["wait"] = 0.2
        response = case.call(headers={"X-API-Key": server.admin_key})
        try:
            case.validate_response(response, checks=CHECKS, headers={"X-API-Key": server.admin_key})
        finally:
            # Hand back what the fuzzer leased, so later examples still find free sessions.
            if case.method.upper() == "POST" and case.path == "/session" and response.status_code == 200:
                lease = response.json()
                server.request("POST", "/release", {"session_id": lease["session_id"],
                                                    "lease_token": lease["lease_token"]})

    run()


def _operations(server) -> list:
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_the_document_has_every_endpoint(fuzzed_server):
    labels = {operation.label for operation in _operations(fuzzed_server)}
    assert {"POST /session", "POST /release", "POST /renew", "GET /status", "GET /healthz",
            "GET /sessions", "POST /sessions", "GET /sessions/{session_id}",
            "PATCH /sessions/{session_id}", "DELETE /sessions/{session_id}"} <= labels


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_answer_fits_the_document_and_none_is_a_server_error(fuzzed_server, mode):
    """Each operation of /openapi.json, fuzzed; hypothesis shrinks and reports the first failure."""
    generation_mode = schemathesis.GenerationMode(mode)
    failures = []
    for operation in _operations(fuzzed_server):
        try:
            _fuzz(operation, generation_mode, fuzzed_server)
        except hypothesis.errors.Unsatisfiable:
            # No input at all (GET /healthz, GET /metrics): nothing can be made invalid.
            assert mode == "negative", f"{operation.label}: no case could be generated"
        except Exception as exc:  # collected: one report for every failing operation
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
