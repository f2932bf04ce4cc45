//! One descriptor per SQL function the provider calls: its name, its
//! parameters (name and type, in order) and its retry class.
//!
//! The descriptor is the only place a call's shape is written down:
//! [`PostgresProvider::call`](super::PostgresProvider) builds the statement
//! from it with named notation (`f(p_a => $1, ...)`) and prepares it with the
//! declared types, so a Rust argument in the wrong place, of the wrong type or
//! missing fails before anything runs, and `tests/signatures.rs` compares every
//! descriptor with the function's signature in `pg_proc`.
//!
//! The retry class is also named here, per function, and nowhere else (see
//! `retry.rs` for what each class means).

use super::retry::Class::{self, Lease, Read, Runtime, Write};
use tokio_postgres::types::Type;

/// Parameters that name the instance a call is about.
const INSTANCE_PARAMS: &[&str] = &["p_instance_id", "p_target_instance"];

/// A SQL function of the store's schema.
pub(crate) struct SqlFn {
    pub name: &'static str,
    pub params: &'static [(&'static str, Type)],
    pub class: Class,
}

macro_rules! functions {
    ($($id:ident = $name:literal, $class:ident, [$($param:literal: $ty:ident),* $(,)?];)*) => {
        $(
            pub(crate) const $id: SqlFn = SqlFn {
                name: $name,
                params: &[$(($param, Type::$ty)),*],
                class: $class,
            };
        )*
        /// Every descriptor (for the signature test).
        pub(crate) const ALL: &[SqlFn] = &[$($id),*];
    };
}

functions! {
    // Orchestrator queue.
    ENQUEUE_ORCHESTRATOR = "enqueue_orchestrator", Write, [
        "p_instance_id": TEXT, "p_kind": TEXT, "p_work_item": TEXT, "p_delay_ms": INT8,
        "p_request_id": UUID, "p_announce": TEXT,
    ];
    FETCH_ORCHESTRATION_ITEM = "fetch_orchestration_item", Runtime, [
        "p_lock_timeout_ms": INT8, "p_min": INT8_ARRAY, "p_max": INT8_ARRAY,
        "p_wait_for_claims": BOOL, "p_except": TEXT,
    ];
    ACK_ORCHESTRATION_ITEM = "ack_orchestration_item", Lease, [
        "p_lock_token": TEXT, "p_execution_id": INT8,
        "p_event_ids": INT8_ARRAY, "p_events": TEXT_ARRAY,
        "p_worker_items": TEXT_ARRAY, "p_worker_instances": TEXT_ARRAY,
        "p_worker_executions": INT8_ARRAY, "p_worker_activity_ids": INT8_ARRAY,
        "p_worker_sessions": TEXT_ARRAY, "p_worker_tags": TEXT_ARRAY,
        "p_orch_items": TEXT_ARRAY, "p_orch_instances": TEXT_ARRAY,
        "p_orch_kinds": TEXT_ARRAY, "p_orch_visible_at_ms": INT8_ARRAY,
        "p_status": TEXT, "p_output": BYTEA, "p_orchestration_name": TEXT,
        "p_orchestration_version": TEXT, "p_parent_instance_id": TEXT, "p_pinned": INT8_ARRAY,
        "p_cancel_instances": TEXT_ARRAY, "p_cancel_executions": INT8_ARRAY,
        "p_cancel_activity_ids": INT8_ARRAY,
        "p_custom_status_action": INT2, "p_custom_status": BYTEA,
        "p_kv_clear_all": BOOL, "p_kv_keys": TEXT_ARRAY, "p_kv_values": BYTEA_ARRAY,
        "p_kv_updated_at_ms": INT8_ARRAY,
        "p_prefetch_lock_timeout_ms": INT8, "p_prefetch_min": INT8_ARRAY,
        "p_prefetch_max": INT8_ARRAY,
    ];
    ACK_OUTCOME = "ack_outcome", Runtime, ["p_lock_token": TEXT];
    ABANDON_ORCHESTRATION_ITEM = "abandon_orchestration_item", Lease, [
        "p_lock_token": TEXT, "p_delay_ms": INT8, "p_ignore_attempt": BOOL,
    ];
    RENEW_ORCHESTRATION_ITEM_LOCK = "renew_orchestration_item_lock", Lease, [
        "p_lock_token": TEXT, "p_extend_ms": INT8,
    ];
    RECLAIM_ORCHESTRATOR_QUEUE = "reclaim_orchestrator_queue", Runtime, [];

    // Worker queue and sessions.
    ENQUEUE_WORKER = "enqueue_worker", Write, [
        "p_work_item": TEXT, "p_instance_id": TEXT, "p_execution_id": INT8,
        "p_activity_id": INT8, "p_session_id": TEXT, "p_tag": TEXT, "p_request_id": UUID,
        "p_announce": TEXT,
    ];
    FETCH_WORK_ITEM = "fetch_work_item", Runtime, [
        "p_lock_timeout_ms": INT8, "p_owner_id": TEXT, "p_session_lock_timeout_ms": INT8,
        "p_tag_mode": INT2, "p_tags": TEXT_ARRAY, "p_claim_sessions": BOOL,
    ];
    ACK_WORK_ITEM = "ack_work_item", Lease, [
        "p_lock_token": TEXT, "p_target_instance": TEXT, "p_kind": TEXT, "p_completion": TEXT,
        "p_prefetch_lock_timeout_ms": INT8, "p_prefetch_owner_id": TEXT,
        "p_prefetch_tag_mode": INT2, "p_prefetch_tags": TEXT_ARRAY,
    ];
    WORK_ACK_OUTCOME = "work_ack_outcome", Runtime, ["p_lock_token": TEXT];
    RENEW_WORK_ITEM_LOCK = "renew_work_item_lock", Lease, [
        "p_lock_token": TEXT, "p_extend_ms": INT8,
    ];
    ABANDON_WORK_ITEM = "abandon_work_item", Lease, [
        "p_lock_token": TEXT, "p_delay_ms": INT8, "p_ignore_attempt": BOOL,
    ];
    RENEW_SESSION_LOCK = "renew_session_lock", Runtime, [
        "p_owner_ids": TEXT_ARRAY, "p_extend_ms": INT8, "p_idle_timeout_ms": INT8,
    ];
    CLEANUP_ORPHANED_SESSIONS = "cleanup_orphaned_sessions", Runtime, [];
    RECLAIM_WORKER_QUEUE = "reclaim_worker_queue", Runtime, [];

    // History, status, KV.
    READ_HISTORY = "read_history", Read, ["p_instance_id": TEXT, "p_execution_id": INT8];
    APPEND_HISTORY = "append_history", Write, [
        "p_instance_id": TEXT, "p_execution_id": INT8, "p_event_ids": INT8_ARRAY,
        "p_events": TEXT_ARRAY, "p_request_id": UUID,
    ];
    GET_CUSTOM_STATUS = "get_custom_status", Read, [
        "p_instance_id": TEXT, "p_last_seen_version": INT8,
    ];
    GET_KV_VALUE = "get_kv_value", Read, ["p_instance_id": TEXT, "p_key": TEXT];
    KV_MERGED = "kv_merged", Read, ["p_instance_id": TEXT];
    GET_INSTANCE_STATS = "get_instance_stats", Read, ["p_instance_id": TEXT];

    // Management.
    LIST_INSTANCES = "list_instances", Read, [];
    LIST_INSTANCES_BY_STATUS = "list_instances_by_status", Read, ["p_status": TEXT];
    LIST_EXECUTIONS = "list_executions", Read, ["p_instance_id": TEXT];
    LATEST_EXECUTION_ID = "latest_execution_id", Read, ["p_instance_id": TEXT];
    GET_INSTANCE_INFO = "get_instance_info", Read, ["p_instance_id": TEXT];
    GET_EXECUTION_INFO = "get_execution_info", Read, [
        "p_instance_id": TEXT, "p_execution_id": INT8,
    ];
    GET_SYSTEM_METRICS = "get_system_metrics", Read, [];
    GET_QUEUE_DEPTHS = "get_queue_depths", Read, [];
    LIST_CHILDREN = "list_children", Read, ["p_instance_id": TEXT];
    GET_PARENT_ID = "get_parent_id", Read, ["p_instance_id": TEXT];
    DELETE_INSTANCES_ATOMIC = "delete_instances_atomic", Write, [
        "p_ids": TEXT_ARRAY, "p_force": BOOL,
    ];
    DELETE_INSTANCE_BULK = "delete_instance_bulk", Write, [
        "p_ids": TEXT_ARRAY, "p_completed_before": INT8, "p_limit": INT8,
    ];
    PRUNE_EXECUTIONS = "prune_executions", Write, [
        "p_instance_id": TEXT, "p_keep_last": INT8, "p_completed_before": INT8,
    ];
    // Inspection (sql/functions/inspect.sql): the CLI, health metrics, dashboard.
    TABLE_STATS = "table_stats", Read, [];
    HEALTH_SAMPLE = "health_sample", Read, ["p_attempts": INT8];
    INSTANCE_COUNTS = "instance_counts", Read, [];
    INSPECT_INSTANCE = "inspect_instance", Read, ["p_instance_id": TEXT];
    INSPECT_EXECUTIONS = "inspect_executions", Read, ["p_instance_id": TEXT];
    INSPECT_HISTORY = "inspect_history", Read, ["p_instance_id": TEXT, "p_limit": INT8];
    INSPECT_PENDING = "inspect_pending", Read, ["p_instance_id": TEXT];
    STUCK_WORK = "stuck_work", Read, [
        "p_ready_ms": INT8, "p_attempts": INT8, "p_limit": INT8,
    ];
    COMPLETION_ACTIVITY = "completion_activity", Read, [
        "p_bucket_ms": INT8, "p_buckets": INT4,
    ];
    PRUNE_EXECUTIONS_BULK = "prune_executions_bulk", Write, [
        "p_ids": TEXT_ARRAY, "p_filter_completed_before": INT8, "p_limit": INT8,
        "p_keep_last": INT8, "p_completed_before": INT8,
    ];

    // Listing and totals beyond the trait (listing.sql).
    LIST_INSTANCE_PAGE = "list_instance_page", Read, [
        "p_statuses": TEXT_ARRAY, "p_name": TEXT, "p_version": TEXT,
        "p_created_from_ms": INT8, "p_created_before_ms": INT8,
        "p_completed_from_ms": INT8, "p_completed_before_ms": INT8,
        "p_roots_only": BOOL, "p_parent": TEXT,
        "p_after_created_ms": INT8, "p_after_id": TEXT, "p_limit": INT4,
    ];
    // Folds pending deltas into the totals on the way (idempotent).
    COUNT_INSTANCES_BY_STATUS = "count_instances_by_status", Read, [];

    // Retention (retention.sql). Acquire and release are idempotent for one
    // owner; a batch deletes what is eligible when it runs, so a repeated
    // attempt finds nothing of the first attempt's left (as bulk deletes).
    NOW_MS = "now_ms", Read, [];
    MAINTENANCE_ACQUIRE = "maintenance_acquire", Write, [
        "p_task": TEXT, "p_owner": TEXT, "p_lease_ms": INT8,
    ];
    MAINTENANCE_RELEASE = "maintenance_release", Write, ["p_task": TEXT, "p_owner": TEXT];
    RETENTION_PURGE_BATCH = "retention_purge_batch", Write, [
        "p_owner": TEXT, "p_completed_before": INT8, "p_statuses": TEXT_ARRAY, "p_limit": INT4,
        "p_after_completed_ms": INT8, "p_after_id": TEXT, "p_dry_run": BOOL,
    ];
    RETENTION_PRUNE_BATCH = "retention_prune_batch", Write, [
        "p_owner": TEXT, "p_keep_last": INT8, "p_limit": INT4, "p_after_id": TEXT,
    ];
}

impl SqlFn {
    /// `installed(p_a => $1, p_b => $2, ...)`: the function under its
    /// installed name (in a versioned function set, see `function_set.rs`),
    /// in named notation, so a parameter can only reach the argument of its
    /// name.
    pub fn invocation_as(&self, installed: &str) -> String {
        let args: Vec<String> = self
            .params
            .iter()
            .enumerate()
            .map(|(i, (name, _))| format!("{name} => ${}", i + 1))
            .collect();
        format!("{installed}({})", args.join(", "))
    }

    /// The position of the parameter naming the instance a call is about
    /// (recorded on the call's span), if there is one.
    pub fn instance_param(&self) -> Option<usize> {
        self.params
            .iter()
            .position(|(name, ty)| INSTANCE_PARAMS.contains(name) && *ty == Type::TEXT)
    }

    /// The declared parameter types, in order (for `prepare_typed`).
    pub fn types(&self) -> Vec<Type> {
        self.params.iter().map(|(_, t)| t.clone()).collect()
    }
}

/// Every descriptor as (function, [(parameter, PostgreSQL type name)]), for
/// `tests/signatures.rs`. Not part of the supported API.
#[doc(hidden)]
pub fn signatures() -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    ALL.iter()
        .map(|f| {
            (
                f.name,
                f.params
                    .iter()
                    .map(|(n, t)| (*n, t.name().to_string()))
                    .collect(),
            )
        })
        .collect()
}
