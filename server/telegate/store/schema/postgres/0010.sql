-- 10: ready clients. Leasing by kind (POST /session "kind"), and the handover grace between
-- hosts: the host that used each session last, and whether its account connects through a
-- proxy of its own (then Telegram always sees the proxy's address and it may move at once).
-- The waiting line keeps the kind and host a waiter asked with.
ALTER TABLE sessions ADD COLUMN last_host TEXT COLLATE "C";
ALTER TABLE sessions ADD COLUMN proxy_bound INTEGER NOT NULL DEFAULT 0;
ALTER TABLE waiters ADD COLUMN kind TEXT;
ALTER TABLE waiters ADD COLUMN host TEXT COLLATE "C";
