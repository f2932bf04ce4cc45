//! `ProviderAdmin`: `sql/functions/management.sql`.

use super::functions as sql;
use super::rows::{count, get};
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

fn ids(op: &str, rows: &[Row]) -> Result<Vec<String>, ProviderError> {
    rows.iter().map(|r| get(op, r, 0)).collect()
}

fn delete_result(op: &str, row: &Row) -> Result<DeleteInstanceResult, ProviderError> {
    Ok(DeleteInstanceResult {
        instances_deleted: count(op, row, "instances")?,
        executions_deleted: count(op, row, "executions")?,
        events_deleted: count(op, row, "events")?,
        queue_messages_deleted: count(op, row, "queue_messages")?,
    })
}

fn prune_result(op: &str, row: &Row) -> Result<PruneResult, ProviderError> {
    Ok(PruneResult {
        instances_processed: count(op, row, "instances_processed")?,
        executions_deleted: count(op, row, "executions_deleted")?,
        events_deleted: count(op, row, "events_deleted")?,
    })
}

fn output(op: &str, row: &Row) -> Result<Option<String>, ProviderError> {
    get::<Option<Vec<u8>>, _>(op, row, "output")?
        .map(|b| codec::utf8(op, "output", b))
        .transpose()
}

fn opt_i64(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

#[async_trait]
impl ProviderAdmin for PostgresProvider {
    async fn list_instances(&self) -> Result<Vec<String>, ProviderError> {
        const OP: &str = "list_instances";
        ids(OP, &self.call(OP, &sql::LIST_INSTANCES, &[]).await?)
    }

    async fn list_instances_by_status(&self, status: &str) -> Result<Vec<String>, ProviderError> {
        const OP: &str = "list_instances_by_status";
        let rows = self
            .call(OP, &sql::LIST_INSTANCES_BY_STATUS, &[&status])
            .await?;
        ids(OP, &rows)
    }

    async fn list_executions(&self, instance: &str) -> Result<Vec<u64>, ProviderError> {
        const OP: &str = "list_executions";
        let rows = self.call(OP, &sql::LIST_EXECUTIONS, &[&instance]).await?;
        rows.iter().map(|r| count(OP, r, 0)).collect()
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
            .call_one(OP, &sql::LATEST_EXECUTION_ID, &[&instance])
            .await?;
        // 1 for an instance with no execution, as duroxide's default does.
        Ok(get::<Option<i64>, _>(OP, &row, 0)?.unwrap_or(1).max(1) as u64)
    }

    async fn get_instance_info(&self, instance: &str) -> Result<InstanceInfo, ProviderError> {
        const OP: &str = "get_instance_info";
        let rows = self.call(OP, &sql::GET_INSTANCE_INFO, &[&instance]).await?;
        let row = rows
            .first()
            .ok_or_else(|| not_found(OP, format!("instance {instance}")))?;
        Ok(InstanceInfo {
            instance_id: get(OP, row, "instance_id")?,
            orchestration_name: get(OP, row, "orchestration_name")?,
            orchestration_version: codec::or_unknown(get(OP, row, "orchestration_version")?),
            current_execution_id: count(OP, row, "current_execution_id")?,
            status: get(OP, row, "status")?,
            output: output(OP, row)?,
            created_at: count(OP, row, "created_at_ms")?,
            updated_at: count(OP, row, "updated_at_ms")?,
            parent_instance_id: get(OP, row, "parent_instance_id")?,
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
            .call(OP, &sql::GET_EXECUTION_INFO, &[&instance, &execution])
            .await?;
        let row = rows.first().ok_or_else(|| {
            not_found(
                OP,
                format!("execution {execution_id} of instance {instance}"),
            )
        })?;
        Ok(ExecutionInfo {
            execution_id,
            status: get(OP, row, "status")?,
            output: output(OP, row)?,
            started_at: count(OP, row, "started_at_ms")?,
            completed_at: get::<Option<i64>, _>(OP, row, "completed_at_ms")?
                .map(|v| v.max(0) as u64),
            event_count: count(OP, row, "event_count")? as usize,
        })
    }

    async fn get_system_metrics(&self) -> Result<SystemMetrics, ProviderError> {
        const OP: &str = "get_system_metrics";
        let row = self.call_one(OP, &sql::GET_SYSTEM_METRICS, &[]).await?;
        Ok(SystemMetrics {
            total_instances: count(OP, &row, "total_instances")?,
            total_executions: count(OP, &row, "total_executions")?,
            running_instances: count(OP, &row, "running")?,
            completed_instances: count(OP, &row, "completed")?,
            failed_instances: count(OP, &row, "failed")?,
            total_events: count(OP, &row, "total_events")?,
        })
    }

    async fn get_queue_depths(&self) -> Result<QueueDepths, ProviderError> {
        const OP: &str = "get_queue_depths";
        let row = self.call_one(OP, &sql::GET_QUEUE_DEPTHS, &[]).await?;
        Ok(QueueDepths {
            orchestrator_queue: count(OP, &row, "orchestrator_queue")? as usize,
            worker_queue: count(OP, &row, "worker_queue")? as usize,
            timer_queue: 0,
        })
    }

    async fn list_children(&self, instance_id: &str) -> Result<Vec<String>, ProviderError> {
        const OP: &str = "list_children";
        let rows = self.call(OP, &sql::LIST_CHILDREN, &[&instance_id]).await?;
        ids(OP, &rows)
    }

    async fn get_parent_id(&self, instance_id: &str) -> Result<Option<String>, ProviderError> {
        const OP: &str = "get_parent_id";
        let rows = self.call(OP, &sql::GET_PARENT_ID, &[&instance_id]).await?;
        let row = rows
            .first()
            .ok_or_else(|| not_found(OP, format!("instance {instance_id}")))?;
        get(OP, row, 0)
    }

    async fn delete_instances_atomic(
        &self,
        ids: &[String],
        force: bool,
    ) -> Result<DeleteInstanceResult, ProviderError> {
        if ids.is_empty() {
            return Ok(DeleteInstanceResult::default());
        }
        const OP: &str = "delete_instances_atomic";
        let row = self
            .call_one(OP, &sql::DELETE_INSTANCES_ATOMIC, &[&ids, &force])
            .await?;
        delete_result(OP, &row)
    }

    async fn delete_instance_bulk(
        &self,
        filter: InstanceFilter,
    ) -> Result<DeleteInstanceResult, ProviderError> {
        let limit = i64::from(filter.limit.unwrap_or(1000));
        const OP: &str = "delete_instance_bulk";
        let row = self
            .call_one(
                OP,
                &sql::DELETE_INSTANCE_BULK,
                &[
                    &filter.instance_ids,
                    &opt_i64(filter.completed_before),
                    &limit,
                ],
            )
            .await?;
        delete_result(OP, &row)
    }

    async fn prune_executions(
        &self,
        instance_id: &str,
        options: PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        let keep_last = options.keep_last.map(i64::from);
        const OP: &str = "prune_executions";
        let row = self
            .call_one(
                OP,
                &sql::PRUNE_EXECUTIONS,
                &[&instance_id, &keep_last, &opt_i64(options.completed_before)],
            )
            .await?;
        prune_result(OP, &row)
    }

    async fn prune_executions_bulk(
        &self,
        filter: InstanceFilter,
        options: PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        let limit = i64::from(filter.limit.unwrap_or(1000));
        let keep_last = options.keep_last.map(i64::from);
        const OP: &str = "prune_executions_bulk";
        let row = self
            .call_one(
                OP,
                &sql::PRUNE_EXECUTIONS_BULK,
                &[
                    &filter.instance_ids,
                    &opt_i64(filter.completed_before),
                    &limit,
                    &keep_last,
                    &opt_i64(options.completed_before),
                ],
            )
            .await?;
        prune_result(OP, &row)
    }
}
