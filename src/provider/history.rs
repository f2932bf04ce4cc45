//! History reads and appends: `sql/functions/history.sql`.

use super::functions as sql;
use super::rows::get;
use super::PostgresProvider;
use crate::codec;
use duroxide::providers::ProviderError;
use duroxide::Event;

impl PostgresProvider {
    /// Events of one execution (`None`: the current one), in order. An
    /// undecodable row fails the read; nothing is skipped.
    pub(super) async fn read_events(
        &self,
        op: &str,
        instance: &str,
        execution_id: Option<u64>,
    ) -> Result<Vec<Event>, ProviderError> {
        let execution = execution_id.map(|e| codec::id(op, e)).transpose()?;
        let rows = self
            .call(op, &sql::READ_HISTORY, &[&instance, &execution])
            .await?;
        let texts = rows
            .iter()
            .map(|r| get::<String, _>(op, r, 0))
            .collect::<Result<Vec<_>, _>>()?;
        codec::decode_history(op, &texts)
    }

    pub(super) async fn append_events(
        &self,
        instance: &str,
        execution_id: u64,
        events: &[Event],
    ) -> Result<(), ProviderError> {
        const OP: &str = "append_with_execution";
        let execution = codec::id(OP, execution_id)?;
        let mut ids = Vec::with_capacity(events.len());
        let mut texts = Vec::with_capacity(events.len());
        for e in events {
            ids.push(codec::id(OP, e.event_id)?);
            texts.push(codec::encode_event(OP, e)?);
        }
        // Generated once per call: a retry whose first attempt committed
        // writes nothing instead of failing with a duplicate key.
        let request_id = uuid::Uuid::new_v4();
        self.call(
            OP,
            &sql::APPEND_HISTORY,
            &[&instance, &execution, &ids, &texts, &request_id],
        )
        .await?;
        Ok(())
    }
}
