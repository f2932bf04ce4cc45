-- Sessions: heartbeat and cleanup of worker session affinity.
-- Sessions are claimed by fetch_work_item (worker_queue.sql).
--
-- Guarantees
-- * Only `sessions` rows are locked here, so these never deadlock with fetch
--   or ack (which lock a worker_queue row, then a session row).
-- * A heartbeat extends only sessions that are still held and not idle; it
--   never revives an expired one and never shortens a lease.

-- Extend every live, non-idle session held by one of p_owner_ids to
-- now + extend. Returns how many were extended.
CREATE FUNCTION __SCHEMA__.renew_session_lock(
    p_owner_ids TEXT[],
    p_extend_ms BIGINT,
    p_idle_timeout_ms BIGINT
) RETURNS BIGINT
LANGUAGE sql AS $$
    WITH renewed AS (
        UPDATE __SCHEMA__.sessions s
        SET locked_until_ms = GREATEST(s.locked_until_ms, __SCHEMA__.now_ms() + p_extend_ms)
        WHERE s.worker_id = ANY (p_owner_ids)
          AND s.locked_until_ms > __SCHEMA__.now_ms()
          AND s.last_activity_at_ms > __SCHEMA__.now_ms() - p_idle_timeout_ms
        RETURNING 1
    )
    SELECT count(*) FROM renewed
$$;

-- Delete sessions whose lease has expired and that no queued item names.
-- Returns how many were deleted.
CREATE FUNCTION __SCHEMA__.cleanup_orphaned_sessions() RETURNS BIGINT
LANGUAGE sql AS $$
    WITH removed AS (
        DELETE FROM __SCHEMA__.sessions s
        WHERE s.locked_until_ms <= __SCHEMA__.now_ms()
          AND NOT EXISTS (SELECT 1 FROM __SCHEMA__.worker_queue w WHERE w.session_id = s.session_id)
        RETURNING 1
    )
    SELECT count(*) FROM removed
$$;
