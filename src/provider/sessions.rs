//! Session calls: `sql/functions/sessions.sql`.

use super::functions as sql;
use super::rows::count;
use super::PostgresProvider;
use crate::codec::millis;
use duroxide::providers::ProviderError;
use std::time::Duration;

impl PostgresProvider {
    pub(super) async fn renew_sessions(
        &self,
        owner_ids: &[&str],
        extend_for: Duration,
        idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        if owner_ids.is_empty() {
            return Ok(0);
        }
        let extend_ms = millis(extend_for);
        let idle_ms = millis(idle_timeout);
        let row = self
            .call_one(
                "renew_session_lock",
                &sql::RENEW_SESSION_LOCK,
                &[&owner_ids, &extend_ms, &idle_ms],
            )
            .await?;
        Ok(count("renew_session_lock", &row, 0)? as usize)
    }

    /// Sessions are removed once their lease has expired and no queued item
    /// names them; the idle timeout is already enforced by heartbeats
    /// (`renew_sessions` stops extending idle sessions), so it is not needed
    /// here.
    pub(super) async fn cleanup_sessions(
        &self,
        _idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        let row = self
            .call_one(
                "cleanup_orphaned_sessions",
                &sql::CLEANUP_ORPHANED_SESSIONS,
                &[],
            )
            .await?;
        Ok(count("cleanup_orphaned_sessions", &row, 0)? as usize)
    }
}
