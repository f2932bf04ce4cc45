//! `ProviderAdmin`: `sql/functions/management.sql`.

use super::PostgresProvider;
use crate::codec;
use async_trait::async_trait;
use duroxide::providers::{
    DeleteInstanceResult, ExecutionInfo, InstanceFilter, InstanceInfo, ProviderAdmin,
    ProviderError, PruneOptions, PruneResult, QueueDepths, SystemMetrics,
};
use duroxide::Event;
use tokio_postgres::Row;

fn not_found(op: &str, what: String) -> ProviderError {
    ProviderError::permanent(op, format!("{what} not found"))
}

fn ids(rows: &[Row]) -> Vec<String> {
    rows.iter().map(|r| r.get(0)).collect()
}

fn ms(row: &Row, column: &str) -> u64 {
    row.get::<_, i64>(column).max(0) as u64
}

fn delete_result(row: &Row) -> DeleteInstanceResult {
    DeleteInstanceResult {
        instances_deleted: ms(row, "instances"),
        executions_deleted: ms(row, "executions"),
        events_deleted: ms(row, "events"),
        queue_messages_deleted: ms(row, "queue_messages"),
    }
}

fn prune_result(row: &Row) -> PruneResult {
    PruneResult {
        instances_processed: ms(row, "instances_processed"),
        executions_deleted: ms(row, "executions_deleted"),
        events_deleted: ms(row, "events_deleted"),
    }
}

fn output(op: &str, row: &Row) -> Result<Option<String>, ProviderError> {
    row.get::<_, Option<Vec<u8>>>("output")
        .map(|b| codec::utf8(op, "output", b))
        .transpose()
}

fn opt_i64(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

#[async_trait]
impl ProviderAdmin for PostgresProvider {
    async fn list_instances(&self) -> Result<Vec<String>, ProviderError> {
        Ok(ids(&self
            .call("list_instances", "list_instances", &[])
            .await?))
    }

    async fn list_instances_by_status(&self, status: &str) -> Result<Vec<String>, ProviderError> {
        let rows = self
            .call(
                "list_instances_by_status",
                "list_instances_by_status",
                &[&status],
            )
            .await?;
        Ok(ids(&rows))
    }

    async fn list_executions(&self, instance: &str) -> Result<Vec<u64>, ProviderError> {
        let rows = self
            .call("list_executions", "list_executions", &[&instance])
            .await?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
    }

    async fn read_history_with_execution_id(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<Vec<Event>, ProviderError> {
        self.read_events(
            "read_history_with_execution_id",
            instance,
            Some(execution_id),
        )
        .await
    }

    async fn read_history(&self, instance: &str) -> Result<Vec<Event>, ProviderError> {
        self.read_events("read_history", instance, None).await
    }

    async fn latest_execution_id(&self, instance: &str) -> Result<u64, ProviderError> {
        const OP: &str = "latest_execution_id";
        let row = self
            .call_one(OP, "latest_execution_id", &[&instance])
            .await?;
        // 1 for an instance with no execution, as duroxide's default does.
        Ok(row.get::<_, i64>(0).max(1) as u64)
    }

    async fn get_instance_info(&self, instance: &str) -> Result<InstanceInfo, ProviderError> {
        const OP: &str = "get_instance_info";
        let rows = self.call(OP, "get_instance_info", &[&instance]).await?;
        let row = rows
            .first()
            .ok_or_else(|| not_found(OP, format!("instance {instance}")))?;
        Ok(InstanceInfo {
            instance_id: row.get("instance_id"),
            orchestration_name: row.get("orchestration_name"),
            orchestration_version: codec::or_unknown(row.get("orchestration_version")),
            current_execution_id: ms(row, "current_execution_id"),
            status: row.get("status"),
            output: output(OP, row)?,
            created_at: ms(row, "created_at_ms"),
            updated_at: ms(row, "updated_at_ms"),
            parent_instance_id: row.get("parent_instance_id"),
        })
    }

    async fn get_execution_info(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<ExecutionInfo, ProviderError> {
        const OP: &str = "get_execution_info";
        let execution = codec::id(OP, execution_id)?;
        let rows = self
            .call(OP, "get_execution_info", &[&instance, &execution])
            .await?;
        let row = rows.first().ok_or_else(|| {
            not_found(
                OP,
                format!("execution {execution_id} of instance {instance}"),
            )
        })?;
        Ok(ExecutionInfo {
            execution_id,
            status: row.get("status"),
            output: output(OP, row)?,
            started_at: ms(row, "started_at_ms"),
            completed_at: row
                .get::<_, Option<i64>>("completed_at_ms")
                .map(|v| v.max(0) as u64),
            event_count: ms(row, "event_count") as usize,
        })
    }

    async fn get_system_metrics(&self) -> Result<SystemMetrics, ProviderError> {
        let row = self
            .call_one("get_system_metrics", "get_system_metrics", &[])
            .await?;
        Ok(SystemMetrics {
            total_instances: ms(&row, "total_instances"),
            total_executions: ms(&row, "total_executions"),
            running_instances: ms(&row, "running"),
            completed_instances: ms(&row, "completed"),
            failed_instances: ms(&row, "failed"),
            total_events: ms(&row, "total_events"),
        })
    }

    async fn get_queue_depths(&self) -> Result<QueueDepths, ProviderError> {
        let row = self
            .call_one("get_queue_depths", "get_queue_depths", &[])
            .await?;
        Ok(QueueDepths {
            orchestrator_queue: ms(&row, "orchestrator_queue") as usize,
            worker_queue: ms(&row, "worker_queue") as usize,
            timer_queue: 0,
        })
    }

    async fn list_children(&self, instance_id: &str) -> Result<Vec<String>, ProviderError> {
        let rows = self
            .call("list_children", "list_children", &[&instance_id])
            .await?;
        Ok(ids(&rows))
    }

    async fn get_parent_id(&self, instance_id: &str) -> Result<Option<String>, ProviderError> {
        const OP: &str = "get_parent_id";
        let rows = self.call(OP, "get_parent_id", &[&instance_id]).await?;
        rows.first()
            .map(|r| r.get(0))
            .ok_or_else(|| not_found(OP, format!("instance {instance_id}")))
    }

    async fn delete_instances_atomic(
        &self,
        ids: &[String],
        force: bool,
    ) -> Result<DeleteInstanceResult, ProviderError> {
        if ids.is_empty() {
            return Ok(DeleteInstanceResult::default());
        }
        let row = self
            .call_one(
                "delete_instances_atomic",
                "delete_instances_atomic",
                &[&ids, &force],
            )
            .await?;
        Ok(delete_result(&row))
    }

    async fn delete_instance_bulk(
        &self,
        filter: InstanceFilter,
    ) -> Result<DeleteInstanceResult, ProviderError> {
        let limit = i64::from(filter.limit.unwrap_or(1000));
        let row = self
            .call_one(
                "delete_instance_bulk",
                "delete_instance_bulk",
                &[
                    &filter.instance_ids,
                    &opt_i64(filter.completed_before),
                    &limit,
                ],
            )
            .await?;
        Ok(delete_result(&row))
    }

    async fn prune_executions(
        &self,
        instance_id: &str,
        options: PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        let keep_last = options.keep_last.map(i64::from);
        let row = self
            .call_one(
                "prune_executions",
                "prune_executions",
                &[&instance_id, &keep_last, &opt_i64(options.completed_before)],
            )
            .await?;
        Ok(prune_result(&row))
    }

    async fn prune_executions_bulk(
        &self,
        filter: InstanceFilter,
        options: PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        let limit = i64::from(filter.limit.unwrap_or(1000));
        let keep_last = options.keep_last.map(i64::from);
        let row = self
            .call_one(
                "prune_executions_bulk",
                "prune_executions_bulk",
                &[
                    &filter.instance_ids,
                    &opt_i64(filter.completed_before),
                    &limit,
                    &keep_last,
                    &opt_i64(options.completed_before),
                ],
            )
            .await?;
        Ok(prune_result(&row))
    }
}
