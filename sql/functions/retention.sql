-- Retention: maintenance leases and the purge / prune batches the
-- maintenance task (src/retention.rs) and `duroxide-postgres purge` run.
--
-- Guarantees
-- * One runner per task and schema: a batch first takes its lease row
--   FOR SHARE and fails with DX006 unless the caller holds a live lease
--   (database clock). A takeover (maintenance_acquire by another owner) waits
--   for running batches to commit, so two owners never purge at once. A
--   process that dies stops renewing; its lease runs out and another
--   process's maintenance_acquire takes it over.
-- * Never waits for a turn and never makes one wait long: lease rows of the
--   instances to delete are taken with SKIP LOCKED (try_lock_instances in
--   management.sql); a tree with a member whose lease row is busy, or that
--   has a turn in flight, is skipped this time. Each batch is one short
--   transaction of at most p_limit root trees.
-- * Whole trees only: a root is deleted with all its sub-orchestrations, and
--   only when every member is terminal (Completed or Failed) as re-checked
--   under the locks; otherwise the tree is skipped, never split.
-- * Rows go through delete_instance_rows (the one delete path) and
--   prune_instances, so totals stay exact.
-- * Idempotent: a batch deletes what is eligible when it runs; repeating it
--   finds nothing more. Batches walk a keyset cursor
--   (completed_at_ms, instance_id), so skipped trees are not re-read within
--   one pass.
--
-- DX006: the caller does not hold the maintenance lease.

-- Takes or renews the lease of p_task for p_owner for p_lease_ms, if it is
-- free, expired, or already p_owner's. Returns whether p_owner holds it now,
-- the holder, and the holder's remaining lease in ms.
CREATE FUNCTION __SCHEMA__.maintenance_acquire(p_task TEXT, p_owner TEXT, p_lease_ms BIGINT)
RETURNS TABLE (acquired BOOLEAN, holder TEXT, remaining_ms BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now BIGINT := __SCHEMA__.now_ms();
BEGIN
    INSERT INTO __SCHEMA__.maintenance_leases AS m (task, owner, leased_until_ms, acquired_at_ms)
    VALUES (p_task, p_owner, v_now + p_lease_ms, v_now)
    ON CONFLICT (task) DO UPDATE SET
        owner = EXCLUDED.owner,
        leased_until_ms = EXCLUDED.leased_until_ms,
        acquired_at_ms = CASE WHEN m.owner = EXCLUDED.owner THEN m.acquired_at_ms
                              ELSE EXCLUDED.acquired_at_ms END
    WHERE m.owner = EXCLUDED.owner OR m.leased_until_ms <= v_now;
    RETURN QUERY
    SELECT m.owner = p_owner, m.owner, m.leased_until_ms - __SCHEMA__.now_ms()
    FROM __SCHEMA__.maintenance_leases m WHERE m.task = p_task;
END
$$;

-- Gives the lease up (a clean shutdown), if p_owner holds it.
CREATE FUNCTION __SCHEMA__.maintenance_release(p_task TEXT, p_owner TEXT)
RETURNS VOID
LANGUAGE sql AS $$
    DELETE FROM __SCHEMA__.maintenance_leases m WHERE m.task = p_task AND m.owner = p_owner
$$;

-- Fails with DX006 unless p_owner holds a live lease on p_task; holds the
-- lease row (FOR SHARE) until the caller's transaction ends.
CREATE FUNCTION __SCHEMA__.maintenance_check(p_task TEXT, p_owner TEXT)
RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM __SCHEMA__.maintenance_leases m
    WHERE m.task = p_task AND m.owner = p_owner AND m.leased_until_ms > __SCHEMA__.now_ms()
    FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'maintenance lease % is not held by %', p_task, p_owner
            USING ERRCODE = 'DX006';
    END IF;
END
$$;

-- One purge batch: up to p_limit terminal root instances with a status in
-- p_statuses, completed before p_completed_before, after the cursor
-- (p_after_completed_ms, p_after_id), with their whole trees. With
-- p_dry_run nothing is locked or deleted; the counts say what would go
-- (instances only). roots_seen < p_limit means the pass is complete.
CREATE FUNCTION __SCHEMA__.retention_purge_batch(
    p_owner TEXT, p_completed_before BIGINT, p_statuses TEXT[], p_limit INTEGER,
    p_after_completed_ms BIGINT, p_after_id TEXT, p_dry_run BOOLEAN)
RETURNS TABLE (roots_seen BIGINT, roots_deleted BIGINT, instances BIGINT, executions BIGINT,
               events BIGINT, queue_messages BIGINT, cursor_completed_ms BIGINT, cursor_id TEXT)
LANGUAGE plpgsql
-- A bounded batch never repays JIT compiling (~20 ms per statement).
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    v_roots TEXT[];
    v_last_completed BIGINT;
    v_last_id TEXT;
    v_pairs_root TEXT[];
    v_pairs_id TEXT[];
    v_bad_roots TEXT[];
    v_busy TEXT[];
    v_ids TEXT[];
    v_ok_roots BIGINT;
BEGIN
    IF NOT p_dry_run THEN
        PERFORM __SCHEMA__.maintenance_check('retention', p_owner);
    END IF;

    SELECT array_agg(r.instance_id ORDER BY r.completed_at_ms, r.instance_id),
           (array_agg(r.completed_at_ms ORDER BY r.completed_at_ms DESC, r.instance_id DESC))[1],
           (array_agg(r.instance_id ORDER BY r.completed_at_ms DESC, r.instance_id DESC))[1]
    INTO v_roots, v_last_completed, v_last_id
    FROM (
        SELECT i.instance_id, i.completed_at_ms
        FROM __SCHEMA__.instances i
        WHERE i.parent_instance_id IS NULL
          AND i.status <> 'Running'
          AND i.status = ANY (p_statuses)
          AND i.completed_at_ms < p_completed_before
          AND (i.completed_at_ms, i.instance_id) > (p_after_completed_ms, p_after_id)
        ORDER BY i.completed_at_ms, i.instance_id
        LIMIT p_limit
    ) r;
    IF v_roots IS NULL THEN
        RETURN QUERY SELECT 0::BIGINT, 0::BIGINT, 0::BIGINT, 0::BIGINT, 0::BIGINT, 0::BIGINT,
            p_after_completed_ms, p_after_id;
        RETURN;
    END IF;

    -- Every member of every tree, tagged with its root.
    -- Children by index per member: OFFSET 0 keeps the lookup a nested
    -- loop (planned as a join, it merged over every child of the store).
    WITH RECURSIVE tree(root_id, instance_id) AS (
        SELECT r, r FROM unnest(v_roots) AS r
        UNION
        SELECT t.root_id, c.instance_id
        FROM tree t
        CROSS JOIN LATERAL (SELECT c.instance_id FROM __SCHEMA__.instances c
                            WHERE c.parent_instance_id = t.instance_id OFFSET 0) c
    )
    SELECT array_agg(t.root_id), array_agg(t.instance_id) INTO v_pairs_root, v_pairs_id FROM tree t;

    IF NOT p_dry_run THEN
        v_busy := __SCHEMA__.try_lock_instances(v_pairs_id);
    ELSE
        v_busy := '{}';
    END IF;

    -- Under the locks (each statement sees what committed before it): a
    -- tree goes only if every member is terminal and none is busy.
    SELECT array_agg(DISTINCT p.root_id) INTO v_bad_roots
    FROM unnest(v_pairs_root, v_pairs_id) AS p(root_id, instance_id)
    LEFT JOIN __SCHEMA__.instances i ON i.instance_id = p.instance_id
    WHERE p.instance_id = ANY (v_busy)
       OR i.instance_id IS NULL
       OR i.status NOT IN ('Completed', 'Failed')
       OR (p.instance_id = p.root_id AND NOT (i.status = ANY (p_statuses)));

    SELECT array_agg(p.instance_id), count(DISTINCT p.root_id) INTO v_ids, v_ok_roots
    FROM unnest(v_pairs_root, v_pairs_id) AS p(root_id, instance_id)
    WHERE NOT (p.root_id = ANY (COALESCE(v_bad_roots, '{}')));

    IF v_ids IS NULL THEN
        RETURN QUERY SELECT cardinality(v_roots)::BIGINT, 0::BIGINT, 0::BIGINT, 0::BIGINT, 0::BIGINT,
            0::BIGINT, v_last_completed, v_last_id;
        RETURN;
    END IF;
    IF p_dry_run THEN
        RETURN QUERY SELECT cardinality(v_roots)::BIGINT, v_ok_roots, cardinality(v_ids)::BIGINT,
            0::BIGINT, 0::BIGINT, 0::BIGINT, v_last_completed, v_last_id;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT cardinality(v_roots)::BIGINT, v_ok_roots, d.instances, d.executions, d.events,
           d.queue_messages, v_last_completed, v_last_id
    FROM __SCHEMA__.delete_instance_rows(v_ids) d;
END
$$;

-- One pruning batch: instances after p_after_id that still have executions
-- continued-as-new, keeping the newest p_keep_last executions of each
-- (prune_instances never deletes a running or the current execution).
-- instances_seen < p_limit means the pass is complete.
CREATE FUNCTION __SCHEMA__.retention_prune_batch(
    p_owner TEXT, p_keep_last BIGINT, p_limit INTEGER, p_after_id TEXT)
RETURNS TABLE (instances_seen BIGINT, executions_deleted BIGINT, events_deleted BIGINT, cursor_id TEXT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ids TEXT[];
BEGIN
    PERFORM __SCHEMA__.maintenance_check('retention', p_owner);
    SELECT array_agg(s.instance_id ORDER BY s.instance_id) INTO v_ids FROM (
        SELECT DISTINCT e.instance_id FROM __SCHEMA__.executions e
        WHERE e.status = 'ContinuedAsNew' AND e.instance_id > p_after_id
        ORDER BY e.instance_id
        LIMIT p_limit
    ) s;
    IF v_ids IS NULL THEN
        RETURN QUERY SELECT 0::BIGINT, 0::BIGINT, 0::BIGINT, p_after_id;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT cardinality(v_ids)::BIGINT, p.executions_deleted, p.events_deleted, v_ids[cardinality(v_ids)]
    FROM __SCHEMA__.prune_instances(v_ids, p_keep_last, NULL) p;
END
$$;
