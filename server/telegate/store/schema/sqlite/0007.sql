-- Schema version 7 (SQLite): hostile keys (issue 18): a fair waiting line, and client reports an admin can undo.

-- A key's places in the line and its remembered polls, counted through an index.
CREATE INDEX waiters_by_key ON waiters (key_id, id) WHERE session_id IS NULL;

-- The cleanup of stale rows, and the line's "waiting now" reads, without reading every row.
CREATE INDEX waiters_deadline ON waiters (deadline);

CREATE INDEX waiters_granted ON waiters (granted_at) WHERE granted_at IS NOT NULL;

-- An admin-set cap on the long-polls one key parks at once (NULL: 4 per max_leases).
ALTER TABLE api_keys ADD COLUMN max_waiting INTEGER;

-- What each key reported on release (_reports.py): a disable, or a rest (scope NULL:
-- account-wide) until a time; undone_at once `keys undo-reports` undid it.
CREATE TABLE client_reports (
    id INTEGER PRIMARY KEY,
    key_id INTEGER NOT NULL,
    key_name TEXT NOT NULL,
    session_id INTEGER NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('disable', 'rest')),
    scope TEXT,
    until REAL,
    undone_at REAL
);

CREATE INDEX client_reports_by_key ON client_reports (key_name, at);

CREATE INDEX client_reports_by_session ON client_reports (session_id, kind, id);
