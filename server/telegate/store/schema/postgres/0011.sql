-- 11: an acquire and a release in one round trip (issue 19). Server-side functions doing what
-- the store's Python parts do on SQLite (_leases.py, _line.py, _counts.py), statement for
-- statement; the Python is the spec, and the predicates are _sql.py's with :now as p_now.
-- Each is called in one statement in autocommit (_pg_calls.py), so BEGIN and COMMIT cost no
-- round trip of their own. p_now: a test's fake clock, or NULL for the database's now().
-- Errors that roll the call back are raised with SQLSTATEs of class TG (TGKR1 a revoked key,
-- TGLL1 a key at its lease limit, TGNH1 another key's lease, TGLM1 another lease of its own);
-- the Python side turns them into the same exceptions with the same words.

-- A lease's name in the history (_history.lease_tag): a digest of its token. STABLE, as
-- convert_to is: a function declared more constant than its body is not inlined, and is then
-- parsed and planned again in every transaction that calls it (~25 us a call).
CREATE FUNCTION telegate_lease_tag(p_token text) RETURNS text
LANGUAGE sql STABLE STRICT AS $$
    SELECT left(encode(sha256(convert_to(p_token, 'UTF8')), 'hex'), 16)
$$;

-- A new lease token: 18 random bytes, URL-safe base64 (secrets.token_urlsafe(18)); 138 of
-- its bits come from gen_random_uuid's strong random source.
CREATE FUNCTION telegate_token() RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT translate(encode(substr(uuid_send(gen_random_uuid()), 1, 16)
                            || substr(uuid_send(gen_random_uuid()), 1, 2), 'base64'), '+/', '-_')
$$;

-- The two keys of a request's advisory lock (_postgres._turn_lock): its key's id, and the
-- first 32 bits of the MD5 of its request_id.
CREATE FUNCTION telegate_turn_key(p_request_id text) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT ('x' || substr(md5(p_request_id), 1, 8))::bit(32)::integer
$$;

CREATE FUNCTION telegate_lease_json(p_id bigint) RETURNS jsonb
LANGUAGE sql VOLATILE AS $$
    SELECT jsonb_build_object('id', id, 'name', name, 'lease_token', lease_token,
                              'lease_expires_at', lease_expires_at, 'kind', kind, 'meta', meta)
    FROM sessions WHERE id = p_id
$$;

-- What a caller that found nothing is told (_counts.unavailable), and how many sessions it
-- could lease now ("free", less those handed over to another host).
CREATE FUNCTION telegate_unavailable(p_now double precision, p_name text, p_purpose text, p_kind text,
                                     p_host text, p_grace double precision, p_account integer, p_groups text[])
RETURNS jsonb LANGUAGE plpgsql VOLATILE
-- Planned for its values (a count for one name reads that name's row, not the pool), whatever
-- the claim that calls it plans by.
SET plan_cache_mode = auto SET enable_sort = on SET enable_bitmapscan = on
AS $$
DECLARE
    c record;
    v_lease_end double precision;
    v_waiting bigint;
BEGIN
    SELECT COUNT(*) AS total,
           COALESCE(SUM(CASE WHEN disabled = 0 AND COALESCE(lease_expires_at, 0) > p_now THEN 1 ELSE 0 END), 0) AS in_use,
           COALESCE(SUM(CASE WHEN p_host IS NOT NULL AND free AND handing_over AND NOT resting THEN 1 ELSE 0 END), 0)
               AS handing_over,
           MIN(CASE WHEN p_host IS NOT NULL AND free AND handing_over THEN avail_at + p_grace END) AS handover_end,
           COALESCE(SUM(CASE WHEN flood OR (free AND resting) THEN 1 ELSE 0 END), 0) AS resting,
           COALESCE(SUM(CASE WHEN flood THEN 1 ELSE 0 END), 0) AS flood_waiting,
           MIN(CASE WHEN flood OR (free AND resting)
                    THEN GREATEST(COALESCE(flood_wait_until, 0), COALESCE(scoped_end, 0)) END) AS rest_end,
           MIN(CASE WHEN disabled = 0 AND COALESCE(lease_expires_at, 0) > p_now THEN lease_expires_at END) AS lease_end,
           COALESCE(SUM(CASE WHEN free AND NOT resting THEN 1 ELSE 0 END), 0) AS free
    INTO c
    FROM (SELECT s.*,
                 (disabled = 0 AND avail_at <= p_now AND COALESCE(lease_expires_at, 0) <= p_now
                  AND COALESCE(flood_wait_until, 0) <= p_now) AS free,
                 (disabled = 0 AND COALESCE(lease_expires_at, 0) <= p_now AND COALESCE(flood_wait_until, 0) > p_now)
                     AS flood,
                 (last_host IS NOT NULL AND last_host <> p_host AND proxy_bound = 0 AND avail_at > p_now - p_grace)
                     AS handing_over,
                 EXISTS (SELECT 1 FROM session_rests r WHERE r.session_id = s.id AND r.until > p_now
                           AND (p_purpose IS NULL OR r.scope = p_purpose)) AS resting,
                 (SELECT MAX(r.until) FROM session_rests r WHERE r.session_id = s.id AND r.until > p_now
                    AND (p_purpose IS NULL OR r.scope = p_purpose)) AS scoped_end
          FROM sessions s
          WHERE (p_name IS NULL OR s.name = p_name) AND (p_kind IS NULL OR s.kind = p_kind)
            AND (p_account = 0 OR s.has_account = 1)
            AND (p_groups IS NULL OR s.id IN (SELECT session_id FROM session_groups WHERE name = ANY (p_groups)))
         ) AS s;
    v_lease_end := c.lease_end;
    IF c.handover_end IS NOT NULL THEN
        v_lease_end := LEAST(COALESCE(v_lease_end, c.handover_end), c.handover_end);
    END IF;
    SELECT COUNT(*) INTO v_waiting FROM waiters WHERE session_id IS NULL AND deadline > p_now AND alive_until > p_now;
    RETURN jsonb_build_object('status', 'none', 'total', c.total, 'in_use', c.in_use + c.handing_over,
                              'resting', c.resting, 'flood_waiting', c.flood_waiting, 'rest_end', c.rest_end,
                              'lease_end', v_lease_end, 'waiting_workers', v_waiting,
                              'free', c.free - c.handing_over);
END $$;

-- A confined key's pick (_leases._front_pick, then its groups' members), the planner's choice
-- of plan: through the members (as costly as its groups are large) or down the index.
CREATE FUNCTION telegate_pick_confined(p_now double precision, p_purpose text, p_kind text, p_host text,
                                       p_grace double precision, p_account integer, p_groups text[])
RETURNS TABLE (id bigint, lease_token text, lease_key_id bigint, holder text)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = auto SET enable_sort = on SET enable_bitmapscan = on
AS $$
#variable_conflict use_column
BEGIN
    IF p_purpose IS NOT NULL THEN
        RETURN QUERY SELECT s.id, s.lease_token, s.lease_key_id, s.holder FROM sessions s
            WHERE s.id IN (SELECT f.id FROM sessions f
                           WHERE (p_kind IS NULL OR f.kind = p_kind)
                             AND (p_host IS NULL OR f.last_host IS NULL OR f.last_host = p_host
                                  OR f.proxy_bound = 1 OR f.avail_at <= p_now - p_grace)
                             AND (p_account = 0 OR f.has_account = 1)
                             AND f.disabled = 0 AND f.avail_at <= p_now AND COALESCE(f.lease_expires_at, 0) <= p_now
                             AND COALESCE(f.flood_wait_until, 0) <= p_now
                             AND NOT EXISTS (SELECT 1 FROM session_rests r WHERE r.session_id = f.id
                                               AND r.until > p_now AND r.scope = p_purpose)
                           ORDER BY f.avail_at, f.id LIMIT 64)
              AND (p_kind IS NULL OR s.kind = p_kind)
              AND (p_host IS NULL OR s.last_host IS NULL OR s.last_host = p_host OR s.proxy_bound = 1
                   OR s.avail_at <= p_now - p_grace)
              AND (p_account = 0 OR s.has_account = 1)
              AND s.disabled = 0 AND s.avail_at <= p_now AND COALESCE(s.lease_expires_at, 0) <= p_now
              AND COALESCE(s.flood_wait_until, 0) <= p_now
              AND NOT EXISTS (SELECT 1 FROM session_rests r WHERE r.session_id = s.id AND r.until > p_now
                                AND r.scope = p_purpose)
              AND EXISTS (SELECT 1 FROM session_groups g WHERE g.session_id = s.id AND g.name = ANY (p_groups))
            ORDER BY s.avail_at, s.id LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            RETURN;
        END IF;
        RETURN QUERY SELECT s.id, s.lease_token, s.lease_key_id, s.holder FROM sessions s
            WHERE (p_kind IS NULL OR s.kind = p_kind)
              AND (p_host IS NULL OR s.last_host IS NULL OR s.last_host = p_host OR s.proxy_bound = 1
                   OR s.avail_at <= p_now - p_grace)
              AND (p_account = 0 OR s.has_account = 1)
              AND s.disabled = 0 AND s.avail_at <= p_now AND COALESCE(s.lease_expires_at, 0) <= p_now
              AND COALESCE(s.flood_wait_until, 0) <= p_now
              AND NOT EXISTS (SELECT 1 FROM session_rests r WHERE r.session_id = s.id AND r.until > p_now
                                AND r.scope = p_purpose)
              AND s.id IN (SELECT g.session_id FROM session_groups g WHERE g.name = ANY (p_groups))
            ORDER BY s.avail_at, s.id LIMIT 1 FOR UPDATE SKIP LOCKED;
        RETURN;
    END IF;
    RETURN QUERY SELECT s.id, s.lease_token, s.lease_key_id, s.holder FROM sessions s
        WHERE s.id IN (SELECT f.id FROM sessions f
                       WHERE (p_kind IS NULL OR f.kind = p_kind)
                         AND (p_host IS NULL OR f.last_host IS NULL OR f.last_host = p_host
                              OR f.proxy_bound = 1 OR f.avail_at <= p_now - p_grace)
                         AND (p_account = 0 OR f.has_account = 1)
                         AND f.disabled = 0 AND f.avail_at <= p_now AND COALESCE(f.lease_expires_at, 0) <= p_now
                         AND COALESCE(f.flood_wait_until, 0) <= p_now
                         AND GREATEST(f.avail_at, f.rest_until) <= p_now
                       ORDER BY GREATEST(f.avail_at, f.rest_until), f.id LIMIT 64)
          AND (p_kind IS NULL OR s.kind = p_kind)
          AND (p_host IS NULL OR s.last_host IS NULL OR s.last_host = p_host OR s.proxy_bound = 1
               OR s.avail_at <= p_now - p_grace)
          AND (p_account = 0 OR s.has_account = 1)
          AND s.disabled = 0 AND s.avail_at <= p_now AND COALESCE(s.lease_expires_at, 0) <= p_now
          AND COALESCE(s.flood_wait_until, 0) <= p_now
          AND GREATEST(s.avail_at, s.rest_until) <= p_now
          AND EXISTS (SELECT 1 FROM session_groups g WHERE g.session_id = s.id AND g.name = ANY (p_groups))
        ORDER BY GREATEST(s.avail_at, s.rest_until), s.id LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT s.id, s.lease_token, s.lease_key_id, s.holder FROM sessions s
        WHERE (p_kind IS NULL OR s.kind = p_kind)
          AND (p_host IS NULL OR s.last_host IS NULL OR s.last_host = p_host OR s.proxy_bound = 1
               OR s.avail_at <= p_now - p_grace)
          AND (p_account = 0 OR s.has_account = 1)
          AND s.disabled = 0 AND s.avail_at <= p_now AND COALESCE(s.lease_expires_at, 0) <= p_now
          AND COALESCE(s.flood_wait_until, 0) <= p_now
          AND GREATEST(s.avail_at, s.rest_until) <= p_now
          AND s.id IN (SELECT g.session_id FROM session_groups g WHERE g.name = ANY (p_groups))
        ORDER BY GREATEST(s.avail_at, s.rest_until), s.id LIMIT 1 FOR UPDATE SKIP LOCKED;
END $$;

-- The pick of a claim (_leases.claim): the least recently used free session that fits, its row
-- locked (SKIP LOCKED: rows other transactions hold are passed by), by name, for a purpose
-- (down the index on (avail_at, id)), or without one (down the index on
-- (GREATEST(avail_at, rest_until), id), past every scoped rest); a confined key's, above.
-- Planned once per connection, down the index: a plan made again at every call costs more than
-- the pick, and a bitmap scan or a sort of the free rows reads every index entry that claims and
-- releases leave dead until a vacuum, where the walk down the index marks them and skips them.
CREATE FUNCTION telegate_pick(p_now double precision, p_name text, p_purpose text, p_kind text, p_host text,
                              p_grace double precision, p_account integer, p_groups text[])
RETURNS TABLE (id bigint, lease_token text, lease_key_id bigint, holder text)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan SET enable_sort = off SET enable_bitmapscan = off
AS $$
#variable_conflict use_column
BEGIN
    IF p_name IS NOT NULL THEN
        RETURN QUERY SELECT s.id, s.lease_token, s.lease_key_id, s.holder FROM sessions s
            WHERE s.name = p_name AND (p_kind IS NULL OR s.kind = p_kind)
              AND (p_host IS NULL OR s.last_host IS NULL OR s.last_host = p_host OR s.proxy_bound = 1
                   OR s.avail_at <= p_now - p_grace)
              AND (p_account = 0 OR s.has_account = 1)
              AND s.disabled = 0 AND s.avail_at <= p_now AND COALESCE(s.lease_expires_at, 0) <= p_now
              AND COALESCE(s.flood_wait_until, 0) <= p_now
              AND CASE WHEN p_purpose IS NOT NULL
                       THEN NOT EXISTS (SELECT 1 FROM session_rests r WHERE r.session_id = s.id AND r.until > p_now
                                          AND r.scope = p_purpose)
                       ELSE GREATEST(s.avail_at, s.rest_until) <= p_now END
              AND (p_groups IS NULL OR EXISTS (SELECT 1 FROM session_groups g WHERE g.session_id = s.id
                                                 AND g.name = ANY (p_groups)))
            LIMIT 1 FOR UPDATE SKIP LOCKED;
        RETURN;
    END IF;
    IF p_groups IS NOT NULL THEN
        RETURN QUERY SELECT * FROM telegate_pick_confined(p_now, p_purpose, p_kind, p_host, p_grace, p_account,
                                                          p_groups);
        RETURN;
    END IF;
    IF p_purpose IS NOT NULL THEN
        RETURN QUERY SELECT s.id, s.lease_token, s.lease_key_id, s.holder FROM sessions s
            WHERE (p_kind IS NULL OR s.kind = p_kind)
              AND (p_host IS NULL OR s.last_host IS NULL OR s.last_host = p_host OR s.proxy_bound = 1
                   OR s.avail_at <= p_now - p_grace)
              AND (p_account = 0 OR s.has_account = 1)
              AND s.disabled = 0 AND s.avail_at <= p_now AND COALESCE(s.lease_expires_at, 0) <= p_now
              AND COALESCE(s.flood_wait_until, 0) <= p_now
              AND NOT EXISTS (SELECT 1 FROM session_rests r WHERE r.session_id = s.id AND r.until > p_now
                                AND r.scope = p_purpose)
            ORDER BY s.avail_at, s.id LIMIT 1 FOR UPDATE SKIP LOCKED;
        RETURN;
    END IF;
    RETURN QUERY SELECT s.id, s.lease_token, s.lease_key_id, s.holder FROM sessions s
        WHERE (p_kind IS NULL OR s.kind = p_kind)
          AND (p_host IS NULL OR s.last_host IS NULL OR s.last_host = p_host OR s.proxy_bound = 1
               OR s.avail_at <= p_now - p_grace)
          AND (p_account = 0 OR s.has_account = 1)
          AND s.disabled = 0 AND s.avail_at <= p_now AND COALESCE(s.lease_expires_at, 0) <= p_now
          AND COALESCE(s.flood_wait_until, 0) <= p_now
          AND GREATEST(s.avail_at, s.rest_until) <= p_now
        ORDER BY GREATEST(s.avail_at, s.rest_until), s.id LIMIT 1 FOR UPDATE SKIP LOCKED;
END $$;

-- One claim (_leases.claim): {"status": "lease", "lease": ...}, or "none" with the counts
-- (_counts.unavailable), "revoked" (the key's row says so), or "limit" with "limit" and "held".
-- p_key_name is NULL for an internal caller (no key); p_lock_key: the key has a lease limit,
-- so its row is locked and its claims count in turn.
CREATE FUNCTION telegate_claim(p_now double precision, p_ttl double precision, p_holder text, p_name text,
                               p_key_id bigint, p_key_name text, p_lock_key boolean, p_request_id text,
                               p_purpose text, p_kind text, p_host text, p_grace double precision,
                               p_account integer, p_groups text[])
RETURNS jsonb LANGUAGE plpgsql VOLATILE
-- Planned once per connection; the request_id and the key's leases looked up in their index
-- (a bitmap scan would read its entries left dead until a vacuum, every time), and the pick
-- run here planned as telegate_pick's.
SET plan_cache_mode = force_generic_plan SET enable_sort = off SET enable_bitmapscan = off
AS $$
DECLARE
    v_key record;
    v_limit bigint;
    v_held bigint;
    v_again bigint;
    v_pick record;
    v_refused jsonb;
    v_picks integer := 1;
    v_token text;
    v_expired_key text;
    v_detail jsonb;
    v_lease jsonb;
BEGIN
    IF p_key_name IS NOT NULL THEN
        -- The key was authenticated in an earlier read: a revocation that committed since
        -- must not be outrun by a lease it would never end.
        IF p_lock_key THEN
            SELECT revoked_at, max_leases, NULL::bigint AS again INTO v_key FROM api_keys WHERE id = p_key_id
            FOR UPDATE;
        ELSE
            -- With the request's lease (below), if a try of it got one: one statement, not two,
            -- read after the request's turn was taken as the lookup below is.
            SELECT revoked_at, max_leases,
                   CASE WHEN p_request_id IS NOT NULL THEN
                       (SELECT s.id FROM sessions s WHERE s.lease_key_id = p_key_id AND s.request_id = p_request_id
                          AND s.lease_expires_at > p_now AND s.disabled = 0 LIMIT 1) END AS again
            INTO v_key FROM api_keys WHERE id = p_key_id;
        END IF;
        IF NOT FOUND OR v_key.revoked_at IS NOT NULL THEN
            RETURN jsonb_build_object('status', 'revoked');
        END IF;
        v_limit := v_key.max_leases;
    END IF;
    IF p_request_id IS NOT NULL AND p_key_id IS NOT NULL THEN
        IF p_key_name IS NOT NULL AND NOT p_lock_key THEN
            v_again := v_key.again;
        ELSE
            SELECT id INTO v_again FROM sessions
            WHERE lease_key_id = p_key_id AND request_id = p_request_id AND lease_expires_at > p_now
              AND disabled = 0;
        END IF;
        IF v_again IS NOT NULL THEN
            RETURN jsonb_build_object('status', 'lease', 'lease', telegate_lease_json(v_again));
        END IF;
    END IF;
    IF p_key_name IS NOT NULL AND v_limit IS NOT NULL THEN
        SELECT COUNT(*) INTO v_held FROM sessions
        WHERE lease_key_id = p_key_id AND lease_expires_at > p_now AND disabled = 0;
        IF v_held >= v_limit THEN
            RETURN jsonb_build_object('status', 'limit', 'limit', v_limit, 'held', v_held);
        END IF;
    END IF;
    IF p_name IS NULL AND p_purpose IS NULL AND p_groups IS NULL THEN
        -- The commonest pick, telegate_pick's last, run here: calling a set-returning
        -- function costs more than its query.
        SELECT s.id, s.lease_token, s.lease_key_id, s.holder INTO v_pick FROM sessions s
        WHERE (p_kind IS NULL OR s.kind = p_kind)
          AND (p_host IS NULL OR s.last_host IS NULL OR s.last_host = p_host OR s.proxy_bound = 1
               OR s.avail_at <= p_now - p_grace)
          AND (p_account = 0 OR s.has_account = 1)
          AND s.disabled = 0 AND s.avail_at <= p_now AND COALESCE(s.lease_expires_at, 0) <= p_now
          AND COALESCE(s.flood_wait_until, 0) <= p_now
          AND GREATEST(s.avail_at, s.rest_until) <= p_now
        ORDER BY GREATEST(s.avail_at, s.rest_until), s.id LIMIT 1 FOR UPDATE SKIP LOCKED;
    ELSE
        SELECT * INTO v_pick FROM telegate_pick(p_now, p_name, p_purpose, p_kind, p_host, p_grace, p_account,
                                                p_groups);
    END IF;
    WHILE v_pick.id IS NULL LOOP
        -- Counted in this transaction; a free session the pick passed over (locked by a
        -- release about to land) is picked again, once (see _leases.claim).
        v_refused := telegate_unavailable(p_now, p_name, p_purpose, p_kind, p_host, p_grace, p_account, p_groups);
        IF (v_refused->>'free')::bigint <= 0 THEN
            RETURN v_refused;
        END IF;
        IF v_picks > 1 THEN
            RETURN jsonb_set(v_refused, '{in_use}',
                             to_jsonb((v_refused->>'in_use')::bigint + (v_refused->>'free')::bigint));
        END IF;
        SELECT * INTO v_pick FROM telegate_pick(p_now, p_name, p_purpose, p_kind, p_host, p_grace, p_account, p_groups);
        v_picks := v_picks + 1;
    END LOOP;
    v_token := telegate_token();
    IF v_pick.lease_token IS NOT NULL THEN
        SELECT name INTO v_expired_key FROM api_keys WHERE id = v_pick.lease_key_id;
        INSERT INTO session_events (session_id, at, type, key_name, holder, detail)
        VALUES (v_pick.id, p_now, 'expired', v_expired_key, v_pick.holder,
                jsonb_build_object('lease', telegate_lease_tag(v_pick.lease_token))::text);
    END IF;
    v_detail := jsonb_build_object('ttl', p_ttl, 'lease', telegate_lease_tag(v_token));
    IF p_purpose IS NOT NULL THEN
        v_detail := v_detail || jsonb_build_object('purpose', p_purpose);
    END IF;
    IF p_account <> 0 THEN
        v_detail := v_detail || jsonb_build_object('account', true);
    END IF;
    UPDATE sessions
    SET lease_token = v_token, lease_expires_at = p_now + p_ttl, avail_at = p_now + p_ttl,
        leased_at = p_now, holder = p_holder, lease_key_id = p_key_id, request_id = p_request_id,
        last_host = p_host, use_count = use_count + 1,
        expired_count = expired_count + CASE WHEN lease_token IS NULL THEN 0 ELSE 1 END
    WHERE id = v_pick.id
    RETURNING jsonb_build_object('id', id, 'name', name, 'lease_token', lease_token,
                                 'lease_expires_at', lease_expires_at, 'kind', kind, 'meta', meta) INTO v_lease;
    INSERT INTO session_events (session_id, at, type, key_name, holder, detail)
    VALUES (v_pick.id, p_now, 'lease', p_key_name, p_holder, v_detail::text);
    RETURN jsonb_build_object('status', 'lease', 'lease', v_lease);
END $$;

-- The waiting line served (_line.serve_line with _leases._claim_for_waiter): free sessions go to
-- waiting tickets in max-min fair order between keys, each through telegate_claim; the grants
-- (a JSON array of {"ticket", "owner", "session_id", "lease"}), announced to every server.
CREATE FUNCTION telegate_serve_line(p_now double precision, p_grace double precision)
RETURNS jsonb LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_left bigint;
    v_grants jsonb := '[]'::jsonb;
    v_no_fit text[] := '{}';
    v_stuck bigint[] := '{}';
    v_seen bigint[] := '{}';
    v_turn bigint := 0;
    v_after bigint := 0;
    v_page integer;
    v_fit text;
    w record;
    v_kid bigint;
    v_kname text;
    v_kscope text;
    v_klimit bigint;
    v_kgroups text;
    v_groups text[];
    v_out jsonb;
    v_lease jsonb;
    v_twin record;
BEGIN
    PERFORM 1 FROM waiters WHERE session_id IS NULL AND deadline > p_now AND alive_until > p_now LIMIT 1;
    IF NOT FOUND THEN
        RETURN v_grants;
    END IF;
    SELECT COUNT(*) INTO v_left FROM (SELECT id FROM sessions WHERE disabled = 0 AND avail_at <= p_now LIMIT 64) AS f;
    <<pass>>
    WHILE v_left > 0 LOOP
        v_page := 0;
        FOR w IN
            WITH q AS (SELECT id, owner, ttl, holder, name, key_id, purpose, request_id, account, kind, host,
                              ROW_NUMBER() OVER (PARTITION BY key_id ORDER BY id) AS place
                       FROM waiters WHERE session_id IS NULL AND deadline > p_now AND alive_until > p_now),
                 held AS (SELECT lease_key_id AS key_id, COUNT(*) AS n FROM sessions
                          WHERE lease_key_id IN (SELECT key_id FROM q) AND lease_expires_at > p_now AND disabled = 0
                          GROUP BY lease_key_id)
            SELECT * FROM (SELECT q.*, q.place + COALESCE(held.n, 0) AS turn
                           FROM q LEFT JOIN held ON held.key_id = q.key_id
                           WHERE q.name IS NULL OR EXISTS (SELECT 1 FROM sessions s WHERE s.name = q.name
                                                           AND s.disabled = 0 AND s.avail_at <= p_now)) AS t
            WHERE t.turn > v_turn OR (t.turn = v_turn AND t.id > v_after)
            ORDER BY t.turn, t.id LIMIT 64
        LOOP
            v_page := v_page + 1;
            EXIT pass WHEN v_left <= 0;
            v_turn := w.turn;
            v_after := w.id;
            v_fit := jsonb_build_array(w.name, w.purpose, w.account, w.kind, w.host)::text;
            CONTINUE WHEN w.id = ANY (v_seen) OR w.key_id = ANY (v_stuck) OR v_fit = ANY (v_no_fit);
            v_seen := v_seen || w.id;
            -- A ticket whose request is leaving the line (or that another transaction serves) is passed over.
            PERFORM 1 FROM waiters WHERE id = w.id AND session_id IS NULL FOR UPDATE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;
            v_groups := NULL;
            v_kid := NULL;
            v_kname := NULL;
            v_klimit := NULL;
            IF w.key_id IS NOT NULL THEN
                SELECT id, name, scope, max_leases, groups INTO v_kid, v_kname, v_kscope, v_klimit, v_kgroups
                FROM api_keys WHERE id = w.key_id AND revoked_at IS NULL;
                IF NOT FOUND THEN  -- revoked while waiting: nothing for it
                    v_stuck := v_stuck || w.key_id;
                    CONTINUE;
                END IF;
                IF w.request_id IS NOT NULL AND NOT pg_try_advisory_xact_lock(
                        (v_kid & 2147483647)::integer, telegate_turn_key(w.request_id)) THEN
                    CONTINUE;  -- a retry of its request is being served right now: that one gets the lease
                END IF;
                IF v_kscope <> 'admin' AND v_kgroups IS NOT NULL THEN
                    v_groups := ARRAY(SELECT jsonb_array_elements_text(v_kgroups::jsonb));
                    IF cardinality(v_groups) = 0 THEN
                        v_groups := NULL;
                    END IF;
                END IF;
            END IF;
            v_out := telegate_claim(p_now, w.ttl, w.holder, w.name, v_kid, v_kname, v_klimit IS NOT NULL,
                                    w.request_id, w.purpose, w.kind, w.host, p_grace, w.account, v_groups);
            IF v_out->>'status' = 'none' THEN
                v_no_fit := v_no_fit || v_fit;
                CONTINUE;
            ELSIF v_out->>'status' <> 'lease' THEN  -- its key may take no more leases now
                v_stuck := v_stuck || w.key_id;
                CONTINUE;
            END IF;
            v_left := v_left - 1;
            v_lease := v_out->'lease';
            UPDATE waiters SET session_id = (v_lease->>'id')::bigint, lease_token = v_lease->>'lease_token',
                               granted_at = p_now
            WHERE id = w.id;
            v_grants := v_grants || jsonb_build_object('ticket', w.id, 'owner', w.owner, 'lease', v_lease);
            IF w.request_id IS NOT NULL AND w.key_id IS NOT NULL THEN
                -- Other tries of the same request waiting beside it: the one lease answers them all.
                FOR v_twin IN
                    UPDATE waiters SET session_id = (v_lease->>'id')::bigint, lease_token = v_lease->>'lease_token',
                                       granted_at = p_now
                    WHERE id IN (SELECT id FROM waiters WHERE key_id = w.key_id AND request_id = w.request_id
                                   AND session_id IS NULL AND id <> w.id FOR UPDATE SKIP LOCKED)
                    RETURNING id, owner
                LOOP
                    v_grants := v_grants || jsonb_build_object('ticket', v_twin.id, 'owner', v_twin.owner,
                                                               'lease', v_lease);
                END LOOP;
            END IF;
        END LOOP;
        EXIT WHEN v_page < 64;
    END LOOP;
    IF jsonb_array_length(v_grants) > 0 THEN
        PERFORM pg_notify('telegate_line', '');
    END IF;
    RETURN v_grants;
END $$;

-- When the next session frees up by time alone (_line.next_free_at).
CREATE FUNCTION telegate_next_free_at(p_now double precision, p_grace double precision)
RETURNS double precision LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_at double precision;
    v_handover double precision;
BEGIN
    SELECT MIN(avail_at) INTO v_at FROM sessions WHERE disabled = 0 AND avail_at > p_now;
    IF p_grace > 0 THEN
        SELECT MIN(avail_at) INTO v_handover FROM sessions WHERE disabled = 0 AND last_host IS NOT NULL
            AND proxy_bound = 0 AND avail_at <= p_now AND avail_at > p_now - p_grace;
        IF v_handover IS NOT NULL THEN
            v_at := LEAST(COALESCE(v_at, v_handover + p_grace), v_handover + p_grace);
        END IF;
    END IF;
    RETURN v_at;
END $$;

-- A ticket at the end of the line (_line.enqueue): its id, or NULL with p_waiting set when the
-- key parks p_cap polls already.
CREATE FUNCTION telegate_enqueue(p_now double precision, p_owner text, p_ttl double precision,
                                 p_wait double precision, p_holder text, p_name text, p_key_id bigint,
                                 p_purpose text, p_request_id text, p_cap bigint, p_keep bigint, p_account integer,
                                 p_kind text, p_host text, OUT ticket bigint, OUT waiting bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_edge bigint;
BEGIN
    DELETE FROM waiters WHERE deadline < p_now - 120 OR granted_at < p_now - 120;
    IF p_cap IS NOT NULL AND p_key_id IS NOT NULL THEN
        SELECT COUNT(*) INTO waiting FROM waiters
        WHERE key_id = p_key_id AND session_id IS NULL AND deadline > p_now AND alive_until > p_now;
        IF waiting >= p_cap THEN
            RETURN;
        END IF;
    END IF;
    IF p_request_id IS NOT NULL AND p_key_id IS NOT NULL THEN
        UPDATE waiters SET owner = p_owner, ttl = p_ttl, holder = p_holder, name = p_name, purpose = p_purpose,
                           account = p_account, kind = p_kind, host = p_host, deadline = p_now + p_wait,
                           alive_until = p_now + 10.0
        WHERE id = (SELECT id FROM waiters WHERE key_id = p_key_id AND request_id = p_request_id
                      AND session_id IS NULL AND (deadline <= p_now OR alive_until <= p_now)
                    ORDER BY id LIMIT 1)
        RETURNING id INTO ticket;
        IF ticket IS NOT NULL THEN
            RETURN;
        END IF;
    END IF;
    IF p_key_id IS NOT NULL THEN
        SELECT id INTO v_edge FROM waiters WHERE key_id = p_key_id AND session_id IS NULL
          AND (deadline <= p_now OR alive_until <= p_now)
        ORDER BY id DESC LIMIT 1 OFFSET GREATEST(0, p_keep - 1);
        IF v_edge IS NOT NULL THEN
            DELETE FROM waiters WHERE key_id = p_key_id AND session_id IS NULL AND id <= v_edge
              AND (deadline <= p_now OR alive_until <= p_now);
        END IF;
    END IF;
    INSERT INTO waiters (owner, ttl, holder, name, key_id, purpose, request_id, created_at, deadline, alive_until,
                         account, kind, host)
    VALUES (p_owner, p_ttl, p_holder, p_name, p_key_id, p_purpose, p_request_id, p_now, p_now + p_wait,
            p_now + 10.0, p_account, p_kind, p_host)
    RETURNING id INTO ticket;
END $$;

-- POST /session in one call (Store.acquire): the request's turn, the line served first, the
-- claim, the account's sealed row when asked for, and a ticket in line when nothing is left
-- and the caller may wait (p_wait > 0 with p_owner). Answers {"status": "lease" | "ticket" |
-- "none" | "limit" | "wait_limit", ..., "grants": [...], "now": ...}; raises TGKR1 and TGLL1.
CREATE FUNCTION telegate_acquire(p_now double precision, p_ttl double precision, p_holder text, p_name text,
                                 p_key_id bigint, p_key_name text, p_lock_key boolean, p_request_id text,
                                 p_purpose text, p_kind text, p_host text, p_grace double precision,
                                 p_account integer, p_groups text[], p_wait double precision, p_owner text,
                                 p_cap bigint, p_keep bigint)
RETURNS jsonb LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_now double precision := COALESCE(p_now, EXTRACT(EPOCH FROM now())::double precision);
    v_grants jsonb;
    v_out jsonb;
    v_sealed jsonb;
    v_queued record;
BEGIN
    IF p_request_id IS NOT NULL AND p_key_id IS NOT NULL AND p_key_name IS NOT NULL THEN
        -- The request's turn first: a retry arriving while the first try is being served
        -- waits for it, then finds its lease.
        PERFORM pg_advisory_xact_lock((p_key_id & 2147483647)::integer, telegate_turn_key(p_request_id));
    END IF;
    v_grants := telegate_serve_line(v_now, p_grace);
    v_out := telegate_claim(v_now, p_ttl, p_holder, p_name, p_key_id, p_key_name, p_lock_key, p_request_id,
                            p_purpose, p_kind, p_host, p_grace, p_account, p_groups);
    IF v_out->>'status' = 'revoked' THEN
        RAISE EXCEPTION 'API key was revoked' USING ERRCODE = 'TGKR1';
    END IF;
    IF v_out->>'status' = 'limit' AND NOT (p_wait > 0 AND p_owner IS NOT NULL) THEN
        RAISE EXCEPTION 'key at its lease limit' USING ERRCODE = 'TGLL1', DETAIL = v_out::text;
    END IF;
    IF v_out->>'status' = 'lease' THEN
        IF p_account <> 0 THEN
            SELECT to_jsonb(a) INTO v_sealed FROM (
                SELECT session_id, master_key_id, wrapped_key, sealed, state, revision FROM accounts
                WHERE session_id = (v_out->'lease'->>'id')::bigint) AS a;
            v_out := v_out || jsonb_build_object('sealed', v_sealed);
        END IF;
    ELSIF p_wait > 0 AND p_owner IS NOT NULL AND (v_out->>'status' = 'limit' OR (v_out->>'total')::bigint > 0)
            AND EXISTS (SELECT 1 FROM sessions WHERE disabled = 0 AND (p_name IS NULL OR name = p_name)) THEN
        -- Only a request something can free up for parks.
        SELECT * INTO v_queued FROM telegate_enqueue(v_now, p_owner, p_ttl, p_wait, p_holder, p_name, p_key_id,
                                                     p_purpose, p_request_id, p_cap, p_keep, p_account, p_kind, p_host);
        IF v_queued.ticket IS NULL THEN
            v_out := jsonb_build_object('status', 'wait_limit', 'limit', p_cap, 'waiting', v_queued.waiting);
        ELSE
            v_out := jsonb_build_object('status', 'ticket', 'ticket', v_queued.ticket,
                                        'next_free_at', telegate_next_free_at(v_now, p_grace));
        END IF;
    END IF;
    RETURN v_out || jsonb_build_object('grants', v_grants, 'now', v_now);
END $$;

-- DELETE /session in one call (Store.release without a write-back): who may end the lease
-- (_leases.holder_check, released_before), the release and its event, the rests, the
-- PEER_FLOOD mark, the disable, the client's reports, then the line served. Answers
-- {"ended": bool, "grants": [...], "now": ...}; raises TGNH1 and TGLM1.
CREATE FUNCTION telegate_release(p_now double precision, p_session_id bigint, p_token text, p_key_id bigint,
                                 p_key_name text, p_admin boolean, p_groups text[], p_flood_wait double precision,
                                 p_scope text, p_disable text, p_peer_flood boolean, p_grace double precision)
RETURNS jsonb LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_now double precision := COALESCE(p_now, EXTRACT(EPOCH FROM now())::double precision);
    v_has_key boolean := p_key_name IS NOT NULL;
    r record;
    v_live boolean;
    v_privileged boolean;
    v_owner boolean;
    v_ok boolean := false;
    v_tag text;
    v_who text;
    v_fw double precision;
    v_detail jsonb;
BEGIN
    SELECT id, disabled, lease_token, lease_expires_at, lease_key_id, holder INTO r
    FROM sessions WHERE id = p_session_id FOR UPDATE;
    IF NOT FOUND OR r.lease_token IS NULL THEN
        RETURN jsonb_build_object('ended', false, 'grants', '[]'::jsonb, 'now', v_now);
    END IF;
    -- To a key confined to groups, a session outside them that it does not hold is unknown.
    -- (Conditions holding a query are kept apart from the plain ones, here and below, so that
    -- the usual release runs no query for them.)
    IF v_has_key AND r.lease_key_id IS DISTINCT FROM p_key_id AND p_groups IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM session_groups g WHERE g.session_id = p_session_id
                         AND g.name = ANY (p_groups)) THEN
            RETURN jsonb_build_object('ended', false, 'grants', '[]'::jsonb, 'now', v_now);
        END IF;
    END IF;
    v_live := COALESCE(r.lease_expires_at, 0) > v_now;
    v_privileged := NOT v_has_key OR p_admin;
    v_owner := v_has_key AND r.lease_key_id IS NOT DISTINCT FROM p_key_id;
    IF p_token IS NOT NULL AND r.lease_token = p_token AND (v_privileged OR v_owner OR r.lease_key_id IS NULL) THEN
        v_ok := true;
    ELSIF NOT v_live THEN
        RETURN jsonb_build_object('ended', false, 'grants', '[]'::jsonb, 'now', v_now);
    ELSIF p_token IS NOT NULL AND v_has_key AND EXISTS (
            SELECT 1 FROM (SELECT type, key_name, detail FROM session_events WHERE session_id = p_session_id
                           ORDER BY id DESC LIMIT 1000) AS latest
            WHERE type = 'release' AND key_name = p_key_name
              AND detail LIKE '%' || telegate_lease_tag(p_token) || '%'
              AND detail::jsonb = jsonb_build_object('lease', telegate_lease_tag(p_token), 'with_token', true)) THEN
        -- A retry of a release that landed, its answer lost: nothing more to do.
        RETURN jsonb_build_object('ended', false, 'grants', '[]'::jsonb, 'now', v_now);
    ELSIF NOT v_privileged AND NOT v_owner THEN
        RAISE EXCEPTION 'another key holds the lease' USING ERRCODE = 'TGNH1';
    ELSIF p_token IS NOT NULL THEN
        RAISE EXCEPTION 'not the current lease' USING ERRCODE = 'TGLM1';
    END IF;
    IF v_has_key THEN
        v_who := p_key_name;
    ELSE
        SELECT name INTO v_who FROM api_keys WHERE id = r.lease_key_id;
    END IF;
    v_fw := CASE WHEN p_flood_wait IS NOT NULL AND p_scope IS NULL THEN p_flood_wait ELSE 0 END;
    UPDATE sessions
    SET lease_token = NULL, lease_expires_at = NULL, holder = NULL, lease_key_id = NULL,
        request_id = NULL, last_released_at = v_now,
        flood_wait_until = CASE WHEN v_fw > 0 THEN GREATEST(COALESCE(flood_wait_until, 0), v_now + v_fw)
                                ELSE flood_wait_until END,
        flood_count = flood_count + CASE WHEN COALESCE(p_flood_wait, 0) > 0 THEN 1 ELSE 0 END,
        disabled = CASE WHEN p_disable IS NOT NULL AND p_disable <> '' THEN 1 ELSE disabled END,
        disabled_reason = CASE WHEN p_disable IS NOT NULL AND p_disable <> '' THEN p_disable ELSE disabled_reason END,
        avail_at = GREATEST(v_now, COALESCE(flood_wait_until, 0), CASE WHEN v_fw > 0 THEN v_now + v_fw ELSE 0 END),
        rest_until = GREATEST(rest_until, CASE WHEN p_scope IS NOT NULL AND COALESCE(p_flood_wait, 0) <> 0
                                               THEN v_now + p_flood_wait ELSE 0 END)
    WHERE id = p_session_id;
    v_detail := jsonb_build_object('lease', telegate_lease_tag(r.lease_token));
    IF p_token IS NOT NULL THEN
        v_detail := v_detail || jsonb_build_object('with_token', true);
    END IF;
    INSERT INTO session_events (session_id, at, type, key_name, holder, detail)
    VALUES (p_session_id, v_now, 'release', v_who, r.holder, v_detail::text);
    IF p_scope IS NOT NULL AND COALESCE(p_flood_wait, 0) <> 0 THEN
        DELETE FROM session_rests WHERE session_id = p_session_id AND until <= v_now;
        INSERT INTO session_rests (session_id, scope, until) VALUES (p_session_id, p_scope, v_now + p_flood_wait)
        ON CONFLICT (session_id, scope) DO UPDATE SET until = GREATEST(session_rests.until, excluded.until);
    END IF;
    IF COALESCE(p_flood_wait, 0) <> 0 THEN
        v_detail := jsonb_build_object('seconds', p_flood_wait, 'scope', p_scope);
        IF p_peer_flood THEN
            v_detail := v_detail || jsonb_build_object('peer_flood', true);
        END IF;
        INSERT INTO session_events (session_id, at, type, key_name, holder, detail)
        VALUES (p_session_id, v_now, 'flood_wait', v_who, r.holder, v_detail::text);
    END IF;
    IF p_disable IS NOT NULL AND p_disable <> '' THEN
        INSERT INTO session_events (session_id, at, type, key_name, holder, detail)
        VALUES (p_session_id, v_now, 'disable', v_who, r.holder, jsonb_build_object('reason', p_disable)::text);
    END IF;
    IF v_has_key AND p_key_id IS NOT NULL THEN
        IF p_disable IS NOT NULL AND p_disable <> '' THEN
            INSERT INTO client_reports (key_id, key_name, session_id, at, kind)
            VALUES (p_key_id, p_key_name, p_session_id, v_now, 'disable');
        END IF;
        IF COALESCE(p_flood_wait, 0) <> 0 THEN
            INSERT INTO client_reports (key_id, key_name, session_id, at, kind, scope, until)
            VALUES (p_key_id, p_key_name, p_session_id, v_now, 'rest', p_scope, v_now + p_flood_wait);
        END IF;
    END IF;
    -- The freed session goes to the longest waiter.
    RETURN jsonb_build_object('ended', true, 'grants', telegate_serve_line(v_now, p_grace), 'now', v_now);
END $$;
