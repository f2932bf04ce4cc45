-- Totals for get_system_metrics and status counts, kept by the writers.
--
-- Guarantees
-- * Exact: every write that adds or removes an instance, an execution of an
--   instance, a history event, or changes an instance's status appends one
--   delta row in its own transaction; totals = stat_totals + sum(stat_deltas)
--   under one snapshot.
-- * No queueing on a counter: writers only INSERT deltas (no row is
--   updated by two acks). A roll-up folds the deltas into stat_totals; it
--   takes the totals row with SKIP LOCKED, so it never waits and at most one
--   runs at a time.
-- * The instance row mirrors its current execution (status, completed_at_ms):
--   ack_orchestration_item keeps it, after it wrote the execution row.

-- Which delta column an instance status counts in (NULL: none).
CREATE FUNCTION __SCHEMA__.status_delta(p_status TEXT, p_sign BIGINT)
RETURNS BIGINT[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY[
        CASE WHEN p_status = 'Running' THEN p_sign ELSE 0 END,
        CASE WHEN p_status = 'Completed' THEN p_sign ELSE 0 END,
        CASE WHEN p_status = 'Failed' THEN p_sign ELSE 0 END,
        CASE WHEN p_status = 'ContinuedAsNew' THEN p_sign ELSE 0 END]::BIGINT[]
$$;

-- Folds the deltas into the totals, unless another roll-up is running.
CREATE FUNCTION __SCHEMA__.rollup_stats()
RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM __SCHEMA__.stat_totals t FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    WITH d AS (
        DELETE FROM __SCHEMA__.stat_deltas RETURNING *
    ), s AS (
        SELECT COALESCE(sum(d.instances), 0) AS instances, COALESCE(sum(d.executions), 0) AS executions,
               COALESCE(sum(d.events), 0) AS events, COALESCE(sum(d.running), 0) AS running,
               COALESCE(sum(d.completed), 0) AS completed, COALESCE(sum(d.failed), 0) AS failed,
               COALESCE(sum(d.continued_as_new), 0) AS continued_as_new
        FROM d
    )
    UPDATE __SCHEMA__.stat_totals t SET
        instances = t.instances + s.instances, executions = t.executions + s.executions,
        events = t.events + s.events, running = t.running + s.running,
        completed = t.completed + s.completed, failed = t.failed + s.failed,
        continued_as_new = t.continued_as_new + s.continued_as_new
    FROM s;
END
$$;

-- Appends one delta row (nothing when every value is zero).
CREATE FUNCTION __SCHEMA__.add_stats(p_instances BIGINT, p_executions BIGINT, p_events BIGINT,
                                     p_status BIGINT[])
RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF p_instances <> 0 OR p_executions <> 0 OR p_events <> 0
       OR p_status <> ARRAY[0, 0, 0, 0]::BIGINT[] THEN
        INSERT INTO __SCHEMA__.stat_deltas (instances, executions, events, running, completed, failed,
                                            continued_as_new)
        VALUES (p_instances, p_executions, p_events, p_status[1], p_status[2], p_status[3], p_status[4]);
    END IF;
    -- About one write in a thousand folds the deltas, so they stay few
    -- without any background task.
    IF random() < 0.001 THEN
        PERFORM __SCHEMA__.rollup_stats();
    END IF;
END
$$;

-- Current totals: the rolled-up row plus the deltas not folded yet. Folds
-- them first when no other roll-up is running.
CREATE FUNCTION __SCHEMA__.current_stats()
RETURNS TABLE (instances BIGINT, executions BIGINT, events BIGINT, running BIGINT,
               completed BIGINT, failed BIGINT, continued_as_new BIGINT)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM __SCHEMA__.rollup_stats();
    RETURN QUERY
    SELECT t.instances + COALESCE(sum(d.instances), 0)::BIGINT,
           t.executions + COALESCE(sum(d.executions), 0)::BIGINT,
           t.events + COALESCE(sum(d.events), 0)::BIGINT,
           t.running + COALESCE(sum(d.running), 0)::BIGINT,
           t.completed + COALESCE(sum(d.completed), 0)::BIGINT,
           t.failed + COALESCE(sum(d.failed), 0)::BIGINT,
           t.continued_as_new + COALESCE(sum(d.continued_as_new), 0)::BIGINT
    FROM __SCHEMA__.stat_totals t LEFT JOIN __SCHEMA__.stat_deltas d ON TRUE
    GROUP BY t.instances, t.executions, t.events, t.running, t.completed, t.failed, t.continued_as_new;
END
$$;
