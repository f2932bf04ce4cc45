-- Sessions: heartbeat and cleanup of worker session affinity.
-- Sessions are claimed by fetch_work_item (worker_queue.sql).
--
-- Guarantees
-- * Only `sessions` rows are locked here, so these never deadlock with fetch
--   or ack (which lock a worker_queue row, then a session row).
-- * A heartbeat extends only sessions that are still held and not idle; it
--   never revives an expired one and never shortens a lease.
-- * The clock is read into a variable before the statement that uses it
--   (see orchestrator_queue.sql's header: Citus).

-- Extend every live, non-idle session held by one of p_owner_ids to
-- now + extend. Returns how many were extended.
CREATE FUNCTION __SCHEMA__.renew_session_lock(
    p_owner_ids TEXT[],
    p_extend_ms BIGINT,
    p_idle_timeout_ms BIGINT
) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    v_now BIGINT := __SCHEMA__.now_ms();
    v_renewed BIGINT;
BEGIN
    UPDATE __SCHEMA__.sessions s
    SET locked_until_ms = GREATEST(s.locked_until_ms, v_now + p_extend_ms)
    WHERE s.worker_id = ANY (p_owner_ids)
      AND s.locked_until_ms > v_now
      AND s.last_activity_at_ms > v_now - p_idle_timeout_ms;
    GET DIAGNOSTICS v_renewed = ROW_COUNT;
    RETURN v_renewed;
END
$$;

-- Delete sessions whose lease has expired and that no queued item names.
-- Returns how many were deleted.
CREATE FUNCTION __SCHEMA__.cleanup_orphaned_sessions() RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    v_now BIGINT := __SCHEMA__.now_ms();
    v_removed BIGINT;
BEGIN
    DELETE FROM __SCHEMA__.sessions s
    WHERE s.locked_until_ms <= v_now
      AND NOT EXISTS (SELECT 1 FROM __SCHEMA__.worker_queue w WHERE w.session_id = s.session_id);
    GET DIAGNOSTICS v_removed = ROW_COUNT;
    RETURN v_removed;
END
$$;
