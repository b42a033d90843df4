//! Encodings and pure helpers every backend shares: time rounding, protobuf and JSON
//! columns, status names, pairing inserted activity ids with their events, and this
//! process's host name. No SQL runs here; each backend binds what these return.

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use prost::Message;

use crate::domain::{RuntimeStatus, Transition};
use crate::proto as pb;
use crate::store::{ActivityItem, StoreError};

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
    mut ids: Vec<i64>,
) -> Result<Vec<ActivityItem>, StoreError> {
    if ids.len() != t.activities.len() {
        return Err(StoreError::Backend(
            "activity insert returned the wrong number of rows".into(),
        ));
    }
    ids.sort_unstable();
    Ok(ids
        .into_iter()
        .zip(&t.activities)
        .map(|(row, a)| ActivityItem {
            id: row,
            instance_id: t.instance_id.clone(),
            execution_id: t.expected_execution_id.clone(),
            scheduled: a.scheduled.clone(),
        })
        .collect())
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
