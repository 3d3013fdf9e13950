-- Schema version 1 (SQLite): the pool and the keys.

CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL DEFAULT 'unknown',
    meta TEXT NOT NULL DEFAULT '{}',
    disabled INTEGER NOT NULL DEFAULT 0,
    disabled_reason TEXT,
    lease_token TEXT,
    lease_expires_at REAL,
    leased_at REAL,
    holder TEXT,
    flood_wait_until REAL,
    use_count INTEGER NOT NULL DEFAULT 0,
    flood_count INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    last_released_at REAL
);

CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL CHECK (scope IN ('client', 'admin')),
    created_at REAL NOT NULL,
    revoked_at REAL
);

CREATE UNIQUE INDEX api_keys_active_name ON api_keys(name) WHERE revoked_at IS NULL;
