-- History reads and the test/fault-injection append path.
--
-- Guarantees
-- * Events come back exactly as stored (TEXT), ordered by event_id; decoding
--   happens in Rust so that an undecodable row is an error, never skipped.
-- * append_history never overwrites: a duplicate (instance, execution,
--   event_id) fails with unique_violation (23505) and nothing is written.
--   It is idempotent per p_request_id (see first_request in common.sql): the
--   retry of a call whose first attempt committed writes nothing and
--   succeeds, instead of failing with 23505.

-- Events of one execution, or of the instance's current execution when
-- p_execution_id is NULL (the newest execution in history if the instance
-- row does not exist yet). Empty for an unknown instance.
CREATE FUNCTION __SCHEMA__.read_history(p_instance_id TEXT, p_execution_id BIGINT)
RETURNS TABLE (event_data TEXT)
LANGUAGE sql STABLE AS $$
    SELECT h.event_data
    FROM __SCHEMA__.history h
    WHERE h.instance_id = p_instance_id
      AND h.execution_id = COALESCE(
            p_execution_id,
            (SELECT i.current_execution_id FROM __SCHEMA__.instances i WHERE i.instance_id = p_instance_id),
            (SELECT max(h2.execution_id) FROM __SCHEMA__.history h2 WHERE h2.instance_id = p_instance_id))
    ORDER BY h.event_id
$$;

CREATE FUNCTION __SCHEMA__.append_history(
    p_instance_id TEXT,
    p_execution_id BIGINT,
    p_event_ids BIGINT[],
    p_events TEXT[],
    p_request_id UUID
) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT __SCHEMA__.first_request(p_request_id) THEN
        RETURN;
    END IF;
    INSERT INTO __SCHEMA__.history (instance_id, execution_id, event_id, event_data)
    SELECT p_instance_id, p_execution_id, e.event_id, e.event_data
    FROM unnest(p_event_ids, p_events) AS e(event_id, event_data);
    PERFORM __SCHEMA__.add_stats(0, 0, cardinality(p_event_ids), ARRAY[0, 0, 0, 0]::BIGINT[]);
END
$$;
