//! Domain values built from decoded columns, shared by both backends. Each backend
//! implements [`Columns`] for its row type (only it knows how a column is stored: SQLite
//! keeps times as microseconds, PostgreSQL as `timestamptz`); the record layouts and the
//! pure decisions over rows (which messages a claim read, which entities a page keeps)
//! live here once. No SQL runs here.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::domain::{
    EntityFilter, EntityLock, EntityRecord, ExecutionId, InstanceId, InstanceRecord, RuntimeStatus,
};
use crate::proto::history_event::EventType;
use crate::store::codec::{decode_event, decode_opt, parse_tags, status};
use crate::store::{ActivityItem, InboxMessage, StoreError};

type Result<T> = std::result::Result<T, StoreError>;

/// Typed reads of one row's columns, by name. A type mismatch is
/// [`StoreError::Corrupt`]: the row was not written by this store. Backends read the
/// nullable forms; the non-null ones are those plus a null check.
pub(crate) trait Columns {
    /// A nullable text column.
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
    /// A nullable integer column.
    fn opt_int(&self, column: &str) -> Result<Option<i64>>;
    /// A nullable binary column.
    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>>;
    /// A nullable time column, in the backend's time encoding.
    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>>;

    /// A non-null text column.
    fn text(&self, column: &str) -> Result<String> {
        self.opt_text(column)?.ok_or_else(|| null(column))
    }
    /// A non-null integer column.
    fn int(&self, column: &str) -> Result<i64> {
        self.opt_int(column)?.ok_or_else(|| null(column))
    }
    /// A non-null binary column.
    fn bytes(&self, column: &str) -> Result<Vec<u8>> {
        self.opt_bytes(column)?.ok_or_else(|| null(column))
    }
    /// A non-null time column.
    fn time(&self, column: &str) -> Result<DateTime<Utc>> {
        self.opt_time(column)?.ok_or_else(|| null(column))
    }
}

fn null(column: &str) -> StoreError {
    StoreError::Corrupt(format!("column {column}: unexpected null"))
}

/// Reads a row selected with the backend's instance column list.
pub(crate) fn instance_record(row: &impl Columns) -> Result<InstanceRecord> {
    let history_len = row.int("history_len")?;
    Ok(InstanceRecord {
        instance_id: InstanceId::new(row.text("instance_id")?),
        execution_id: ExecutionId::new(row.text("execution_id")?),
        name: row.text("name")?,
        version: row.opt_text("version")?,
        status: status(&row.text("status")?)?,
        created_at: row.time("created_at")?,
        last_updated_at: row.time("last_updated_at")?,
        completed_at: row.opt_time("completed_at")?,
        scheduled_start_at: row.opt_time("scheduled_start_at")?,
        input: row.opt_text("input")?,
        output: row.opt_text("output")?,
        custom_status: row.opt_text("custom_status")?,
        failure: decode_opt(row.opt_bytes("failure")?, "failure details")?,
        parent_instance_id: row.opt_text("parent_instance_id")?.map(InstanceId::new),
        tags: parse_tags(&row.text("tags")?)?,
        trace_context: decode_opt(row.opt_bytes("trace_context")?, "trace context")?,
        history_len: u32::try_from(history_len)
            .map_err(|_| StoreError::Corrupt(format!("history length {history_len}")))?,
    })
}

/// Reads a row selected with the backend's entity column list (`instance_id, state,
/// locked_by, critical_section, last_modified_at, version, backlog`).
pub(crate) fn entity_record(row: &impl Columns) -> Result<EntityRecord> {
    let section = row.opt_text("critical_section")?;
    Ok(EntityRecord {
        instance_id: InstanceId::new(row.text("instance_id")?),
        state: row.opt_text("state")?,
        lock: row.opt_text("locked_by")?.map(|owner| EntityLock {
            owner: InstanceId::new(owner),
            critical_section: section.unwrap_or_default(),
        }),
        last_modified: row.time("last_modified_at")?,
        backlog: u32::try_from(row.int("backlog")?).unwrap_or(u32::MAX),
        version: row.int("version")?,
    })
}

/// Reads an activity row (`id, instance_id, execution_id, payload`).
pub(crate) fn activity_item(row: &impl Columns) -> Result<ActivityItem> {
    Ok(ActivityItem {
        id: row.int("id")?,
        instance_id: InstanceId::new(row.text("instance_id")?),
        execution_id: ExecutionId::new(row.text("execution_id")?),
        scheduled: decode_event(&row.bytes("payload")?)?,
    })
}

/// A wake-up row (`instance_id`, `at`) as recovery reports it.
pub(crate) fn wakeup(row: &impl Columns) -> Result<(DateTime<Utc>, InstanceId)> {
    Ok((row.time("at")?, InstanceId::new(row.text("instance_id")?)))
}

/// A `list_completed` row (`instance_id`, `completed_at`).
pub(crate) fn completed(row: &impl Columns) -> Result<(InstanceId, DateTime<Utc>)> {
    Ok((
        InstanceId::new(row.text("instance_id")?),
        row.time("completed_at")?,
    ))
}

/// The queued messages of a claim's rows, in row order: `m_seq`, `m_visible`,
/// `m_payload`, and with `targeted` (orchestration inboxes) `m_target`. A row whose
/// `m_seq` is null carries no message (the outer join found none) and is skipped.
pub(crate) fn inbox_messages<C: Columns>(rows: &[C], targeted: bool) -> Result<Vec<InboxMessage>> {
    let mut messages = Vec::with_capacity(rows.len());
    for row in rows {
        messages.extend(inbox_message(row, targeted)?);
    }
    Ok(messages)
}

/// One row of [`inbox_messages`], for callers that cannot collect their rows.
pub(crate) fn inbox_message(row: &impl Columns, targeted: bool) -> Result<Option<InboxMessage>> {
    let Some(seq) = row.opt_int("m_seq")? else {
        return Ok(None);
    };
    let target_execution = if targeted {
        row.opt_text("m_target")?.map(ExecutionId::new)
    } else {
        None
    };
    Ok(Some(InboxMessage {
        seq,
        target_execution,
        event: decode_event(&row.bytes("m_payload")?)?,
        visible_at: row.time("m_visible")?,
    }))
}

/// Whether the caller's cached history (execution, length) is the record's current one,
/// so an episode read can skip it.
pub(crate) fn history_is_current(
    cached: Option<&(ExecutionId, u32)>,
    record: &InstanceRecord,
) -> bool {
    cached.is_some_and(|(execution, len)| {
        *execution == record.execution_id && *len == record.history_len
    })
}

/// The orchestrations an entity step needs to know are live: its lock's owner and every
/// requester of a lock among the queued messages.
pub(crate) fn lock_owners(record: &EntityRecord, messages: &[InboxMessage]) -> HashSet<String> {
    let mut owners = HashSet::new();
    if let Some(l) = &record.lock {
        owners.insert(l.owner.to_string());
    }
    for m in messages {
        if let Some(EventType::EntityLockRequested(r)) = &m.event.event_type {
            owners.extend(r.parent_instance_id.clone());
        }
    }
    owners
}

/// One `QueryEntities` page from rows in id order. Transient entities (no state) are
/// filtered here rather than in SQL because the page must stop after `limit` matching
/// rows; pages are small.
pub(crate) fn entity_page<C: Columns>(
    rows: &[C],
    filter: &EntityFilter,
) -> Result<Vec<EntityRecord>> {
    let mut out = Vec::new();
    for row in rows {
        let r = entity_record(row)?;
        if r.state.is_some() || (filter.include_transient && r.exists()) {
            out.push(r);
            if out.len() >= filter.limit as usize {
                break;
            }
        }
    }
    Ok(out)
}

/// What `CleanEntityStorage` does to one page of entities.
#[derive(Debug, Default)]
pub(crate) struct CleanPlan {
    /// Entities whose lock is released (the owner is gone or terminal).
    pub(crate) unlock: Vec<InstanceId>,
    /// Entities deleted: no state, no lock (after the release), no backlog.
    pub(crate) remove: Vec<InstanceId>,
    /// Released entities with a backlog: their queue can move again.
    pub(crate) unblocked: Vec<InstanceId>,
    /// The last id looked at, when a full page means more may follow.
    pub(crate) next: Option<String>,
}

/// Plans the clean of `records` (one page of at most `limit`, in id order); `live` holds
/// the lock owners that are live orchestrations.
pub(crate) fn plan_clean(
    records: &[EntityRecord],
    live: &HashSet<InstanceId>,
    limit: u32,
    remove_empty: bool,
    release_orphans: bool,
) -> CleanPlan {
    let mut plan = CleanPlan::default();
    for r in records {
        let mut lock = r.lock.as_ref();
        if release_orphans && lock.is_some_and(|l| !live.contains(&l.owner)) {
            plan.unlock.push(r.instance_id.clone());
            lock = None;
            if r.backlog > 0 {
                plan.unblocked.push(r.instance_id.clone());
            }
        }
        if remove_empty && r.state.is_none() && lock.is_none() && r.backlog == 0 {
            plan.remove.push(r.instance_id.clone());
        }
    }
    plan.next = (records.len() as u32 >= limit)
        .then(|| records.last().map(|r| r.instance_id.to_string()))
        .flatten();
    plan
}

/// `(status name, count)` rows of a `GROUP BY status` as one entry per status of
/// `RuntimeStatus::ALL`, zeros included. A name no status has cannot be written by this
/// store, so it is not counted.
pub(crate) fn status_counts(rows: Vec<(String, i64)>) -> Vec<(RuntimeStatus, u64)> {
    let mut counts = RuntimeStatus::ALL.map(|s| (s, 0u64));
    for (name, n) in rows {
        if let Some(slot) = counts.iter_mut().find(|(s, _)| s.name() == name) {
            slot.1 = u64::try_from(n).unwrap_or(0);
        }
    }
    counts.to_vec()
}
