-- Client-side reads of key-value state, custom status and instance stats.
--
-- Guarantees
-- * KV reads are the merged view: a kv_delta row (the running execution's
--   writes) wins over kv_store; a delta tombstone (NULL) hides the key.
-- * Read-only; each reads one snapshot.

-- Custom status, only if its version is newer than p_last_seen_version.
CREATE FUNCTION __SCHEMA__.get_custom_status(p_instance_id TEXT, p_last_seen_version BIGINT)
RETURNS TABLE (custom_status BYTEA, custom_status_version BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT i.custom_status, i.custom_status_version
    FROM __SCHEMA__.instances i
    WHERE i.instance_id = p_instance_id AND i.custom_status_version > p_last_seen_version
$$;

-- Merged view of every key with a value.
CREATE FUNCTION __SCHEMA__.kv_merged(p_instance_id TEXT)
RETURNS TABLE (key TEXT, value BYTEA)
LANGUAGE sql STABLE AS $$
    SELECT d.key, d.value FROM __SCHEMA__.kv_delta d
    WHERE d.instance_id = p_instance_id AND d.value IS NOT NULL
    UNION ALL
    SELECT s.key, s.value FROM __SCHEMA__.kv_store s
    WHERE s.instance_id = p_instance_id
      AND NOT EXISTS (SELECT 1 FROM __SCHEMA__.kv_delta d
                      WHERE d.instance_id = p_instance_id AND d.key = s.key)
$$;

CREATE FUNCTION __SCHEMA__.get_kv_value(p_instance_id TEXT, p_key TEXT)
RETURNS BYTEA
LANGUAGE sql STABLE AS $$
    SELECT m.value FROM __SCHEMA__.kv_merged(p_instance_id) m WHERE m.key = p_key
$$;

-- Sizes of the current execution and the merged KV state. No row for an
-- unknown instance. first_event is the current execution's event 1 (its
-- OrchestrationStarted), which Rust decodes to count carried-forward events.
-- Two statements on one snapshot (a STABLE function's statements share its
-- caller's): the KV sizes are read apart from the history's, since Citus
-- cannot run kv_merged() inside a query it routes to a worker.
CREATE FUNCTION __SCHEMA__.get_instance_stats(p_instance_id TEXT)
RETURNS TABLE (history_event_count BIGINT, history_size_bytes BIGINT, first_event TEXT,
               kv_key_count BIGINT, kv_value_bytes BIGINT)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_keys BIGINT;
    v_bytes BIGINT;
BEGIN
    SELECT count(*), COALESCE(sum(octet_length(m.value)), 0)::BIGINT INTO v_keys, v_bytes
    FROM __SCHEMA__.kv_merged(p_instance_id) m;
    RETURN QUERY
    SELECT
        (SELECT count(*) FROM __SCHEMA__.history h
         WHERE h.instance_id = i.instance_id AND h.execution_id = i.current_execution_id),
        (SELECT COALESCE(sum(octet_length(h.event_data)), 0) FROM __SCHEMA__.history h
         WHERE h.instance_id = i.instance_id AND h.execution_id = i.current_execution_id)::BIGINT,
        (SELECT h.event_data FROM __SCHEMA__.history h
         WHERE h.instance_id = i.instance_id AND h.execution_id = i.current_execution_id
         ORDER BY h.event_id LIMIT 1),
        v_keys,
        v_bytes
    FROM __SCHEMA__.instances i
    WHERE i.instance_id = p_instance_id;
END
$$;
