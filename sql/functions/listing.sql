-- Paginated, filtered instance listing and counts by status, for
-- PostgresProvider::list_instance_page / count_instances_by_status
-- (src/provider/listing.rs); beyond the ProviderAdmin trait.
--
-- Guarantees
-- * Newest first, keyset-paginated on (created_at_ms, instance_id): a page
--   costs what it returns plus what its filters skip, never an offset.
-- * Each filter combination is planned for itself (dynamic SQL over a fixed
--   set of predicates; values are always parameters), so the planner uses
--   the index that matches: instances_status_idx, instances_name_idx,
--   instances_parent_created_idx, instances_completed_idx or
--   instances_created_idx. Several statuses are merged from one ordered
--   index range each.
-- * Counts by status come from the maintained totals (stats.sql).

CREATE FUNCTION __SCHEMA__.list_instance_page(
    p_statuses TEXT[], p_name TEXT, p_version TEXT,
    p_created_from_ms BIGINT, p_created_before_ms BIGINT,
    p_completed_from_ms BIGINT, p_completed_before_ms BIGINT,
    p_roots_only BOOLEAN, p_parent TEXT,
    p_after_created_ms BIGINT, p_after_id TEXT, p_limit INTEGER)
RETURNS TABLE (instance_id TEXT, orchestration_name TEXT, orchestration_version TEXT, status TEXT,
               current_execution_id BIGINT, parent_instance_id TEXT, created_at_ms BIGINT,
               updated_at_ms BIGINT, completed_at_ms BIGINT)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_where TEXT := 'TRUE';
    v_base TEXT;
    v_order CONSTANT TEXT := ' ORDER BY i.created_at_ms DESC, i.instance_id DESC LIMIT $12';
    v_sql TEXT;
BEGIN
    IF p_name IS NOT NULL THEN v_where := v_where || ' AND i.orchestration_name = $2'; END IF;
    IF p_version IS NOT NULL THEN v_where := v_where || ' AND i.orchestration_version = $3'; END IF;
    IF p_created_from_ms IS NOT NULL THEN v_where := v_where || ' AND i.created_at_ms >= $4'; END IF;
    IF p_created_before_ms IS NOT NULL THEN v_where := v_where || ' AND i.created_at_ms < $5'; END IF;
    IF p_completed_from_ms IS NOT NULL THEN v_where := v_where || ' AND i.completed_at_ms >= $6'; END IF;
    IF p_completed_before_ms IS NOT NULL THEN v_where := v_where || ' AND i.completed_at_ms < $7'; END IF;
    IF p_roots_only THEN v_where := v_where || ' AND i.parent_instance_id IS NULL'; END IF;
    IF p_parent IS NOT NULL THEN v_where := v_where || ' AND i.parent_instance_id = $9'; END IF;
    IF p_after_id IS NOT NULL THEN
        v_where := v_where || ' AND (i.created_at_ms, i.instance_id) < ($10, $11)';
    END IF;
    v_base := 'SELECT i.instance_id, i.orchestration_name, i.orchestration_version, i.status, '
           || 'i.current_execution_id, i.parent_instance_id, i.created_at_ms, i.updated_at_ms, '
           || 'i.completed_at_ms FROM __SCHEMA__.instances i WHERE ' || v_where;
    IF p_statuses IS NULL THEN
        v_sql := v_base || v_order;
    ELSE
        SELECT 'SELECT u.* FROM ('
               || string_agg(format('(%s AND i.status = $1[%s]%s)', v_base, n, v_order), ' UNION ALL ')
               || ') u ORDER BY u.created_at_ms DESC, u.instance_id DESC LIMIT $12'
        INTO v_sql
        FROM generate_subscripts(p_statuses, 1) AS n;
        IF v_sql IS NULL THEN
            RETURN;
        END IF;
    END IF;
    RETURN QUERY EXECUTE v_sql
        USING p_statuses, p_name, p_version, p_created_from_ms, p_created_before_ms,
              p_completed_from_ms, p_completed_before_ms, p_roots_only, p_parent,
              p_after_created_ms, p_after_id, p_limit;
END
$$;

CREATE FUNCTION __SCHEMA__.count_instances_by_status()
RETURNS TABLE (status TEXT, instances BIGINT)
LANGUAGE sql AS $$
    SELECT x.status, x.n
    FROM __SCHEMA__.current_stats() s,
         LATERAL (VALUES ('Running', s.running), ('Completed', s.completed), ('Failed', s.failed),
                         ('ContinuedAsNew', s.continued_as_new)) AS x(status, n)
$$;
