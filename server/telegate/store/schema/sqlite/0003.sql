-- Schema version 3 (SQLite): leases owned by keys, idempotent acquire, per-key limits, scoped rests, history.

ALTER TABLE sessions ADD COLUMN lease_key_id INTEGER;

ALTER TABLE sessions ADD COLUMN request_id TEXT;

CREATE INDEX sessions_lease_key ON sessions(lease_key_id) WHERE lease_key_id IS NOT NULL;

ALTER TABLE api_keys ADD COLUMN max_leases INTEGER;

CREATE TABLE session_rests (
    session_id INTEGER NOT NULL,
    scope TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (session_id, scope)
);

CREATE TABLE session_events (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL,
    at REAL NOT NULL,
    type TEXT NOT NULL,
    key_name TEXT,
    holder TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX session_events_by_session ON session_events(session_id, id);

CREATE INDEX session_events_by_time ON session_events(at);
