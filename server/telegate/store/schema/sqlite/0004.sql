-- Schema version 4 (SQLite): the waiting line of long-polling acquires (_line.py). ``id`` is the ticket: never
-- reused, so an old ticket can never mean a new waiter (only the same request, polling again).
-- ``session_id`` and ``lease_token`` are the lease granted to it.

CREATE TABLE waiters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    ttl REAL NOT NULL,
    holder TEXT,
    name TEXT,
    key_id INTEGER,
    purpose TEXT,
    request_id TEXT,
    created_at REAL NOT NULL,
    deadline REAL NOT NULL,
    alive_until REAL NOT NULL,
    session_id INTEGER,
    lease_token TEXT,
    granted_at REAL
);

CREATE INDEX waiters_line ON waiters(id) WHERE session_id IS NULL;

CREATE INDEX waiters_owner ON waiters(owner, id);
