-- 6: session names unique regardless of case (_namekeys.py fills name_key in Python when a
-- store opens). Byte order ("C"), like the name column, whose UNIQUE constraint owns the
-- index name sessions_name_key.
ALTER TABLE sessions ADD COLUMN name_key TEXT COLLATE "C";
CREATE UNIQUE INDEX sessions_casefold_name ON sessions (name_key);
CREATE INDEX sessions_unfolded_name ON sessions (id) WHERE name_key IS NULL;
