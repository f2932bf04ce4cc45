-- 0005: a fourth queue segment for rows that outlive the ring, and messages
-- deferred behind their instance's lease (decision 0010).
--
-- The three time segments of each queue (migration 0003) are reclaimed
-- every three seconds by moving their live rows into the current segment
-- and truncating. A row that stays live for long (a timer an hour ahead, a
-- backlog of ready work, items of a tag nobody serves, an activity running
-- for minutes) was therefore rewritten every three seconds for its whole
-- life: with 100,000 future timers, 33,000 rows a second under an exclusive
-- lock. Segment 3 is never truncated: the reclaim moves surviving rows into
-- it once, and timers due more than a segment's life ahead are inserted
-- there directly. It is vacuumed row by row like an ordinary table, so it
-- only collects dead rows of long-lived work consumed while a snapshot is
-- held, not of all traffic.
CREATE TABLE __SCHEMA__.orchestrator_queue_s3 PARTITION OF __SCHEMA__.orchestrator_queue
    FOR VALUES IN (3) WITH (
        fillfactor = 70,
        autovacuum_vacuum_scale_factor = 0.01,
        autovacuum_vacuum_threshold = 1000
    );
CREATE TABLE __SCHEMA__.worker_queue_s3 PARTITION OF __SCHEMA__.worker_queue
    FOR VALUES IN (3) WITH (
        fillfactor = 70,
        autovacuum_vacuum_scale_factor = 0.01,
        autovacuum_vacuum_threshold = 1000
    );

-- Messages that arrive for a leased instance wait behind its lease instead
-- of standing in every fetch's candidate scan (queue_messages and
-- release_deferred in orchestrator_queue.sql): their own visibility, while
-- deferred. Not indexed, so setting and clearing it adds no index entry
-- beyond the visibility change.
ALTER TABLE __SCHEMA__.orchestrator_queue ADD COLUMN deferred_visible_ms BIGINT;
