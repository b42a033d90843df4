//! The Durable Task spans of the sidecar, described as plain data from what the dispatcher
//! already holds (history events, the committed transition). Nothing here talks to
//! OpenTelemetry, so it is the same with or without the `otlp` feature and unit-testable;
//! `export` turns the records into spans.
//!
//! Names and attributes follow the Durable Task framework (DurableTask.Core `Schema`,
//! durabletask-dotnet / -python / -go): `orchestration:{name}`, `activity:{name}`,
//! `orchestration:{name}:timer`, `durabletask.type`, `durabletask.task.*`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::domain::events::{from_timestamp, timestamp_of};
use crate::domain::{InstanceRecord, RuntimeStatus, StatusChange, Transition};
use crate::proto as pb;
use pb::history_event::EventType;

/// `durabletask.type`.
pub const ATTR_TYPE: &str = "durabletask.type";
/// `durabletask.task.name`.
pub const ATTR_NAME: &str = "durabletask.task.name";
/// `durabletask.task.version`.
pub const ATTR_VERSION: &str = "durabletask.task.version";
/// `durabletask.task.instance_id`.
pub const ATTR_INSTANCE_ID: &str = "durabletask.task.instance_id";
/// `durabletask.task.execution_id`.
pub const ATTR_EXECUTION_ID: &str = "durabletask.task.execution_id";
/// `durabletask.task.task_id`.
pub const ATTR_TASK_ID: &str = "durabletask.task.task_id";
/// `durabletask.task.status`.
pub const ATTR_STATUS: &str = "durabletask.task.status";
/// `durabletask.fire_at`.
pub const ATTR_FIRE_AT: &str = "durabletask.fire_at";

/// The span kinds used here (a subset of OpenTelemetry's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The sidecar serving a piece of work (an episode, an activity).
    Server,
    /// Bookkeeping inside an orchestration (a timer).
    Internal,
}

/// One finished span to export.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// Span name.
    pub name: String,
    /// Span kind.
    pub kind: Kind,
    /// The W3C context the protocol carried for this work; `None` = a new trace.
    pub parent: Option<pb::TraceContext>,
    /// Start time.
    pub start: DateTime<Utc>,
    /// End time.
    pub end: DateTime<Utc>,
    /// Attributes, in order.
    pub attributes: Vec<(&'static str, String)>,
    /// Set when the work failed: the span's error description.
    pub error: Option<String>,
}

/// What an orchestration episode's spans need, taken from the episode before it is
/// committed (the dispatcher gives the episode up to the commit).
#[derive(Debug, Clone)]
pub struct EpisodeTrace {
    instance_id: String,
    execution_id: String,
    name: String,
    version: Option<String>,
    /// `ExecutionStarted.parentTraceContext`: the client's (or parent orchestration's) span.
    parent: Option<pb::TraceContext>,
    /// When the episode was dispatched (its `OrchestratorStarted`).
    dispatched: DateTime<Utc>,
    /// Timers this episode delivers: (timer id, created, fire at).
    timers: Vec<(i32, DateTime<Utc>, DateTime<Utc>)>,
}

impl EpisodeTrace {
    /// Captures the episode: `past` is the committed history, `new_events` starts with
    /// the episode's `OrchestratorStarted`.
    pub fn capture(
        record: &InstanceRecord,
        past: &[pb::HistoryEvent],
        new_events: &[pb::HistoryEvent],
    ) -> Self {
        let started = past
            .iter()
            .chain(new_events)
            .find_map(|e| match &e.event_type {
                Some(EventType::ExecutionStarted(s)) => Some(s),
                _ => None,
            });
        let dispatched = new_events
            .iter()
            .find(|e| matches!(e.event_type, Some(EventType::OrchestratorStarted(_))))
            .map(timestamp_of)
            .unwrap_or(record.last_updated_at);
        let created: HashMap<i32, DateTime<Utc>> = past
            .iter()
            .filter(|e| matches!(e.event_type, Some(EventType::TimerCreated(_))))
            .map(|e| (e.event_id, timestamp_of(e)))
            .collect();
        let timers = new_events
            .iter()
            .filter_map(|e| match &e.event_type {
                Some(EventType::TimerFired(f)) => {
                    let fire_at = f.fire_at.as_ref().map(from_timestamp)?;
                    let created = created.get(&f.timer_id).copied().unwrap_or(fire_at);
                    Some((f.timer_id, created, fire_at))
                }
                _ => None,
            })
            .collect();
        Self {
            instance_id: record.instance_id.to_string(),
            execution_id: record.execution_id.to_string(),
            name: started.map_or_else(|| record.name.clone(), |s| s.name.clone()),
            version: record.version.clone().filter(|v| !v.is_empty()),
            parent: started.and_then(|s| s.parent_trace_context.clone()),
            dispatched,
            timers,
        }
    }

    /// The spans of the episode once `transition` is committed at `committed`: the
    /// episode itself and a timer span per timer it delivered. All are children of the
    /// context the orchestration was started with, so they join the client's trace.
    pub fn spans(&self, transition: &Transition, committed: DateTime<Utc>) -> Vec<SpanRecord> {
        let mut attributes = vec![
            (ATTR_TYPE, "orchestration".to_owned()),
            (ATTR_NAME, self.name.clone()),
            (ATTR_INSTANCE_ID, self.instance_id.clone()),
            (ATTR_EXECUTION_ID, self.execution_id.clone()),
        ];
        if let Some(v) = &self.version {
            attributes.push((ATTR_VERSION, v.clone()));
        }
        let mut error = None;
        if let Some(status) = episode_status(&transition.status) {
            attributes.push((ATTR_STATUS, status.to_owned()));
            if let StatusChange::Terminal {
                status: RuntimeStatus::Failed,
                failure,
                ..
            } = &transition.status
            {
                error = Some(failure.as_ref().map_or_else(
                    || "orchestration failed".to_owned(),
                    |f| format!("{}: {}", f.error_type, f.error_message),
                ));
            }
        }
        let mut spans = vec![SpanRecord {
            name: format!("orchestration:{}", self.name),
            kind: Kind::Server,
            parent: self.parent.clone(),
            start: self.dispatched,
            end: committed,
            attributes,
            error,
        }];
        for (timer_id, created, fire_at) in &self.timers {
            spans.push(SpanRecord {
                name: format!("orchestration:{}:timer", self.name),
                kind: Kind::Internal,
                parent: self.parent.clone(),
                start: *created,
                // Delivered with this episode: the wait ends when it was dispatched.
                end: self.dispatched.max(*created),
                attributes: vec![
                    (ATTR_TYPE, "timer".to_owned()),
                    (ATTR_NAME, self.name.clone()),
                    (ATTR_INSTANCE_ID, self.instance_id.clone()),
                    (ATTR_TASK_ID, timer_id.to_string()),
                    (ATTR_FIRE_AT, fire_at.to_rfc3339()),
                ],
                error: None,
            });
        }
        spans
    }
}

/// `durabletask.task.status` of an episode that ended its execution.
fn episode_status(change: &StatusChange) -> Option<&'static str> {
    match change {
        StatusChange::Progress => None,
        StatusChange::ContinuedAsNew { .. } => Some("ContinuedAsNew"),
        StatusChange::Terminal { status, .. } => Some(match status {
            RuntimeStatus::Completed => "Completed",
            RuntimeStatus::Failed => "Failed",
            RuntimeStatus::Terminated => "Terminated",
            RuntimeStatus::Canceled => "Canceled",
            _ => "Running",
        }),
    }
}

/// The span of an activity whose result was just committed: from its scheduling (the
/// `TaskScheduled` event) to `completed`, a child of the trace context the orchestration
/// gave the task, which is also the parent of the worker's own activity span.
pub fn activity_span(
    instance_id: &str,
    scheduled: &pb::HistoryEvent,
    failure: Option<&pb::TaskFailureDetails>,
    completed: DateTime<Utc>,
) -> Option<SpanRecord> {
    let Some(EventType::TaskScheduled(task)) = &scheduled.event_type else {
        return None;
    };
    let mut attributes = vec![
        (ATTR_TYPE, "activity".to_owned()),
        (ATTR_NAME, task.name.clone()),
        (ATTR_INSTANCE_ID, instance_id.to_owned()),
        (ATTR_TASK_ID, scheduled.event_id.to_string()),
    ];
    if let Some(v) = task.version.as_ref().filter(|v| !v.is_empty()) {
        attributes.push((ATTR_VERSION, v.clone()));
    }
    attributes.push((
        ATTR_STATUS,
        if failure.is_some() {
            "Failed"
        } else {
            "Completed"
        }
        .to_owned(),
    ));
    let start = timestamp_of(scheduled);
    Some(SpanRecord {
        name: format!("activity:{}", task.name),
        kind: Kind::Server,
        parent: task.parent_trace_context.clone(),
        start,
        end: completed.max(start),
        attributes,
        error: failure.map(|f| format!("{}: {}", f.error_type, f.error_message)),
    })
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::domain::events::{event, orchestrator_started, to_timestamp};
    use crate::domain::{ExecutionId, InstanceId};

    fn ctx(span: &str) -> pb::TraceContext {
        pb::TraceContext {
            trace_parent: format!("00-0af7651916cd43dd8448eb211c80319c-{span}-01"),
            ..Default::default()
        }
    }

    fn record() -> InstanceRecord {
        let t = DateTime::<Utc>::UNIX_EPOCH;
        InstanceRecord {
            instance_id: InstanceId::new("i1".to_owned()),
            execution_id: ExecutionId::new("e1".to_owned()),
            name: "Stored".into(),
            version: None,
            status: RuntimeStatus::Running,
            created_at: t,
            last_updated_at: t,
            completed_at: None,
            scheduled_start_at: None,
            input: None,
            output: None,
            custom_status: None,
            failure: None,
            parent_instance_id: None,
            tags: Default::default(),
            trace_context: None,
            history_len: 0,
        }
    }

    fn transition(status: StatusChange) -> Transition {
        Transition {
            instance_id: InstanceId::new("i1".to_owned()),
            expected_execution_id: ExecutionId::new("e1".to_owned()),
            expected_history_len: 0,
            consumed: vec![],
            history_append: vec![],
            status,
            custom_status: None,
            trace_context: None,
            activities: vec![],
            messages: vec![],
            children: vec![],
            now: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    #[test]
    fn episode_spans_carry_the_start_context_and_the_fired_timers() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(100);
        let started = event(
            -1,
            t0,
            EventType::ExecutionStarted(pb::ExecutionStartedEvent {
                name: "Flow".into(),
                parent_trace_context: Some(ctx("b7ad6b7169203331")),
                ..Default::default()
            }),
        );
        let timer = event(
            3,
            t0 + Duration::seconds(1),
            EventType::TimerCreated(pb::TimerCreatedEvent {
                fire_at: Some(to_timestamp(t0 + Duration::seconds(5))),
            }),
        );
        let fired = event(
            -1,
            t0 + Duration::seconds(5),
            EventType::TimerFired(pb::TimerFiredEvent {
                timer_id: 3,
                fire_at: Some(to_timestamp(t0 + Duration::seconds(5))),
            }),
        );
        let dispatched = t0 + Duration::seconds(6);
        let trace = EpisodeTrace::capture(
            &record(),
            &[started, timer],
            &[orchestrator_started(dispatched), fired],
        );
        let end = dispatched + Duration::milliseconds(20);
        let spans = trace.spans(
            &transition(StatusChange::Terminal {
                status: RuntimeStatus::Failed,
                output: None,
                failure: Some(pb::TaskFailureDetails {
                    error_type: "Boom".into(),
                    error_message: "bad".into(),
                    ..Default::default()
                }),
            }),
            end,
        );
        assert_eq!(spans.len(), 2);
        let episode = &spans[0];
        assert_eq!(episode.name, "orchestration:Flow");
        assert_eq!(episode.kind, Kind::Server);
        assert_eq!(episode.parent, Some(ctx("b7ad6b7169203331")));
        assert_eq!((episode.start, episode.end), (dispatched, end));
        assert!(episode
            .attributes
            .contains(&(ATTR_STATUS, "Failed".to_owned())));
        assert_eq!(episode.error.as_deref(), Some("Boom: bad"));
        let timer = &spans[1];
        assert_eq!(timer.name, "orchestration:Flow:timer");
        assert_eq!(timer.start, t0 + Duration::seconds(1));
        assert_eq!(timer.end, dispatched);
        assert!(timer.attributes.contains(&(ATTR_TASK_ID, "3".to_owned())));
        assert_eq!(timer.parent, Some(ctx("b7ad6b7169203331")));
    }

    #[test]
    fn an_episode_that_goes_on_has_no_status_and_no_parent_without_context() {
        let trace = EpisodeTrace::capture(&record(), &[], &[]);
        let spans = trace.spans(
            &transition(StatusChange::Progress),
            DateTime::<Utc>::UNIX_EPOCH,
        );
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "orchestration:Stored");
        assert_eq!(spans[0].parent, None);
        assert!(spans[0].attributes.iter().all(|(k, _)| *k != ATTR_STATUS));
    }

    #[test]
    fn activity_span_is_a_child_of_the_scheduled_tasks_context() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(10);
        let scheduled = event(
            7,
            t0,
            EventType::TaskScheduled(pb::TaskScheduledEvent {
                name: "Hello".into(),
                parent_trace_context: Some(ctx("00f067aa0ba902b7")),
                ..Default::default()
            }),
        );
        let span = activity_span("i1", &scheduled, None, t0 + Duration::seconds(2)).unwrap();
        assert_eq!(span.name, "activity:Hello");
        assert_eq!(span.parent, Some(ctx("00f067aa0ba902b7")));
        assert!(span.attributes.contains(&(ATTR_TASK_ID, "7".to_owned())));
        assert!(span
            .attributes
            .contains(&(ATTR_STATUS, "Completed".to_owned())));
        assert_eq!(span.error, None);
        let not_a_task = event(1, t0, EventType::OrchestratorStarted(Default::default()));
        assert_eq!(activity_span("i1", &not_a_task, None, t0), None);
    }
}
