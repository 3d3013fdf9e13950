"""The accounts API: POST /sessions with accounts, GET /sessions/<id>/account, hand-out, write-back.

In process (the Bottle app over a real store, both stores), with the TLS rule's inputs
(the listen address, the trusted proxy's word on the scheme) set per test.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from support.accounts import VaultWsgi, new_account
from telegate import store as store_mod
from telegate.accounts import MAX_ENTITIES_PER_WRITE


@pytest.fixture
def api(tmp_path: Path, fresh_db: Any):
    caller = VaultWsgi(tmp_path, fresh_db("accounts"))
    try:
        yield caller
    finally:
        caller.store.close()


def _put(api: VaultWsgi, *items: dict, update: bool = False):
    return api("POST", "/sessions", {"sessions": list(items), "update": update}, key="admin")


def test_put_sessions_adds_updates_and_reports_existing(api):
    first, second = new_account(), new_account()
    answer = _put(api, {"name": "a1", "kind": "telethon", "account": first}, {"name": "plain"})
    assert answer.status == 201, answer
    assert [row["name"] for row in answer.json["added"]] == ["a1", "plain"]
    assert answer.json["updated"] == [] and answer.json["existing"] == []

    again = _put(api, {"name": "a1", "account": second})
    assert again.status == 200 and again.json["existing"] == ["a1"] and again.json["added"] == []
    sid = answer.json["added"][0]["id"]
    assert api("GET", f"/sessions/{sid}/account", key="admin").json["account"]["auth_key"] == first["auth_key"]

    updated = _put(api, {"name": "a1", "kind": "pyrogram", "account": second}, update=True)
    assert updated.json["updated"] == [{"id": sid, "name": "a1"}]
    shown = api("GET", f"/sessions/{sid}/account", key="admin").json["account"]
    assert shown["auth_key"] == second["auth_key"] and shown["proxy"] == second["proxy"]
    assert shown["state"]["entities"][0]["id"] == 777
    session = api("GET", f"/sessions/{sid}", key="admin").json
    assert session["kind"] == "pyrogram" and session["has_account"] is True


def test_old_post_sessions_body_still_works(api):
    answer = api("POST", "/sessions", {"names": ["x", "y"], "kind": "telethon"}, key="admin")
    assert answer.status == 201 and [row["name"] for row in answer.json["added"]] == ["x", "y"]
    assert api("POST", "/sessions", {"name": "x"}, key="admin").json["existing"] == ["x"]


@pytest.mark.parametrize("account, words", [
    ({"dc_id": 2}, "auth_key is required"),
    ({"dc_id": 2, "auth_key": base64.b64encode(os.urandom(100)).decode()}, "holds 100 bytes"),
    ({"dc_id": 2, "auth_key": "not base64!"}, "not standard base64"),
    ({"dc_id": 0, "auth_key": base64.b64encode(os.urandom(256)).decode()}, "dc_id"),
    ({"dc_id": 2, "auth_key": base64.b64encode(os.urandom(256)).decode(), "proxy": "ftp://h:1"}, "proxy"),
    ({"dc_id": 2, "auth_key": base64.b64encode(os.urandom(256)).decode(), "api_id": "2040"}, "api_id"),
    ({"dc_id": 2, "auth_key": base64.b64encode(os.urandom(256)).decode(), "color": 1}, "unknown field"),
])
def test_a_bad_account_is_refused_and_nothing_is_stored(api, account, words):
    answer = _put(api, {"name": "good", "account": new_account()}, {"name": "bad", "account": account})
    assert answer.status == 400, answer
    assert words in answer.json["detail"] and "sessions[1].account" in answer.json["detail"]
    assert api("GET", "/sessions", key="admin").json["total"] == 0


def test_account_reads_need_an_admin_and_say_when_there_is_none(api):
    sid = _put(api, {"name": "n"}).json["added"][0]["id"]
    assert api("GET", f"/sessions/{sid}/account", key="client").status == 403
    missing = api("GET", f"/sessions/{sid}/account", key="admin")
    assert missing.status == 404 and missing.json["error"] == "no_account"
    assert api("GET", "/sessions/99999/account", key="admin").status == 404


def test_hand_out_only_to_accounts_keys(api):
    account = new_account()
    _put(api, {"name": "plain"}, {"name": "acc", "account": account})
    refused = api("POST", "/session", {"account": True}, key="client")
    assert refused.status == 403 and refused.json["error"] == "accounts_not_allowed"
    assert "--accounts" in refused.json["detail"]
    lease = api("POST", "/session", {"account": True}, key=api.accounts_key)
    assert lease.status == 200, lease
    assert lease.json["session_name"] == "acc" and lease.json["account"] == {**account}
    assert lease.headers.get("Cache-Control") == "no-store"
    events = api("GET", f"/sessions/{lease.json['session_id']}/events", key="admin").json["events"]
    assert events[0]["type"] == "lease" and events[0]["account"] is True and events[0]["key"] == "worker"
    # The only session with an account is leased: the usual 503, saying so.
    busy = api("POST", "/session", {"account": True}, key=api.accounts_key)
    assert busy.status == 503 and "session with an account" in busy.json["detail"]
    # A lease without "account" still gets the plain session, and no account.
    plain = api("POST", "/session", {}, key=api.accounts_key)
    assert plain.status == 200 and plain.json["session_name"] == "plain" and "account" not in plain.json


def test_the_hand_out_passes_the_sealed_state_on_byte_for_byte(api):
    """The hand-out's state goes out as the JSON text it was sealed as (neither parsed nor
    encoded again): the answer is byte for byte what encoding the parsed account would give,
    unicode and escapes included; a lease granted to a waiting poll (no sealed row read by the
    claim) opens the account the same way."""
    account = new_account()
    account["state"]["entities"].append({"id": 888, "hash": -5, "type": "channel", "username": None, "phone": None,
                                         "name": 'Ünïcode "quoted" \\ \u2028 \x7f ✓'})
    sid = _put(api, {"name": "acc", "account": account}).json["added"][0]["id"]
    lease = api("POST", "/session", {"account": True}, key=api.accounts_key)
    assert lease.status == 200, lease
    parsed = json.loads(lease.data)
    assert parsed["account"] == account
    assert lease.data == json.dumps(parsed, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    key = api.store.authenticate(api.accounts_key)
    unsealed = store_mod.Lease(sid, "acc", parsed["lease_token"], 0.0, "telethon", {})
    raw = api.store.lease_account(unsealed, key, raw_state=True)
    assert isinstance(raw["state"], store_mod.RawJSON) and json.loads(raw["state"]) == account["state"]
    assert api.store.lease_account(unsealed, key) == account  # parsed, as before, unless asked


def test_no_account_in_the_pool_says_so(api):
    _put(api, {"name": "plain"})
    answer = api("POST", "/session", {"account": True}, key=api.accounts_key)
    assert answer.status == 503 and "no session holds an account" in answer.json["detail"]


def test_tls_rule(tmp_path, fresh_db):
    """Off loopback, only a request the trusted proxy said was https may carry an account."""
    db = fresh_db("tls")
    plain = VaultWsgi(tmp_path, db, host="0.0.0.0")
    try:
        sid = plain.store.put_sessions([{"name": "acc", "account": new_account()}])["added"][0]["id"]
        for answer in (plain("POST", "/session", {"account": True}, key=plain.accounts_key),
                       plain("GET", f"/sessions/{sid}/account", key="admin"),
                       _put(plain, {"name": "acc2", "account": new_account()})):
            assert answer.status == 403 and answer.json["error"] == "tls_required", answer
            assert "docs/TLS.md" in answer.json["detail"]
        assert plain.store.find_session_id("acc2") is None
        assert plain.store.status()["in_use"] == 0  # a refused hand-out leased nothing
        plain.reconfigure(host="0.0.0.0", trusted_proxy="127.0.0.1", scheme="https")
        answer = plain("POST", "/session", {"account": True}, key=plain.accounts_key)
        assert answer.status == 200 and answer.json["account"]["dc_id"] == 2
        # With a trusted proxy, loopback alone is not enough: the proxy must have said https.
        plain.reconfigure(host="127.0.0.1", trusted_proxy="127.0.0.1", scheme="http")
        answer = plain("GET", f"/sessions/{sid}/account", key="admin")
        assert answer.status == 403 and answer.json["error"] == "tls_required"
    finally:
        plain.store.close()
    overridden = VaultWsgi(tmp_path, fresh_db("tls2"), host="0.0.0.0", allow_plain_http_accounts=True)
    try:
        assert _put(overridden, {"name": "acc", "account": new_account()}).status == 201
        assert overridden("POST", "/session", {"account": True}, key=overridden.accounts_key).status == 200
    finally:
        overridden.store.close()


def _lease(api: VaultWsgi) -> dict:
    answer = api("POST", "/session", {"account": True}, key=api.accounts_key)
    assert answer.status == 200, answer
    return answer.json


def _entity(number: int) -> dict:
    return {"id": number, "hash": number * 7, "type": "user", "username": f"u{number}", "phone": None,
            "name": f"User {number}"}


def test_write_back_on_renew_and_release(api):
    _put(api, {"name": "acc", "account": new_account()})
    lease = _lease(api)
    sid, token = lease["session_id"], lease["lease_token"]
    renewed = api("POST", "/renew", {"session_id": sid, "lease_token": token, "state": {
        "entities": [_entity(1), {**_entity(777), "username": "renamed"}]}}, key=api.accounts_key)
    assert renewed.status == 200, renewed
    new_key = base64.b64encode(os.urandom(256)).decode()
    released = api("POST", "/release", {"session_id": sid, "lease_token": token, "state": {
        "entities": [_entity(2)], "update_state": {"pts": 99, "qts": 1, "date": 1800000000, "seq": 7},
        "dc": {"dc_id": 4, "server_address": "149.154.167.92", "port": 443, "auth_key": new_key}}},
        key=api.accounts_key)
    assert released.status == 200, released
    account = api("GET", f"/sessions/{sid}/account", key="admin").json["account"]
    by_id = {entity["id"]: entity for entity in account["state"]["entities"]}
    assert set(by_id) == {1, 2, 777} and by_id[777]["username"] == "renamed"
    assert account["state"]["update_state"] == {"pts": 99, "qts": 1, "date": 1800000000, "seq": 7}
    assert (account["dc_id"], account["server_address"], account["auth_key"]) == (4, "149.154.167.92", new_key)


def test_a_stale_token_writes_nothing(api):
    _put(api, {"name": "acc", "account": new_account()})
    old = _lease(api)
    # An admin ends the lease (a retry of the holder's own release would be answered as its first try was).
    assert api("POST", "/release", {"session_id": old["session_id"]}, key="admin").status == 200
    before = api.store.get_account(old["session_id"])
    stale = api("POST", "/release", {"session_id": old["session_id"], "lease_token": old["lease_token"],
                                     "state": {"entities": [_entity(5)]}}, key=api.accounts_key)
    assert stale.status == 409 and stale.json["error"] == "lease_mismatch", stale
    new = _lease(api)  # someone else's lease now
    for path in ("/release", "/renew"):
        stale = api("POST", path, {"session_id": old["session_id"], "lease_token": old["lease_token"],
                                   "state": {"entities": [_entity(6)]}}, key=api.accounts_key)
        assert stale.status == 409, stale
    assert api.store.get_account(old["session_id"]) == before
    assert api.store.get_session(new["session_id"])["state"] == "in_use"  # the new lease is untouched


def test_state_needs_the_token_and_a_valid_shape(api):
    _put(api, {"name": "acc", "account": new_account()})
    lease = _lease(api)
    sid = lease["session_id"]
    before = api.store.get_account(sid)
    no_token = api("POST", "/release", {"session_id": sid, "state": {"entities": []}}, key=api.accounts_key)
    assert no_token.status == 400 and "lease_token" in no_token.json["detail"]
    for state, words in (({"entities": [{"id": "x"}]}, "entities[0].id"), ({"color": 1}, "unknown field"),
                         ({"update_state": {"pts": -1}}, "pts"), ({"entities": "x"}, "list")):
        bad = api("POST", "/release", {"session_id": sid, "lease_token": lease["lease_token"], "state": state},
                  key=api.accounts_key)
        assert bad.status == 400 and words in bad.json["detail"], bad
    assert api.store.get_session(sid)["state"] == "in_use"  # a refused release ended nothing
    assert api.store.get_account(sid) == before


def test_oversized_state_is_413_and_changes_nothing(tmp_path, fresh_db):
    api = VaultWsgi(tmp_path, fresh_db("big"), max_body=64 * 1024 * 1024)
    try:
        _put(api, {"name": "acc", "account": new_account()})
        lease = _lease(api)
        sid = lease["session_id"]
        before = api.store.get_account(sid)
        entities = [_entity(number) for number in range(MAX_ENTITIES_PER_WRITE + 1)]
        big = api("POST", "/release", {"session_id": sid, "lease_token": lease["lease_token"],
                                       "state": {"entities": entities}}, key=api.accounts_key)
        assert big.status == 413 and big.json["error"] == "state_too_large", big
        assert "at most" in big.json["detail"]
        assert api.store.get_session(sid)["state"] == "in_use"
        assert api.store.get_account(sid) == before
    finally:
        api.store.close()


def test_state_needs_a_key_that_may_hold_accounts(api):
    _put(api, {"name": "acc", "account": new_account()})
    lease = api("POST", "/session", {}, key="client").json
    refused = api("POST", "/release", {"session_id": lease["session_id"], "lease_token": lease["lease_token"],
                                       "state": {"entities": [_entity(1)]}}, key="client")
    assert refused.status == 403 and refused.json["error"] == "accounts_not_allowed"
    assert api.store.get_session(lease["session_id"])["state"] == "in_use"


def test_a_write_back_prepared_on_an_older_revision_is_merged_again(api):
    """The merge is prepared before the release's transaction; a change in between is not lost."""
    store = api.store
    sid = store.put_sessions([{"name": "acc", "account": new_account()}])["added"][0]["id"]
    lease = store.acquire(60, account=True)
    prepare = store._state_writer

    def racing(session_id, state):
        writer = prepare(session_id, state)  # merged and sealed now, from the account as it is
        store._state_writer = prepare  # once
        # Another write lands between the preparation and the transaction.
        store.renew(session_id, lease.lease_token, 60, state={"entities": [_entity(9)], "update_state": None,
                                                              "dc": None})
        return writer

    store._state_writer = racing
    try:
        store.release(sid, lease.lease_token, state={"entities": [_entity(8)], "update_state": None, "dc": None})
    finally:
        store._state_writer = prepare
    ids = {entity["id"] for entity in store.get_account(sid)["state"]["entities"]}
    assert ids == {777, 8, 9}


def test_state_for_a_session_without_an_account_is_refused(api):
    _put(api, {"name": "plain"})
    lease = api("POST", "/session", {}, key=api.accounts_key).json
    bad = api("POST", "/release", {"session_id": lease["session_id"], "lease_token": lease["lease_token"],
                                   "state": {"entities": [_entity(1)]}}, key=api.accounts_key)
    assert bad.status == 400 and "holds no account" in bad.json["detail"]
    assert api.store.get_session(lease["session_id"])["state"] == "in_use"


def test_keys_create_accounts_flag(api):
    answer = api("POST", "/keys", {"name": "w2", "accounts": True}, key="admin")
    assert answer.status == 201 and answer.json["accounts"] is True
    listed = {key["name"]: key for key in api("GET", "/keys", key="admin").json["keys"]}
    assert listed["w2"]["accounts"] is True and listed["client"]["accounts"] is False


def test_put_sessions_keeps_the_name_rules(api):
    assert _put(api, {"name": "acc", "account": new_account()}).status == 201
    twin = _put(api, {"name": "ACC", "account": new_account()})
    assert twin.status == 200 and twin.json["existing"] == ["ACC"] and twin.json["added"] == []
    both = _put(api, {"name": "x1"}, {"name": "X1"})
    assert both.status == 400 and "differ only in case" in both.json["detail"]
    device = _put(api, {"name": "CON", "account": new_account()})
    assert device.status == 400 and "sessions[0].name" in device.json["detail"]
    assert api.store.find_session_id("x1") is None and api.store.find_session_id("CON") is None
