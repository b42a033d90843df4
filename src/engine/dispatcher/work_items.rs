//! Building the `WorkItem`s workers receive from what the dispatcher holds.

use pb::history_event::EventType;

use super::tokens::{activity_token, format_token, ORCH_PREFIX};
use crate::domain::{InstanceId, InstanceRecord};
use crate::proto as pb;
use crate::store::ActivityItem;

/// An orchestrator work item: the committed history as `pastEvents`, the episode's
/// `OrchestratorStarted` and delivered messages as `newEvents`.
pub(super) fn orchestrator_work_item(
    id: &InstanceId,
    record: &InstanceRecord,
    history: &[pb::HistoryEvent],
    new_events: &[pb::HistoryEvent],
    token: u64,
) -> pb::WorkItem {
    pb::WorkItem {
        completion_token: format_token(ORCH_PREFIX, token),
        request: Some(pb::work_item::Request::OrchestratorRequest(
            pb::OrchestratorRequest {
                instance_id: id.to_string(),
                execution_id: Some(record.execution_id.to_string()),
                past_events: history.to_vec(),
                new_events: new_events.to_vec(),
                orchestration_trace_context: record.trace_context.clone(),
                ..Default::default()
            },
        )),
    }
}

/// An activity work item for the row's `TaskScheduled` event.
pub(super) fn activity_work_item(item: &ActivityItem, token: u64) -> pb::WorkItem {
    let task = match &item.scheduled.event_type {
        Some(EventType::TaskScheduled(t)) => t.clone(),
        _ => pb::TaskScheduledEvent::default(),
    };
    pb::WorkItem {
        completion_token: activity_token(token, item.id),
        request: Some(pb::work_item::Request::ActivityRequest(
            pb::ActivityRequest {
                name: task.name,
                version: task.version,
                input: task.input,
                orchestration_instance: Some(pb::OrchestrationInstance {
                    instance_id: item.instance_id.to_string(),
                    execution_id: Some(item.execution_id.to_string()),
                }),
                task_id: item.scheduled.event_id,
                parent_trace_context: task.parent_trace_context,
                tags: task.tags,
            },
        )),
    }
}
