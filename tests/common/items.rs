//! Builders of the work items, events and metadata tests feed the provider.
//! Orchestration "Orch" version 1.0.0, execution 1 unless said otherwise.

use duroxide::providers::{ExecutionMetadata, WorkItem};
use duroxide::{Event, EventKind};

pub fn start(instance: &str, input: &str) -> WorkItem {
    WorkItem::StartOrchestration {
        instance: instance.to_string(),
        orchestration: "Orch".to_string(),
        input: input.to_string(),
        version: Some("1.0.0".to_string()),
        parent_instance: None,
        parent_id: None,
        parent_execution_id: None,
        execution_id: 1,
    }
}

pub fn activity(instance: &str, id: u64, input: &str, session: Option<&str>) -> WorkItem {
    WorkItem::ActivityExecute {
        instance: instance.to_string(),
        execution_id: 1,
        id,
        name: "Activity".to_string(),
        input: input.to_string(),
        session_id: session.map(str::to_string),
        tag: None,
    }
}

pub fn completed(instance: &str, id: u64, result: &str) -> WorkItem {
    WorkItem::ActivityCompleted {
        instance: instance.to_string(),
        execution_id: 1,
        id,
        result: result.to_string(),
    }
}

pub fn external(instance: &str, name: &str, data: &str) -> WorkItem {
    WorkItem::ExternalRaised {
        instance: instance.to_string(),
        name: name.to_string(),
        data: data.to_string(),
    }
}

pub fn started_event(instance: &str, input: &str) -> Event {
    Event::with_event_id(
        1,
        instance,
        1,
        None,
        EventKind::OrchestrationStarted {
            name: "Orch".to_string(),
            version: "1.0.0".to_string(),
            input: input.to_string(),
            parent_instance: None,
            parent_id: None,
            parent_execution_id: None,
            carry_forward_events: None,
            initial_custom_status: None,
        },
    )
}

/// Metadata of a first turn: names the orchestration, which creates the instance.
pub fn first_turn_metadata() -> ExecutionMetadata {
    ExecutionMetadata {
        orchestration_name: Some("Orch".to_string()),
        orchestration_version: Some("1.0.0".to_string()),
        ..Default::default()
    }
}
