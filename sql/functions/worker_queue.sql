-- Worker queue: enqueue, fetch, ack, abandon and lease renewal of activity
-- executions. Each row carries its own lease (lock_token, locked_until_ms).
--
-- Guarantees
-- * Lock order: a worker_queue row first, then its `sessions` row. Session
--   heartbeats and cleanup lock only `sessions` rows.
-- * Fetch never waits on another fetcher (FOR UPDATE SKIP LOCKED) and keeps
--   looking when it loses a session claim; it returns nothing only when no
--   item it may take is ready.
-- * Leases come from now_ms() after the row lock is held: never returned
--   already expired, never revived, never shortened by a renewal. Volatile
--   values (now_ms(), tokens) are read into variables before an UPDATE or
--   DELETE uses them (see orchestrator_queue.sql's header: Citus).
-- * An ack deletes the row only if its lease was live when the ack arrived
--   (request_ms(), see common.sql) and was not taken over meanwhile; a lost
--   or expired lease fails the ack (DX001/DX002) and commits nothing, which
--   is how the runtime learns an activity was cancelled or taken over.
-- * Tokens name their item (common.sql): acks, renewals and abandons find
--   the row by id; no index on a column a lease changes (HOT updates).
-- * Writers serialize with the deletion of the item's instance on its lease
--   row (see orchestrator_queue.sql): enqueue_worker, and ack_work_item for
--   the instance its completion goes to, hold it FOR KEY SHARE before
--   touching any queue row, so a deletion either removes what they wrote
--   or happens first (then an ack finds its item gone and fails).

-- Enqueue one item, visible now. Idempotent per p_request_id (see
-- first_request in common.sql): a retry of a call whose first attempt
-- committed inserts nothing. p_announce: a notification to send in this
-- transaction (NULL: none), see orchestrator_queue.sql's header.
CREATE FUNCTION __SCHEMA__.enqueue_worker(
    p_work_item TEXT,
    p_instance_id TEXT,
    p_execution_id BIGINT,
    p_activity_id BIGINT,
    p_session_id TEXT,
    p_tag TEXT,
    p_request_id UUID,
    p_announce TEXT
) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    v_now BIGINT := __SCHEMA__.now_ms();
BEGIN
    IF NOT __SCHEMA__.first_request(p_request_id) THEN
        RETURN;
    END IF;
    PERFORM 1 FROM __SCHEMA__.instance_locks l WHERE l.instance_id = p_instance_id FOR KEY SHARE;
    INSERT INTO __SCHEMA__.worker_queue (work_item, visible_at_ms, instance_id, execution_id,
        activity_id, session_id, tag, created_at_ms)
    VALUES (p_work_item, v_now, p_instance_id, p_execution_id, p_activity_id, p_session_id, p_tag, v_now);
    -- Whom to wake is the provider's decision (src/wakeups.rs); a client's
    -- enqueue may ask to tell other processes in this transaction.
    IF p_announce IS NOT NULL THEN
        PERFORM pg_notify('__CHANNEL__', p_announce);
    END IF;
END
$$;

-- Claim the oldest ready item this worker may take.
-- p_owner_id NULL: only items without a session. Otherwise also items of
-- sessions this owner holds or that nobody holds (the session is claimed in
-- the same transaction). Tag filter p_tag_mode: 0 untagged only, 1 tags in
-- p_tags, 2 untagged or in p_tags, 3 any.
-- With nothing ready, returns one row with NULL work_item, the time the
-- earliest delayed item becomes visible or held lease expires, in
-- milliseconds from now, and whether ready session work was skipped.
-- Without p_claim_sessions (an ack's claim of the next item, ack_work_item),
-- returns no row when the oldest item it may take is bound to a session,
-- and claims no session.
CREATE FUNCTION __SCHEMA__.fetch_work_item(
    p_lock_timeout_ms BIGINT,
    p_owner_id TEXT,
    p_session_lock_timeout_ms BIGINT,
    p_tag_mode SMALLINT,
    p_tags TEXT[],
    p_claim_sessions BOOLEAN
) RETURNS TABLE (
    work_item TEXT,
    lock_token TEXT,
    attempt_count INTEGER,
    instance_id TEXT,
    execution_id BIGINT,
    activity_id BIGINT,
    next_visible_in_ms BIGINT,
    session_work_skipped BOOLEAN,
    took_over BOOLEAN
)
LANGUAGE plpgsql
-- As fetch_orchestration_item: keep the candidate query's generic plan.
-- Index scans only: a generic plan cannot know that "visible now" is a
-- short prefix of the queue's visibility index, estimates a third of the
-- rows, and picks sequential and bitmap scans that read every row of a
-- segment where the index stops at the first (decision 0012, round 4).
-- No JIT: a scan left without an index (no other path) then carries the
-- planner's disable cost, far above jit_above_cost, and compiling it took
-- 0.15 s on every call.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    v_now BIGINT;
    v_id BIGINT;
    v_session TEXT;
    v_skip_sessions TEXT[] := '{}';
    v_took_over BOOLEAN;
    v_token TEXT;
BEGIN
    LOOP
        v_now := __SCHEMA__.now_ms();
        v_id := NULL;

        -- A candidate that still carries a token had a lease that expired
        -- without an ack or abandon: this fetch takes it over.
        SELECT w.id, w.session_id, w.lock_token IS NOT NULL INTO v_id, v_session, v_took_over
        FROM __SCHEMA__.worker_queue w
        LEFT JOIN __SCHEMA__.sessions s ON s.session_id = w.session_id
        WHERE w.visible_at_ms <= v_now
          AND (w.locked_until_ms IS NULL OR w.locked_until_ms <= v_now)
          AND (p_tag_mode = 3
               OR (w.tag IS NULL AND p_tag_mode IN (0, 2))
               OR (w.tag = ANY (p_tags) AND p_tag_mode IN (1, 2)))
          AND (w.session_id IS NULL
               OR (p_owner_id IS NOT NULL
                   AND w.session_id <> ALL (v_skip_sessions)
                   AND (s.session_id IS NULL OR s.locked_until_ms <= v_now OR s.worker_id = p_owner_id)))
        ORDER BY w.id
        LIMIT 1
        FOR UPDATE OF w SKIP LOCKED;

        IF v_id IS NULL THEN
            -- Nothing claimable. next_visible_in_ms: when something may
            -- become claimable without a notification (a delayed item, an
            -- expiring item lease, or the lease of another owner's session
            -- that has ready items). session_work_skipped: ready session
            -- items exist that a fetch without a session may not take; the
            -- caller returns at once so that the runtime re-checks its
            -- session capacity instead of waiting for its whole poll.
            RETURN QUERY SELECT NULL::TEXT, NULL::TEXT, NULL::INTEGER, NULL::TEXT, NULL::BIGINT, NULL::BIGINT,
                LEAST(
                    (SELECT min(w.visible_at_ms) FROM __SCHEMA__.worker_queue w
                     WHERE w.visible_at_ms > v_now),
                    (SELECT min(w.locked_until_ms) FROM __SCHEMA__.worker_queue w
                     WHERE w.visible_at_ms <= v_now AND w.lock_token IS NOT NULL
                       AND w.locked_until_ms > v_now),
                    (SELECT min(s.locked_until_ms) FROM __SCHEMA__.sessions s
                     WHERE p_owner_id IS NOT NULL AND s.worker_id <> p_owner_id
                       AND s.locked_until_ms > v_now
                       AND EXISTS (SELECT 1 FROM __SCHEMA__.worker_queue w
                                   WHERE w.session_id = s.session_id AND w.visible_at_ms <= v_now
                                     AND (w.locked_until_ms IS NULL OR w.locked_until_ms <= v_now)))) - v_now,
                p_owner_id IS NULL AND EXISTS (
                    SELECT 1 FROM __SCHEMA__.worker_queue w
                    WHERE w.session_id IS NOT NULL AND w.visible_at_ms <= v_now
                      AND (w.locked_until_ms IS NULL OR w.locked_until_ms <= v_now)
                      AND (p_tag_mode = 3
                           OR (w.tag IS NULL AND p_tag_mode IN (0, 2))
                           OR (w.tag = ANY (p_tags) AND p_tag_mode IN (1, 2)))),
                NULL::BOOLEAN;
            RETURN;
        END IF;

        IF v_session IS NOT NULL AND NOT p_claim_sessions THEN
            RETURN;
        END IF;
        IF v_session IS NOT NULL THEN
            v_now := __SCHEMA__.now_ms();
            -- Claim or refresh the session; loses if another owner holds it.
            INSERT INTO __SCHEMA__.sessions AS s (session_id, worker_id, locked_until_ms, last_activity_at_ms)
            VALUES (v_session, p_owner_id, v_now + p_session_lock_timeout_ms, v_now)
            ON CONFLICT (session_id) DO UPDATE SET
                worker_id = EXCLUDED.worker_id,
                locked_until_ms = GREATEST(
                    CASE WHEN s.worker_id = EXCLUDED.worker_id THEN s.locked_until_ms ELSE 0 END,
                    EXCLUDED.locked_until_ms),
                last_activity_at_ms = EXCLUDED.last_activity_at_ms
            WHERE s.worker_id = EXCLUDED.worker_id OR s.locked_until_ms <= v_now;
            IF NOT FOUND THEN
                v_skip_sessions := v_skip_sessions || v_session;
                CONTINUE;
            END IF;
        END IF;

        -- Read again: the session claim may have waited for its row.
        v_now := __SCHEMA__.now_ms();
        v_token := __SCHEMA__.new_token(v_id::TEXT);
        RETURN QUERY
        UPDATE __SCHEMA__.worker_queue w SET
            lock_token = v_token,
            locked_until_ms = v_now + p_lock_timeout_ms,
            attempt_count = w.attempt_count + 1
        WHERE w.id = v_id
        RETURNING w.work_item, w.lock_token, w.attempt_count, w.instance_id, w.execution_id,
            w.activity_id, NULL::BIGINT, NULL::BOOLEAN, v_took_over;
        RETURN;
    END LOOP;
END
$$;

-- Raises the error of a lease check that p_lock_token failed (an ack or
-- renewal whose token did not match a live item lease): DX002 when the item
-- still carries the token (its lease ran out), DX001 otherwise
-- (raise_lock_error).
CREATE FUNCTION __SCHEMA__.raise_item_lease_error(p_operation TEXT, p_lock_token TEXT)
RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM __SCHEMA__.raise_lock_error(p_operation, p_lock_token,
        EXISTS (SELECT 1 FROM __SCHEMA__.worker_queue w
                WHERE w.id = __SCHEMA__.token_item_id(p_lock_token) AND w.lock_token = p_lock_token));
END
$$;

-- Complete an item: delete it while its lease is live and, with a completion,
-- enqueue that to the orchestrator queue in the same transaction. Returns
-- whether the completion is ready now (not deferred behind its instance's
-- lease: then the ack that ends the lease wakes a fetch for it).
-- With p_prefetch_lock_timeout_ms, also the next item: the one
-- fetch_work_item(p_prefetch_lock_timeout_ms, p_prefetch_owner_id, …,
-- p_prefetch_tag_mode, p_prefetch_tags) would return, claimed in this
-- transaction after the ack's writes (src/provider/prefetch.rs), unless it
-- is bound to a session: then none, so that the owner's next fetch takes
-- it in order, and no ack ever locks a session row other than its own item's
-- (two acks claiming each other's sessions would deadlock). Candidates are
-- taken SKIP LOCKED, so it never waits. Without it, NULLs (the subquery's
-- one-time filter does not call the fetch).
CREATE FUNCTION __SCHEMA__.ack_work_item(
    p_lock_token TEXT,
    p_target_instance TEXT,
    p_kind TEXT,
    p_completion TEXT,
    p_prefetch_lock_timeout_ms BIGINT,
    p_prefetch_owner_id TEXT,
    p_prefetch_tag_mode SMALLINT,
    p_prefetch_tags TEXT[]
) RETURNS TABLE (ready BOOLEAN,
                 -- The next item (above), as fetch_work_item returns it.
                 work_item TEXT, lock_token TEXT, attempt_count INTEGER, instance_id TEXT,
                 execution_id BIGINT, activity_id BIGINT, next_visible_in_ms BIGINT,
                 session_work_skipped BOOLEAN, took_over BOOLEAN)
LANGUAGE plpgsql
-- Index scans only, as in queue_messages (orchestrator_queue.sql).
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    v_session TEXT;
    v_now BIGINT;
    v_ready BOOLEAN := FALSE;
    v_id BIGINT := __SCHEMA__.token_item_id(p_lock_token);
BEGIN
    -- The completion first: queue_messages locks the target's lease row,
    -- which comes before queue rows (lock order; header). An ack that then
    -- fails its token check rolls it back with everything else.
    v_now := __SCHEMA__.now_ms();
    IF p_completion IS NOT NULL THEN
        v_ready := (__SCHEMA__.queue_messages(ARRAY[p_target_instance], ARRAY[p_kind],
            ARRAY[p_completion], ARRAY[v_now], v_now, NULL)).ready > 0;
    END IF;
    DELETE FROM __SCHEMA__.worker_queue w
    WHERE w.id = v_id AND w.lock_token = p_lock_token AND w.locked_until_ms > __SCHEMA__.request_ms()
    RETURNING w.session_id INTO v_session;
    IF NOT FOUND THEN
        PERFORM __SCHEMA__.raise_item_lease_error('ack_work_item', p_lock_token);
    END IF;

    IF v_session IS NOT NULL THEN
        UPDATE __SCHEMA__.sessions s SET last_activity_at_ms = v_now
        WHERE s.session_id = v_session AND s.locked_until_ms > v_now;
    END IF;
    RETURN QUERY
    SELECT v_ready, f.*
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (
        SELECT * FROM __SCHEMA__.fetch_work_item(p_prefetch_lock_timeout_ms, p_prefetch_owner_id,
            NULL, p_prefetch_tag_mode, p_prefetch_tags, FALSE)
        WHERE p_prefetch_lock_timeout_ms IS NOT NULL) AS f ON TRUE;
END
$$;

-- What became of the item leased with p_lock_token, for an ack whose
-- connection broke before its reply arrived: 'held' (still leased to us: the
-- ack may be retried), 'lost' (still ours but expired: not completed) or
-- 'done' (gone from the queue under this token: completed by that ack, or
-- cancelled, or taken over after expiry; either way not ours to complete).
-- VOLATILE, not STABLE: a STABLE function reads with its caller's snapshot,
-- taken before the queue segments are locked, so a reclaim that moved the
-- item and truncated its segment while this call waited for the segment's
-- lock would hide it (gone from the truncated segment, not yet visible in
-- the new one) and answer 'done' for an item still held. A VOLATILE one
-- takes its snapshot after the lock.
CREATE FUNCTION __SCHEMA__.work_ack_outcome(p_lock_token TEXT)
RETURNS TEXT
LANGUAGE sql VOLATILE AS $$
    SELECT COALESCE(
        (SELECT CASE WHEN w.locked_until_ms > __SCHEMA__.now_ms() THEN 'held' ELSE 'lost' END
         FROM __SCHEMA__.worker_queue w
         WHERE w.id = __SCHEMA__.token_item_id(p_lock_token) AND w.lock_token = p_lock_token),
        'done')
$$;

-- Extend a live lease to now + extend (never shortening it) and mark its
-- session active.
CREATE FUNCTION __SCHEMA__.renew_work_item_lock(
    p_lock_token TEXT,
    p_extend_ms BIGINT
) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    v_session TEXT;
    v_now BIGINT := __SCHEMA__.now_ms();
BEGIN
    UPDATE __SCHEMA__.worker_queue w
    SET locked_until_ms = GREATEST(w.locked_until_ms, v_now + p_extend_ms)
    WHERE w.id = __SCHEMA__.token_item_id(p_lock_token)
      AND w.lock_token = p_lock_token AND w.locked_until_ms > __SCHEMA__.request_ms()
    RETURNING w.session_id INTO v_session;
    IF NOT FOUND THEN
        PERFORM __SCHEMA__.raise_item_lease_error('renew_work_item_lock', p_lock_token);
    END IF;
    IF v_session IS NOT NULL THEN
        UPDATE __SCHEMA__.sessions s SET last_activity_at_ms = v_now
        WHERE s.session_id = v_session AND s.locked_until_ms > v_now;
    END IF;
END
$$;

-- Release a lease without completing. With a delay the item becomes visible
-- at now + delay; with p_ignore_attempt its attempt is given back (floor 0).
-- Returns whether the item is bound to a session and, if delayed, in how
-- many milliseconds it becomes visible.
CREATE FUNCTION __SCHEMA__.abandon_work_item(
    p_lock_token TEXT,
    p_delay_ms BIGINT,
    p_ignore_attempt BOOLEAN
) RETURNS TABLE (for_session BOOLEAN, due_in_ms BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_session TEXT;
    v_visible BIGINT;
    v_now BIGINT := __SCHEMA__.now_ms();
BEGIN
    UPDATE __SCHEMA__.worker_queue w SET
        lock_token = NULL,
        locked_until_ms = NULL,
        visible_at_ms = CASE WHEN p_delay_ms IS NULL THEN w.visible_at_ms
                             ELSE v_now + p_delay_ms END,
        attempt_count = CASE WHEN p_ignore_attempt THEN GREATEST(w.attempt_count - 1, 0)
                             ELSE w.attempt_count END
    WHERE w.id = __SCHEMA__.token_item_id(p_lock_token) AND w.lock_token = p_lock_token
    RETURNING w.session_id, w.visible_at_ms INTO v_session, v_visible;
    IF NOT FOUND THEN
        PERFORM __SCHEMA__.raise_lock_error('abandon_work_item', p_lock_token, FALSE);
    END IF;
    -- What the abandon made ready: the item, now or after the delay, and
    -- whether only its session's owner may take it.
    RETURN QUERY SELECT v_session IS NOT NULL, NULLIF(GREATEST(v_visible - v_now, 0), 0);
END
$$;

-- Reclaims the worker queue segment that inserts reach next; see
-- reclaim_orchestrator_queue (orchestrator_queue.sql) for how and why.
CREATE FUNCTION __SCHEMA__.reclaim_worker_queue() RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER
SET lock_timeout = '50ms'
AS $$
DECLARE
    v_cur SMALLINT := __SCHEMA__.current_segment();
    v_part REGCLASS := ('__SCHEMA__.worker_queue_s' || ((v_cur + 1) % 3))::REGCLASS;
    v_moved BIGINT;
BEGIN
    BEGIN
        -- Inside the block: reading the size takes a lock too.
        IF pg_relation_size(v_part) = 0 THEN
            RETURN 0;
        END IF;
        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', v_part);
        EXECUTE format(
            'WITH m AS (DELETE FROM %s w RETURNING w.*)
             INSERT INTO __SCHEMA__.worker_queue (id, work_item, visible_at_ms, lock_token,
                 locked_until_ms, attempt_count, instance_id, execution_id, activity_id, session_id,
                 tag, created_at_ms, seg)
             SELECT m.id, m.work_item, m.visible_at_ms, m.lock_token, m.locked_until_ms,
                 m.attempt_count, m.instance_id, m.execution_id, m.activity_id, m.session_id, m.tag,
                 m.created_at_ms, 3 FROM m', v_part);
        GET DIAGNOSTICS v_moved = ROW_COUNT;
        EXECUTE format('TRUNCATE %s', v_part);
        RETURN v_moved;
    EXCEPTION WHEN lock_not_available THEN
        RETURN -1;
    END;
END
$$;
