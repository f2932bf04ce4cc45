-- Management (ProviderAdmin): listings, info, metrics, deletion and pruning.
--
-- Guarantees
-- * Deletion locks the lease rows (instance_locks) of every instance it
--   deletes, in instance_id order, FOR UPDATE, before touching anything
--   else: the same order as fetch and ack, so it cannot deadlock with them,
--   and a lock that waits for every enqueue and worker ack holding the row
--   FOR KEY SHARE (orchestrator_queue.sql): nothing they write survives
--   the deletion. Deleting the lease row is what makes an in-flight ack of
--   a deleted instance fail instead of recreating its state.
-- * delete_instances_atomic is all-or-nothing: it deletes every listed
--   instance or, on any refusal (still running without force, a child not in
--   the list), nothing.
-- * Pruning never deletes an instance's current execution nor a running one,
--   and never touches KV state.
-- * An instance's status is the status of its current execution, mirrored
--   on the instance row by the ack (stats.sql), so status filters, counts
--   and bulk selections are answered from indexes, not by scanning.
-- * Every deletion and pruning records what it removed in the totals
--   (stat deltas), so get_system_metrics stays exact without counting.

CREATE FUNCTION __SCHEMA__.list_instances()
RETURNS TABLE (instance_id TEXT)
LANGUAGE sql STABLE AS $$
    SELECT i.instance_id FROM __SCHEMA__.instances i
    ORDER BY i.created_at_ms DESC, i.instance_id
$$;

CREATE FUNCTION __SCHEMA__.list_instances_by_status(p_status TEXT)
RETURNS TABLE (instance_id TEXT)
LANGUAGE sql STABLE AS $$
    SELECT i.instance_id
    FROM __SCHEMA__.instances i
    WHERE i.status = p_status
    ORDER BY i.created_at_ms DESC, i.instance_id
$$;

CREATE FUNCTION __SCHEMA__.list_executions(p_instance_id TEXT)
RETURNS TABLE (execution_id BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT e.execution_id FROM __SCHEMA__.executions e
    WHERE e.instance_id = p_instance_id
    ORDER BY e.execution_id
$$;

-- The highest execution id of an instance; 1 when it has none (unknown
-- instance), as duroxide's trait default and SQLite provider answer.
CREATE FUNCTION __SCHEMA__.latest_execution_id(p_instance_id TEXT)
RETURNS BIGINT
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(
        (SELECT max(e.execution_id) FROM __SCHEMA__.executions e WHERE e.instance_id = p_instance_id),
        1)
$$;

CREATE FUNCTION __SCHEMA__.get_instance_info(p_instance_id TEXT)
RETURNS TABLE (instance_id TEXT, orchestration_name TEXT, orchestration_version TEXT,
               current_execution_id BIGINT, status TEXT, output BYTEA,
               created_at_ms BIGINT, updated_at_ms BIGINT, parent_instance_id TEXT)
LANGUAGE sql STABLE AS $$
    SELECT i.instance_id, i.orchestration_name, i.orchestration_version, i.current_execution_id,
           i.status, e.output, i.created_at_ms, i.updated_at_ms,
           i.parent_instance_id
    FROM __SCHEMA__.instances i
    LEFT JOIN __SCHEMA__.executions e
           ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
    WHERE i.instance_id = p_instance_id
$$;

CREATE FUNCTION __SCHEMA__.get_execution_info(p_instance_id TEXT, p_execution_id BIGINT)
RETURNS TABLE (execution_id BIGINT, status TEXT, output BYTEA, started_at_ms BIGINT,
               completed_at_ms BIGINT, event_count BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT e.execution_id, e.status, e.output, e.started_at_ms, e.completed_at_ms,
           (SELECT count(*) FROM __SCHEMA__.history h
            WHERE h.instance_id = e.instance_id AND h.execution_id = e.execution_id)
    FROM __SCHEMA__.executions e
    WHERE e.instance_id = p_instance_id AND e.execution_id = p_execution_id
$$;

-- From the maintained totals (stats.sql): executions are those of existing
-- instances.
CREATE FUNCTION __SCHEMA__.get_system_metrics()
RETURNS TABLE (total_instances BIGINT, total_executions BIGINT, running BIGINT,
               completed BIGINT, failed BIGINT, total_events BIGINT)
LANGUAGE sql AS $$
    SELECT s.instances, s.executions, s.running, s.completed, s.failed, s.events
    FROM __SCHEMA__.current_stats() s
$$;

-- Messages not held by a live lease (delayed ones included: timers live in
-- the orchestrator queue): all rows minus those a live lease holds. The
-- held ones are few and found from the partial token / lease indexes, so
-- no row is joined to its lease row.
CREATE FUNCTION __SCHEMA__.get_queue_depths()
RETURNS TABLE (orchestrator_queue BIGINT, worker_queue BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT
        (SELECT count(*) FROM __SCHEMA__.orchestrator_queue)
        - (SELECT count(*) FROM __SCHEMA__.orchestrator_queue q
           JOIN __SCHEMA__.instance_locks l ON l.instance_id = q.instance_id
           WHERE q.lock_token IS NOT NULL AND l.locked_until_ms > __SCHEMA__.now_ms()),
        (SELECT count(*) FROM __SCHEMA__.worker_queue)
        - (SELECT count(*) FROM __SCHEMA__.worker_queue w
           WHERE w.lock_token IS NOT NULL AND w.locked_until_ms > __SCHEMA__.now_ms())
$$;

CREATE FUNCTION __SCHEMA__.list_children(p_instance_id TEXT)
RETURNS TABLE (instance_id TEXT)
LANGUAGE sql STABLE AS $$
    SELECT i.instance_id FROM __SCHEMA__.instances i
    WHERE i.parent_instance_id = p_instance_id
    ORDER BY i.instance_id
$$;

-- No row for an unknown instance; one row (parent possibly NULL) otherwise.
CREATE FUNCTION __SCHEMA__.get_parent_id(p_instance_id TEXT)
RETURNS TABLE (parent_instance_id TEXT)
LANGUAGE sql STABLE AS $$
    SELECT i.parent_instance_id FROM __SCHEMA__.instances i WHERE i.instance_id = p_instance_id
$$;

-- Deletes every trace of p_ids. Internal: callers have checked what may go.
-- Every delete probes an index per id: with random_page_cost's default the
-- planner preferred to scan the whole orchestrator queue for a batch of
-- 2,000 ids (36 ms on 110,000 rows, growing with the queue, for finished
-- instances that have no message at all), so sequential scans are off
-- here; JIT compiling (~20 ms per statement at these cost estimates) is
-- never repaid by a bounded batch.
CREATE FUNCTION __SCHEMA__.delete_instance_rows(p_ids TEXT[])
RETURNS TABLE (instances BIGINT, executions BIGINT, events BIGINT, queue_messages BIGINT)
LANGUAGE plpgsql
SET enable_seqscan = off
SET jit = off
AS $$
DECLARE
    v_instances BIGINT;
    v_executions BIGINT;
    v_counted_executions BIGINT;
    v_counted_instances BIGINT;
    v_events BIGINT;
    v_orchestrator BIGINT;
    v_worker BIGINT;
    v_held BIGINT;
    v_status BIGINT[];
BEGIN
    DELETE FROM __SCHEMA__.history h WHERE h.instance_id = ANY (p_ids);
    GET DIAGNOSTICS v_events = ROW_COUNT;
    -- Totals count the executions of counted instances only.
    WITH d AS (
        DELETE FROM __SCHEMA__.executions e WHERE e.instance_id = ANY (p_ids)
        RETURNING e.instance_id
    )
    SELECT count(*), count(i.instance_id)
    INTO v_executions, v_counted_executions
    FROM d LEFT JOIN __SCHEMA__.instances i
           ON i.instance_id = d.instance_id AND i.counted_execution_id IS NOT NULL;
    DELETE FROM __SCHEMA__.orchestrator_queue q WHERE q.instance_id = ANY (p_ids);
    GET DIAGNOSTICS v_orchestrator = ROW_COUNT;
    DELETE FROM __SCHEMA__.orchestrator_held h WHERE h.instance_id = ANY (p_ids);
    GET DIAGNOSTICS v_held = ROW_COUNT;
    DELETE FROM __SCHEMA__.worker_queue w WHERE w.instance_id = ANY (p_ids);
    GET DIAGNOSTICS v_worker = ROW_COUNT;
    DELETE FROM __SCHEMA__.kv_store s WHERE s.instance_id = ANY (p_ids);
    DELETE FROM __SCHEMA__.kv_delta d WHERE d.instance_id = ANY (p_ids);
    DELETE FROM __SCHEMA__.instance_locks l WHERE l.instance_id = ANY (p_ids);
    WITH d AS (
        DELETE FROM __SCHEMA__.instances i WHERE i.instance_id = ANY (p_ids)
        RETURNING i.status, i.counted_execution_id
    )
    SELECT count(*), ARRAY[
               -count(*) FILTER (WHERE d.counted_execution_id IS NOT NULL AND d.status = 'Running'),
               -count(*) FILTER (WHERE d.counted_execution_id IS NOT NULL AND d.status = 'Completed'),
               -count(*) FILTER (WHERE d.counted_execution_id IS NOT NULL AND d.status = 'Failed'),
               -count(*) FILTER (WHERE d.counted_execution_id IS NOT NULL AND d.status = 'ContinuedAsNew')],
           count(*) FILTER (WHERE d.counted_execution_id IS NOT NULL)
    INTO v_instances, v_status, v_counted_instances
    FROM d;
    PERFORM __SCHEMA__.add_stats(-v_counted_instances, -v_counted_executions, -v_events, v_status);
    RETURN QUERY SELECT v_instances, v_executions, v_events, v_orchestrator + v_held + v_worker;
END
$$;

CREATE FUNCTION __SCHEMA__.lock_instances(p_ids TEXT[])
RETURNS VOID
LANGUAGE sql AS $$
    SELECT 1 FROM __SCHEMA__.instance_locks l
    WHERE l.instance_id = ANY (p_ids)
    ORDER BY l.instance_id
    FOR UPDATE
$$;

-- Like lock_instances, but never waits (retention must not hold up a turn
-- nor wait for one): locks what it can and returns the ids it could not
-- lock now, because another transaction holds their lease row or a live
-- lease is out on them (a turn is in flight).
CREATE FUNCTION __SCHEMA__.try_lock_instances(p_ids TEXT[])
RETURNS TEXT[]
LANGUAGE plpgsql AS $$
DECLARE
    v_busy TEXT[];
BEGIN
    -- One statement, joined (not `NOT (id = ANY (locked))`, which compared
    -- every lease row with every locked id: quadratic in the batch).
    WITH locked AS MATERIALIZED (
        SELECT l.instance_id, l.locked_until_ms FROM __SCHEMA__.instance_locks l
        WHERE l.instance_id = ANY (p_ids)
        ORDER BY l.instance_id
        FOR UPDATE SKIP LOCKED
    )
    SELECT array_agg(l.instance_id) INTO v_busy
    FROM __SCHEMA__.instance_locks l
    LEFT JOIN locked k ON k.instance_id = l.instance_id
    WHERE l.instance_id = ANY (p_ids)
      AND (k.instance_id IS NULL OR k.locked_until_ms > __SCHEMA__.now_ms());
    RETURN COALESCE(v_busy, '{}');
END
$$;

CREATE FUNCTION __SCHEMA__.delete_instances_atomic(p_ids TEXT[], p_force BOOLEAN)
RETURNS TABLE (instances BIGINT, executions BIGINT, events BIGINT, queue_messages BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_blocker TEXT;
BEGIN
    PERFORM __SCHEMA__.lock_instances(p_ids);

    IF NOT p_force THEN
        SELECT i.instance_id INTO v_blocker
        FROM __SCHEMA__.instances i
        JOIN __SCHEMA__.executions e
          ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
        WHERE i.instance_id = ANY (p_ids) AND e.status = 'Running'
        ORDER BY i.instance_id LIMIT 1;
        IF v_blocker IS NOT NULL THEN
            RAISE EXCEPTION 'instance % is still running; cancel it first or delete with force', v_blocker
                USING ERRCODE = 'DX004';
        END IF;
    END IF;

    SELECT c.instance_id INTO v_blocker
    FROM __SCHEMA__.instances c
    WHERE c.parent_instance_id = ANY (p_ids) AND NOT (c.instance_id = ANY (p_ids))
    ORDER BY c.instance_id LIMIT 1;
    IF v_blocker IS NOT NULL THEN
        RAISE EXCEPTION 'deleting these instances would orphan sub-orchestration %; delete the root instance so its whole tree goes', v_blocker
            USING ERRCODE = 'DX005';
    END IF;

    RETURN QUERY SELECT * FROM __SCHEMA__.delete_instance_rows(p_ids);
END
$$;

-- Deletes terminal root instances (and their whole trees) matching the
-- filter: ids allowlist AND completed before AND at most p_limit roots.
-- Running roots are skipped, not refused.
CREATE FUNCTION __SCHEMA__.delete_instance_bulk(p_ids TEXT[], p_completed_before BIGINT, p_limit BIGINT)
RETURNS TABLE (instances BIGINT, executions BIGINT, events BIGINT, queue_messages BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_all TEXT[];
BEGIN
    -- Oldest completion first, from instances_done_roots_idx: deleted roots
    -- leave the index, so repeated calls progress through the store.
    WITH RECURSIVE roots AS (
        SELECT i.instance_id
        FROM __SCHEMA__.instances i
        WHERE i.parent_instance_id IS NULL
          AND i.status <> 'Running'
          AND (p_ids IS NULL OR i.instance_id = ANY (p_ids))
          AND (p_completed_before IS NULL OR i.completed_at_ms < p_completed_before)
        ORDER BY i.completed_at_ms, i.instance_id
        LIMIT p_limit
    ), tree AS (
        -- Children by index per member (OFFSET 0 keeps the lookup a
        -- nested loop, not a merge over every child of the store).
        SELECT r.instance_id FROM roots r
        UNION
        SELECT c.instance_id FROM tree t
        CROSS JOIN LATERAL (SELECT c.instance_id FROM __SCHEMA__.instances c
                            WHERE c.parent_instance_id = t.instance_id OFFSET 0) c
    )
    SELECT array_agg(t.instance_id) INTO v_all FROM tree t;

    IF v_all IS NULL THEN
        RETURN QUERY SELECT 0::BIGINT, 0::BIGINT, 0::BIGINT, 0::BIGINT;
        RETURN;
    END IF;
    PERFORM __SCHEMA__.lock_instances(v_all);
    RETURN QUERY SELECT * FROM __SCHEMA__.delete_instance_rows(v_all);
END
$$;

-- Prunes old executions of the given instances. Keeps the newest
-- p_keep_last executions (at least 1: the current one), every running one,
-- and, with p_completed_before, every one completed at or after it.
CREATE FUNCTION __SCHEMA__.prune_instances(p_ids TEXT[], p_keep_last BIGINT, p_completed_before BIGINT)
RETURNS TABLE (instances_processed BIGINT, executions_deleted BIGINT, events_deleted BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_processed BIGINT;
    v_executions BIGINT;
    v_events BIGINT;
BEGIN
    WITH victims AS (
        SELECT r.instance_id, r.execution_id
        FROM (
            SELECT e.instance_id, e.execution_id, e.status, e.completed_at_ms, i.current_execution_id,
                   row_number() OVER (PARTITION BY e.instance_id ORDER BY e.execution_id DESC) AS rank
            FROM __SCHEMA__.executions e
            JOIN __SCHEMA__.instances i ON i.instance_id = e.instance_id
            WHERE e.instance_id = ANY (p_ids)
        ) r
        WHERE r.execution_id <> r.current_execution_id
          AND r.status <> 'Running'
          AND r.rank > GREATEST(COALESCE(p_keep_last, 1), 1)
          AND (p_completed_before IS NULL OR r.completed_at_ms < p_completed_before)
    ), deleted_events AS (
        DELETE FROM __SCHEMA__.history h USING victims v
        WHERE h.instance_id = v.instance_id AND h.execution_id = v.execution_id
        RETURNING 1
    ), deleted_executions AS (
        DELETE FROM __SCHEMA__.executions e USING victims v
        WHERE e.instance_id = v.instance_id AND e.execution_id = v.execution_id
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM __SCHEMA__.instances i WHERE i.instance_id = ANY (p_ids)),
           (SELECT count(*) FROM deleted_executions),
           (SELECT count(*) FROM deleted_events)
    INTO v_processed, v_executions, v_events;
    PERFORM __SCHEMA__.add_stats(0, -v_executions, -v_events, ARRAY[0, 0, 0, 0]::BIGINT[]);
    RETURN QUERY SELECT v_processed, v_executions, v_events;
END
$$;

CREATE FUNCTION __SCHEMA__.prune_executions(p_instance_id TEXT, p_keep_last BIGINT, p_completed_before BIGINT)
RETURNS TABLE (instances_processed BIGINT, executions_deleted BIGINT, events_deleted BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF NOT EXISTS (SELECT 1 FROM __SCHEMA__.instances i WHERE i.instance_id = p_instance_id) THEN
        RAISE EXCEPTION 'instance % not found', p_instance_id USING ERRCODE = 'DX003';
    END IF;
    RETURN QUERY SELECT * FROM __SCHEMA__.prune_instances(ARRAY[p_instance_id], p_keep_last, p_completed_before);
END
$$;

-- Bulk pruning selects instances of any status (long-lived continue-as-new
-- instances are the main reason to prune): ids allowlist AND, with
-- p_filter_completed_before, having an execution completed before it, AND
-- at most p_limit instances. Without an allowlist only instances that still
-- have an execution continued-as-new beyond p_keep_last are selected (from
-- executions_continued_idx), so repeated calls progress through the store
-- instead of picking the same instances again.
CREATE FUNCTION __SCHEMA__.prune_executions_bulk(
    p_ids TEXT[], p_filter_completed_before BIGINT, p_limit BIGINT,
    p_keep_last BIGINT, p_completed_before BIGINT)
RETURNS TABLE (instances_processed BIGINT, executions_deleted BIGINT, events_deleted BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ids TEXT[];
BEGIN
    IF p_ids IS NOT NULL THEN
        SELECT array_agg(s.instance_id) INTO v_ids FROM (
            SELECT i.instance_id FROM __SCHEMA__.instances i
            WHERE i.instance_id = ANY (p_ids)
              AND (p_filter_completed_before IS NULL OR EXISTS (
                    SELECT 1 FROM __SCHEMA__.executions e
                    WHERE e.instance_id = i.instance_id AND e.completed_at_ms < p_filter_completed_before))
            ORDER BY i.created_at_ms, i.instance_id
            LIMIT p_limit
        ) s;
    ELSE
        -- Walks executions_continued_idx in instance order and looks each
        -- instance's current execution up by key (a correlated subquery, not
        -- a join: a join is planned as a hash join over every instance),
        -- stopping after p_limit instances. Below the current execution by
        -- at least p_keep_last (>= 1), so never the current one.
        SELECT array_agg(s.instance_id) INTO v_ids FROM (
            SELECT DISTINCT e.instance_id
            FROM __SCHEMA__.executions e
            WHERE e.status = 'ContinuedAsNew'
              AND e.execution_id <= (SELECT i.current_execution_id FROM __SCHEMA__.instances i
                                     WHERE i.instance_id = e.instance_id)
                                    - GREATEST(COALESCE(p_keep_last, 1), 1)
              AND (p_completed_before IS NULL OR e.completed_at_ms < p_completed_before)
              AND (p_filter_completed_before IS NULL OR EXISTS (
                    SELECT 1 FROM __SCHEMA__.executions e2
                    WHERE e2.instance_id = e.instance_id AND e2.completed_at_ms < p_filter_completed_before))
            ORDER BY e.instance_id
            LIMIT p_limit
        ) s;
    END IF;
    RETURN QUERY SELECT * FROM __SCHEMA__.prune_instances(COALESCE(v_ids, '{}'), p_keep_last, p_completed_before);
END
$$;
