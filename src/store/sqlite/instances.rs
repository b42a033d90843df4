//! Instance lifecycle writes: create/replace, client events, terminate, suspend/resume,
//! activity completion. Every function runs inside the writer's transaction (one
//! savepoint per call), so each is atomic.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::codec::{micros, sq_error, tags_json, visible_micros};
use super::hot::{Hot, State};
use super::inbox;
use crate::domain::events::timestamp_of;
use crate::domain::rules::{self, TerminateAction};
use crate::domain::{ExecutionId, InstanceId, NewInstance, ReusePolicy, RuntimeStatus};
use crate::proto as pb;
use crate::store::{
    ActivityOutcome, EnqueueOutcome, Result, StoreError, SuspendOutcome, TerminateOutcome,
};

/// Inserts a fresh instance row (PENDING) and its `ExecutionStarted`, visible at the
/// scheduled start or the creation time, whichever is later (PROTOCOL.md §3.1 step 4).
/// Returns the start's visibility time as stored.
pub(super) fn insert_new(conn: &Connection, hot: &Hot, new: &NewInstance) -> Result<i64> {
    let (inserted, visible) = insert_row_and_start(conn, hot, new, INSERT_NEW_SQL)?;
    if !inserted {
        return Err(StoreError::Backend("instance insert wrote no row".into()));
    }
    Ok(visible)
}

/// Like [`insert_new`] but a no-op (`false`) when the id is taken: the common case of
/// `create_instance` (a fresh id) then costs no lookup.
fn try_insert_new(conn: &Connection, hot: &Hot, new: &NewInstance) -> Result<bool> {
    Ok(insert_row_and_start(conn, hot, new, TRY_INSERT_NEW_SQL)?.0)
}

/// Binds, in order: id, execution, name, version, status, created (twice), scheduled
/// start, input, parent, tags.
const INSERT_NEW_SQL: &str = "\
    INSERT INTO instances (instance_id, execution_id, name, version, status, created_at, \
      last_updated_at, scheduled_start_at, input, parent_instance_id, tags, history_len) \
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)";

/// [`INSERT_NEW_SQL`] that leaves an existing row alone.
const TRY_INSERT_NEW_SQL: &str = "\
    INSERT INTO instances (instance_id, execution_id, name, version, status, created_at, \
      last_updated_at, scheduled_start_at, input, parent_instance_id, tags, history_len) \
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) \
      ON CONFLICT (instance_id) DO NOTHING";

/// Inserts the row with `sql`, and the `ExecutionStarted` inbox row only when the row was
/// written. Returns whether it was, and the start's visibility.
fn insert_row_and_start(
    conn: &Connection,
    hot: &Hot,
    new: &NewInstance,
    sql: &'static str,
) -> Result<(bool, i64)> {
    let created = micros(new.created_at);
    let visible = new
        .scheduled_start_at
        .map_or(visible_micros(new.created_at), |at| {
            visible_micros(at).max(visible_micros(new.created_at))
        });
    let tags = tags_json(&new.tags)?;
    let inserted = conn
        .prepare_cached(sql)
        .and_then(|mut s| {
            s.execute(params![
                new.instance_id.as_str(),
                new.execution_id.as_str(),
                new.name,
                new.version,
                RuntimeStatus::Pending.name(),
                created,
                created,
                new.scheduled_start_at.map(micros),
                new.input,
                new.parent_instance_id.as_ref().map(InstanceId::as_str),
                tags,
            ])
        })
        .map_err(sq_error("instance insert"))?
        > 0;
    if inserted {
        inbox::insert(conn, &new.instance_id, None, visible, &new.start_event)?;
        hot.set(
            &new.instance_id,
            State {
                status: RuntimeStatus::Pending,
                execution_id: new.execution_id.clone(),
                history_len: 0,
            },
        );
    }
    Ok((inserted, visible))
}

/// Deletes an instance row; the schema cascades to its history, inbox and activities.
pub(super) fn delete(conn: &Connection, hot: &Hot, id: &InstanceId) -> Result<()> {
    hot.remove(id);
    conn.prepare_cached("DELETE FROM instances WHERE instance_id = ?")
        .and_then(|mut s| s.execute([id.as_str()]))
        .map_err(sq_error("instance delete"))?;
    Ok(())
}

/// `Store::create_instance`: create, or replace when `policy` allows the existing status.
pub(super) fn create(
    conn: &Connection,
    hot: &Hot,
    new: &NewInstance,
    policy: &ReusePolicy,
) -> Result<()> {
    if !hot.knows(&new.instance_id) && try_insert_new(conn, hot, new)? {
        return Ok(());
    }
    if let Some(existing) = hot.state(conn, &new.instance_id)? {
        if !policy.allows(existing.status) {
            return Err(StoreError::AlreadyExists {
                instance_id: new.instance_id.clone(),
                status: existing.status,
            });
        }
        // Replacement is delete + insert in one savepoint: the old history, inbox and
        // activities go with the row, and the new row starts clean.
        delete(conn, hot, &new.instance_id)?;
    }
    insert_new(conn, hot, new)?;
    Ok(())
}

/// `Store::enqueue_event`. Client events are visible from their own timestamp.
pub(super) fn enqueue_event(
    conn: &Connection,
    hot: &Hot,
    id: &InstanceId,
    event: &pb::HistoryEvent,
) -> Result<EnqueueOutcome> {
    let Some(target) = hot.state(conn, id)? else {
        return Err(StoreError::NotFound(id.clone()));
    };
    if target.status.is_terminal() {
        return Ok(EnqueueOutcome::Dropped);
    }
    inbox::insert(conn, id, None, visible_micros(timestamp_of(event)), event)?;
    Ok(EnqueueOutcome::Enqueued)
}

/// `Store::terminate_instance`.
pub(super) fn terminate(
    conn: &Connection,
    hot: &Hot,
    id: &InstanceId,
    event: &pb::HistoryEvent,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<TerminateOutcome> {
    let Some(target) = hot.state(conn, id)? else {
        return Err(StoreError::NotFound(id.clone()));
    };
    // The parent lookup is only needed for an instance that has not started.
    let has_parent =
        !target.status.is_terminal() && target.history_len == 0 && has_parent(conn, id)?;
    let now_us = micros(now);
    match rules::terminate_action(&target, has_parent) {
        TerminateAction::AlreadyTerminal => return Ok(TerminateOutcome::AlreadyTerminal),
        TerminateAction::Enqueue => {
            inbox::insert(conn, id, None, now_us, event)?;
            return Ok(TerminateOutcome::Enqueued);
        }
        // An episode already out for it fails its commit guard (terminal).
        TerminateAction::InPlace => {}
    }
    conn.prepare_cached(
        "UPDATE instances SET status = ?, output = ?, failure = NULL, completed_at = ?, \
         last_updated_at = ? WHERE instance_id = ?",
    )
    .and_then(|mut s| {
        s.execute(params![
            RuntimeStatus::Terminated.name(),
            reason,
            now_us,
            now_us,
            id.as_str()
        ])
    })
    .map_err(sq_error("terminate"))?;
    inbox::clear(conn, id)?;
    hot.remove(id);
    Ok(TerminateOutcome::TerminatedDirectly)
}

/// Whether the instance is a sub-orchestration.
fn has_parent(conn: &Connection, id: &InstanceId) -> Result<bool> {
    conn.prepare_cached(
        "SELECT parent_instance_id IS NOT NULL FROM instances WHERE instance_id = ?",
    )
    .and_then(|mut s| s.query_row([id.as_str()], |r| r.get(0)))
    .map_err(sq_error("instance lookup"))
}

/// `Store::set_suspended`: the stored status flips at RPC time (PROTOCOL.md §3.6).
pub(super) fn set_suspended(
    conn: &Connection,
    hot: &Hot,
    id: &InstanceId,
    suspend: bool,
    event: &pb::HistoryEvent,
    now: DateTime<Utc>,
) -> Result<SuspendOutcome> {
    let Some(target) = hot.state(conn, id)? else {
        return Err(StoreError::NotFound(id.clone()));
    };
    let Some(next) = rules::suspend_flip(target.status, suspend) else {
        return Ok(SuspendOutcome::Unchanged);
    };
    let now_us = micros(now);
    conn.prepare_cached(
        "UPDATE instances SET status = ?, last_updated_at = ? WHERE instance_id = ?",
    )
    .and_then(|mut s| s.execute(params![next.name(), now_us, id.as_str()]))
    .map_err(sq_error("suspend"))?;
    inbox::insert(conn, id, None, now_us, event)?;
    hot.set(
        id,
        State {
            status: next,
            ..target
        },
    );
    Ok(SuspendOutcome::Changed)
}

/// `Store::complete_activity`: deletes the row and routes the result to the execution
/// that scheduled it (PROTOCOL.md §4.7); the result is visible from its own timestamp.
pub(super) fn complete_activity(
    conn: &Connection,
    hot: &Hot,
    activity_id: i64,
    result: &pb::HistoryEvent,
) -> Result<ActivityOutcome> {
    let row: Option<(String, String)> = conn
        .prepare_cached("DELETE FROM activities WHERE id = ? RETURNING instance_id, execution_id")
        .and_then(|mut s| {
            s.query_row([activity_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(sq_error("activity delete"))?;
    let Some((id, execution)) = row else {
        return Ok(ActivityOutcome::Unknown);
    };
    let (id, execution) = (InstanceId::new(id), ExecutionId::new(execution));
    match hot.state(conn, &id)? {
        Some(target) if !target.status.is_terminal() && target.execution_id == execution => {
            inbox::insert(
                conn,
                &id,
                Some(&execution),
                visible_micros(timestamp_of(result)),
                result,
            )?;
            Ok(ActivityOutcome::Delivered(id))
        }
        _ => Ok(ActivityOutcome::Dropped),
    }
}
