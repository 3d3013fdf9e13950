-- 9: groups of sessions (session_groups), and the groups a client key is confined to
-- (api_keys.groups: a JSON list; NULL for a key that sees every session).
CREATE TABLE session_groups (
    session_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (session_id, name)
);
CREATE INDEX session_groups_by_name ON session_groups(name, session_id);
ALTER TABLE api_keys ADD COLUMN groups TEXT;
