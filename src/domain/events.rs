//! Small constructors and accessors for wire `HistoryEvent`s, and time conversions.

use chrono::{DateTime, TimeZone, Utc};

use crate::proto as pb;
use pb::history_event::EventType;

/// `DateTime<Utc>` to a protobuf `Timestamp`.
pub fn to_timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A protobuf `Timestamp` to `DateTime<Utc>`; out-of-range values clamp to the epoch.
pub fn from_timestamp(t: &prost_types::Timestamp) -> DateTime<Utc> {
    Utc.timestamp_opt(t.seconds, t.nanos.clamp(0, 999_999_999) as u32)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// A history event with `eventId` and `timestamp` set (PROTOCOL.md §2.5: every event
/// the server creates carries a timestamp).
pub fn event(event_id: i32, at: DateTime<Utc>, kind: EventType) -> pb::HistoryEvent {
    pb::HistoryEvent {
        event_id,
        timestamp: Some(to_timestamp(at)),
        event_type: Some(kind),
    }
}

/// `OrchestratorStarted` stamped with the dispatch time.
pub fn orchestrator_started(at: DateTime<Utc>) -> pb::HistoryEvent {
    event(
        -1,
        at,
        EventType::OrchestratorStarted(pb::OrchestratorStartedEvent {}),
    )
}

/// The event's timestamp, or the epoch when absent.
pub fn timestamp_of(e: &pb::HistoryEvent) -> DateTime<Utc> {
    e.timestamp
        .as_ref()
        .map(from_timestamp)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// A short, stable name of the event's kind, for logs and errors.
pub fn kind_name(e: &pb::HistoryEvent) -> &'static str {
    match &e.event_type {
        None => "empty",
        Some(k) => match k {
            EventType::ExecutionStarted(_) => "ExecutionStarted",
            EventType::ExecutionCompleted(_) => "ExecutionCompleted",
            EventType::ExecutionTerminated(_) => "ExecutionTerminated",
            EventType::TaskScheduled(_) => "TaskScheduled",
            EventType::TaskCompleted(_) => "TaskCompleted",
            EventType::TaskFailed(_) => "TaskFailed",
            EventType::SubOrchestrationInstanceCreated(_) => "SubOrchestrationInstanceCreated",
            EventType::SubOrchestrationInstanceCompleted(_) => "SubOrchestrationInstanceCompleted",
            EventType::SubOrchestrationInstanceFailed(_) => "SubOrchestrationInstanceFailed",
            EventType::TimerCreated(_) => "TimerCreated",
            EventType::TimerFired(_) => "TimerFired",
            EventType::OrchestratorStarted(_) => "OrchestratorStarted",
            EventType::OrchestratorCompleted(_) => "OrchestratorCompleted",
            EventType::EventSent(_) => "EventSent",
            EventType::EventRaised(_) => "EventRaised",
            EventType::GenericEvent(_) => "GenericEvent",
            EventType::HistoryState(_) => "HistoryState",
            EventType::ContinueAsNew(_) => "ContinueAsNew",
            EventType::ExecutionSuspended(_) => "ExecutionSuspended",
            EventType::ExecutionResumed(_) => "ExecutionResumed",
            EventType::EntityOperationSignaled(_) => "EntityOperationSignaled",
            EventType::EntityOperationCalled(_) => "EntityOperationCalled",
            EventType::EntityOperationCompleted(_) => "EntityOperationCompleted",
            EventType::EntityOperationFailed(_) => "EntityOperationFailed",
            EventType::EntityLockRequested(_) => "EntityLockRequested",
            EventType::EntityLockGranted(_) => "EntityLockGranted",
            EventType::EntityUnlockSent(_) => "EntityUnlockSent",
            EventType::ExecutionRewound(_) => "ExecutionRewound",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_to_the_nanosecond() {
        let t = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(from_timestamp(&to_timestamp(t)), t);
    }
}
