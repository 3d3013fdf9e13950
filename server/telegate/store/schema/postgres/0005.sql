-- Schema version 5 (PostgreSQL): claims without a purpose skip scoped rests through an index, not row by row.

ALTER TABLE sessions ADD COLUMN rest_until DOUBLE PRECISION NOT NULL DEFAULT 0;

UPDATE sessions SET rest_until = COALESCE((SELECT MAX(until) FROM session_rests r
                                           WHERE r.session_id = sessions.id), 0);

CREATE INDEX sessions_plain_order ON sessions ((GREATEST(avail_at, rest_until)), id) WHERE disabled = 0;
