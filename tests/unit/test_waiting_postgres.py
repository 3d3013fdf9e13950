"""The waiting line's PostgreSQL wake-up: a grant's NOTIFY wakes another server's feed at commit.

Runs against the PostgreSQL at ``TELEGATE_TEST_PG`` (default: the local one, user postgres),
in a database of its own that it drops afterwards; skipped when none answers.
"""
from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

psycopg = pytest.importorskip("psycopg")

from telegate.store._pg_feed import PostgresCommitFeed, announce  # noqa: E402

ADMIN_URL = os.environ.get("TELEGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


class _Tx:
    """The one thing announce() needs of a transaction."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def run(self, sql: str, params=None) -> int:
        return self.conn.execute(sql, params).rowcount


@pytest.fixture
def database():
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.skip(f"no PostgreSQL at {ADMIN_URL}: {exc}")
    name = f"fleet_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE DATABASE {name}")
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()


def test_a_committed_grant_wakes_the_feed_and_a_rolled_back_one_does_not(database):
    feed = PostgresCommitFeed(database)
    try:
        assert feed.wait(0.1) is False  # nothing yet
        with psycopg.connect(database) as writer:
            with writer.transaction(force_rollback=True):
                announce(_Tx(writer))
            assert feed.wait(0.5) is False  # rolled back: never delivered
            woke = []
            waiter = threading.Thread(target=lambda: woke.append(feed.wait(10)))
            waiter.start()
            with writer.transaction():
                announce(_Tx(writer))
            waiter.join(10)
        assert woke == [True]
    finally:
        feed.close()
        feed.close()  # idempotent


def test_interrupt_ends_a_wait(database):
    feed = PostgresCommitFeed(database)
    try:
        started = time.monotonic()
        threading.Timer(0.1, feed.interrupt).start()
        assert feed.wait(30) is False
        assert time.monotonic() - started < 30
    finally:
        feed.close()
