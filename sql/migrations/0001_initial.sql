-- 0001: the initial tables of a duroxide-postgres store.
--
-- Released migrations are never edited: the ledger stores each one's checksum
-- and start-up refuses a database whose ledger disagrees with this file.
-- `__SCHEMA__` is replaced by the provider's quoted, validated schema name.
--
-- Time is BIGINT milliseconds since the Unix epoch everywhere. Leases are
-- compared with the database clock (`__SCHEMA__.now_ms()`, see common.sql).

-- One row per orchestration instance, created by the first ack that carries
-- the orchestration name and version (never by enqueue).
CREATE TABLE __SCHEMA__.instances (
    instance_id           TEXT PRIMARY KEY,
    orchestration_name    TEXT NOT NULL,
    orchestration_version TEXT,
    current_execution_id  BIGINT NOT NULL DEFAULT 1,
    parent_instance_id    TEXT,
    -- User strings that may hold any character (NUL included) are BYTEA
    -- holding their UTF-8 bytes: PostgreSQL TEXT cannot store NUL.
    custom_status         BYTEA,
    custom_status_version BIGINT NOT NULL DEFAULT 0,
    created_at_ms         BIGINT NOT NULL,
    updated_at_ms         BIGINT NOT NULL
);
CREATE INDEX instances_parent_idx ON __SCHEMA__.instances (parent_instance_id)
    WHERE parent_instance_id IS NOT NULL;

-- One row per execution (continue-as-new starts a new one).
CREATE TABLE __SCHEMA__.executions (
    instance_id     TEXT   NOT NULL,
    execution_id    BIGINT NOT NULL,
    status          TEXT   NOT NULL DEFAULT 'Running',
    output          BYTEA,
    started_at_ms   BIGINT NOT NULL,
    completed_at_ms BIGINT,
    -- duroxide version this execution is pinned to (capability filtering).
    pinned_major    BIGINT,
    pinned_minor    BIGINT,
    pinned_patch    BIGINT,
    PRIMARY KEY (instance_id, execution_id)
);

-- Append-only history. `event_data` is the event's JSON exactly as serialized
-- by duroxide; it is stored as TEXT so that it round-trips byte for byte.
CREATE TABLE __SCHEMA__.history (
    instance_id  TEXT   NOT NULL,
    execution_id BIGINT NOT NULL,
    event_id     BIGINT NOT NULL,
    event_data   TEXT   NOT NULL,
    PRIMARY KEY (instance_id, execution_id, event_id)
);

-- The orchestration lease: one row per instance that ever had a message.
-- Fetch claims it with FOR UPDATE SKIP LOCKED; every writer of an instance's
-- turn locks this row first (lock order: instance_locks, then queue rows).
CREATE TABLE __SCHEMA__.instance_locks (
    instance_id     TEXT PRIMARY KEY,
    lock_token      TEXT UNIQUE,
    locked_until_ms BIGINT NOT NULL DEFAULT 0,
    -- The token of the last committed turn, so that an ack whose reply was
    -- lost with its connection can learn that it did commit.
    last_acked_token TEXT UNIQUE
);
-- Held leases, for an idle fetch to know when the next one can expire.
CREATE INDEX instance_locks_held_idx ON __SCHEMA__.instance_locks (locked_until_ms)
    WHERE lock_token IS NOT NULL;

-- Orchestrator queue. `lock_token` tags the messages one fetch took; only
-- those are deleted by its ack.
CREATE TABLE __SCHEMA__.orchestrator_queue (
    id            BIGSERIAL PRIMARY KEY,
    instance_id   TEXT   NOT NULL,
    -- WorkItem variant name (e.g. 'StartOrchestration'), written by Rust at
    -- enqueue so SQL never has to parse the JSON.
    kind          TEXT   NOT NULL,
    work_item     TEXT   NOT NULL,
    visible_at_ms BIGINT NOT NULL,
    lock_token    TEXT,
    attempt_count INTEGER NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX orchestrator_queue_visible_idx ON __SCHEMA__.orchestrator_queue (visible_at_ms, id);
CREATE INDEX orchestrator_queue_instance_idx ON __SCHEMA__.orchestrator_queue (instance_id, id);
CREATE INDEX orchestrator_queue_token_idx ON __SCHEMA__.orchestrator_queue (lock_token)
    WHERE lock_token IS NOT NULL;

-- Worker queue: each row carries its own lease.
CREATE TABLE __SCHEMA__.worker_queue (
    id              BIGSERIAL PRIMARY KEY,
    work_item       TEXT   NOT NULL,
    visible_at_ms   BIGINT NOT NULL,
    lock_token      TEXT UNIQUE,
    locked_until_ms BIGINT,
    attempt_count   INTEGER NOT NULL DEFAULT 0,
    instance_id     TEXT   NOT NULL,
    execution_id    BIGINT NOT NULL,
    activity_id     BIGINT NOT NULL,
    session_id      TEXT,
    tag             TEXT,
    created_at_ms   BIGINT NOT NULL
);
CREATE INDEX worker_queue_visible_idx ON __SCHEMA__.worker_queue (visible_at_ms, id);
CREATE INDEX worker_queue_activity_idx ON __SCHEMA__.worker_queue (instance_id, execution_id, activity_id);
CREATE INDEX worker_queue_held_idx ON __SCHEMA__.worker_queue (locked_until_ms)
    WHERE lock_token IS NOT NULL;
CREATE INDEX worker_queue_session_idx ON __SCHEMA__.worker_queue (session_id)
    WHERE session_id IS NOT NULL;

-- Session affinity: which worker owns a session, until when.
CREATE TABLE __SCHEMA__.sessions (
    session_id          TEXT PRIMARY KEY,
    worker_id           TEXT   NOT NULL,
    locked_until_ms     BIGINT NOT NULL,
    last_activity_at_ms BIGINT NOT NULL
);

-- Key-value state merged at the end of each execution.
CREATE TABLE __SCHEMA__.kv_store (
    instance_id        TEXT   NOT NULL,
    key                TEXT   NOT NULL,
    value              BYTEA  NOT NULL,
    execution_id       BIGINT NOT NULL,
    last_updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (instance_id, key)
);

-- Key-value writes of the running execution; a NULL value is a tombstone.
CREATE TABLE __SCHEMA__.kv_delta (
    instance_id        TEXT   NOT NULL,
    key                TEXT   NOT NULL,
    value              BYTEA,
    execution_id       BIGINT NOT NULL,
    last_updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (instance_id, key)
);
