-- Orchestrator queue: enqueue, fetch (claim a turn), ack (commit a turn),
-- abandon and lease renewal.
--
-- Guarantees
-- * Lock order: every function that touches an instance's turn locks its
--   `instance_locks` row first (FOR NO KEY UPDATE) and its queue rows second.
--   Rows of several instances are locked in instance_id order.
-- * Every writer of an instance serializes with its deletion on the lease
--   row: enqueues (and the acks' enqueues to other instances) hold it
--   FOR KEY SHARE (queue_messages), which never waits on a fetch, ack or
--   renewal (FOR NO KEY UPDATE), so enqueues cannot take part in a cycle;
--   deletion locks it FOR UPDATE, which waits for them and makes them wait.
--   A message is therefore either deleted with its instance or enqueued
--   after the deletion, to a new lease row.
-- * Lease rows are found by primary key (tokens name their instance,
--   common.sql): no index on a column a turn changes, so lease updates are
--   HOT and a fetch never walks dead index entries of lease rows.
-- * Messages of an instance that has no instance row, no history and no
--   start among its ready messages are not handed to the runtime (it would
--   ack them away): QueueMessage-only batches are dropped (with the lease
--   row, if nothing else is left), any other batch is moved unchanged to
--   orchestrator_held (no attempt counted, no lease) and the lease row is
--   marked parked. The next message for that instance makes it a candidate
--   again; its fetch moves the held messages back first, so they come in
--   the same batch as the start.
-- * Fetch never queues on another fetcher's lock: candidates are claimed
--   with FOR UPDATE SKIP LOCKED, and a fetch that loses a candidate keeps
--   looking within the same call; it returns no instance only when nothing
--   is ready. When the only ready instances were skipped because another
--   transaction holds their lease rows at that moment, it waits for that
--   transaction (2 ms steps, at most 50 ms) before saying so: the other
--   claim may yet be released (a dropped fetch, src/provider/claim.rs).
-- * A lease is computed from now_ms() after its row lock is held, so it is
--   never returned already expired.
-- * Volatile values (now_ms(), new tokens) are read into variables before
--   an UPDATE or DELETE uses them, never called inside it: Citus cannot
--   route a modification of a distributed table that calls a volatile
--   function (decision 0013), and the variable is the same value here.
-- * An ack holds the lease row lock from its token check to its commit, so
--   its lease cannot be taken over before the turn commits. Its lease is
--   checked as of the moment the ack arrived (request_ms(), see common.sql):
--   a lease already taken over, or already expired when the ack arrived,
--   makes the whole ack fail (DX001/DX002), committing nothing.
-- * Wake-ups: no function here decides who wakes. Each one that makes
--   messages ready returns what it made ready (how many instances have ready
--   messages, whether its own instance has, when the earliest delayed one
--   falls due), and src/wakeups.rs decides after commit whom to wake, in
--   this process and in others. Only a client's enqueue may notify inside
--   its transaction, with the payload the provider passes (p_announce), so
--   that a process which exits right after its call still wakes others.
-- * Only messages tagged by the fetch (lock_token) are returned, deleted by
--   its ack, or changed by its abandon; messages arriving during the lease
--   wait for the next turn.
-- * Messages for a leased instance do not stand in the candidate scan while
--   the lease lasts (queue_messages, decision 0010): one that arrives while
--   the lease is live and no fetch, ack or abandon of that instance is under
--   way is deferred to the lease's end, with its own visibility kept; the
--   ack or abandon that releases the lease restores it, in the same
--   statement that consumes or returns the tagged messages.
--   The enqueuer share-locks the lease row (SKIP LOCKED, so it never waits
--   and never takes part in a cycle) for its transaction, so the release
--   cannot run between its check and its commit: a deferred message is
--   always restored, or becomes visible when the lease runs out.

-- Inserts messages into the queue (every writer of orchestrator messages
-- calls this: enqueue, the ack's messages, the worker ack's completion), in
-- array order, created at p_inserted_ms. p_visible_ms: when each becomes
-- visible (NULL: at once).
-- Holds first: the targets' lease rows, created if absent, FOR KEY SHARE
-- until commit, in instance_id order (see the header); the caller's own
-- lease row may be among them, locked already (a KEY SHARE lock of one's
-- own row never waits).
-- A message for an instance whose lease is live and whose lease row no
-- other transaction holds for update (no fetch, ack or abandon under way)
-- is deferred: visible when the lease ends, its own visibility kept in
-- deferred_visible_ms until the ack or abandon that ends the lease
-- restores it. Only when the hold saw a live lease is it looked at again,
-- FOR SHARE SKIP LOCKED (kept until commit, so that the release cannot
-- run between this check and the commit).
-- Segment: see segment_for.
-- Returns what it made ready: how many instances other than p_except have
-- a message ready now (neither delayed nor deferred: only those are worth
-- waking a fetch for), whether p_except itself has (a continue-as-new start
-- to the acking instance), and when the earliest delayed one becomes
-- visible (deferred ones are not: whoever ends the lease reports them, and
-- a lease that runs out is a due time of the fetch that took it).
CREATE FUNCTION __SCHEMA__.queue_messages(
    p_instances TEXT[], p_kinds TEXT[], p_items TEXT[], p_visible_ms BIGINT[], p_inserted_ms BIGINT,
    p_except TEXT, OUT ready INTEGER, OUT except_ready BOOLEAN, OUT due_at_ms BIGINT
)
-- PL/pgSQL, not SQL: a SQL function's statement is planned again on every
-- call (0.1 ms, a fifth of a worker ack's server time); this one's plans
-- are cached per connection. Callers assign its result
-- (v := queue_messages(...)) rather than select from it: an assignment is
-- evaluated without an executor of its own (about 3 us less per call).
LANGUAGE plpgsql
-- The array parameters made a custom plan on every call.
SET plan_cache_mode = force_generic_plan
-- Index scans only, as in the fetch functions: a bitmap per segment costs
-- more to set up than it saves on the one to a few rows each statement
-- reads, and with bitmap scans alone off, the lease rows' generic plan for
-- "= ANY (targets)" became a sequential scan.
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
AS $$
DECLARE
    v_want BIGINT;
    v_got BIGINT;
    v_live BOOLEAN;
    v_lease_ids TEXT[];
    v_lease_ends BIGINT[];
    v_own BIGINT;
    v_end BIGINT;
    -- Per message, parallel to p_instances: its own visibility when it is
    -- deferred behind a lease (NULL: not deferred), and when it becomes
    -- visible.
    v_behind BIGINT[] := '{}';
    v_at BIGINT[] := '{}';
    -- The instances counted as ready.
    v_ready TEXT[] := '{}';
BEGIN
    -- One target (an enqueue, a worker ack's completion) needs no count.
    IF cardinality(p_instances) = 1 THEN
        v_want := 1;
    ELSE
        SELECT count(DISTINCT t.id) INTO v_want FROM unnest(p_instances) AS t(id);
    END IF;
    -- Lock first: targets usually exist, so the usual hold is one
    -- statement; rows still missing (never created, or removed by a
    -- deletion before our lock) are created, then locked.
    LOOP
        SELECT count(*), COALESCE(bool_or(k.locked_until_ms > p_inserted_ms), FALSE) INTO v_got, v_live
        FROM (SELECT l.locked_until_ms FROM __SCHEMA__.instance_locks l
              WHERE l.instance_id = ANY (p_instances)
              ORDER BY l.instance_id
              FOR KEY SHARE) k;
        EXIT WHEN v_got >= v_want;
        INSERT INTO __SCHEMA__.instance_locks (instance_id)
        SELECT DISTINCT t.id FROM unnest(p_instances) AS t(id) ORDER BY t.id
        ON CONFLICT (instance_id) DO NOTHING;
    END LOOP;

    -- The leases to defer behind (kept FOR SHARE until commit, so that the
    -- release cannot run between this check and the commit).
    IF v_live THEN
        SELECT array_agg(l.instance_id), array_agg(l.locked_until_ms) INTO v_lease_ids, v_lease_ends
        FROM (SELECT l.instance_id, l.locked_until_ms FROM __SCHEMA__.instance_locks l
              WHERE l.instance_id = ANY (p_instances) AND l.locked_until_ms > p_inserted_ms
              FOR SHARE SKIP LOCKED) l;
    END IF;

    -- Each message's visibility and what it made ready, in simple
    -- expressions (a statement here would cost its executor start).
    ready := 0;
    except_ready := FALSE;
    FOR i IN 1 .. cardinality(p_instances) LOOP
        v_own := COALESCE(p_visible_ms[i], p_inserted_ms);
        v_end := v_lease_ends[array_position(v_lease_ids, p_instances[i])];
        v_behind[i] := CASE WHEN v_end > v_own THEN v_own END;
        v_at[i] := GREATEST(v_own, v_end);
        IF v_at[i] > p_inserted_ms THEN
            IF v_behind[i] IS NULL THEN
                due_at_ms := LEAST(due_at_ms, v_at[i]);
            END IF;
        ELSIF p_instances[i] = p_except THEN
            except_ready := TRUE;
        ELSIF NOT (p_instances[i] = ANY (v_ready)) THEN
            v_ready := v_ready || p_instances[i];
            ready := ready + 1;
        END IF;
    END LOOP;

    INSERT INTO __SCHEMA__.orchestrator_queue (instance_id, kind, work_item, visible_at_ms,
        deferred_visible_ms, created_at_ms, seg)
    SELECT u.instance_id, u.kind, u.item, u.at, u.behind,
        p_inserted_ms, __SCHEMA__.segment_for(u.at, p_inserted_ms)
    FROM unnest(p_instances, p_kinds, p_items, v_at, v_behind)
         WITH ORDINALITY AS u(instance_id, kind, item, at, behind, ord)
    ORDER BY u.ord;
END
$$;

-- Enqueue one message (a client's start, event or cancel, or a direct
-- enqueue). A StartOrchestration does not create the instance; it only makes
-- sure the instance has a lease row so that fetch can claim it.
-- Visibility: now + delay, whatever the kind: a TimerFired enqueued here with
-- no delay is visible at once (only timers produced by an ack wait for their
-- fire time). Idempotent per p_request_id (see first_request): a retry of a
-- call whose first attempt committed inserts nothing and returns NULLs (what
-- that attempt made ready is unknown). Returns whether the message is ready
-- now and, if delayed, in how many milliseconds it becomes visible; a
-- message deferred behind a lease is neither (whoever releases the lease
-- reports it). p_announce: a notification to send in this transaction when
-- the message is ready or delayed (NULL: none; see the header).
CREATE FUNCTION __SCHEMA__.enqueue_orchestrator(
    p_instance_id TEXT,
    p_kind TEXT,
    p_work_item TEXT,
    p_delay_ms BIGINT,
    p_request_id UUID,
    p_announce TEXT
) RETURNS TABLE (ready BOOLEAN, due_in_ms BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now BIGINT := __SCHEMA__.now_ms();
    v_visible BIGINT := v_now + GREATEST(COALESCE(p_delay_ms, 0), 0);
    v_made RECORD;
    v_ready INTEGER;
    v_due BIGINT;
BEGIN
    IF NOT __SCHEMA__.first_request(p_request_id) THEN
        RETURN QUERY SELECT NULL::BOOLEAN, NULL::BIGINT;
        RETURN;
    END IF;
    -- An assignment, not SELECT … FROM: no executor of its own (see
    -- queue_messages).
    v_made := __SCHEMA__.queue_messages(ARRAY[p_instance_id], ARRAY[p_kind], ARRAY[p_work_item],
        ARRAY[v_visible], v_now, NULL);
    v_ready := v_made.ready;
    v_due := v_made.due_at_ms;
    IF p_announce IS NOT NULL AND (v_ready > 0 OR v_due IS NOT NULL) THEN
        PERFORM pg_notify('__CHANNEL__', p_announce);
    END IF;
    RETURN QUERY SELECT v_ready > 0, v_due - v_now;
END
$$;

-- Whether an execution pinned at (major, minor, patch) may be fetched by a
-- dispatcher supporting the inclusive range [p_min, p_max] (NULL: no
-- filter); an unpinned execution always may. A plain SQL expression, which
-- the planner inlines into the claim's queries.
CREATE FUNCTION __SCHEMA__.pinned_within(
    p_major BIGINT, p_minor BIGINT, p_patch BIGINT, p_min BIGINT[], p_max BIGINT[]
) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_min IS NULL
        OR p_major IS NULL
        OR ((p_major, p_minor, p_patch) >= (p_min[1], p_min[2], p_min[3])
            AND (p_major, p_minor, p_patch) <= (p_max[1], p_max[2], p_max[3]))
$$;

-- Claim the next ready instance and return everything a turn needs.
-- With no ready instance, returns one row whose instance_id is NULL and whose
-- next_visible_in_ms says in how many milliseconds the earliest delayed
-- message becomes visible or the earliest held lease expires (a duration, so
-- the caller's clock does not matter).
-- p_min/p_max: an inclusive [major, minor, patch] range of pinned duroxide
-- versions this dispatcher supports, or NULL for no filter. Instances whose
-- current execution is pinned outside it are neither locked nor loaded.
-- p_except: an instance not to claim (NULL: none); an ack claiming the next
-- turn names its own, whose new messages it hands back instead.
CREATE FUNCTION __SCHEMA__.fetch_orchestration_item(
    p_lock_timeout_ms BIGINT,
    p_min BIGINT[],
    p_max BIGINT[],
    p_wait_for_claims BOOLEAN,
    p_except TEXT
) RETURNS TABLE (
    instance_id TEXT,
    lock_token TEXT,
    attempt_count INTEGER,
    instance_exists BOOLEAN,
    orchestration_name TEXT,
    orchestration_version TEXT,
    execution_id BIGINT,
    messages TEXT[],
    history TEXT[],
    kv_keys TEXT[],
    kv_values BYTEA[],
    kv_updated_at_ms BIGINT[],
    next_visible_in_ms BIGINT,
    took_over BOOLEAN,
    more_ready BOOLEAN
)
LANGUAGE plpgsql
-- The candidate query's custom plans are re-planned on every call (about
-- 0.2 ms, a third of a turn's server CPU); its generic plan is as good.
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
    v_instance TEXT;
    v_token TEXT;
    v_messages TEXT[];
    v_attempts INTEGER;
    v_history TEXT[];
    v_kv_keys TEXT[];
    v_kv_values BYTEA[];
    v_kv_updated BIGINT[];
    v_skip TEXT[] := CASE WHEN p_except IS NULL THEN '{}'::TEXT[] ELSE ARRAY[p_except] END;
    v_exists BOOLEAN;
    v_name TEXT;
    v_version TEXT;
    v_execution BIGINT;
    v_took_over BOOLEAN;
    v_parked BOOLEAN;
    v_more BOOLEAN;
    v_next BIGINT;
    v_lease_end BIGINT;
    v_ready BIGINT;
    v_starts BIGINT;
    v_others BIGINT;
    v_waits INTEGER := 0;
BEGIN
    LOOP
        v_now := __SCHEMA__.now_ms();
        v_instance := NULL;

        -- A candidate whose lease row still carries a token had a lease that
        -- expired without an ack or abandon: this fetch takes it over.
        SELECT l.instance_id, l.lock_token IS NOT NULL, l.parked INTO v_instance, v_took_over, v_parked
        FROM __SCHEMA__.orchestrator_queue q
        JOIN __SCHEMA__.instance_locks l ON l.instance_id = q.instance_id
        LEFT JOIN __SCHEMA__.instances i ON i.instance_id = q.instance_id
        LEFT JOIN __SCHEMA__.executions e
               ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
        WHERE q.visible_at_ms <= v_now
          AND l.locked_until_ms <= v_now
          AND q.instance_id <> ALL (v_skip)
          AND __SCHEMA__.pinned_within(e.pinned_major, e.pinned_minor, e.pinned_patch, p_min, p_max)
        ORDER BY q.visible_at_ms, q.id
        LIMIT 1
        FOR NO KEY UPDATE OF l SKIP LOCKED;

        -- Nothing claimable, but a ready instance may have been skipped
        -- only because another transaction holds its lease row right now
        -- (a fetch claiming it, or a deletion). A caller that will not
        -- wait for a wake-up (p_wait_for_claims: a short poll) waits for
        -- that transaction, a few milliseconds, rather than report nothing
        -- ready while the other claim may still be undone (a fetch whose
        -- caller went away is released, src/provider/claim.rs). Bounded: 25
        -- waits of 2 ms. A long poll does not: the release of such a claim
        -- wakes it, and at 4 dispatchers these waits doubled the server
        -- time of a fetch (issue 11).
        -- Nested, not one condition: a query's executor start opens every
        -- relation of its subqueries even when an earlier AND operand is
        -- false, and this EXISTS opens the four queue segments and three
        -- tables (13 us on every fetch that claimed something).
        IF v_instance IS NULL AND p_wait_for_claims AND v_waits < 25 THEN
            IF EXISTS (
                SELECT 1
                FROM __SCHEMA__.orchestrator_queue q
                JOIN __SCHEMA__.instance_locks l ON l.instance_id = q.instance_id
                LEFT JOIN __SCHEMA__.instances i ON i.instance_id = q.instance_id
                LEFT JOIN __SCHEMA__.executions e
                       ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
                WHERE q.visible_at_ms <= v_now
                  AND l.locked_until_ms <= v_now
                  AND q.instance_id <> ALL (v_skip)
                  AND __SCHEMA__.pinned_within(e.pinned_major, e.pinned_minor, e.pinned_patch, p_min, p_max))
            THEN
                v_waits := v_waits + 1;
                PERFORM pg_sleep(0.002);
                CONTINUE;
            END IF;
        END IF;

        IF v_instance IS NULL THEN
            RETURN QUERY SELECT NULL::TEXT, NULL::TEXT, NULL::INTEGER, NULL::BOOLEAN, NULL::TEXT,
                NULL::TEXT, NULL::BIGINT, NULL::TEXT[], NULL::TEXT[], NULL::TEXT[], NULL::BYTEA[],
                NULL::BIGINT[],
                LEAST(
                    (SELECT min(q.visible_at_ms) FROM __SCHEMA__.orchestrator_queue q
                     WHERE q.visible_at_ms > v_now),
                    -- Leases that hold ready messages back (held leases
                    -- without ready messages free nothing when they end).
                    (SELECT min(l.locked_until_ms) FROM __SCHEMA__.orchestrator_queue q
                     JOIN __SCHEMA__.instance_locks l ON l.instance_id = q.instance_id
                     WHERE q.visible_at_ms <= v_now AND l.locked_until_ms > v_now)) - v_now,
                NULL::BOOLEAN, FALSE;
            RETURN;
        END IF;

        -- Messages set aside until a start arrived come back unchanged.
        IF v_parked THEN
            WITH back AS (
                DELETE FROM __SCHEMA__.orchestrator_held h WHERE h.instance_id = v_instance
                RETURNING h.id, h.instance_id, h.kind, h.work_item, h.visible_at_ms, h.attempt_count,
                          h.created_at_ms
            )
            INSERT INTO __SCHEMA__.orchestrator_queue (id, instance_id, kind, work_item, visible_at_ms,
                attempt_count, created_at_ms)
            SELECT b.id, b.instance_id, b.kind, b.work_item, b.visible_at_ms, b.attempt_count, b.created_at_ms
            FROM back b;
            UPDATE __SCHEMA__.instance_locks l SET parked = FALSE WHERE l.instance_id = v_instance;
        END IF;

        SELECT i.orchestration_name, i.orchestration_version, i.current_execution_id
        INTO v_name, v_version, v_execution
        FROM __SCHEMA__.instances i WHERE i.instance_id = v_instance;
        v_exists := FOUND;
        IF NOT v_exists THEN
            SELECT max(h.execution_id) INTO v_execution
            FROM __SCHEMA__.history h WHERE h.instance_id = v_instance;
        END IF;

        -- Never started: the batch goes to the runtime only with a start in
        -- it (see the header). Decided before tagging: nothing is counted.
        IF NOT v_exists AND v_execution IS NULL THEN
            SELECT count(*),
                   count(*) FILTER (WHERE q.kind IN ('StartOrchestration', 'ContinueAsNew')),
                   count(*) FILTER (WHERE q.kind <> 'QueueMessage')
            INTO v_ready, v_starts, v_others
            FROM __SCHEMA__.orchestrator_queue q
            WHERE q.instance_id = v_instance AND q.visible_at_ms <= v_now;
            IF v_ready = 0 THEN
                -- Consumed by another turn after our snapshot: look further.
                v_skip := v_skip || v_instance;
                CONTINUE;
            ELSIF v_starts = 0 AND v_others = 0 THEN
                DELETE FROM __SCHEMA__.orchestrator_queue q
                WHERE q.instance_id = v_instance AND q.visible_at_ms <= v_now;
                RAISE WARNING 'duroxide-postgres: dropped % QueueMessage(s) for never-started instance %',
                    v_ready, v_instance;
                PERFORM __SCHEMA__.forget_lease(v_instance);
                v_skip := v_skip || v_instance;
                CONTINUE;
            ELSIF v_starts = 0 THEN
                WITH held AS (
                    DELETE FROM __SCHEMA__.orchestrator_queue q
                    WHERE q.instance_id = v_instance AND q.visible_at_ms <= v_now
                    RETURNING q.id, q.instance_id, q.kind, q.work_item, q.visible_at_ms, q.attempt_count,
                              q.created_at_ms
                )
                INSERT INTO __SCHEMA__.orchestrator_held (id, instance_id, kind, work_item, visible_at_ms,
                    attempt_count, created_at_ms)
                SELECT h.id, h.instance_id, h.kind, h.work_item, h.visible_at_ms, h.attempt_count, h.created_at_ms
                FROM held h;
                UPDATE __SCHEMA__.instance_locks l SET parked = TRUE WHERE l.instance_id = v_instance;
                v_skip := v_skip || v_instance;
                CONTINUE;
            END IF;
        END IF;

        -- Whether any other instance has a ready message (leased or not, so
        -- one index probe that stops at the first: a store full of leased
        -- work costs nothing more). If none, this process's next fetch may
        -- wait without looking until something is committed or falls due
        -- (src/wakeups.rs), so the row also says when something falls due:
        -- the next delayed message, or the end of the lease taken below,
        -- for if its holder never acks nor abandons (it died, or its abandon
        -- failed before reaching the store), its messages and any deferred
        -- behind it become claimable then, with no commit to say so.
        -- "None" is never wrong; "some" may be.
        -- The lease starts now, after every wait of this call but the
        -- statement below (the row is locked already).
        v_lease_end := __SCHEMA__.now_ms() + p_lock_timeout_ms;
        v_more := EXISTS (SELECT 1 FROM __SCHEMA__.orchestrator_queue q
                          WHERE q.visible_at_ms <= v_now AND q.instance_id <> v_instance);
        IF NOT v_more THEN
            v_next := LEAST((SELECT min(q.visible_at_ms) FROM __SCHEMA__.orchestrator_queue q
                             WHERE q.visible_at_ms > v_now), v_lease_end) - v_now;
        END IF;

        -- One statement: tag every message visible now, take the lease if
        -- any was tagged, and read what the turn needs. Our snapshot may be
        -- older than the lease row we locked: if another turn consumed the
        -- messages meanwhile, nothing is tagged, the lease row is left as it
        -- was, and we look further.
        v_token := __SCHEMA__.new_token(v_instance);
        WITH tagged AS (
            UPDATE __SCHEMA__.orchestrator_queue q
            SET lock_token = v_token, attempt_count = q.attempt_count + 1
            WHERE q.instance_id = v_instance AND q.visible_at_ms <= v_now
            RETURNING q.id, q.work_item, q.attempt_count
        ), leased AS (
            UPDATE __SCHEMA__.instance_locks l
            SET lock_token = v_token, locked_until_ms = v_lease_end
            WHERE l.instance_id = v_instance AND EXISTS (SELECT 1 FROM tagged)
        )
        SELECT t.messages, t.attempts,
            (SELECT array_agg(h.event_data ORDER BY h.event_id) FROM __SCHEMA__.history h
             WHERE h.instance_id = v_instance AND h.execution_id = v_execution),
            kv.keys, kv.vals, kv.updated
        INTO v_messages, v_attempts, v_history, v_kv_keys, v_kv_values, v_kv_updated
        FROM (SELECT array_agg(t.work_item ORDER BY t.id) AS messages,
                     max(t.attempt_count) AS attempts FROM tagged t) t,
             (SELECT array_agg(s.key ORDER BY s.key) AS keys,
                     array_agg(s.value ORDER BY s.key) AS vals,
                     array_agg(s.last_updated_at_ms ORDER BY s.key) AS updated
              FROM __SCHEMA__.kv_store s WHERE s.instance_id = v_instance) kv;

        IF v_messages IS NULL THEN
            v_skip := v_skip || v_instance;
            CONTINUE;
        END IF;

        RETURN QUERY
        SELECT v_instance, v_token, v_attempts, v_exists, v_name, v_version, v_execution, v_messages,
            v_history, v_kv_keys, v_kv_values, v_kv_updated, v_next, v_took_over, v_more;
        RETURN;
    END LOOP;
END
$$;

-- Raises the error of a lease check that p_lock_token failed (an ack or
-- renewal whose token did not match a live lease): DX002 when the lease row
-- still carries the token (its lease ran out), DX001 otherwise
-- (raise_lock_error). Read after the failed check, with a new snapshot: a
-- takeover committed meanwhile is seen.
CREATE FUNCTION __SCHEMA__.raise_instance_lease_error(p_operation TEXT, p_lock_token TEXT)
RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM __SCHEMA__.raise_lock_error(p_operation, p_lock_token,
        EXISTS (SELECT 1 FROM __SCHEMA__.instance_locks l
                WHERE l.instance_id = __SCHEMA__.token_key(p_lock_token)
                  AND l.lock_token = p_lock_token));
END
$$;

-- Commit one turn atomically. See the file header for the lease guarantee.
-- Arrays are parallel (one element per item). p_orch_visible_at_ms holds a
-- timer's fire time, or NULL for "visible now". p_custom_status_action:
-- 0 = unchanged, 1 = set to p_custom_status, 2 = clear. KV: if
-- p_kv_clear_all, every key is tombstoned first; then p_kv_keys are written
-- (a NULL value is a tombstone). p_pinned is [major, minor, patch] or NULL.
CREATE FUNCTION __SCHEMA__.ack_orchestration_item(
    p_lock_token TEXT,
    p_execution_id BIGINT,
    p_event_ids BIGINT[],
    p_events TEXT[],
    p_worker_items TEXT[],
    p_worker_instances TEXT[],
    p_worker_executions BIGINT[],
    p_worker_activity_ids BIGINT[],
    p_worker_sessions TEXT[],
    p_worker_tags TEXT[],
    p_orch_items TEXT[],
    p_orch_instances TEXT[],
    p_orch_kinds TEXT[],
    p_orch_visible_at_ms BIGINT[],
    p_status TEXT,
    p_output BYTEA,
    p_orchestration_name TEXT,
    p_orchestration_version TEXT,
    p_parent_instance_id TEXT,
    p_pinned BIGINT[],
    p_cancel_instances TEXT[],
    p_cancel_executions BIGINT[],
    p_cancel_activity_ids BIGINT[],
    p_custom_status_action SMALLINT,
    p_custom_status BYTEA,
    p_kv_clear_all BOOLEAN,
    p_kv_keys TEXT[],
    p_kv_values BYTEA[],
    p_kv_updated_at_ms BIGINT[],
    p_prefetch_lock_timeout_ms BIGINT,
    p_prefetch_min BIGINT[],
    p_prefetch_max BIGINT[]
) RETURNS TABLE (own_ready BOOLEAN, others_ready INTEGER, due_in_ms BIGINT, work_ready INTEGER,
                 work_for_sessions BOOLEAN,
                 -- The next turn, claimed after this one's writes (below).
                 instance_id TEXT, lock_token TEXT, attempt_count INTEGER, instance_exists BOOLEAN,
                 orchestration_name TEXT, orchestration_version TEXT, execution_id BIGINT,
                 messages TEXT[], history TEXT[], kv_keys TEXT[], kv_values BYTEA[],
                 kv_updated_at_ms BIGINT[], next_visible_in_ms BIGINT, took_over BOOLEAN,
                 more_ready BOOLEAN)
LANGUAGE plpgsql
-- Index scans only, as in queue_messages.
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    v_more BOOLEAN;
    v_instance TEXT;
    v_now BIGINT;
    v_others INTEGER := 0;
    v_made RECORD;
    v_due BIGINT;
    -- The instance row as the turn found it (the upsert changes none of
    -- these but the current execution), and the current execution's status.
    v_found BOOLEAN;
    v_old_status TEXT;
    v_old_completed BIGINT;
    v_counted BIGINT;
    v_current BIGINT;
    v_written BOOLEAN;
    -- Whether the turn ends its execution, and whether it changes the
    -- execution row's status, output or pin.
    v_ends BOOLEAN;
    v_changes BOOLEAN;
    v_status TEXT;
    v_completed BIGINT;
    v_delta BIGINT[] := ARRAY[0, 0, 0, 0]::BIGINT[];
    v_executions BIGINT := 0;
BEGIN
    -- First the lease: released (the row stays locked until commit) if the
    -- token still holds it and it was live when the ack arrived, before
    -- anything is written and before this turn's own messages are queued
    -- (those to itself, timers, are then not deferred behind it). The token
    -- is checked on the version we lock (an UPDATE that waited for the row
    -- checks the version the waited-for transaction left): a takeover that
    -- committed meanwhile is seen. A failed check reads why (DX001/DX002)
    -- and fails the whole ack.
    UPDATE __SCHEMA__.instance_locks l
    SET lock_token = NULL, locked_until_ms = 0, last_acked_token = p_lock_token
    WHERE l.instance_id = __SCHEMA__.token_key(p_lock_token)
      AND l.lock_token = p_lock_token AND l.locked_until_ms > __SCHEMA__.request_ms()
    RETURNING l.instance_id INTO v_instance;
    IF NOT FOUND THEN
        PERFORM __SCHEMA__.raise_instance_lease_error('ack_orchestration_item', p_lock_token);
    END IF;
    v_now := __SCHEMA__.now_ms();

    -- Instance row: created only when the runtime names the orchestration.
    IF p_orchestration_name IS NOT NULL AND p_orchestration_version IS NOT NULL THEN
        INSERT INTO __SCHEMA__.instances AS i (instance_id, orchestration_name, orchestration_version,
            current_execution_id, parent_instance_id, created_at_ms, updated_at_ms)
        VALUES (v_instance, p_orchestration_name, p_orchestration_version, p_execution_id,
            p_parent_instance_id, v_now, v_now)
        ON CONFLICT (instance_id) DO UPDATE SET
            orchestration_name = EXCLUDED.orchestration_name,
            orchestration_version = EXCLUDED.orchestration_version,
            current_execution_id = GREATEST(i.current_execution_id, EXCLUDED.current_execution_id),
            parent_instance_id = COALESCE(i.parent_instance_id, EXCLUDED.parent_instance_id),
            updated_at_ms = EXCLUDED.updated_at_ms
        RETURNING i.status, i.completed_at_ms, i.counted_execution_id, i.current_execution_id
        INTO v_old_status, v_old_completed, v_counted, v_current;
    ELSE
        UPDATE __SCHEMA__.instances i
        SET current_execution_id = GREATEST(i.current_execution_id, p_execution_id), updated_at_ms = v_now
        WHERE i.instance_id = v_instance
        RETURNING i.status, i.completed_at_ms, i.counted_execution_id, i.current_execution_id
        INTO v_old_status, v_old_completed, v_counted, v_current;
    END IF;
    v_found := FOUND;

    -- The execution row, unless this turn writes nothing for an instance that
    -- does not exist (the runtime's empty ack of an orphan batch must leave
    -- no trace). Decided here, not in an INSERT … SELECT … WHERE: Citus
    -- inserts nothing for that form when the condition reads a table.
    -- One statement creates it or applies the turn's status, output and
    -- pin; v_written: whether it wrote the row.
    v_ends := p_status IN ('Completed', 'Failed', 'ContinuedAsNew');
    v_changes := p_status IS NOT NULL OR p_output IS NOT NULL OR p_pinned IS NOT NULL;
    v_written := cardinality(p_event_ids) > 0 OR v_found;
    IF NOT v_written AND v_changes THEN
        -- No instance and no events: only an execution row written before
        -- takes the turn's status. A separate statement, not an operand of
        -- the condition above: a condition with a subquery starts an
        -- executor on every ack.
        v_written := EXISTS (SELECT 1 FROM __SCHEMA__.executions e
                             WHERE e.instance_id = v_instance AND e.execution_id = p_execution_id);
    END IF;
    IF v_written THEN
        INSERT INTO __SCHEMA__.executions AS e (instance_id, execution_id, started_at_ms, status, output,
            completed_at_ms, pinned_major, pinned_minor, pinned_patch)
        -- 'Running': the column's default, for a turn that names no status.
        VALUES (v_instance, p_execution_id, v_now, COALESCE(p_status, 'Running'), p_output,
            CASE WHEN v_ends THEN v_now END, p_pinned[1], p_pinned[2], p_pinned[3])
        ON CONFLICT (instance_id, execution_id) DO UPDATE SET
            status = COALESCE(p_status, e.status),
            output = COALESCE(p_output, e.output),
            completed_at_ms = CASE WHEN v_ends THEN v_now ELSE e.completed_at_ms END,
            pinned_major = COALESCE(p_pinned[1], e.pinned_major),
            pinned_minor = COALESCE(p_pinned[2], e.pinned_minor),
            pinned_patch = COALESCE(p_pinned[3], e.pinned_patch)
        WHERE v_changes
        RETURNING e.status, e.completed_at_ms INTO v_status, v_completed;
        v_written := FOUND;
    END IF;

    -- Append-only: a duplicate event id fails the whole turn (23505).
    INSERT INTO __SCHEMA__.history (instance_id, execution_id, event_id, event_data)
    SELECT v_instance, p_execution_id, e.event_id, e.event_data
    FROM unnest(p_event_ids, p_events) AS e(event_id, event_data);

    -- The instance row mirrors its current execution, and the totals count
    -- what the turn added (stats.sql). The execution's status is known from
    -- the writes above when this turn wrote the current execution, and
    -- unchanged when it wrote nothing and that execution was counted
    -- already; only otherwise is it read.
    IF v_found THEN
        IF NOT (v_written AND v_current = p_execution_id) THEN
            IF v_counted IS NOT DISTINCT FROM v_current THEN
                v_status := v_old_status;
                v_completed := v_old_completed;
            ELSE
                SELECT e.status, e.completed_at_ms INTO v_status, v_completed
                FROM __SCHEMA__.executions e
                WHERE e.instance_id = v_instance AND e.execution_id = v_current;
            END IF;
        END IF;
        v_status := COALESCE(v_status, 'Running');
        IF v_counted IS NULL THEN
            -- First turn of the instance: count it and its executions.
            SELECT count(*) INTO v_executions FROM __SCHEMA__.executions e
            WHERE e.instance_id = v_instance;
            v_delta := __SCHEMA__.status_delta(v_status, 1);
        ELSE
            v_executions := GREATEST(v_current - v_counted, 0);
            IF v_old_status IS DISTINCT FROM v_status THEN
                SELECT array_agg(a + b ORDER BY n) INTO v_delta
                FROM unnest(__SCHEMA__.status_delta(v_old_status, -1),
                            __SCHEMA__.status_delta(v_status, 1)) WITH ORDINALITY AS x(a, b, n);
            END IF;
        END IF;
        IF v_counted IS DISTINCT FROM v_current OR v_old_status IS DISTINCT FROM v_status
           OR v_old_completed IS DISTINCT FROM v_completed THEN
            UPDATE __SCHEMA__.instances i
            SET status = v_status, completed_at_ms = v_completed, counted_execution_id = v_current
            WHERE i.instance_id = v_instance;
        END IF;
    END IF;
    PERFORM __SCHEMA__.add_stats(CASE WHEN v_found AND v_counted IS NULL THEN 1 ELSE 0 END,
        v_executions, cardinality(p_event_ids), v_delta);

    IF p_custom_status_action <> 0 THEN
        UPDATE __SCHEMA__.instances i SET
            custom_status = CASE WHEN p_custom_status_action = 1 THEN p_custom_status END,
            custom_status_version = i.custom_status_version + 1
        WHERE i.instance_id = v_instance;
    END IF;

    -- KV writes go to the delta; the fetch snapshot (kv_store) only changes
    -- when an execution ends, so replays of a running execution see the same
    -- snapshot every time.
    IF p_kv_clear_all THEN
        INSERT INTO __SCHEMA__.kv_delta AS d (instance_id, key, value, execution_id, last_updated_at_ms)
        SELECT v_instance, k.key, NULL, p_execution_id, v_now
        FROM (SELECT s.key FROM __SCHEMA__.kv_store s WHERE s.instance_id = v_instance
              UNION SELECT d2.key FROM __SCHEMA__.kv_delta d2 WHERE d2.instance_id = v_instance) k
        ON CONFLICT (instance_id, key) DO UPDATE SET
            value = NULL, execution_id = EXCLUDED.execution_id, last_updated_at_ms = EXCLUDED.last_updated_at_ms;
    END IF;
    IF cardinality(p_kv_keys) > 0 THEN
        INSERT INTO __SCHEMA__.kv_delta AS d (instance_id, key, value, execution_id, last_updated_at_ms)
        SELECT v_instance, k.key, k.value, p_execution_id, k.updated
        FROM unnest(p_kv_keys, p_kv_values, p_kv_updated_at_ms) AS k(key, value, updated)
        ON CONFLICT (instance_id, key) DO UPDATE SET
            value = EXCLUDED.value, execution_id = EXCLUDED.execution_id,
            last_updated_at_ms = EXCLUDED.last_updated_at_ms;
    END IF;
    IF v_ends THEN
        DELETE FROM __SCHEMA__.kv_store s
        USING __SCHEMA__.kv_delta d
        WHERE s.instance_id = v_instance AND d.instance_id = v_instance
          AND d.key = s.key AND d.value IS NULL;
        INSERT INTO __SCHEMA__.kv_store AS s (instance_id, key, value, execution_id, last_updated_at_ms)
        SELECT d.instance_id, d.key, d.value, d.execution_id, d.last_updated_at_ms
        FROM __SCHEMA__.kv_delta d WHERE d.instance_id = v_instance AND d.value IS NOT NULL
        ON CONFLICT (instance_id, key) DO UPDATE SET
            value = EXCLUDED.value, execution_id = EXCLUDED.execution_id,
            last_updated_at_ms = EXCLUDED.last_updated_at_ms;
        DELETE FROM __SCHEMA__.kv_delta d WHERE d.instance_id = v_instance;
    END IF;

    -- New activities first, then cancellations: an activity scheduled and
    -- cancelled in the same turn leaves nothing behind.
    -- Guarded like the other optional writes: a statement on a segmented
    -- queue costs its executor start even when it inserts no row.
    IF cardinality(p_worker_items) > 0 THEN
        INSERT INTO __SCHEMA__.worker_queue (work_item, visible_at_ms, instance_id, execution_id,
            activity_id, session_id, tag, created_at_ms)
        SELECT w.item, v_now, w.instance_id, w.execution_id, w.activity_id, w.session_id, w.tag, v_now
        FROM unnest(p_worker_items, p_worker_instances, p_worker_executions, p_worker_activity_ids,
                    p_worker_sessions, p_worker_tags)
             WITH ORDINALITY AS w(item, instance_id, execution_id, activity_id, session_id, tag, ord)
        ORDER BY w.ord;
    END IF;

    IF cardinality(p_cancel_instances) > 0 THEN
        DELETE FROM __SCHEMA__.worker_queue w
        USING unnest(p_cancel_instances, p_cancel_executions, p_cancel_activity_ids)
              AS c(instance_id, execution_id, activity_id)
        WHERE w.instance_id = c.instance_id AND w.execution_id = c.execution_id
          AND w.activity_id = c.activity_id;
    END IF;

    -- One statement on the queue: consume the tagged messages, restore the
    -- ones deferred behind the lease (every deferral committed before we
    -- locked the lease row), and say whether any message of the instance
    -- that arrived during the lease is ready now. A tagged message is only
    -- consumed, never also restored (one row, one change per statement).
    WITH consumed AS (
        DELETE FROM __SCHEMA__.orchestrator_queue q
        WHERE q.instance_id = v_instance AND q.lock_token = p_lock_token
    ), restored AS (
        UPDATE __SCHEMA__.orchestrator_queue q
        SET visible_at_ms = q.deferred_visible_ms, deferred_visible_ms = NULL
        WHERE q.instance_id = v_instance AND q.deferred_visible_ms IS NOT NULL
          AND q.lock_token IS DISTINCT FROM p_lock_token
        RETURNING q.visible_at_ms
    )
    SELECT EXISTS (SELECT 1 FROM restored r WHERE r.visible_at_ms <= v_now)
        OR EXISTS (SELECT 1 FROM __SCHEMA__.orchestrator_queue q
                   WHERE q.instance_id = v_instance AND q.visible_at_ms <= v_now
                     AND q.lock_token IS DISTINCT FROM p_lock_token
                     AND q.deferred_visible_ms IS NULL)
    INTO v_more;

    IF cardinality(p_orch_items) > 0 THEN
        -- queue_messages holds the targets' lease rows against their
        -- deletion (header); ours is locked already.
        v_made := __SCHEMA__.queue_messages(p_orch_instances, p_orch_kinds, p_orch_items,
            p_orch_visible_at_ms, v_now, v_instance);
        v_others := v_made.ready;
        v_more := v_more OR v_made.except_ready;
        v_due := v_made.due_at_ms;
    END IF;

    -- What the turn made ready (see the header): messages that arrived
    -- during the lease, or that it sent itself, ready now; the messages to
    -- other instances (its own timers are counted there too: they are due,
    -- not ready); the new activities, and whether one is bound to a session.
    -- With p_prefetch_lock_timeout_ms, the next turn: what
    -- fetch_orchestration_item(p_prefetch_lock_timeout_ms, p_prefetch_min,
    -- p_prefetch_max) returns, claimed in this transaction, after this
    -- turn's writes (src/provider/prefetch.rs), of another instance than
    -- this one (its new messages are handed back, src/wakeups.rs). It never
    -- waits: candidates are taken SKIP LOCKED, and the queue rows of a
    -- claimed instance are changed only by holders of its lease row.
    -- Without it, NULLs (the subquery's one-time filter does not call the
    -- fetch).
    RETURN QUERY
    SELECT v_more, v_others, v_due - v_now,
        cardinality(p_worker_items),
        EXISTS (SELECT 1 FROM unnest(p_worker_sessions) AS s(id) WHERE s.id IS NOT NULL),
        f.*
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (
        SELECT * FROM __SCHEMA__.fetch_orchestration_item(p_prefetch_lock_timeout_ms,
            p_prefetch_min, p_prefetch_max, FALSE, v_instance)
        WHERE p_prefetch_lock_timeout_ms IS NOT NULL) AS f ON TRUE;
END
$$;

-- What became of the turn fetched with p_lock_token, for an ack whose
-- connection broke before its reply arrived: 'done' (that ack committed
-- it), 'held' (the lease is still live: the ack may be retried) or 'lost'
-- (not committed, and the lease is gone).
CREATE FUNCTION __SCHEMA__.ack_outcome(p_lock_token TEXT)
RETURNS TEXT
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM __SCHEMA__.instance_locks l
                     WHERE l.instance_id = __SCHEMA__.token_key(p_lock_token)
                       AND l.last_acked_token = p_lock_token)
            THEN 'done'
        WHEN EXISTS (SELECT 1 FROM __SCHEMA__.instance_locks l
                     WHERE l.instance_id = __SCHEMA__.token_key(p_lock_token)
                       AND l.lock_token = p_lock_token AND l.locked_until_ms > __SCHEMA__.now_ms())
            THEN 'held'
        ELSE 'lost'
    END
$$;

-- Release a lease without committing the turn. Only the messages this fetch
-- tagged are touched: with a delay they become visible at now + delay, and
-- with p_ignore_attempt their attempt count is given back (never below 0).
CREATE FUNCTION __SCHEMA__.abandon_orchestration_item(
    p_lock_token TEXT,
    p_delay_ms BIGINT,
    p_ignore_attempt BOOLEAN
) RETURNS TABLE (ready BOOLEAN, due_in_ms BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_instance TEXT;
    v_held TEXT;
    v_now BIGINT := __SCHEMA__.now_ms();
BEGIN
    -- Token checked on the version we lock, as in the ack.
    SELECT l.instance_id, l.lock_token INTO v_instance, v_held
    FROM __SCHEMA__.instance_locks l
    WHERE l.instance_id = __SCHEMA__.token_key(p_lock_token)
    FOR NO KEY UPDATE;
    IF v_held IS DISTINCT FROM p_lock_token THEN
        PERFORM __SCHEMA__.raise_lock_error('abandon_orchestration_item', p_lock_token, FALSE);
    END IF;

    UPDATE __SCHEMA__.instance_locks l SET lock_token = NULL, locked_until_ms = 0
    WHERE l.instance_id = v_instance;

    -- One statement on the queue, as in the ack: the tagged messages come
    -- back (a delivered message is no longer deferred), those deferred
    -- behind the lease are restored, and the result says what the abandon
    -- made ready: the instance's messages, now or after the delay.
    RETURN QUERY
    WITH returned AS (
        UPDATE __SCHEMA__.orchestrator_queue q SET
            lock_token = NULL,
            visible_at_ms = CASE WHEN p_delay_ms IS NULL THEN q.visible_at_ms
                                 ELSE v_now + p_delay_ms END,
            deferred_visible_ms = NULL,
            attempt_count = CASE WHEN p_ignore_attempt THEN GREATEST(q.attempt_count - 1, 0)
                                 ELSE q.attempt_count END
        WHERE q.instance_id = v_instance AND q.lock_token = p_lock_token
        RETURNING q.visible_at_ms
    ), restored AS (
        UPDATE __SCHEMA__.orchestrator_queue q
        SET visible_at_ms = q.deferred_visible_ms, deferred_visible_ms = NULL
        WHERE q.instance_id = v_instance AND q.deferred_visible_ms IS NOT NULL
          AND q.lock_token IS DISTINCT FROM p_lock_token
        RETURNING q.visible_at_ms
    ), messages AS (
        SELECT r.visible_at_ms FROM returned r
        UNION ALL SELECT r.visible_at_ms FROM restored r
        UNION ALL SELECT q.visible_at_ms FROM __SCHEMA__.orchestrator_queue q
                  WHERE q.instance_id = v_instance AND q.lock_token IS DISTINCT FROM p_lock_token
                    AND q.deferred_visible_ms IS NULL
    )
    SELECT COALESCE(bool_or(m.visible_at_ms <= v_now), FALSE),
           min(m.visible_at_ms) FILTER (WHERE m.visible_at_ms > v_now) - v_now
    FROM messages m;
END
$$;

-- Extend a live lease to now + extend. Never revives a lease that had
-- expired when the request arrived, never shortens a live one. "Now" is
-- read before the update (see the header on volatile values): a wait for
-- the row can only be behind this lease's own ack or abandon (after which
-- the token no longer matches) or a deletion.
CREATE FUNCTION __SCHEMA__.renew_orchestration_item_lock(
    p_lock_token TEXT,
    p_extend_ms BIGINT
) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    v_until BIGINT := __SCHEMA__.now_ms() + p_extend_ms;
BEGIN
    UPDATE __SCHEMA__.instance_locks l
    SET locked_until_ms = GREATEST(l.locked_until_ms, v_until)
    WHERE l.instance_id = __SCHEMA__.token_key(p_lock_token)
      AND l.lock_token = p_lock_token AND l.locked_until_ms > __SCHEMA__.request_ms();
    IF NOT FOUND THEN
        PERFORM __SCHEMA__.raise_instance_lease_error('renew_orchestration_item_lock', p_lock_token);
    END IF;
END
$$;

-- Removes the lease row of an instance that has nothing left (no instance
-- row, no message queued or held, no worker item), unless an enqueue holds
-- it right now (then that enqueue's message keeps it). Called with the row
-- already locked by this transaction's fetch.
CREATE FUNCTION __SCHEMA__.forget_lease(p_instance_id TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM __SCHEMA__.instance_locks l WHERE l.instance_id = p_instance_id
    FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Statements after the lock see every enqueue that committed before it.
    DELETE FROM __SCHEMA__.instance_locks l
    WHERE l.instance_id = p_instance_id
      AND NOT EXISTS (SELECT 1 FROM __SCHEMA__.instances i WHERE i.instance_id = p_instance_id)
      AND NOT EXISTS (SELECT 1 FROM __SCHEMA__.orchestrator_queue q WHERE q.instance_id = p_instance_id)
      AND NOT EXISTS (SELECT 1 FROM __SCHEMA__.orchestrator_held h WHERE h.instance_id = p_instance_id)
      AND NOT EXISTS (SELECT 1 FROM __SCHEMA__.worker_queue w WHERE w.instance_id = p_instance_id);
END
$$;

-- Reclaims the queue segment that inserts reach next (decisions 0005 and
-- 0010): its live rows (leased, delayed or not yet taken messages) move
-- unchanged to segment 3, which is never truncated, so a long-lived row is
-- moved once, not every three seconds; then the segment is truncated, which
-- frees its dead rows and index entries even while an old snapshot keeps
-- vacuum from removing them. Returns the rows moved, 0 when the segment was already
-- empty, -1 when a lock was not granted within lock_timeout (someone holds
-- the segment: a long transaction or pg_dump); the next call tries again.
-- The segment's ACCESS EXCLUSIVE lock is taken before reading it, so no
-- transaction touches its rows between the move and the truncation.
-- SECURITY DEFINER: TRUNCATE needs a privilege the runtime role need not
-- have (every object below is schema-qualified).
CREATE FUNCTION __SCHEMA__.reclaim_orchestrator_queue() RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER
SET lock_timeout = '50ms'
AS $$
DECLARE
    v_cur SMALLINT := __SCHEMA__.current_segment();
    v_part REGCLASS := ('__SCHEMA__.orchestrator_queue_s' || ((v_cur + 1) % 3))::REGCLASS;
    v_moved BIGINT;
BEGIN
    BEGIN
        -- Inside the block: reading the size takes a lock too.
        IF pg_relation_size(v_part) = 0 THEN
            RETURN 0;
        END IF;
        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', v_part);
        EXECUTE format(
            'WITH m AS (DELETE FROM %s q RETURNING q.*)
             INSERT INTO __SCHEMA__.orchestrator_queue (id, instance_id, kind, work_item, visible_at_ms,
                 lock_token, attempt_count, created_at_ms, deferred_visible_ms, seg)
             SELECT m.id, m.instance_id, m.kind, m.work_item, m.visible_at_ms, m.lock_token,
                 m.attempt_count, m.created_at_ms, m.deferred_visible_ms, 3 FROM m', v_part);
        GET DIAGNOSTICS v_moved = ROW_COUNT;
        EXECUTE format('TRUNCATE %s', v_part);
        RETURN v_moved;
    EXCEPTION WHEN lock_not_available THEN
        RETURN -1;
    END;
END
$$;
