-- 0003: queues that stay fast under long transactions (decision 0005).
--
-- * Both queues become LIST-partitioned on `seg`, three segments in a ring.
--   A row goes to the segment of the second it was inserted in
--   (epoch second mod 3, the column default). The segment that will be
--   written next is reclaimed wholesale (live rows moved out, then TRUNCATE)
--   by reclaim_queue() (orchestrator_queue.sql), so the dead index entries a
--   fetch walks are bounded by about three seconds of traffic even while
--   another transaction pins the xmin horizon, when vacuum can remove none.
-- * No index on a column a turn changes: the tag of a message and a worker
--   item's lease are HOT updates. Tokens name the row they lease (the
--   instance id for an orchestration lease, the item id for a worker lease),
--   so acks find their row through an immutable key.
-- * instance_locks: only its primary key, a fillfactor that leaves room for
--   HOT updates, and `parked` (the instance has messages set aside in
--   orchestrator_held until its start arrives).
-- * orchestrator_held: messages of never-started instances that a fetch
--   must not hand to the runtime, kept out of the candidate scan.
--
-- An existing store is converted in place; messages and leases in flight
-- are kept (a lease taken before the upgrade cannot be acked with its old
-- token and is refetched once it expires).

-- Orchestrator queue ------------------------------------------------------
ALTER TABLE __SCHEMA__.orchestrator_queue RENAME TO orchestrator_queue_0001;
ALTER SEQUENCE __SCHEMA__.orchestrator_queue_id_seq OWNED BY NONE;
DROP INDEX __SCHEMA__.orchestrator_queue_visible_idx;
DROP INDEX __SCHEMA__.orchestrator_queue_instance_idx;
DROP INDEX __SCHEMA__.orchestrator_queue_token_idx;
ALTER TABLE __SCHEMA__.orchestrator_queue_0001 DROP CONSTRAINT orchestrator_queue_pkey;

CREATE TABLE __SCHEMA__.orchestrator_queue (
    id            BIGINT NOT NULL DEFAULT nextval('__SCHEMA__.orchestrator_queue_id_seq'),
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
DROP TABLE __SCHEMA__.orchestrator_queue_0001;
ALTER SEQUENCE __SCHEMA__.orchestrator_queue_id_seq OWNED BY __SCHEMA__.orchestrator_queue.id;

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
ALTER SEQUENCE __SCHEMA__.worker_queue_id_seq OWNED BY NONE;
DROP INDEX __SCHEMA__.worker_queue_visible_idx;
DROP INDEX __SCHEMA__.worker_queue_activity_idx;
DROP INDEX __SCHEMA__.worker_queue_held_idx;
DROP INDEX __SCHEMA__.worker_queue_session_idx;
ALTER TABLE __SCHEMA__.worker_queue_0001 DROP CONSTRAINT worker_queue_pkey;
ALTER TABLE __SCHEMA__.worker_queue_0001 DROP CONSTRAINT worker_queue_lock_token_key;

CREATE TABLE __SCHEMA__.worker_queue (
    id              BIGINT NOT NULL DEFAULT nextval('__SCHEMA__.worker_queue_id_seq'),
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
DROP TABLE __SCHEMA__.worker_queue_0001;
ALTER SEQUENCE __SCHEMA__.worker_queue_id_seq OWNED BY __SCHEMA__.worker_queue.id;

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
