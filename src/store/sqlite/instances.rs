//! Instance lifecycle writes: create/replace, client events, terminate, suspend/resume,
//! activity completion. Every function runs inside the writer's transaction (one
//! savepoint per call), so each is atomic.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::codec::{db_error, encode, get, micros, tags_json, visible_micros};
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
pub(super) async fn insert_new(
    conn: &mut SqliteConnection,
    hot: &Hot,
    new: &NewInstance,
) -> Result<i64> {
    let (inserted, visible) = insert_row_and_start(conn, hot, new, INSERT_NEW_SQL).await?;
    if !inserted {
        return Err(StoreError::Backend("instance insert wrote no row".into()));
    }
    Ok(visible)
}

/// Like [`insert_new`] but a no-op (`false`) when the id is taken: the common case of
/// `create_instance` (a fresh id) then costs one call and no lookup.
async fn try_insert_new(conn: &mut SqliteConnection, hot: &Hot, new: &NewInstance) -> Result<bool> {
    Ok(insert_row_and_start(conn, hot, new, TRY_INSERT_NEW_SQL)
        .await?
        .0)
}

/// Binds, in order: id, execution, name, version, status, created (twice), scheduled
/// start, input, parent, tags; then id, start visibility, `ExecutionStarted` payload.
/// The inbox row is only written when the instance row was (`changes()` of the INSERT).
/// Plain `?` parameters: sqlx misbinds numbered ones across statements.
const INSERT_NEW_SQL: &str = "\
    INSERT INTO instances (instance_id, execution_id, name, version, status, created_at, \
      last_updated_at, scheduled_start_at, input, parent_instance_id, tags, history_len) \
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0); \
    INSERT INTO inbox (instance_id, target_execution, visible_at, payload) \
      SELECT ?, NULL, ?, ? WHERE changes() > 0 RETURNING seq";

/// [`INSERT_NEW_SQL`] that leaves an existing row alone.
const TRY_INSERT_NEW_SQL: &str = "\
    INSERT INTO instances (instance_id, execution_id, name, version, status, created_at, \
      last_updated_at, scheduled_start_at, input, parent_instance_id, tags, history_len) \
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) \
      ON CONFLICT (instance_id) DO NOTHING; \
    INSERT INTO inbox (instance_id, target_execution, visible_at, payload) \
      SELECT ?, NULL, ?, ? WHERE changes() > 0 RETURNING seq";

async fn insert_row_and_start(
    conn: &mut SqliteConnection,
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
    let seq: Option<i64> = sqlx::query_scalar(sql)
        .bind(new.instance_id.as_str())
        .bind(new.execution_id.as_str())
        .bind(&new.name)
        .bind(&new.version)
        .bind(RuntimeStatus::Pending.name())
        .bind(created)
        .bind(created)
        .bind(new.scheduled_start_at.map(micros))
        .bind(&new.input)
        .bind(new.parent_instance_id.as_ref().map(InstanceId::as_str))
        .bind(tags_json(&new.tags)?)
        .bind(new.instance_id.as_str())
        .bind(visible)
        .bind(encode(&new.start_event))
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error("instance insert"))?;
    if seq.is_some() {
        hot.set(
            &new.instance_id,
            State {
                status: RuntimeStatus::Pending,
                execution_id: new.execution_id.clone(),
                history_len: 0,
            },
        );
    }
    Ok((seq.is_some(), visible))
}

/// Deletes an instance row; the schema cascades to its history, inbox and activities.
pub(super) async fn delete(conn: &mut SqliteConnection, hot: &Hot, id: &InstanceId) -> Result<()> {
    hot.remove(id);
    sqlx::query("DELETE FROM instances WHERE instance_id = ?")
        .bind(id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db_error("instance delete"))?;
    Ok(())
}

/// `Store::create_instance`: create, or replace when `policy` allows the existing status.
pub(super) async fn create(
    conn: &mut SqliteConnection,
    hot: &Hot,
    new: &NewInstance,
    policy: &ReusePolicy,
) -> Result<()> {
    if !hot.knows(&new.instance_id) && try_insert_new(conn, hot, new).await? {
        return Ok(());
    }
    if let Some(existing) = hot.state(conn, &new.instance_id).await? {
        if !policy.allows(existing.status) {
            return Err(StoreError::AlreadyExists {
                instance_id: new.instance_id.clone(),
                status: existing.status,
            });
        }
        // Replacement is delete + insert in one savepoint: the old history, inbox and
        // activities go with the row, and the new row starts clean.
        delete(conn, hot, &new.instance_id).await?;
    }
    insert_new(conn, hot, new).await?;
    Ok(())
}

/// `Store::enqueue_event`. Client events are visible from their own timestamp.
pub(super) async fn enqueue_event(
    conn: &mut SqliteConnection,
    hot: &Hot,
    id: &InstanceId,
    event: &pb::HistoryEvent,
) -> Result<EnqueueOutcome> {
    let Some(target) = hot.state(conn, id).await? else {
        return Err(StoreError::NotFound(id.clone()));
    };
    if target.status.is_terminal() {
        return Ok(EnqueueOutcome::Dropped);
    }
    inbox::insert(conn, id, None, visible_micros(timestamp_of(event)), event).await?;
    Ok(EnqueueOutcome::Enqueued)
}

/// `Store::terminate_instance`.
pub(super) async fn terminate(
    conn: &mut SqliteConnection,
    hot: &Hot,
    id: &InstanceId,
    event: &pb::HistoryEvent,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<TerminateOutcome> {
    let Some(target) = hot.state(conn, id).await? else {
        return Err(StoreError::NotFound(id.clone()));
    };
    // The parent lookup is only needed for an instance that has not started.
    let has_parent =
        !target.status.is_terminal() && target.history_len == 0 && has_parent(conn, id).await?;
    let now_us = micros(now);
    match rules::terminate_action(&target, has_parent) {
        TerminateAction::AlreadyTerminal => return Ok(TerminateOutcome::AlreadyTerminal),
        TerminateAction::Enqueue => {
            inbox::insert(conn, id, None, now_us, event).await?;
            return Ok(TerminateOutcome::Enqueued);
        }
        // An episode already out for it fails its commit guard (terminal).
        TerminateAction::InPlace => {}
    }
    sqlx::query(
        "UPDATE instances SET status = ?, output = ?, failure = NULL, completed_at = ?, \
         last_updated_at = ? WHERE instance_id = ?",
    )
    .bind(RuntimeStatus::Terminated.name())
    .bind(reason)
    .bind(now_us)
    .bind(now_us)
    .bind(id.as_str())
    .execute(&mut *conn)
    .await
    .map_err(db_error("terminate"))?;
    inbox::clear(conn, id).await?;
    hot.remove(id);
    Ok(TerminateOutcome::TerminatedDirectly)
}

/// Whether the instance is a sub-orchestration.
async fn has_parent(conn: &mut SqliteConnection, id: &InstanceId) -> Result<bool> {
    sqlx::query_scalar("SELECT parent_instance_id IS NOT NULL FROM instances WHERE instance_id = ?")
        .bind(id.as_str())
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error("instance lookup"))
}

/// `Store::set_suspended`: the stored status flips at RPC time (PROTOCOL.md §3.6).
pub(super) async fn set_suspended(
    conn: &mut SqliteConnection,
    hot: &Hot,
    id: &InstanceId,
    suspend: bool,
    event: &pb::HistoryEvent,
    now: DateTime<Utc>,
) -> Result<SuspendOutcome> {
    let Some(target) = hot.state(conn, id).await? else {
        return Err(StoreError::NotFound(id.clone()));
    };
    let Some(next) = rules::suspend_flip(target.status, suspend) else {
        return Ok(SuspendOutcome::Unchanged);
    };
    let now_us = micros(now);
    sqlx::query("UPDATE instances SET status = ?, last_updated_at = ? WHERE instance_id = ?")
        .bind(next.name())
        .bind(now_us)
        .bind(id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db_error("suspend"))?;
    inbox::insert(conn, id, None, now_us, event).await?;
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
pub(super) async fn complete_activity(
    conn: &mut SqliteConnection,
    hot: &Hot,
    activity_id: i64,
    result: &pb::HistoryEvent,
) -> Result<ActivityOutcome> {
    let row =
        sqlx::query("DELETE FROM activities WHERE id = ? RETURNING instance_id, execution_id")
            .bind(activity_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error("activity delete"))?;
    let Some(row) = row else {
        return Ok(ActivityOutcome::Unknown);
    };
    let id = InstanceId::new(get::<String>(&row, "instance_id")?);
    let execution = ExecutionId::new(get::<String>(&row, "execution_id")?);
    match hot.state(conn, &id).await? {
        Some(target) if !target.status.is_terminal() && target.execution_id == execution => {
            inbox::insert(
                conn,
                &id,
                Some(&execution),
                visible_micros(timestamp_of(result)),
                result,
            )
            .await?;
            Ok(ActivityOutcome::Delivered(id))
        }
        _ => Ok(ActivityOutcome::Dropped),
    }
}
