//! Paginated, filtered instance listing and counts by status, beyond the
//! `ProviderAdmin` trait: `sql/functions/listing.sql`.

use super::functions as sql;
use super::rows::{count, get};
use super::PostgresProvider;
use crate::codec;
use duroxide::providers::ProviderError;
use tokio_postgres::Row;

/// Filters and page size of [`PostgresProvider::list_instance_page`].
///
/// Every filter is optional; those set are combined with AND. Pages are
/// newest first (by creation time, then instance id).
///
/// ```
/// use duroxide_postgres::InstanceQuery;
///
/// let query = InstanceQuery::new()
///     .status("Failed")
///     .orchestration("Checkout", Some("2.0.0"))
///     .roots_only()
///     .limit(50);
/// # let _ = query;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceQuery {
    pub(crate) statuses: Option<Vec<String>>,
    pub(crate) name: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) created_from_ms: Option<u64>,
    pub(crate) created_before_ms: Option<u64>,
    pub(crate) completed_from_ms: Option<u64>,
    pub(crate) completed_before_ms: Option<u64>,
    pub(crate) roots_only: bool,
    pub(crate) parent: Option<String>,
    pub(crate) limit: u32,
}

impl Default for InstanceQuery {
    fn default() -> Self {
        Self {
            statuses: None,
            name: None,
            version: None,
            created_from_ms: None,
            created_before_ms: None,
            completed_from_ms: None,
            completed_before_ms: None,
            roots_only: false,
            parent: None,
            limit: 100,
        }
    }
}

impl InstanceQuery {
    /// No filter, 100 per page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Instances whose current execution has this status (`Running`,
    /// `Completed`, `Failed`, `ContinuedAsNew`); may be called again to
    /// accept several.
    pub fn status(mut self, status: impl Into<String>) -> Self {
        self.statuses
            .get_or_insert_with(Vec::new)
            .push(status.into());
        self
    }

    /// Instances of this orchestration, and of this version if given.
    pub fn orchestration(mut self, name: impl Into<String>, version: Option<&str>) -> Self {
        self.name = Some(name.into());
        self.version = version.map(str::to_string);
        self
    }

    /// Created at or after `from_ms` and before `before_ms` (Unix ms; either
    /// bound may be `None`).
    pub fn created_between(mut self, from_ms: Option<u64>, before_ms: Option<u64>) -> Self {
        self.created_from_ms = from_ms;
        self.created_before_ms = before_ms;
        self
    }

    /// Completed (or failed, or continued-as-new) at or after `from_ms` and
    /// before `before_ms` (Unix ms; either bound may be `None`).
    pub fn completed_between(mut self, from_ms: Option<u64>, before_ms: Option<u64>) -> Self {
        self.completed_from_ms = from_ms;
        self.completed_before_ms = before_ms;
        self
    }

    /// Only root instances (no parent).
    pub fn roots_only(mut self) -> Self {
        self.roots_only = true;
        self
    }

    /// Only direct sub-orchestrations of `parent`.
    pub fn parent(mut self, parent: impl Into<String>) -> Self {
        self.parent = Some(parent.into());
        self
    }

    /// Page size (1..=10,000; default 100).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit.clamp(1, 10_000);
        self
    }
}

/// One instance of a listing page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstanceSummary {
    /// The instance id.
    pub instance_id: String,
    /// Orchestration name.
    pub orchestration_name: String,
    /// Orchestration version (`"unknown"` if never recorded).
    pub orchestration_version: String,
    /// Status of the current execution.
    pub status: String,
    /// The current execution id.
    pub current_execution_id: u64,
    /// The parent instance, for a sub-orchestration.
    pub parent_instance_id: Option<String>,
    /// Creation time (Unix ms).
    pub created_at_ms: u64,
    /// Time of the last committed turn (Unix ms).
    pub updated_at_ms: u64,
    /// When the current execution completed, failed or continued as new.
    pub completed_at_ms: Option<u64>,
}

/// Where the next page starts; opaque (pass it back unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceCursor {
    created_at_ms: i64,
    instance_id: String,
}

impl InstanceCursor {
    /// The cursor as text (for a command line or a URL); [`Self::from_token`]
    /// reads it back.
    pub fn token(&self) -> String {
        format!("{}:{}", self.created_at_ms, self.instance_id)
    }

    /// Reads a cursor written by [`Self::token`]; `None` if `token` is not one.
    pub fn from_token(token: &str) -> Option<Self> {
        let (ms, id) = token.split_once(':')?;
        if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            created_at_ms: ms.parse().ok()?,
            instance_id: id.to_string(),
        })
    }
}

/// A page of [`PostgresProvider::list_instance_page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePage {
    /// The instances, newest first.
    pub items: Vec<InstanceSummary>,
    /// `Some` when the page was full: pass it to get the next page.
    pub next_cursor: Option<InstanceCursor>,
}

fn summary(op: &str, r: &Row) -> Result<InstanceSummary, ProviderError> {
    Ok(InstanceSummary {
        instance_id: get(op, r, "instance_id")?,
        orchestration_name: get(op, r, "orchestration_name")?,
        orchestration_version: codec::or_unknown(get(op, r, "orchestration_version")?),
        status: get(op, r, "status")?,
        current_execution_id: count(op, r, "current_execution_id")?,
        parent_instance_id: get(op, r, "parent_instance_id")?,
        created_at_ms: count(op, r, "created_at_ms")?,
        updated_at_ms: count(op, r, "updated_at_ms")?,
        completed_at_ms: get::<Option<i64>, _>(op, r, "completed_at_ms")?.map(|v| v.max(0) as u64),
    })
}

fn to_i64(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

impl PostgresProvider {
    /// One page of instances matching `query`, newest first, starting after
    /// `cursor` (`None`: the first page). Keyset-paginated: a page costs
    /// what it returns, however deep; each filter is served by an index.
    pub async fn list_instance_page(
        &self,
        query: &InstanceQuery,
        cursor: Option<&InstanceCursor>,
    ) -> Result<InstancePage, ProviderError> {
        const OP: &str = "list_instance_page";
        let limit = query.limit as i32;
        let after_ms = cursor.map(|c| c.created_at_ms);
        let after_id = cursor.map(|c| c.instance_id.as_str());
        let rows = self
            .call(
                OP,
                &sql::LIST_INSTANCE_PAGE,
                &[
                    &query.statuses,
                    &query.name,
                    &query.version,
                    &to_i64(query.created_from_ms),
                    &to_i64(query.created_before_ms),
                    &to_i64(query.completed_from_ms),
                    &to_i64(query.completed_before_ms),
                    &query.roots_only,
                    &query.parent,
                    &after_ms,
                    &after_id,
                    &limit,
                ],
            )
            .await?;
        let items = rows
            .iter()
            .map(|r| summary(OP, r))
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = match rows.last() {
            Some(r) if items.len() == query.limit as usize => Some(InstanceCursor {
                created_at_ms: get(OP, r, "created_at_ms")?,
                instance_id: get(OP, r, "instance_id")?,
            }),
            _ => None,
        };
        Ok(InstancePage { items, next_cursor })
    }

    /// Number of instances per status of their current execution
    /// (`Running`, `Completed`, `Failed`, `ContinuedAsNew`), from the
    /// maintained totals: constant time, exact.
    pub async fn count_instances_by_status(&self) -> Result<Vec<(String, u64)>, ProviderError> {
        const OP: &str = "count_instances_by_status";
        let rows = self.call(OP, &sql::COUNT_INSTANCES_BY_STATUS, &[]).await?;
        rows.iter()
            .map(|r| Ok((get(OP, r, "status")?, count(OP, r, "instances")?)))
            .collect()
    }
}
