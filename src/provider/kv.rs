//! Custom status, KV reads and instance stats: `sql/functions/kv_status.sql`.

use super::functions as sql;
use super::rows::{count, get};
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
            .call(OP, &sql::GET_CUSTOM_STATUS, &[&instance, &last_seen])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let status = get::<Option<Vec<u8>>, _>(OP, row, 0)?
            .map(|b| codec::utf8(OP, "custom status", b))
            .transpose()?;
        Ok(Some((status, count(OP, row, 1)?)))
    }

    pub(super) async fn kv_value(
        &self,
        instance: &str,
        key: &str,
    ) -> Result<Option<String>, ProviderError> {
        const OP: &str = "get_kv_value";
        let row = self
            .call_one(OP, &sql::GET_KV_VALUE, &[&instance, &key])
            .await?;
        get::<Option<Vec<u8>>, _>(OP, &row, 0)?
            .map(|b| codec::utf8(OP, "KV value", b))
            .transpose()
    }

    pub(super) async fn kv_all_values(
        &self,
        instance: &str,
    ) -> Result<HashMap<String, String>, ProviderError> {
        const OP: &str = "get_kv_all_values";
        let rows = self.call(OP, &sql::KV_MERGED, &[&instance]).await?;
        rows.iter()
            .map(|r| Ok((get(OP, r, 0)?, codec::utf8(OP, "KV value", get(OP, r, 1)?)?)))
            .collect()
    }

    pub(super) async fn instance_stats(
        &self,
        instance: &str,
    ) -> Result<Option<duroxide::SystemStats>, ProviderError> {
        const OP: &str = "get_instance_stats";
        let rows = self
            .call(OP, &sql::GET_INSTANCE_STATS, &[&instance])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let first_event: Option<String> = get(OP, row, "first_event")?;
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
            history_event_count: count(OP, row, "history_event_count")?,
            history_size_bytes: count(OP, row, "history_size_bytes")?,
            queue_pending_count: carried,
            kv_user_key_count: count(OP, row, "kv_key_count")?,
            kv_total_value_bytes: count(OP, row, "kv_value_bytes")?,
        }))
    }
}
