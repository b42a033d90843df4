//! Canned histories and records for engine unit tests.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use pb::history_event::EventType;

use crate::domain::events::{event, to_timestamp};
use crate::domain::{ExecutionId, InstanceId, InstanceRecord, RuntimeStatus};
use crate::proto as pb;
use crate::store::InboxMessage;

/// Execution ids "x1", "x2", … in order, so plans are deterministic.
pub(crate) struct SeqIds(pub(crate) u32);

impl crate::engine::apply::IdSource for SeqIds {
    fn execution_id(&mut self) -> ExecutionId {
        self.0 += 1;
        ExecutionId::new(format!("x{}", self.0))
    }
}

/// A fixed test time: 2026-01-01T00:00:00Z plus `secs`.
pub(crate) fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600 + secs, 0).unwrap()
}

/// A record with execution "e1".
pub(crate) fn record(id: &str, status: RuntimeStatus) -> InstanceRecord {
    InstanceRecord {
        instance_id: InstanceId::new(id),
        execution_id: ExecutionId::new("e1"),
        name: "o".into(),
        version: None,
        status,
        created_at: at(0),
        last_updated_at: at(0),
        completed_at: None,
        scheduled_start_at: None,
        input: None,
        output: None,
        custom_status: None,
        failure: None,
        parent_instance_id: None,
        tags: BTreeMap::new(),
        trace_context: None,
        history_len: 0,
    }
}

/// An inbox row.
pub(crate) fn inbox(seq: i64, event: pb::HistoryEvent, exec: Option<ExecutionId>) -> InboxMessage {
    InboxMessage {
        seq,
        target_execution: exec,
        event,
        visible_at: at(0),
    }
}

/// Builds histories event by event; starts with OrchestratorStarted + ExecutionStarted.
pub(crate) struct HistoryBuilder {
    events: Vec<pb::HistoryEvent>,
}

impl HistoryBuilder {
    pub(crate) fn new(instance_id: &str, name: &str) -> Self {
        Self {
            events: vec![
                event(
                    -1,
                    at(0),
                    EventType::OrchestratorStarted(pb::OrchestratorStartedEvent {}),
                ),
                Self::started(instance_id, name, None),
            ],
        }
    }

    pub(crate) fn started(
        instance_id: &str,
        name: &str,
        parent: Option<pb::ParentInstanceInfo>,
    ) -> pb::HistoryEvent {
        event(
            -1,
            at(0),
            EventType::ExecutionStarted(pb::ExecutionStartedEvent {
                name: name.into(),
                input: Some("\"in\"".into()),
                orchestration_instance: Some(pb::OrchestrationInstance {
                    instance_id: instance_id.into(),
                    execution_id: Some("e1".into()),
                }),
                parent_instance: parent,
                ..Default::default()
            }),
        )
    }

    pub(crate) fn push(mut self, e: pb::HistoryEvent) -> Self {
        self.events.push(e);
        self
    }

    pub(crate) fn task_scheduled(self, id: i32, name: &str) -> Self {
        self.push(event(
            id,
            at(1),
            EventType::TaskScheduled(pb::TaskScheduledEvent {
                name: name.into(),
                ..Default::default()
            }),
        ))
    }

    pub(crate) fn task_completed(self, id: i32, result: &str) -> Self {
        self.push(event(
            -1,
            at(2),
            EventType::TaskCompleted(pb::TaskCompletedEvent {
                task_scheduled_id: id,
                result: Some(result.into()),
            }),
        ))
    }

    pub(crate) fn child_created(self, id: i32, child: &str, name: &str) -> Self {
        self.push(event(
            id,
            at(1),
            EventType::SubOrchestrationInstanceCreated(pb::SubOrchestrationInstanceCreatedEvent {
                instance_id: child.into(),
                name: name.into(),
                ..Default::default()
            }),
        ))
    }

    pub(crate) fn build(self) -> Vec<pb::HistoryEvent> {
        self.events
    }

    pub(crate) fn raised(name: &str, input: Option<&str>) -> pb::HistoryEvent {
        event(
            -1,
            at(3),
            EventType::EventRaised(pb::EventRaisedEvent {
                name: name.into(),
                input: input.map(Into::into),
            }),
        )
    }

    pub(crate) fn resumed() -> pb::HistoryEvent {
        event(
            -1,
            at(3),
            EventType::ExecutionResumed(pb::ExecutionResumedEvent { input: None }),
        )
    }

    pub(crate) fn terminated(reason: &str, recurse: bool) -> pb::HistoryEvent {
        event(
            -1,
            at(3),
            EventType::ExecutionTerminated(pb::ExecutionTerminatedEvent {
                input: Some(reason.into()),
                recurse,
            }),
        )
    }

    pub(crate) fn timer_fired(id: i32) -> pb::HistoryEvent {
        event(
            -1,
            at(3),
            EventType::TimerFired(pb::TimerFiredEvent {
                fire_at: Some(to_timestamp(at(3))),
                timer_id: id,
            }),
        )
    }

    pub(crate) fn start_message(seq: i64, r: &InstanceRecord) -> InboxMessage {
        inbox(
            seq,
            Self::started(r.instance_id.as_str(), &r.name, None),
            None,
        )
    }
}
