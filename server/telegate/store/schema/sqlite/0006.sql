-- 6: session names unique regardless of case (_namekeys.py fills name_key in Python when a
-- store opens: neither lower() folds case the way str.casefold does). The partial index finds
-- the sessions still without a key (none, once the names are clean).
ALTER TABLE sessions ADD COLUMN name_key TEXT;
CREATE UNIQUE INDEX sessions_casefold_name ON sessions (name_key);
CREATE INDEX sessions_unfolded_name ON sessions (id) WHERE name_key IS NULL;
