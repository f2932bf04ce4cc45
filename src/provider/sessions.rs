//! Session calls: `sql/functions/sessions.sql`.

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
                "renew_session_lock",
                &[&owner_ids, &extend_ms, &idle_ms],
            )
            .await?;
        Ok(row.get::<_, i64>(0) as usize)
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
                "cleanup_orphaned_sessions",
                &[],
            )
            .await?;
        Ok(row.get::<_, i64>(0) as usize)
    }
}
