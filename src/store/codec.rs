//! Encodings and pure helpers every backend shares: time rounding, protobuf and JSON
//! columns, status names, pairing inserted activity ids with their events, the facts a
//! commit leaves, the pure steps of a rewind and a purge, and this process's host name.
//! No SQL runs here; each backend binds what these return.

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use prost::Message;

use crate::domain::rules::{self, InstanceFacts};
use crate::domain::{
    Clock, ExecutionId, InstanceId, RewoundExecution, RuntimeStatus, StatusChange, Transition,
};
use crate::proto as pb;
use crate::store::{ActivityItem, PurgeFilter, StoreError};
use pb::history_event::EventType;

/// The terminal set T (PROTOCOL.md §2.2) as an SQL list (valid in both dialects);
/// checked against [`RuntimeStatus::TERMINAL`] by a unit test.
pub(crate) const TERMINAL_SQL: &str = "('COMPLETED', 'FAILED', 'TERMINATED', 'CANCELED')";

/// A time as stored: whole microseconds, rounded down.
pub(crate) fn round_down(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

/// A visibility time as stored: rounded *up* to the microsecond, so `visible_at <= now`
/// never holds before the exact instant (a timer must not fire early, PROTOCOL.md §4.6).
pub(crate) fn round_up(t: DateTime<Utc>) -> DateTime<Utc> {
    let down = round_down(t);
    if down == t {
        return t;
    }
    down.checked_add_signed(TimeDelta::microseconds(1))
        .unwrap_or(down)
}

/// Encodes any protobuf message for a BLOB/BYTEA column.
pub(crate) fn encode<M: Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

/// Decodes a stored `HistoryEvent`.
pub(crate) fn decode_event(bytes: &[u8]) -> Result<pb::HistoryEvent, StoreError> {
    pb::HistoryEvent::decode(bytes).map_err(|e| StoreError::Corrupt(format!("history event: {e}")))
}

/// Decodes an optional stored message (`what` names it in the error).
pub(crate) fn decode_opt<M: Message + Default>(
    bytes: Option<Vec<u8>>,
    what: &str,
) -> Result<Option<M>, StoreError> {
    bytes
        .map(|b| M::decode(b.as_slice()).map_err(|e| StoreError::Corrupt(format!("{what}: {e}"))))
        .transpose()
}

/// Tags as stored (a JSON object).
pub(crate) fn tags_json(tags: &BTreeMap<String, String>) -> Result<String, StoreError> {
    serde_json::to_string(tags).map_err(|e| StoreError::Backend(format!("encoding tags: {e}")))
}

/// Parses stored tags.
pub(crate) fn parse_tags(json: &str) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("tags: {e}")))
}

/// Parses a stored status name.
pub(crate) fn status(name: &str) -> Result<RuntimeStatus, StoreError> {
    RuntimeStatus::from_name(name)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown status '{name}'")))
}

/// Pairs the ids an activity insert returned with the commit's activities. Rows are
/// inserted in order and ids only grow, but RETURNING does not promise an order: sorting
/// restores it.
pub(crate) fn activity_items(
    t: &Transition,
    ids: Vec<i64>,
) -> Result<Vec<ActivityItem>, StoreError> {
    if ids.len() != t.activities.len() {
        return Err(StoreError::Backend(
            "activity insert returned the wrong number of rows".into(),
        ));
    }
    Ok(paired_activities(
        &t.instance_id,
        &t.expected_execution_id,
        ids,
        t.activities.iter().map(|a| &a.scheduled),
    ))
}

/// Pairs the ids an activity insert returned with the events inserted, in order (see
/// [`activity_items`]): ids only grow, and sorting undoes RETURNING's lack of order.
pub(crate) fn paired_activities<'a>(
    instance_id: &InstanceId,
    execution_id: &ExecutionId,
    mut ids: Vec<i64>,
    events: impl IntoIterator<Item = &'a pb::HistoryEvent>,
) -> Vec<ActivityItem> {
    ids.sort_unstable();
    ids.into_iter()
        .zip(events)
        .map(|(row, scheduled)| ActivityItem {
            id: row,
            instance_id: instance_id.clone(),
            execution_id: execution_id.clone(),
            scheduled: scheduled.clone(),
        })
        .collect()
}

/// An instance's facts after committing `t` over `current`; a terminal change to a
/// status that is not terminal is a `Backend` error.
/// A terminal commit must name a terminal status; anything else is a bug upstream, and
/// nothing is written.
pub(crate) fn check_terminal_status(t: &Transition) -> Result<(), StoreError> {
    match &t.status {
        StatusChange::Terminal { status, .. } if !status.is_terminal() => Err(StoreError::Backend(
            format!("terminal commit with status {status}"),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn facts_after(
    current: &InstanceFacts,
    t: &Transition,
) -> Result<InstanceFacts, StoreError> {
    check_terminal_status(t)?;
    let appended = current.history_len + t.history_append.len() as i64;
    Ok(match &t.status {
        StatusChange::Progress => InstanceFacts {
            status: rules::status_after_progress(current.status),
            history_len: appended,
            ..current.clone()
        },
        StatusChange::Terminal { status, .. } => InstanceFacts {
            status: *status,
            history_len: appended,
            ..current.clone()
        },
        StatusChange::ContinuedAsNew { execution_id, .. } => InstanceFacts {
            status: rules::status_after_continue(current.status),
            execution_id: execution_id.clone(),
            history_len: 0,
        },
    })
}

/// Whether a rewind's guard holds: the instance is still in the execution, history
/// length and status the plan was made against.
pub(crate) fn rewind_guard_holds(current: Option<&InstanceFacts>, x: &RewoundExecution) -> bool {
    current.is_some_and(|f| {
        f.execution_id == x.expected_execution_id
            && f.history_len == i64::from(x.expected_history_len)
            && f.status == x.expected_status
    })
}

/// The status a rewound execution continues in: a worker's rewind of a suspended episode
/// stays suspended; a FAILED instance runs.
pub(crate) fn rewound_status(expected: RuntimeStatus) -> RuntimeStatus {
    match expected {
        RuntimeStatus::Suspended => RuntimeStatus::Suspended,
        _ => RuntimeStatus::Running,
    }
}

/// The open tasks of a rewound execution whose activity row is gone (`moved` are the
/// rows that remain): their result was dropped while the instance was terminal, so they
/// run again.
pub(crate) fn missing_tasks<'a>(
    x: &'a RewoundExecution,
    moved: &[ActivityItem],
) -> Vec<&'a pb::HistoryEvent> {
    x.pending_tasks
        .iter()
        .filter(|t| !moved.iter().any(|a| a.scheduled.event_id == t.event_id))
        .collect()
}

/// What relinking found in one stored event of a child (see [`relink_started`]).
#[derive(Debug)]
pub(crate) enum Relink {
    /// Not the `ExecutionStarted`: look further.
    NotStarted,
    /// The `ExecutionStarted` names no parent: nothing to change.
    NoParent,
    /// The `ExecutionStarted`, re-encoded with the parent's new execution: store it.
    Rewritten(Vec<u8>),
}

/// Points a stored event's parent link (`ExecutionStarted.parentInstance`) at
/// `parent_execution`, the execution a rewind made current.
pub(crate) fn relink_started(
    payload: &[u8],
    parent_execution: &ExecutionId,
) -> Result<Relink, StoreError> {
    let mut event = decode_event(payload)?;
    let Some(EventType::ExecutionStarted(started)) = &mut event.event_type else {
        return Ok(Relink::NotStarted);
    };
    let Some(parent) = started.parent_instance.as_mut() else {
        return Ok(Relink::NoParent);
    };
    parent
        .orchestration_instance
        .get_or_insert_with(Default::default)
        .execution_id = Some(parent_execution.to_string());
    Ok(Relink::Rewritten(encode(&event)))
}

/// The terminal statuses a purge filter selects: empty for any terminal status, `None`
/// when it names only statuses that are not terminal (nothing is purgeable).
pub(crate) fn purge_statuses(filter: &PurgeFilter) -> Option<Vec<RuntimeStatus>> {
    let statuses: Vec<RuntimeStatus> = filter
        .statuses
        .iter()
        .copied()
        .filter(|s| s.is_terminal())
        .collect();
    if statuses.is_empty() && !filter.statuses.is_empty() {
        return None;
    }
    Some(statuses)
}

/// `Store::purge_where` on top of a backend's one-batch purge: batches until one says
/// no more roots may match (`(total, true)`), or until `deadline` has passed between two
/// batches (`(total, false)`). Each batch is its own transaction, so a large purge never
/// holds locks or the writer for long.
pub(crate) async fn purge_in_batches<F, Fut>(
    clock: &dyn Clock,
    deadline: Option<DateTime<Utc>>,
    mut batch: F,
) -> Result<(u32, bool), StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(u32, bool), StoreError>>,
{
    let mut total = 0u32;
    loop {
        if deadline.is_some_and(|d| clock.now() >= d) {
            return Ok((total, false));
        }
        let (deleted, more) = batch().await?;
        total = total.saturating_add(deleted);
        if !more {
            return Ok((total, true));
        }
    }
}

/// This machine's name, for lock-file notes and owner ids.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this host".to_string())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn terminal_sql_matches_the_domain_set() {
        for s in RuntimeStatus::ALL {
            assert_eq!(
                TERMINAL_SQL.contains(&format!("'{}'", s.name())),
                s.is_terminal(),
                "{s}"
            );
        }
    }

    #[test]
    fn visibility_rounds_up_and_plain_times_round_down() {
        let t = Utc.timestamp_opt(10, 1_500).unwrap();
        assert_eq!(round_down(t).timestamp_micros(), 10_000_001);
        assert_eq!(round_up(t).timestamp_micros(), 10_000_002);
        let exact = Utc.timestamp_opt(10, 2_000).unwrap();
        assert_eq!(round_up(exact), exact);
        assert_eq!(round_down(exact), exact);
    }
}
