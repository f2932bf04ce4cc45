-- Inspection: the read-only query layer behind the health metrics, the
-- `duroxide-postgres` CLI (status, show, stuck) and the dashboard.
--
-- Guarantees
-- * Read-only: plain SELECTs, no row locks (no FOR UPDATE), nothing written,
--   so they never wait on nor block fetch, ack or renewal, and they run under
--   a role with only SELECT on the tables (plus pg_read_all_stats, or
--   pg_monitor, to see other roles' sessions in the vacuum columns).
-- * Every answer is one statement, on one snapshot, timed by the database
--   clock (now_ms()) like the leases it describes.
-- * The reports that read the queues are STABLE set-returning SQL
--   functions, which PostgreSQL inlines into the calling statement: the
--   queue segments are locked when that statement is planned, before its
--   snapshot is taken, so a reclaim it waited for is seen whole
--   (tests/races.rs, queue_depths_waiting_on_a_reclaim_...). A function
--   that is not inlined reads with its caller's older snapshot and must be
--   VOLATILE instead (work_ack_outcome, worker_queue.sql).
-- * Bounded: listings take a limit; the queue summaries scan the queue tables
--   once (their cost grows with the queue depth, not with history).
-- * Queue tables may be plain or partitioned: reads go through the parent,
--   and table statistics add up the parent and its partitions.
-- * Names a caller relies on (queue names, lease states) are spelled here
--   and mapped in exactly one place in Rust (src/inspect/).

-- Size and vacuum statistics of every table of the store; a partitioned
-- table counts with its partitions (partitions are not listed on their own).
CREATE FUNCTION __SCHEMA__.table_stats()
RETURNS TABLE (table_name TEXT, live_tuples BIGINT, dead_tuples BIGINT, total_bytes BIGINT,
               last_vacuum_ms BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT c.relname::TEXT,
           COALESCE(sum(s.n_live_tup), 0)::BIGINT,
           COALESCE(sum(s.n_dead_tup), 0)::BIGINT,
           COALESCE(sum(pg_total_relation_size(p.oid)), 0)::BIGINT,
           (EXTRACT(EPOCH FROM max(GREATEST(s.last_vacuum, s.last_autovacuum))) * 1000)::BIGINT
    FROM pg_class c
    CROSS JOIN LATERAL (SELECT c.oid
                        UNION ALL
                        SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = c.oid) p(oid)
    LEFT JOIN pg_stat_user_tables s ON s.relid = p.oid
    WHERE c.relnamespace = '__SCHEMA__'::regnamespace
      AND c.relkind IN ('r', 'p')
      AND NOT c.relispartition
    GROUP BY c.relname
    ORDER BY c.relname
$$;

-- The periodic health sample: one row per queue ('orchestrator', 'worker').
-- ready: visible and claimable now; delayed: not visible yet (timers,
-- abandon delays); leased: under a live lease (for the orchestrator queue,
-- every message of an instance whose turn is running). expired_leases:
-- leases that ran out and nobody has claimed again (instances for the
-- orchestrator queue, items for the worker queue). at_attempts: messages
-- fetched p_attempts times or more (poison candidates).
-- The xmin_holder columns describe the session of this database whose
-- snapshot is the oldest (it holds back vacuum of every table), the same on
-- both rows; NULL when no other session holds a snapshot.
CREATE FUNCTION __SCHEMA__.health_sample(p_attempts BIGINT)
RETURNS TABLE (queue TEXT, ready BIGINT, delayed BIGINT, leased BIGINT, expired_leases BIGINT,
               oldest_ready_age_ms BIGINT, at_attempts BIGINT,
               dead_tuples BIGINT, live_tuples BIGINT, total_bytes BIGINT,
               xmin_holder_pid INTEGER, xmin_holder_age_ms BIGINT,
               xmin_holder_application TEXT, xmin_holder_query_start_ms BIGINT,
               notification_queue_usage DOUBLE PRECISION)
LANGUAGE sql STABLE AS $$
    WITH clock AS (SELECT __SCHEMA__.now_ms() AS ms),
    orch AS (
        SELECT count(*) FILTER (WHERE l.locked_until_ms <= c.ms AND q.visible_at_ms <= c.ms) AS ready,
               count(*) FILTER (WHERE l.locked_until_ms <= c.ms AND q.visible_at_ms > c.ms) AS delayed,
               count(*) FILTER (WHERE l.locked_until_ms > c.ms) AS leased,
               max(c.ms - COALESCE(q.deferred_visible_ms, q.visible_at_ms))
                   FILTER (WHERE l.locked_until_ms <= c.ms AND q.visible_at_ms <= c.ms) AS oldest,
               count(*) FILTER (WHERE q.attempt_count >= p_attempts) AS at_attempts
        FROM clock c
        JOIN __SCHEMA__.orchestrator_queue q ON TRUE
        JOIN __SCHEMA__.instance_locks l ON l.instance_id = q.instance_id
    ),
    orch_expired AS (
        SELECT count(*) AS n FROM clock c
        JOIN __SCHEMA__.instance_locks l ON l.lock_token IS NOT NULL AND l.locked_until_ms <= c.ms
    ),
    work AS (
        SELECT count(*) FILTER (WHERE w.lock_token IS NULL AND w.visible_at_ms <= c.ms
                                   OR w.lock_token IS NOT NULL AND w.locked_until_ms <= c.ms) AS ready,
               count(*) FILTER (WHERE w.lock_token IS NULL AND w.visible_at_ms > c.ms) AS delayed,
               count(*) FILTER (WHERE w.lock_token IS NOT NULL AND w.locked_until_ms > c.ms) AS leased,
               count(*) FILTER (WHERE w.lock_token IS NOT NULL AND w.locked_until_ms <= c.ms) AS expired,
               max(c.ms - w.visible_at_ms)
                   FILTER (WHERE w.visible_at_ms <= c.ms
                             AND (w.lock_token IS NULL OR w.locked_until_ms <= c.ms)) AS oldest,
               count(*) FILTER (WHERE w.attempt_count >= p_attempts) AS at_attempts
        FROM clock c
        JOIN __SCHEMA__.worker_queue w ON TRUE
    ),
    holder AS (
        SELECT a.pid,
               ((EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start)) * 1000)::BIGINT AS age_ms,
               a.application_name::TEXT AS application,
               (EXTRACT(EPOCH FROM a.query_start) * 1000)::BIGINT AS query_start_ms
        FROM pg_stat_activity a
        WHERE a.datname = current_database()
          AND a.pid <> pg_backend_pid()
          AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
        ORDER BY GREATEST(age(a.backend_xmin), age(a.backend_xid)) DESC NULLS LAST,
                 a.xact_start NULLS LAST
        LIMIT 1
    ),
    stats AS (SELECT * FROM __SCHEMA__.table_stats())
    SELECT r.queue, r.ready, r.delayed, r.leased, r.expired, r.oldest, r.at_attempts,
           COALESCE(s.dead_tuples, 0), COALESCE(s.live_tuples, 0), COALESCE(s.total_bytes, 0),
           h.pid, h.age_ms, h.application, h.query_start_ms,
           pg_notification_queue_usage()
    FROM (SELECT 'orchestrator'::TEXT AS queue, 'orchestrator_queue'::TEXT AS tbl,
                 o.ready, o.delayed, o.leased, e.n AS expired, o.oldest, o.at_attempts
          FROM orch o, orch_expired e
          UNION ALL
          SELECT 'worker', 'worker_queue', w.ready, w.delayed, w.leased, w.expired, w.oldest,
                 w.at_attempts
          FROM work w) r
    LEFT JOIN stats s ON s.table_name = r.tbl
    LEFT JOIN holder h ON TRUE
$$;

-- Instances by the status of their current execution.
CREATE FUNCTION __SCHEMA__.instance_counts()
RETURNS TABLE (status TEXT, instances BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(e.status, 'Running'), count(*)
    FROM __SCHEMA__.instances i
    LEFT JOIN __SCHEMA__.executions e
           ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
    GROUP BY 1
    ORDER BY 1
$$;

-- One instance with its custom status; no row for an unknown instance.
CREATE FUNCTION __SCHEMA__.inspect_instance(p_instance_id TEXT)
RETURNS TABLE (instance_id TEXT, orchestration_name TEXT, orchestration_version TEXT,
               current_execution_id BIGINT, status TEXT, output BYTEA, parent_instance_id TEXT,
               custom_status BYTEA, custom_status_version BIGINT,
               created_at_ms BIGINT, updated_at_ms BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT i.instance_id, i.orchestration_name, i.orchestration_version, i.current_execution_id,
           COALESCE(e.status, 'Running'), e.output, i.parent_instance_id,
           i.custom_status, i.custom_status_version, i.created_at_ms, i.updated_at_ms
    FROM __SCHEMA__.instances i
    LEFT JOIN __SCHEMA__.executions e
           ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
    WHERE i.instance_id = p_instance_id
$$;

-- Every execution of an instance, oldest first.
CREATE FUNCTION __SCHEMA__.inspect_executions(p_instance_id TEXT)
RETURNS TABLE (execution_id BIGINT, status TEXT, output BYTEA, started_at_ms BIGINT,
               completed_at_ms BIGINT, event_count BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT e.execution_id, e.status, e.output, e.started_at_ms, e.completed_at_ms,
           (SELECT count(*) FROM __SCHEMA__.history h
            WHERE h.instance_id = e.instance_id AND h.execution_id = e.execution_id)
    FROM __SCHEMA__.executions e
    WHERE e.instance_id = p_instance_id
    ORDER BY e.execution_id
$$;

-- The history of every execution of an instance, in order, at most p_limit
-- events (the latest ones when there are more).
CREATE FUNCTION __SCHEMA__.inspect_history(p_instance_id TEXT, p_limit BIGINT)
RETURNS TABLE (execution_id BIGINT, event_id BIGINT, event_data TEXT)
LANGUAGE sql STABLE AS $$
    SELECT t.execution_id, t.event_id, t.event_data
    FROM (SELECT h.execution_id, h.event_id, h.event_data
          FROM __SCHEMA__.history h
          WHERE h.instance_id = p_instance_id
          ORDER BY h.execution_id DESC, h.event_id DESC
          LIMIT p_limit) t
    ORDER BY t.execution_id, t.event_id
$$;

-- Messages and work items addressed to an instance that are not consumed
-- yet. lease: 'none' (not leased), 'held' (a live lease), 'expired'.
CREATE FUNCTION __SCHEMA__.inspect_pending(p_instance_id TEXT)
RETURNS TABLE (queue TEXT, item_id BIGINT, work_item TEXT, visible_at_ms BIGINT,
               attempt_count INTEGER, lease TEXT, locked_until_ms BIGINT)
LANGUAGE sql STABLE AS $$
    WITH clock AS (SELECT __SCHEMA__.now_ms() AS ms)
    SELECT 'orchestrator'::TEXT, q.id, q.work_item, COALESCE(q.deferred_visible_ms, q.visible_at_ms),
           q.attempt_count,
           CASE WHEN q.lock_token IS NULL OR l.lock_token IS DISTINCT FROM q.lock_token THEN 'none'
                WHEN l.locked_until_ms > c.ms THEN 'held'
                ELSE 'expired' END,
           CASE WHEN q.lock_token IS NOT NULL AND l.lock_token = q.lock_token
                THEN l.locked_until_ms END
    FROM clock c
    JOIN __SCHEMA__.orchestrator_queue q ON q.instance_id = p_instance_id
    LEFT JOIN __SCHEMA__.instance_locks l ON l.instance_id = q.instance_id
    UNION ALL
    SELECT 'worker', w.id, w.work_item, w.visible_at_ms, w.attempt_count,
           CASE WHEN w.lock_token IS NULL THEN 'none'
                WHEN w.locked_until_ms > c.ms THEN 'held'
                ELSE 'expired' END,
           w.locked_until_ms
    FROM clock c
    JOIN __SCHEMA__.worker_queue w ON w.instance_id = p_instance_id
    ORDER BY 1, 2
$$;

-- Work that does not move, with the facts that say why, worst first (at
-- most p_limit rows). Orchestrator rows are per instance (its oldest ready
-- message), worker rows per item. A row is listed when its oldest ready
-- message has been claimable for p_ready_ms or more (no dispatcher takes
-- it), when it was fetched p_attempts times or more (it keeps failing), or
-- when its lease has expired and nobody claimed it again (its worker died).
-- pinned_version: the duroxide version the instance's execution is pinned
-- to (a dispatcher whose capability filter excludes it never fetches it).
-- tag, session_id, session_owner, session_locked_until_ms: why a worker
-- item may be passed over by every fetcher.
CREATE FUNCTION __SCHEMA__.stuck_work(p_ready_ms BIGINT, p_attempts BIGINT, p_limit BIGINT)
RETURNS TABLE (queue TEXT, instance_id TEXT, item_id BIGINT, messages BIGINT,
               ready_age_ms BIGINT, attempt_count INTEGER, lease_expired_ms BIGINT,
               orchestration_name TEXT, pinned_version TEXT, tag TEXT, session_id TEXT,
               session_owner TEXT, session_locked_until_ms BIGINT, work_item TEXT)
LANGUAGE sql STABLE AS $$
    WITH clock AS (SELECT __SCHEMA__.now_ms() AS ms),
    orch AS (
        SELECT 'orchestrator'::TEXT AS queue, q.instance_id, min(q.id) AS item_id,
               count(*) AS messages,
               max(c.ms - COALESCE(q.deferred_visible_ms, q.visible_at_ms))
                   FILTER (WHERE q.visible_at_ms <= c.ms AND l.locked_until_ms <= c.ms) AS ready_age_ms,
               max(q.attempt_count) AS attempt_count,
               max(CASE WHEN l.lock_token IS NOT NULL AND l.locked_until_ms <= c.ms
                        THEN c.ms - l.locked_until_ms END) AS lease_expired_ms,
               max(i.orchestration_name) AS orchestration_name,
               max(e.pinned_major || '.' || e.pinned_minor || '.' || e.pinned_patch) AS pinned_version,
               NULL::TEXT AS tag, NULL::TEXT AS session_id, NULL::TEXT AS session_owner,
               NULL::BIGINT AS session_locked_until_ms,
               (array_agg(q.work_item ORDER BY q.id))[1] AS work_item
        FROM clock c
        JOIN __SCHEMA__.orchestrator_queue q ON TRUE
        JOIN __SCHEMA__.instance_locks l ON l.instance_id = q.instance_id
        LEFT JOIN __SCHEMA__.instances i ON i.instance_id = q.instance_id
        LEFT JOIN __SCHEMA__.executions e
               ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
        GROUP BY q.instance_id
    ),
    work AS (
        SELECT 'worker'::TEXT AS queue, w.instance_id, w.id AS item_id, 1::BIGINT AS messages,
               CASE WHEN w.visible_at_ms <= c.ms AND (w.lock_token IS NULL OR w.locked_until_ms <= c.ms)
                    THEN c.ms - w.visible_at_ms END AS ready_age_ms,
               w.attempt_count,
               CASE WHEN w.lock_token IS NOT NULL AND w.locked_until_ms <= c.ms
                    THEN c.ms - w.locked_until_ms END AS lease_expired_ms,
               i.orchestration_name,
               NULL::TEXT AS pinned_version,
               w.tag, w.session_id, s.worker_id, s.locked_until_ms, w.work_item
        FROM clock c
        JOIN __SCHEMA__.worker_queue w ON TRUE
        LEFT JOIN __SCHEMA__.instances i ON i.instance_id = w.instance_id
        LEFT JOIN __SCHEMA__.sessions s ON s.session_id = w.session_id
    )
    SELECT * FROM (SELECT * FROM orch UNION ALL SELECT * FROM work) x
    WHERE x.ready_age_ms >= p_ready_ms
       OR x.attempt_count >= p_attempts
       OR x.lease_expired_ms IS NOT NULL
    ORDER BY GREATEST(x.ready_age_ms, x.lease_expired_ms) DESC NULLS LAST, x.queue, x.item_id
    LIMIT p_limit
$$;

-- Completions and failures of instances in the last p_buckets * p_bucket_ms
-- (database clock), one row per bucket, oldest first, empty buckets
-- included. The window's bounds are InitPlan parameters, so they are the
-- Index Cond of a range scan of instances_completed_idx: the cost follows
-- what finished in the window, not the table (200,000 instances, 240 in the
-- window: 9 buffers, 0.2 ms). Counts the status of each instance's current
-- execution (a continue-as-new is neither).
CREATE FUNCTION __SCHEMA__.completion_activity(p_bucket_ms BIGINT, p_buckets INTEGER)
RETURNS TABLE (bucket_from_ms BIGINT, completed BIGINT, failed BIGINT)
LANGUAGE sql STABLE AS $$
    WITH win AS (
        SELECT c.ms - p_bucket_ms * p_buckets AS from_ms, c.ms AS now_ms
        FROM (SELECT __SCHEMA__.now_ms() AS ms) c
    ),
    done AS (
        SELECT LEAST((i.completed_at_ms - (SELECT from_ms FROM win)) / p_bucket_ms,
                     p_buckets - 1) AS n,
               count(*) FILTER (WHERE i.status = 'Completed') AS completed,
               count(*) FILTER (WHERE i.status = 'Failed') AS failed
        FROM __SCHEMA__.instances i
        WHERE i.completed_at_ms >= (SELECT from_ms FROM win)
          AND i.completed_at_ms <= (SELECT now_ms FROM win)
        GROUP BY 1
    )
    SELECT w.from_ms + g.n * p_bucket_ms, COALESCE(d.completed, 0), COALESCE(d.failed, 0)
    FROM win w
    CROSS JOIN generate_series(0, p_buckets - 1) AS g(n)
    LEFT JOIN done d ON d.n = g.n
    ORDER BY g.n
$$;

-- Cumulative counters of the store's writes from PostgreSQL's statistics
-- (each backend flushes them at most about once a second), for a live view
-- that takes the difference of two samples: history events appended (each
-- orchestration turn appends at least one) and the database clock.
CREATE FUNCTION __SCHEMA__.write_counters()
RETURNS TABLE (history_inserted BIGINT, sampled_at_ms BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(sum(s.n_tup_ins), 0)::BIGINT, __SCHEMA__.now_ms()
    FROM pg_class c
    CROSS JOIN LATERAL (SELECT c.oid
                        UNION ALL
                        SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = c.oid) p(oid)
    LEFT JOIN pg_stat_user_tables s ON s.relid = p.oid
    WHERE c.relnamespace = '__SCHEMA__'::regnamespace
      AND c.relname = 'history'
$$;

-- The dashboard's per-minute figures over the last p_minutes minutes
-- (database clock), minutes aligned to the clock, the last one the current
-- (partial) minute, empty minutes included: instances started (a range of
-- instances_created_idx), completed and failed (a range of
-- instances_completed_idx) and the start-to-completion latency of those
-- that finished, as percentiles. The window's bounds are InitPlan
-- parameters and each range has both (a one-sided range of a parameter is
-- estimated at a third of the table, and planned as a sequential scan), so
-- both are index range scans whose cost follows what happened in the
-- window, not the table (200,000 instances over 30 days, 274 in the hour:
-- an index-only scan and an index scan, 0.8k buffers instead of 5.7k).
CREATE FUNCTION __SCHEMA__.minute_figures(p_minutes INTEGER)
RETURNS TABLE (minute_from_ms BIGINT, started BIGINT, completed BIGINT, failed BIGINT,
               p50_ms BIGINT, p95_ms BIGINT, p99_ms BIGINT, max_ms BIGINT)
LANGUAGE sql STABLE AS $$
    WITH win AS (
        SELECT (c.ms / 60000) * 60000 - 60000 * (p_minutes - 1) AS from_ms, c.ms AS now_ms
        FROM (SELECT __SCHEMA__.now_ms() AS ms) c
    ),
    began AS (
        SELECT LEAST((i.created_at_ms - (SELECT from_ms FROM win)) / 60000, p_minutes - 1) AS n,
               count(*) AS started
        FROM __SCHEMA__.instances i
        WHERE i.created_at_ms >= (SELECT from_ms FROM win)
          AND i.created_at_ms <= (SELECT now_ms FROM win)
        GROUP BY 1
    ),
    done AS (
        SELECT LEAST((i.completed_at_ms - (SELECT from_ms FROM win)) / 60000, p_minutes - 1) AS n,
               count(*) FILTER (WHERE i.status = 'Completed') AS completed,
               count(*) FILTER (WHERE i.status = 'Failed') AS failed,
               percentile_disc(0.5) WITHIN GROUP (ORDER BY i.completed_at_ms - i.created_at_ms) AS p50,
               percentile_disc(0.95) WITHIN GROUP (ORDER BY i.completed_at_ms - i.created_at_ms) AS p95,
               percentile_disc(0.99) WITHIN GROUP (ORDER BY i.completed_at_ms - i.created_at_ms) AS p99,
               max(i.completed_at_ms - i.created_at_ms) AS max_ms
        FROM __SCHEMA__.instances i
        WHERE i.completed_at_ms >= (SELECT from_ms FROM win)
          AND i.completed_at_ms <= (SELECT now_ms FROM win)
          AND i.status IN ('Completed', 'Failed')
        GROUP BY 1
    )
    SELECT w.from_ms + g.n * 60000, COALESCE(b.started, 0), COALESCE(d.completed, 0),
           COALESCE(d.failed, 0), d.p50, d.p95, d.p99, d.max_ms
    FROM win w
    CROSS JOIN generate_series(0, p_minutes - 1) AS g(n)
    LEFT JOIN began b ON b.n = g.n
    LEFT JOIN done d ON d.n = g.n
    ORDER BY g.n
$$;

-- The latest (at most p_limit) instances that failed in the last
-- p_window_ms (a range of instances_completed_idx, newest first) with their
-- failure events: each ActivityFailed / SubOrchestrationFailed /
-- OrchestrationFailed event of their current execution with the name of the
-- activity or sub-orchestration it completes (from the scheduling event it
-- points to; history's primary key answers both). An instance with no
-- failure event yields one row with NULL event_data.
CREATE FUNCTION __SCHEMA__.recent_failures(p_window_ms BIGINT, p_limit INTEGER)
RETURNS TABLE (instance_id TEXT, orchestration_name TEXT, completed_at_ms BIGINT,
               event_data TEXT, scheduled_name TEXT)
LANGUAGE sql STABLE AS $$
    WITH failed AS (
        SELECT i.instance_id, i.orchestration_name, i.completed_at_ms, i.current_execution_id
        FROM __SCHEMA__.instances i
        WHERE i.completed_at_ms >= (SELECT __SCHEMA__.now_ms() - p_window_ms)
          AND i.status = 'Failed'
        ORDER BY i.completed_at_ms DESC
        LIMIT p_limit
    )
    SELECT f.instance_id, f.orchestration_name, f.completed_at_ms, e.event_data, e.scheduled_name
    FROM failed f
    LEFT JOIN LATERAL (
        SELECT h.event_data, s.event_data::jsonb ->> 'name' AS scheduled_name
        FROM __SCHEMA__.history h
        LEFT JOIN __SCHEMA__.history s
               ON s.instance_id = h.instance_id AND s.execution_id = h.execution_id
              AND s.event_id = (h.event_data::jsonb ->> 'source_event_id')::BIGINT
        WHERE h.instance_id = f.instance_id
          AND h.execution_id = f.current_execution_id
          AND h.event_data::jsonb ->> 'type'
              IN ('ActivityFailed', 'SubOrchestrationFailed', 'OrchestrationFailed')
    ) e ON TRUE
    ORDER BY f.completed_at_ms DESC, f.instance_id
$$;

-- Instances whose id starts with p_prefix, in id order, after p_after (a
-- keyset cursor: the last id of the previous page; NULL for the first),
-- at most p_limit: a range scan of the primary key from the larger of the
-- two lower bounds, reading at most p_scan keys, so its cost is bounded
-- whatever the table's size. Under the C collation ids with a common prefix
-- are adjacent, so the matches are found exactly; under a linguistic
-- collation (which may sort punctuation apart) a match can lie beyond the
-- scanned keys.
CREATE FUNCTION __SCHEMA__.search_instances(p_prefix TEXT, p_after TEXT, p_limit INTEGER,
                                            p_scan INTEGER)
RETURNS TABLE (instance_id TEXT, orchestration_name TEXT, orchestration_version TEXT, status TEXT,
               current_execution_id BIGINT, parent_instance_id TEXT, created_at_ms BIGINT,
               updated_at_ms BIGINT, completed_at_ms BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT t.instance_id, t.orchestration_name, t.orchestration_version, t.status,
           t.current_execution_id, t.parent_instance_id, t.created_at_ms, t.updated_at_ms,
           t.completed_at_ms
    FROM (SELECT i.*
          FROM __SCHEMA__.instances i
          WHERE i.instance_id >= p_prefix
            AND i.instance_id > COALESCE(p_after, '')
          ORDER BY i.instance_id
          LIMIT p_scan) t
    WHERE starts_with(t.instance_id, p_prefix)
    ORDER BY t.instance_id
    LIMIT p_limit
$$;
