//! Custom status, KV reads and instance stats: `sql/functions/kv_status.sql`.

use super::PostgresProvider;
use crate::codec;
use duroxide::providers::ProviderError;
use duroxide::EventKind;
use std::collections::HashMap;

impl PostgresProvider {
    pub(super) async fn custom_status(
        &self,
        instance: &str,
        last_seen_version: u64,
    ) -> Result<Option<(Option<String>, u64)>, ProviderError> {
        const OP: &str = "get_custom_status";
        let last_seen = i64::try_from(last_seen_version).unwrap_or(i64::MAX);
        let rows = self
            .call(OP, "get_custom_status", &[&instance, &last_seen])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let status = row
            .get::<_, Option<Vec<u8>>>(0)
            .map(|b| codec::utf8(OP, "custom status", b))
            .transpose()?;
        Ok(Some((status, row.get::<_, i64>(1) as u64)))
    }

    pub(super) async fn kv_value(
        &self,
        instance: &str,
        key: &str,
    ) -> Result<Option<String>, ProviderError> {
        const OP: &str = "get_kv_value";
        let row = self
            .call_one(OP, "get_kv_value", &[&instance, &key])
            .await?;
        row.get::<_, Option<Vec<u8>>>(0)
            .map(|b| codec::utf8(OP, "KV value", b))
            .transpose()
    }

    pub(super) async fn kv_all_values(
        &self,
        instance: &str,
    ) -> Result<HashMap<String, String>, ProviderError> {
        const OP: &str = "get_kv_all_values";
        let rows = self.call(OP, "kv_merged", &[&instance]).await?;
        rows.iter()
            .map(|r| Ok((r.get(0), codec::utf8(OP, "KV value", r.get(1))?)))
            .collect()
    }

    pub(super) async fn instance_stats(
        &self,
        instance: &str,
    ) -> Result<Option<duroxide::SystemStats>, ProviderError> {
        const OP: &str = "get_instance_stats";
        let rows = self.call(OP, "get_instance_stats", &[&instance]).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let first_event: Option<String> = row.get("first_event");
        let carried = match first_event {
            None => 0,
            Some(text) => {
                let event = codec::decode_event(&text).map_err(|e| crate::error::corrupt(OP, e))?;
                match event.kind {
                    EventKind::OrchestrationStarted {
                        carry_forward_events,
                        ..
                    } => carry_forward_events.map_or(0, |c| c.len() as u64),
                    _ => 0,
                }
            }
        };
        Ok(Some(duroxide::SystemStats {
            history_event_count: row.get::<_, i64>("history_event_count") as u64,
            history_size_bytes: row.get::<_, i64>("history_size_bytes") as u64,
            queue_pending_count: carried,
            kv_user_key_count: row.get::<_, i64>("kv_key_count") as u64,
            kv_total_value_bytes: row.get::<_, i64>("kv_value_bytes") as u64,
        }))
    }
}
