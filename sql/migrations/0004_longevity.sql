-- 0004: cost independent of the store's size, and retention.
--
-- * The instance row mirrors the status and completion time of its current
--   execution (kept by the ack through record_turn(), see stats.sql), so
--   listings, counts and retention are answered from indexes on one table.
-- * Totals for get_system_metrics are kept as insert-only deltas that are
--   rolled up into one row now and then: no hot counter row for acks to
--   queue on, no count(*) over history.
-- * A lease row per maintenance task: one process per schema runs it.
-- Existing stores are backfilled.

ALTER TABLE __SCHEMA__.instances
    ADD COLUMN status TEXT NOT NULL DEFAULT 'Running',
    ADD COLUMN completed_at_ms BIGINT,
    -- The execution whose status the row mirrors and up to which executions
    -- are counted in the totals (NULL: not counted yet).
    ADD COLUMN counted_execution_id BIGINT;

UPDATE __SCHEMA__.instances i
SET status = COALESCE(e.status, 'Running'),
    completed_at_ms = e.completed_at_ms,
    counted_execution_id = i.current_execution_id
FROM (SELECT i2.instance_id, e2.status, e2.completed_at_ms
      FROM __SCHEMA__.instances i2
      LEFT JOIN __SCHEMA__.executions e2
             ON e2.instance_id = i2.instance_id AND e2.execution_id = i2.current_execution_id) e
WHERE e.instance_id = i.instance_id;

-- Listing: newest first, keyset on (created_at_ms, instance_id), per filter.
CREATE INDEX instances_created_idx ON __SCHEMA__.instances (created_at_ms, instance_id);
CREATE INDEX instances_status_idx ON __SCHEMA__.instances (status, created_at_ms, instance_id);
CREATE INDEX instances_name_idx ON __SCHEMA__.instances
    (orchestration_name, orchestration_version, created_at_ms, instance_id);
CREATE INDEX instances_completed_idx ON __SCHEMA__.instances (completed_at_ms, instance_id)
    WHERE completed_at_ms IS NOT NULL;
-- Children of a parent in listing order (replaces the plain parent index).
CREATE INDEX instances_parent_created_idx ON __SCHEMA__.instances
    (parent_instance_id, created_at_ms, instance_id) WHERE parent_instance_id IS NOT NULL;
DROP INDEX __SCHEMA__.instances_parent_idx;
-- Bulk deletion and retention: finished roots, oldest completion first.
CREATE INDEX instances_done_roots_idx ON __SCHEMA__.instances (completed_at_ms, instance_id)
    WHERE parent_instance_id IS NULL AND status <> 'Running';

-- Pruning: executions left behind by continue-as-new, per instance.
CREATE INDEX executions_continued_idx ON __SCHEMA__.executions (instance_id, execution_id)
    WHERE status = 'ContinuedAsNew';

-- Totals: one row, plus deltas appended by writers (no index: appended by
-- acks, read and deleted whole by the roll-up).
CREATE TABLE __SCHEMA__.stat_totals (
    id               BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    instances        BIGINT NOT NULL,
    executions       BIGINT NOT NULL,
    events           BIGINT NOT NULL,
    running          BIGINT NOT NULL,
    completed        BIGINT NOT NULL,
    failed           BIGINT NOT NULL,
    continued_as_new BIGINT NOT NULL
);
CREATE TABLE __SCHEMA__.stat_deltas (
    instances        BIGINT NOT NULL DEFAULT 0,
    executions       BIGINT NOT NULL DEFAULT 0,
    events           BIGINT NOT NULL DEFAULT 0,
    running          BIGINT NOT NULL DEFAULT 0,
    completed        BIGINT NOT NULL DEFAULT 0,
    failed           BIGINT NOT NULL DEFAULT 0,
    continued_as_new BIGINT NOT NULL DEFAULT 0
);
INSERT INTO __SCHEMA__.stat_totals
SELECT TRUE,
    (SELECT count(*) FROM __SCHEMA__.instances),
    (SELECT count(*) FROM __SCHEMA__.executions e
     WHERE EXISTS (SELECT 1 FROM __SCHEMA__.instances i WHERE i.instance_id = e.instance_id)),
    (SELECT count(*) FROM __SCHEMA__.history),
    (SELECT count(*) FROM __SCHEMA__.instances WHERE status = 'Running'),
    (SELECT count(*) FROM __SCHEMA__.instances WHERE status = 'Completed'),
    (SELECT count(*) FROM __SCHEMA__.instances WHERE status = 'Failed'),
    (SELECT count(*) FROM __SCHEMA__.instances WHERE status = 'ContinuedAsNew');

-- Maintenance leases: which process runs a task (e.g. 'retention'), until
-- when (database clock). Turns never touch this table.
CREATE TABLE __SCHEMA__.maintenance_leases (
    task            TEXT PRIMARY KEY,
    owner           TEXT   NOT NULL,
    leased_until_ms BIGINT NOT NULL,
    acquired_at_ms  BIGINT NOT NULL
);
