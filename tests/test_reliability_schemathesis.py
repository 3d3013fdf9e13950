"""schemathesis against the live server, driven by the server's own /openapi.json.

Every operation of the document is fuzzed (valid and invalid data, with an admin key so
the requests get past authentication) against one live server. Two promises are
checked on every answer: no server error (5xx other than the documented 503s), and
the answer fits the document (status code, content type, headers, body schema).
The only 5xx allowed is the documented 503 ``no_session_available``.
"""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from conftest import LiveServer  # noqa: E402

pytestmark = pytest.mark.reliability

#: Examples per operation and generation mode: enough to find shape bugs, bounded in time.
MAX_EXAMPLES = 40


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):
    server = LiveServer(tmp_path_factory.mktemp("fuzz") / "telegate.db", ("--access-log", "false"))
    server.add_sessions(*(f"acc{i}" for i in range(20)))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def api_schema(fuzzed_server):
    schema = schemathesis.openapi.from_url(fuzzed_server.url + "/openapi.json")
    schema.config.update(headers={"X-API-Key": fuzzed_server.admin_key})
    schema.config.generation.update(max_examples=MAX_EXAMPLES, modes=[schemathesis.GenerationMode.POSITIVE,
                                                                       schemathesis.GenerationMode.NEGATIVE])
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")



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


@schema.parametrize()
def test_every_answer_fits_the_document_and_none_is_a_server_error(case, fuzzed_server):
    response = case.call()
    try:
        case.validate_response(response, checks=CHECKS)
    finally:
        # Hand back what the fuzzer leased, so later examples still find free sessions.
        if case.method.upper() == "POST" and case.path == "/session" and response.status_code == 200:
            lease = response.json()
            fuzzed_server.request("POST", "/release", {"session_id": lease["session_id"],
                                                       "lease_token": lease["lease_token"]})
