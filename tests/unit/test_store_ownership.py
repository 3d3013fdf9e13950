"""Who may end a lease, lease limits, revocation and idempotent acquire: the store in process.

Two client keys (``w1`` holds the leases, ``w2`` is the wrong key) and an admin, with a
clock the test moves. Every refused call is followed by a check that the pool, the
session's history and its rests are exactly as before.
"""
from __future__ import annotations

import threading

import pytest

from telegate.store import (
    KeyRevoked, LeaseLimit, LeaseMismatch, NoSessionAvailable, NotLeaseHolder, SessionDisabled, Store, open_store, Ticket,
)


@pytest.fixture
def store(fresh_db, clock):
    """On both stores: a SQLite file, then a PostgreSQL database (see conftest)."""
    with open_store(fresh_db(), clock=clock) as store:
        store.add_sessions(["a", "b", "c"])
        yield store


@pytest.fixture
def keys(store):
    """name -> KeyInfo for two client keys and an admin."""
    made = {"w1": store.create_key("w1"), "w2": store.create_key("w2"), "boss": store.create_key("boss", "admin")}
    return {name: store.authenticate(key) for name, key in made.items()}


def snapshot(store: Store) -> list:
    """Everything a refused call must leave alone: rows, rests and each session's history."""
    rows, _ = store.list_sessions()
    return [(row, store.events(row["id"])) for row in rows]


def test_another_client_key_can_change_nothing_about_a_lease(store, keys):
    lease = store.acquire(60, holder="w1:1", key=keys["w1"], request_id="r1")
    before = snapshot(store)
    sid, token, w2 = lease.session_id, lease.lease_token, keys["w2"]
    attempts = [
        lambda: store.release(sid, key=w2),
        lambda: store.release(sid, token, key=w2),  # the right token from the wrong key
        lambda: store.release(sid, "not-the-token", key=w2),
        lambda: store.release(sid, key=w2, flood_wait=31622400),
        lambda: store.release(sid, token, key=w2, flood_wait=60, flood_scope="contacts.resolveUsername"),
        lambda: store.release(sid, key=w2, disable="AuthKeyUnregistered"),
        lambda: store.release(sid, token, key=w2, disable="AuthKeyUnregistered"),
        lambda: store.renew(sid, token, 86400, key=w2),
        lambda: store.renew(sid, "not-the-token", 86400, key=w2),
    ]
    for number, attempt in enumerate(attempts):
        with pytest.raises(NotLeaseHolder, match="another API key"):
            attempt()
        assert snapshot(store) == before, f"attempt {number} changed the pool"
    # The holder is untouched: its token still renews and releases.
    assert store.renew(sid, token, 60, key=keys["w1"])
    assert store.release(sid, token, key=keys["w1"]) is True


def test_the_holders_key_may_release_without_a_token_as_the_seed_does(store, keys):
    lease = store.acquire(60, key=keys["w1"])
    assert store.release(lease.session_id, key=keys["w1"], flood_wait=30) is True
    assert store.get_session(lease.session_id)["state"] == "in_floodwait"


def test_own_key_with_a_stale_token_gets_lease_mismatch_not_the_lease(store, keys, clock):
    store.add_sessions(["solo"])
    old = store.acquire(10, name="solo", key=keys["w1"])
    clock.advance(11)
    new = store.acquire(10, name="solo", key=keys["w1"])  # the same key took it over
    before = snapshot(store)
    with pytest.raises(LeaseMismatch) as info:
        store.release(old.session_id, old.lease_token, key=keys["w1"], disable="dead")
    assert not isinstance(info.value, NotLeaseHolder)
    with pytest.raises(LeaseMismatch):
        store.renew(old.session_id, old.lease_token, 10, key=keys["w1"])
    assert snapshot(store) == before
    assert store.release(new.session_id, new.lease_token, key=keys["w1"]) is True


def test_a_stale_token_of_a_session_another_key_took_over_gets_not_lease_holder(store, keys, clock):
    store.add_sessions(["solo"])
    old = store.acquire(10, name="solo", key=keys["w1"])
    clock.advance(11)
    store.acquire(10, name="solo", key=keys["w2"])
    before = snapshot(store)
    with pytest.raises(NotLeaseHolder):
        store.release(old.session_id, old.lease_token, key=keys["w1"])
    assert snapshot(store) == before


@pytest.mark.parametrize("next_key", ["w1", "w2"])
def test_a_release_sent_again_after_it_landed_is_answered_as_the_first(store, keys, clock, next_key):
    """Its answer was lost (the server died after the commit): the worker sends it again,
    maybe to another server, when the session may already be someone else's."""
    store.set_disabled_by_name(["b", "c"], True)  # one session: the next lease is of the same account
    mine = store.acquire(60, holder="w1:1", key=keys["w1"])
    assert store.release(mine.session_id, mine.lease_token, key=keys["w1"], flood_wait=5) is True
    clock.advance(6)
    theirs = store.acquire(60, key=keys[next_key])
    before = snapshot(store)
    again = store.release(mine.session_id, mine.lease_token, key=keys["w1"], flood_wait=99, disable="dead")
    assert again is False and snapshot(store) == before  # nothing more to do, nothing changed
    with pytest.raises(LeaseMismatch):  # a released lease can't be renewed back to life
        store.renew(mine.session_id, mine.lease_token, 60, key=keys["w1"])
    assert store.release(theirs.session_id, theirs.lease_token, key=keys[next_key]) is True


@pytest.mark.parametrize("ended_by", ["boss", "w1"])
def test_a_lease_ended_by_someone_else_is_still_lost_to_its_old_holder(store, keys, ended_by):
    """An admin, or another worker sharing the key that releases by session id alone (the
    original client's way), ended it; then the account went to someone else."""
    store.set_disabled_by_name(["b", "c"], True)
    mine = store.acquire(60, key=keys["w1"])
    store.release(mine.session_id, key=keys[ended_by])  # no token: whatever lease is current
    store.acquire(60, key=keys["w2"])
    with pytest.raises(NotLeaseHolder):  # the holder did lose it: it must hear so
        store.release(mine.session_id, mine.lease_token, key=keys["w1"])


def test_lapsed_lease_not_taken_over(store, keys, clock):
    lease = store.acquire(10, key=keys["w1"])
    clock.advance(30)
    before = snapshot(store)
    # Nobody holds it now: the session is free, so a release without proof changes nothing,
    # from any key, and so does another key's release with the token.
    assert store.release(lease.session_id, key=keys["w1"], disable="x") is False
    assert store.release(lease.session_id, key=keys["w2"], flood_wait=99) is False
    assert store.release(lease.session_id, lease.lease_token, key=keys["w2"], flood_wait=99) is False
    with pytest.raises(LeaseMismatch):
        store.renew(lease.session_id, lease.lease_token, 10, key=keys["w2"])
    assert snapshot(store) == before
    # Its holder's token still proves it (a late flood-wait report is real news).
    assert store.release(lease.session_id, lease.lease_token, key=keys["w1"], flood_wait=50) is True
    assert store.get_session(lease.session_id)["state"] == "in_floodwait"


def test_free_and_unknown_sessions_release_as_a_no_op(store, keys):
    before = snapshot(store)
    for key in (keys["w1"], keys["w2"], keys["boss"]):
        assert store.release(1, key=key, flood_wait=31622400) is False
        assert store.release(1, key=key, flood_wait=60, flood_scope="messages.getHistory") is False
        assert store.release(2, key=key, disable="AuthKeyUnregistered") is False
        assert store.release(999, key=key, disable="x") is False
    assert snapshot(store) == before


def test_a_release_never_shortens_a_flood_wait(store, keys, clock):
    w1 = keys["w1"]
    lease = store.acquire(60, name="a", key=w1)
    store.release(lease.session_id, lease.lease_token, key=w1, flood_wait=1000)
    until = store.get_session(lease.session_id)["flood_wait_until"]
    # A flood-waiting session is not leased: releases of it, even with 0, change nothing.
    before = snapshot(store)
    for key in keys.values():
        assert store.release(lease.session_id, key=key, flood_wait=0) is False
    assert snapshot(store) == before
    # A scoped rest: a shorter report for the same method keeps the longer end.
    scoped = store.acquire(60, name="b", key=w1)
    store.release(scoped.session_id, scoped.lease_token, key=w1, flood_wait=500, flood_scope="contacts.resolveUsername")
    again = store.acquire(60, name="b", key=w1, purpose="messages.getHistory")
    store.release(again.session_id, again.lease_token, key=w1, flood_wait=5, flood_scope="contacts.resolveUsername")
    rests = store.get_session(scoped.session_id)["rests"]
    assert rests == [{"scope": "contacts.resolveusername", "until": pytest.approx(clock.now + 500)}]
    assert store.get_session(lease.session_id)["flood_wait_until"] == until


def test_admin_may_end_any_lease_but_not_rest_a_free_session(store, keys):
    lease = store.acquire(60, key=keys["w1"])
    boss = keys["boss"]
    before = snapshot(store)
    with pytest.raises(LeaseMismatch):
        store.release(lease.session_id, "not-the-token", key=boss)  # a wrong token is still wrong
    assert snapshot(store) == before
    assert store.release(lease.session_id, key=boss, flood_wait=120) is True
    row = store.get_session(lease.session_id)
    assert row["state"] == "in_floodwait"
    assert store.events(lease.session_id)[1]["key_name"] == "boss"


def test_non_ascii_tokens_are_refused_not_crashed_on(store, keys):
    lease = store.acquire(60, key=keys["w1"])
    before = snapshot(store)
    for token in ("é", "\u202e", "ключ", "\ud800"):
        with pytest.raises(LeaseMismatch):
            store.release(lease.session_id, token, key=keys["w1"])
        with pytest.raises(NotLeaseHolder):
            store.release(lease.session_id, token, key=keys["w2"])
    assert snapshot(store) == before


def test_a_lease_taken_without_a_key_is_proved_by_its_token_alone(store, keys):
    lease = store.acquire(60)  # an internal caller, or a lease from before schema 3
    with pytest.raises(NotLeaseHolder):
        store.release(lease.session_id, key=keys["w2"])
    assert store.release(lease.session_id, lease.lease_token, key=keys["w2"]) is True


# -- idempotent acquire -------------------------------------------------------------------


def test_request_id_repeats_return_the_same_lease_while_it_lives(store, keys, clock):
    w1 = keys["w1"]
    first = store.acquire(60, key=w1, request_id="job-1")
    assert store.acquire(60, key=w1, request_id="job-1") == first
    assert store.status()["in_use"] == 1
    assert store.get_session(first.session_id)["use_count"] == 1
    clock.advance(61)  # lapsed: a repeat is a new lease (the old one is gone)
    again = store.acquire(60, key=w1, request_id="job-1")
    assert again.lease_token != first.lease_token
    assert store.status()["in_use"] == 1


def test_request_id_after_release_never_returns_the_released_lease(store, keys):
    w1 = keys["w1"]
    store.set_disabled_by_name(["b", "c"], True)  # one session: a new lease is of the same account
    first = store.acquire(60, key=w1, request_id="job-1")
    store.release(first.session_id, first.lease_token, key=w1)
    second = store.acquire(60, key=w1, request_id="job-1")
    assert second.session_id == first.session_id and second.lease_token != first.lease_token
    with pytest.raises(LeaseMismatch):  # the released token proves nothing now
        store.renew(first.session_id, first.lease_token, 60, key=w1)
    assert store.acquire(60, key=w1, request_id="job-1") == second  # the live one, again


def test_request_id_of_another_key_is_another_request(store, keys):
    mine = store.acquire(60, key=keys["w1"], request_id="job-1")
    theirs = store.acquire(60, key=keys["w2"], request_id="job-1")
    assert theirs.session_id != mine.session_id and theirs.lease_token != mine.lease_token
    assert store.status()["in_use"] == 2
    # Neither call can be replayed to get the other key's lease.
    assert store.acquire(60, key=keys["w2"], request_id="job-1") == theirs


def test_tries_of_one_request_at_once_get_one_lease(store, keys):
    """A retry sent while the first try is still being served (its answer timed out): on
    PostgreSQL the two run at once on two connections, and must still make one lease."""
    w1, rounds, tries = keys["w1"], 40, 3
    for number in range(rounds):
        start = threading.Barrier(tries)
        got: list = []

        def one_try() -> None:
            start.wait(10)
            got.append(store.acquire(60, key=w1, request_id=f"job-{number}"))

        threads = [threading.Thread(target=one_try) for _ in range(tries)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(got) == tries and len({lease.lease_token for lease in got}) == 1, f"round {number}: {got}"
        assert store.status()["in_use"] == 1
        store.release(got[0].session_id, got[0].lease_token, key=w1)


def test_a_retry_beside_its_own_waiting_try_gets_the_same_lease(store, keys):
    """Both tries of one request wait in line (the first one's answer timed out): one session
    frees up, both are answered with the one lease it makes, and nobody else's turn is taken."""
    w1 = keys["w1"]
    held = [store.acquire(60, key=keys["w2"]) for _ in range(3)]
    first = store.acquire(60, key=w1, request_id="job-1", wait=30, owner="here")
    retry = store.acquire(60, key=w1, request_id="job-1", wait=30, owner="here")
    assert isinstance(first, Ticket) and isinstance(retry, Ticket) and first.ticket != retry.ticket
    store.release(held[0].session_id, held[0].lease_token, key=keys["w2"])
    lease = store.claimed(first.ticket)
    assert lease is not None and store.claimed(retry.ticket) == lease
    assert store.status()["in_use"] == 3


def test_request_id_repeat_at_the_limit_returns_the_lease_not_429(store, tmp_path):
    info = store.authenticate(store.create_key("capped", max_leases=1))
    lease = store.acquire(60, key=info, request_id="job-1")
    assert store.acquire(60, key=info, request_id="job-1") == lease
    with pytest.raises(LeaseLimit):
        store.acquire(60, key=info, request_id="job-2")


# -- limits and revocation ---------------------------------------------------------------


def test_lease_limit_names_the_limit_and_frees_up_on_release(store, clock):
    capped = store.authenticate(store.create_key("capped", max_leases=2))
    first = store.acquire(60, key=capped)
    store.acquire(60, key=capped)
    before = snapshot(store)
    with pytest.raises(LeaseLimit) as info:
        store.acquire(60, key=capped)
    assert (info.value.limit, info.value.held) == (2, 2)
    assert "max_leases=2" in str(info.value) and "'capped'" in str(info.value)
    assert snapshot(store) == before, "a refused claim leaves no trace"
    store.release(first.session_id, first.lease_token, key=capped)
    store.acquire(60, key=capped)  # at the limit again, one released: a session again
    with pytest.raises(LeaseLimit):
        store.acquire(60, key=capped)
    # Lapsed leases do not count against the limit.
    clock.advance(61)
    assert len({store.acquire(60, key=capped).session_id for _ in range(2)}) == 2
    assert [k["leases"] for k in store.list_keys() if k["name"] == "capped"] == [2]


def test_a_lapsed_lease_is_renewed_only_within_the_limit(store, clock):
    """Renewing a lease that ran out takes it again: over the key's limit, that lease is lost."""
    capped = store.authenticate(store.create_key("capped", max_leases=1))
    lapsed = store.acquire(10, name="a", key=capped)
    clock.advance(11)
    assert store.renew(lapsed.session_id, lapsed.lease_token, 10, key=capped)  # within the limit: fine
    clock.advance(11)
    other = store.acquire(60, name="b", key=capped)  # the lapsed one no longer counts
    before = snapshot(store)
    with pytest.raises(LeaseMismatch, match=r"max_leases=1.*can't be renewed"):
        store.renew(lapsed.session_id, lapsed.lease_token, 10, key=capped)
    assert snapshot(store) == before
    assert store.renew(other.session_id, other.lease_token, 60, key=capped)


def test_lease_limit_is_per_key(store):
    capped = store.authenticate(store.create_key("capped", max_leases=1))
    free = store.authenticate(store.create_key("free"))
    store.acquire(60, key=capped)
    with pytest.raises(LeaseLimit):
        store.acquire(60, key=capped)
    assert store.acquire(60, key=free) and store.acquire(60, key=free)


def test_revoking_a_key_ends_its_leases_at_once(store, keys):
    w1, w2 = keys["w1"], keys["w2"]
    mine = [store.acquire(60, key=w1) for _ in range(2)]
    theirs = store.acquire(60, key=w2)
    assert store.revoke_key("w1") == 2
    states = {row["id"]: row["state"] for row in store.list_sessions()[0]}
    assert [states[lease.session_id] for lease in mine] == ["free", "free"]
    assert states[theirs.session_id] == "in_use"
    assert {e["type"] for lease in mine for e in store.events(lease.session_id)[:1]} == {"release"}
    assert store.events(mine[0].session_id)[0]["detail"] == {"reason": "key revoked"}
    # The ended leases' tokens prove nothing now; the sessions go to the next caller.
    with pytest.raises(LeaseMismatch):
        store.renew(mine[0].session_id, mine[0].lease_token, 60, key=keys["boss"])
    assert store.acquire(60, key=w2).session_id == mine[0].session_id


def test_revoking_with_keep_leases_lets_them_run_out(store, keys, clock):
    lease = store.acquire(60, key=keys["w1"])
    assert store.revoke_key("w1", end_leases=False) == 0
    assert store.get_session(lease.session_id)["state"] == "in_use"
    assert [k["leases"] for k in store.list_keys() if k["name"] == "w1"] == [1]
    with pytest.raises(NotLeaseHolder):
        store.release(lease.session_id, key=keys["w2"])
    clock.advance(61)
    assert store.get_session(lease.session_id)["state"] == "free"


def test_a_revocation_between_authentication_and_claim_wins(store, keys):
    w1 = keys["w1"]  # authenticated before the revocation, as a request in flight is
    store.revoke_key("w1")
    before = snapshot(store)
    with pytest.raises(KeyRevoked):
        store.acquire(60, key=w1)
    with pytest.raises(KeyRevoked):
        store.acquire(60, key=w1, request_id="job-1")
    assert snapshot(store) == before
    assert store.status()["in_use"] == 0


def test_renew_of_a_disabled_lease_by_its_holder_says_disabled(store, keys):
    lease = store.acquire(60, key=keys["w1"])
    store.update_session(lease.session_id, disabled=True, key=keys["boss"])
    with pytest.raises(SessionDisabled):
        store.renew(lease.session_id, lease.lease_token, 60, key=keys["w1"])
    with pytest.raises(NotLeaseHolder):
        store.renew(lease.session_id, lease.lease_token, 60, key=keys["w2"])


def test_no_session_is_a_503_not_a_limit_for_unlimited_keys(store, keys):
    for _ in range(3):
        store.acquire(60, key=keys["w1"])
    with pytest.raises(NoSessionAvailable):
        store.acquire(60, key=keys["w1"])
