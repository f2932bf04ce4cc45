-- Shared helpers of every other function file.
--
-- now_ms() is the one clock that decides leases: the database server's wall
-- clock at the moment of the call (clock_timestamp(), not the start of the
-- transaction), so a lease computed after a lock wait is never already past.
--
-- Error codes raised by this schema's functions (class DX, all permanent):
--   DX001 lock token unknown (never issued, already acked, or taken over)
--   DX002 lock expired
--   DX003 instance or execution not found
--   DX004 instance still running
--   DX005 delete would orphan a sub-orchestration / not a root
--   DX006 the caller does not hold the maintenance lease (retention.sql)

CREATE FUNCTION __SCHEMA__.now_ms() RETURNS BIGINT
LANGUAGE sql VOLATILE AS $$
    SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT
$$;

-- The database clock when the current request (the client's statement)
-- arrived. Acks and renewals check their lease at this instant: a request
-- made while the lease was live is honoured even if it then waited on a lock
-- held by someone else, unless another worker took the lease over meanwhile
-- (which the token check under the lease row lock detects). A request made
-- after expiry is refused.
CREATE FUNCTION __SCHEMA__.request_ms() RETURNS BIGINT
LANGUAGE sql STABLE AS $$
    SELECT (EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT
$$;

-- Raise the right error for a lock token that did not match a live lease:
-- DX002 if the token still names a lease that ran out, DX001 otherwise.
CREATE FUNCTION __SCHEMA__.raise_lock_error(p_operation TEXT, p_token TEXT, p_expired BOOLEAN)
RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF p_expired THEN
        RAISE EXCEPTION '%: lock expired for token %', p_operation, p_token
            USING ERRCODE = 'DX002';
    END IF;
    RAISE EXCEPTION '%: Invalid lock token % (unknown, already released, or taken over)', p_operation, p_token
        USING ERRCODE = 'DX001';
END
$$;

-- Records the request id of a retried client write (see
-- sql/migrations/0002_request_ids.sql). Returns false when the id was already
-- recorded, i.e. an earlier attempt of the same call committed: the caller
-- then applies nothing. A concurrent attempt with the same id (its first try
-- still running on the server) is waited for by the unique index, so exactly
-- one of them returns true. NULL (a call that is not retried) returns true.
-- Deletes at most 4 expired ids per recorded id: more than it adds, so the
-- table stays about one hour of writes long without a batch job.
CREATE FUNCTION __SCHEMA__.first_request(p_request_id UUID)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    v_now BIGINT := __SCHEMA__.now_ms();
BEGIN
    IF p_request_id IS NULL THEN
        RETURN TRUE;
    END IF;
    INSERT INTO __SCHEMA__.request_ids (request_id, created_at_ms) VALUES (p_request_id, v_now)
    ON CONFLICT (request_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;
    DELETE FROM __SCHEMA__.request_ids
    WHERE request_id IN (
        SELECT r.request_id FROM __SCHEMA__.request_ids r
        WHERE r.created_at_ms < v_now - 3600000
        ORDER BY r.created_at_ms
        LIMIT 4
        FOR UPDATE SKIP LOCKED);
    RETURN TRUE;
END
$$;

-- Lease tokens name the row they lease, so that acks, renewals and abandons
-- find it through an immutable key (no index on a column a turn changes):
-- 'lock_' || uuid || ':' || key, where key is the instance id of an
-- orchestration lease or the item id of a worker lease.
CREATE FUNCTION __SCHEMA__.new_token(p_key TEXT) RETURNS TEXT
LANGUAGE sql VOLATILE AS $$
    SELECT 'lock_' || gen_random_uuid()::TEXT || ':' || p_key
$$;

-- The key a token names, or NULL for a string that is not such a token.
CREATE FUNCTION __SCHEMA__.token_key(p_token TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN left(p_token, 5) = 'lock_' AND substr(p_token, 42, 1) = ':'
                THEN substr(p_token, 43) END
$$;

-- The worker item id a token names, or NULL.
CREATE FUNCTION __SCHEMA__.token_item_id(p_token TEXT) RETURNS BIGINT
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN __SCHEMA__.token_key(p_token) ~ '^[0-9]{1,18}$'
                THEN __SCHEMA__.token_key(p_token)::BIGINT END
$$;

-- The segment (partition) rows inserted now go to: the epoch second mod 3,
-- as the queue tables' `seg` default (migration 0003). Segment 3 (migration
-- 0005) is not in this ring: see segment_for and the reclaim functions.
CREATE FUNCTION __SCHEMA__.current_segment() RETURNS SMALLINT
LANGUAGE sql VOLATILE AS $$
    SELECT (floor(extract(epoch FROM clock_timestamp()))::BIGINT % 3)::SMALLINT
$$;

-- The segment of a message inserted at p_inserted_ms that becomes visible at
-- p_visible_ms: segment 3, the one never truncated, when it will still be
-- waiting after a ring segment's life (3 s), so that a timer is not moved by
-- every reclaim until it fires; else the current ring segment.
CREATE FUNCTION __SCHEMA__.segment_for(p_visible_ms BIGINT, p_inserted_ms BIGINT) RETURNS SMALLINT
LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN p_visible_ms > p_inserted_ms + 3000 THEN 3::SMALLINT
                ELSE __SCHEMA__.current_segment() END
$$;
