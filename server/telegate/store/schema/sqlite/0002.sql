-- Schema version 2 (SQLite): O(log n) claims on large pools, and expired-lease accounting.

ALTER TABLE sessions ADD COLUMN avail_at REAL NOT NULL DEFAULT 0;

ALTER TABLE sessions ADD COLUMN expired_count INTEGER NOT NULL DEFAULT 0;

UPDATE sessions SET avail_at = MAX(COALESCE(lease_expires_at, 0), COALESCE(flood_wait_until, 0),
                                   COALESCE(last_released_at, 0));

CREATE INDEX sessions_claim_order ON sessions(avail_at, id) WHERE disabled = 0;
