//! Builders of the work items, events and metadata tests feed the provider.
//! Orchestration "Orch" version 1.0.0, execution 1 unless said otherwise
//! (the `_of` variants name another orchestration).

use duroxide::providers::{ExecutionMetadata, WorkItem};
use duroxide::{Event, EventKind};

/// The orchestration the builders name unless told otherwise.
pub const ORCH: &str = "Orch";
/// The version of every orchestration the builders name.
pub const VERSION: &str = "1.0.0";

pub fn start(instance: &str, input: &str) -> WorkItem {
    start_of(ORCH, instance, input)
}

/// [`start`] of the orchestration `orchestration`.
pub fn start_of(orchestration: &str, instance: &str, input: &str) -> WorkItem {
    WorkItem::StartOrchestration {
        instance: instance.to_string(),
        orchestration: orchestration.to_string(),
        input: input.to_string(),
        version: Some(VERSION.to_string()),
        parent_instance: None,
        parent_id: None,
        parent_execution_id: None,
        execution_id: 1,
    }
}

/// An activity named "Activity", with no tag.
pub fn activity(instance: &str, id: u64, input: &str, session: Option<&str>) -> WorkItem {
    activity_item("Activity", instance, id, input, session, None)
}

/// An activity named "Activity", outside any session, routed by `tag`.
pub fn tagged_activity(instance: &str, id: u64, input: &str, tag: &str) -> WorkItem {
    activity_item("Activity", instance, id, input, None, Some(tag))
}

/// An activity named `name`: the general form of [`activity`].
pub fn activity_item(
    name: &str,
    instance: &str,
    id: u64,
    input: &str,
    session: Option<&str>,
    tag: Option<&str>,
) -> WorkItem {
    WorkItem::ActivityExecute {
        instance: instance.to_string(),
        execution_id: 1,
        id,
        name: name.to_string(),
        input: input.to_string(),
        session_id: session.map(str::to_string),
        tag: tag.map(str::to_string),
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
    started_event_of(ORCH, instance, input)
}

/// [`started_event`] of the orchestration `orchestration`.
pub fn started_event_of(orchestration: &str, instance: &str, input: &str) -> Event {
    Event::with_event_id(
        1,
        instance,
        1,
        None,
        EventKind::OrchestrationStarted {
            name: orchestration.to_string(),
            version: VERSION.to_string(),
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
    first_turn_metadata_of(ORCH)
}

/// [`first_turn_metadata`] of the orchestration `orchestration`.
pub fn first_turn_metadata_of(orchestration: &str) -> ExecutionMetadata {
    ExecutionMetadata {
        orchestration_name: Some(orchestration.to_string()),
        orchestration_version: Some(VERSION.to_string()),
        ..Default::default()
    }
}
