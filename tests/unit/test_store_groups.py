"""A key confined to groups, in the store: it gets its least recently used free session,
whether that sits among the first free sessions in claim order or far behind the idle
sessions of other groups (the two steps of a confined claim), on both stores."""
from __future__ import annotations

import pytest

from telegate.store import CONFINED_FRONT, NoSessionAvailable, open_store


@pytest.fixture
def store(fresh_db, clock):
    with open_store(fresh_db(), clock=clock) as store:
        store.clock_for_tests = clock
        yield store


def cycle(store, key, name=None, purpose=None) -> str:
    """Lease and release at once, a moment after the last: a release puts the session last."""
    store.clock_for_tests.advance(0.01)
    lease = store.acquire(60, key=key, name=name, purpose=purpose)
    store.release(lease.session_id, lease.lease_token, key=key)
    return lease.session_name


def test_a_confined_key_takes_its_least_recently_used_session_near_or_far(store, clock):
    # Far: more idle sessions of other groups than a confined claim looks at first, ahead of its own.
    others = [f"other{n:04d}" for n in range(CONFINED_FRONT * 2)]
    store.add_sessions(others, groups=["us"])
    store.add_sessions(["eu-a", "eu-b", "eu-c"], groups=["eu"])
    eu = store.authenticate(store.create_key("eu", groups=["eu"]))
    anyone = store.authenticate(store.create_key("anyone"))
    for name in ("eu-b", "eu-c", "eu-a"):  # used in this order: eu-b is the least recently used
        cycle(store, eu, name=name)
    assert [cycle(store, eu) for _ in range(4)] == ["eu-b", "eu-c", "eu-a", "eu-b"]
    # Near: the other sessions used since, the key's own at the front of the claim order.
    for _ in others:
        assert cycle(store, anyone).startswith(("other", "eu-"))
    got = [cycle(store, eu) for _ in range(3)]
    assert sorted(got) == ["eu-a", "eu-b", "eu-c"] and len(set(got)) == 3
    # With a purpose too, and the counts of a confined key's 503 cover its groups alone.
    assert cycle(store, eu, purpose="messages.getHistory").startswith("eu-")
    leases = [store.acquire(60, key=eu) for _ in range(3)]
    with pytest.raises(NoSessionAvailable) as refused:
        store.acquire(60, key=eu)
    assert (refused.value.total, refused.value.in_use, refused.value.groups) == (3, 3, ("eu",))
    for lease in leases:
        store.release(lease.session_id, lease.lease_token, key=eu)


def test_group_names_are_checked_and_normalised(store):
    store.add_sessions(["a"], groups=[" EU ", "eu", "vip.1"])
    assert store.get_session(store.find_session_id("a"))["groups"] == ["eu", "vip.1"]
    for bad in (["-x"], ["a b"], ["é"], [""], ["x" * 65], [f"g{n}" for n in range(33)], [1]):
        with pytest.raises(ValueError):
            store.add_sessions(["b"], groups=bad)
        with pytest.raises(ValueError):
            store.create_key("k", groups=bad)
    with pytest.raises(ValueError, match="admin key sees every session"):
        store.create_key("boss", "admin", groups=["eu"])
    assert store.find_session_id("b") is None and [k["name"] for k in store.list_keys()] == []
