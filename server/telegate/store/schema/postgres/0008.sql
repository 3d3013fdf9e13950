-- 8: accounts sealed at rest (_accounts.py). ``sealed``: the account but its state; ``state``:
-- the entity cache and update state, deflated and sealed apart (a write-back rewrites it alone);
-- ``revision`` counts writes (a write-back prepared outside its transaction lands only on the
-- revision it read). Beside them only the operator's plain columns. ``sessions.has_account``
-- lets a claim ask for sessions with an account; ``waiters.account`` keeps a long-poll's ask;
-- ``api_keys.accounts`` marks the keys that may receive accounts.
CREATE TABLE accounts (
    session_id BIGINT PRIMARY KEY,
    master_key_id TEXT NOT NULL,
    wrapped_key TEXT NOT NULL,
    sealed TEXT NOT NULL,
    state TEXT,
    revision BIGINT NOT NULL DEFAULT 0,
    phone TEXT,
    username TEXT,
    premium INTEGER,
    device TEXT,
    proxy_host TEXT,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX accounts_by_master_key ON accounts (master_key_id);
ALTER TABLE sessions ADD COLUMN has_account INTEGER NOT NULL DEFAULT 0;
ALTER TABLE waiters ADD COLUMN account INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN accounts INTEGER NOT NULL DEFAULT 0;
