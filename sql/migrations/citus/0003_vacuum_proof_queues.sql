-- 0003 on Citus: the same end state as ../0003_vacuum_proof_queues.sql,
-- run instead of it on a Citus coordinator (src/citus.rs); the ledger records
-- that file's checksum. Citus refuses ALTER SEQUENCE ... OWNED BY on a sequence
-- owned by a distributed table (0A000), and every table of a distributed
-- schema is one. So the old queue sequence is renamed aside instead of
-- disowned, the new table's `id` is BIGSERIAL (which creates the sequence of
-- the old name, owned by the new column, with the same default), the new
-- sequence continues from the old one, and the old one goes with its table.

-- Orchestrator queue ------------------------------------------------------
ALTER TABLE __SCHEMA__.orchestrator_queue RENAME TO orchestrator_queue_0001;
ALTER SEQUENCE __SCHEMA__.orchestrator_queue_id_seq RENAME TO orchestrator_queue_0001_id_seq;
DROP INDEX __SCHEMA__.orchestrator_queue_visible_idx;
DROP INDEX __SCHEMA__.orchestrator_queue_instance_idx;
DROP INDEX __SCHEMA__.orchestrator_queue_token_idx;
ALTER TABLE __SCHEMA__.orchestrator_queue_0001 DROP CONSTRAINT orchestrator_queue_pkey;

CREATE TABLE __SCHEMA__.orchestrator_queue (
    id            BIGSERIAL,
    instance_id   TEXT   NOT NULL,
    kind          TEXT   NOT NULL,
    work_item     TEXT   NOT NULL,
    visible_at_ms BIGINT NOT NULL,
    lock_token    TEXT,
    attempt_count INTEGER NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    -- The segment: the epoch second of the insert, mod 3 (see reclaim_queue).
    seg           SMALLINT NOT NULL
                  DEFAULT (floor(extract(epoch FROM clock_timestamp()))::BIGINT % 3)::SMALLINT
) PARTITION BY LIST (seg);
CREATE TABLE __SCHEMA__.orchestrator_queue_s0 PARTITION OF __SCHEMA__.orchestrator_queue
    FOR VALUES IN (0) WITH (fillfactor = 70);
CREATE TABLE __SCHEMA__.orchestrator_queue_s1 PARTITION OF __SCHEMA__.orchestrator_queue
    FOR VALUES IN (1) WITH (fillfactor = 70);
CREATE TABLE __SCHEMA__.orchestrator_queue_s2 PARTITION OF __SCHEMA__.orchestrator_queue
    FOR VALUES IN (2) WITH (fillfactor = 70);
CREATE INDEX orchestrator_queue_visible_idx ON __SCHEMA__.orchestrator_queue (visible_at_ms, id);
CREATE INDEX orchestrator_queue_instance_idx ON __SCHEMA__.orchestrator_queue (instance_id, id);

INSERT INTO __SCHEMA__.orchestrator_queue
    (id, instance_id, kind, work_item, visible_at_ms, lock_token, attempt_count, created_at_ms)
SELECT id, instance_id, kind, work_item, visible_at_ms, lock_token, attempt_count, created_at_ms
FROM __SCHEMA__.orchestrator_queue_0001;
SELECT setval('__SCHEMA__.orchestrator_queue_id_seq', last_value, is_called)
FROM __SCHEMA__.orchestrator_queue_0001_id_seq;
DROP TABLE __SCHEMA__.orchestrator_queue_0001;

-- Messages held back from the runtime until their instance's start arrives
-- (same columns; moved back unchanged).
CREATE TABLE __SCHEMA__.orchestrator_held (
    id            BIGINT PRIMARY KEY,
    instance_id   TEXT   NOT NULL,
    kind          TEXT   NOT NULL,
    work_item     TEXT   NOT NULL,
    visible_at_ms BIGINT NOT NULL,
    attempt_count INTEGER NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX orchestrator_held_instance_idx ON __SCHEMA__.orchestrator_held (instance_id, id);

-- Worker queue ------------------------------------------------------------
ALTER TABLE __SCHEMA__.worker_queue RENAME TO worker_queue_0001;
ALTER SEQUENCE __SCHEMA__.worker_queue_id_seq RENAME TO worker_queue_0001_id_seq;
DROP INDEX __SCHEMA__.worker_queue_visible_idx;
DROP INDEX __SCHEMA__.worker_queue_activity_idx;
DROP INDEX __SCHEMA__.worker_queue_held_idx;
DROP INDEX __SCHEMA__.worker_queue_session_idx;
ALTER TABLE __SCHEMA__.worker_queue_0001 DROP CONSTRAINT worker_queue_pkey;
ALTER TABLE __SCHEMA__.worker_queue_0001 DROP CONSTRAINT worker_queue_lock_token_key;

CREATE TABLE __SCHEMA__.worker_queue (
    id              BIGSERIAL,
    work_item       TEXT   NOT NULL,
    visible_at_ms   BIGINT NOT NULL,
    lock_token      TEXT,
    locked_until_ms BIGINT,
    attempt_count   INTEGER NOT NULL DEFAULT 0,
    instance_id     TEXT   NOT NULL,
    execution_id    BIGINT NOT NULL,
    activity_id     BIGINT NOT NULL,
    session_id      TEXT,
    tag             TEXT,
    created_at_ms   BIGINT NOT NULL,
    seg             SMALLINT NOT NULL
                    DEFAULT (floor(extract(epoch FROM clock_timestamp()))::BIGINT % 3)::SMALLINT
) PARTITION BY LIST (seg);
CREATE TABLE __SCHEMA__.worker_queue_s0 PARTITION OF __SCHEMA__.worker_queue
    FOR VALUES IN (0) WITH (fillfactor = 70);
CREATE TABLE __SCHEMA__.worker_queue_s1 PARTITION OF __SCHEMA__.worker_queue
    FOR VALUES IN (1) WITH (fillfactor = 70);
CREATE TABLE __SCHEMA__.worker_queue_s2 PARTITION OF __SCHEMA__.worker_queue
    FOR VALUES IN (2) WITH (fillfactor = 70);
CREATE INDEX worker_queue_id_idx ON __SCHEMA__.worker_queue (id);
CREATE INDEX worker_queue_activity_idx ON __SCHEMA__.worker_queue (instance_id, execution_id, activity_id);
CREATE INDEX worker_queue_session_idx ON __SCHEMA__.worker_queue (session_id)
    WHERE session_id IS NOT NULL;

INSERT INTO __SCHEMA__.worker_queue
    (id, work_item, visible_at_ms, lock_token, locked_until_ms, attempt_count, instance_id,
     execution_id, activity_id, session_id, tag, created_at_ms)
SELECT id, work_item, visible_at_ms, lock_token, locked_until_ms, attempt_count, instance_id,
       execution_id, activity_id, session_id, tag, created_at_ms
FROM __SCHEMA__.worker_queue_0001;
SELECT setval('__SCHEMA__.worker_queue_id_seq', last_value, is_called)
FROM __SCHEMA__.worker_queue_0001_id_seq;
DROP TABLE __SCHEMA__.worker_queue_0001;

-- Lease rows --------------------------------------------------------------
ALTER TABLE __SCHEMA__.instance_locks DROP CONSTRAINT instance_locks_lock_token_key;
ALTER TABLE __SCHEMA__.instance_locks DROP CONSTRAINT instance_locks_last_acked_token_key;
DROP INDEX __SCHEMA__.instance_locks_held_idx;
ALTER TABLE __SCHEMA__.instance_locks ADD COLUMN parked BOOLEAN NOT NULL DEFAULT FALSE;
-- Every turn updates its lease row twice: leave room on each page so the
-- new version stays on it (HOT), and vacuum the table early.
ALTER TABLE __SCHEMA__.instance_locks SET (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000
);
