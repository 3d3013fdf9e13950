-- Schema version 4 (PostgreSQL): the waiting line of long-polling acquires (_line.py). ``id`` is the ticket: never
-- reused, so an old ticket can never mean a new waiter (only the same request, polling again).
-- ``session_id`` and ``lease_token`` are the lease granted to it.

CREATE TABLE waiters (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner TEXT NOT NULL,
    ttl DOUBLE PRECISION NOT NULL,
    holder TEXT,
    name TEXT COLLATE "C",
    key_id BIGINT,
    purpose TEXT COLLATE "C",
    request_id TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    deadline DOUBLE PRECISION NOT NULL,
    alive_until DOUBLE PRECISION NOT NULL,
    session_id BIGINT,
    lease_token TEXT,
    granted_at DOUBLE PRECISION
);

CREATE INDEX waiters_line ON waiters (id) WHERE session_id IS NULL;

CREATE INDEX waiters_owner ON waiters (owner, id);
