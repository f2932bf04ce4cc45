-- Request ids of client writes that the provider retries (see
-- src/provider/retry.rs): enqueue_orchestrator, enqueue_worker and
-- append_history record the id a call generated once; a retry of a call
-- whose first attempt committed (its reply was lost with the connection)
-- finds the id and applies nothing.
--
-- A table of its own, not a queue column: the record must outlive the
-- message (a retry may arrive after the message was consumed), and the queue
-- tables stay as they are.
--
-- Bounded: each recording call deletes at most a few entries older than the
-- expiry (one hour, far beyond the longest retry budget the provider
-- accepts), so the table holds about one hour of client writes, its dead
-- rows are few and evenly spread, and no batch job is needed.
CREATE TABLE __SCHEMA__.request_ids (
    request_id    UUID   PRIMARY KEY,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX request_ids_created_idx ON __SCHEMA__.request_ids (created_at_ms);
