//! Instance lifecycle writes: create/replace, client events, terminate, suspend/resume,
//! activity completion. Each locks the instance row first, so the facts the rules judge
//! are the ones it writes against; all but activity completion (one statement, its own
//! transaction) run inside the caller's transaction.

use chrono::{DateTime, Utc};

use super::notify::Changes;
use super::rows::{get, id_list, lock_instances};
use super::tx::{sql, Cx, R};
use super::writes::{start_visibility, Outbox};
use sqlx::PgConnection;

use crate::domain::events::timestamp_of;
use crate::domain::rules::{self, TerminateAction};
use crate::domain::{ExecutionId, InstanceId, NewInstance, ReusePolicy, RuntimeStatus};
use crate::proto as pb;
use crate::store::codec::{encode, round_down, round_up, tags_json, TERMINAL_SQL};
use crate::store::{ActivityOutcome, EnqueueOutcome, StoreError, SuspendOutcome, TerminateOutcome};

/// The common `create_instance` (a fresh id) as ONE statement outside any explicit
/// transaction: insert the row unless the id is taken, and its `ExecutionStarted` when
/// it was inserted. Returns what to notify when it created the instance, `None` when the
/// id was taken.
pub(super) async fn try_create(
    conn: &mut sqlx::PgConnection,
    hub: &str,
    new: &NewInstance,
) -> R<Option<Changes>> {
    let visible = start_visibility(new);
    let created = round_down(new.created_at);
    let row = sqlx::query(
        "WITH ins AS ( \
           INSERT INTO instances (hub, instance_id, execution_id, name, version, status, \
             created_at, last_updated_at, scheduled_start_at, input, parent_instance_id, tags, \
             history_len) \
           VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $6, $7, $8, $9, $10::jsonb, 0) \
           ON CONFLICT (hub, instance_id) DO NOTHING RETURNING instance_id), \
         start AS (INSERT INTO inbox (hub, instance_id, target_execution, visible_at, payload) \
           SELECT $1, instance_id, NULL, $11, $12 FROM ins) \
         SELECT 1 FROM ins",
    )
    .bind(hub)
    .bind(new.instance_id.as_str())
    .bind(new.execution_id.as_str())
    .bind(&new.name)
    .bind(&new.version)
    .bind(created)
    .bind(new.scheduled_start_at.map(round_down))
    .bind(&new.input)
    .bind(new.parent_instance_id.as_ref().map(InstanceId::as_str))
    .bind(tags_json(&new.tags)?)
    .bind(visible)
    .bind(encode(&new.start_event))
    .fetch_optional(&mut *conn)
    .await
    .map_err(sql("instance insert"))?;
    Ok(row.map(|_| {
        let mut changes = Changes::default();
        changes.status(&new.instance_id);
        changes.message(&new.instance_id, visible, created);
        changes
    }))
}

/// `Store::create_instance` when the id was taken: replace when `policy` allows the
/// existing status, else `AlreadyExists`.
pub(super) async fn create(
    conn: &mut PgConnection,
    cx: &mut Cx,
    new: &NewInstance,
    policy: &ReusePolicy,
) -> R<()> {
    let mut facts = lock_instances(conn, cx, id_list([&new.instance_id])).await?;
    if let Some(existing) = facts.get(&new.instance_id) {
        if !policy.allows(existing.inst.status) {
            return Err(StoreError::AlreadyExists {
                instance_id: new.instance_id.clone(),
                status: existing.inst.status,
            }
            .into());
        }
        delete(conn, cx, &new.instance_id).await?;
    }
    let mut out = Outbox::default();
    let visible = out.create(cx, &mut facts, new);
    cx.changes
        .message(&new.instance_id, visible, round_down(new.created_at));
    out.flush(conn, cx, new.created_at).await
}

/// Deletes instance rows; the schema cascades to history, inbox and activities.
pub(super) async fn delete(conn: &mut PgConnection, cx: &mut Cx, id: &InstanceId) -> R<()> {
    let hub = cx.hub.clone();
    sqlx::query("DELETE FROM instances WHERE hub = $1 AND instance_id = $2")
        .bind(hub)
        .bind(id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(sql("instance delete"))?;
    Ok(())
}

/// Appends one message to `id`'s inbox (no checks) and notes it.
pub(super) async fn insert_message(
    conn: &mut PgConnection,
    cx: &mut Cx,
    id: &InstanceId,
    execution: Option<&ExecutionId>,
    visible_at: DateTime<Utc>,
    event: &pb::HistoryEvent,
    now: DateTime<Utc>,
) -> R<()> {
    let mut out = Outbox::default();
    out.push_inbox(id, execution, visible_at, event);
    out.flush(conn, cx, now).await?;
    cx.changes.message(id, visible_at, now);
    Ok(())
}

/// `Store::enqueue_event`. Client events are visible from their own timestamp.
pub(super) async fn enqueue_event(
    conn: &mut PgConnection,
    cx: &mut Cx,
    id: &InstanceId,
    event: &pb::HistoryEvent,
) -> R<EnqueueOutcome> {
    let facts = lock_instances(conn, cx, id_list([id])).await?;
    let Some(target) = facts.get(id) else {
        return Err(StoreError::NotFound(id.clone()).into());
    };
    if target.inst.status.is_terminal() {
        return Ok(EnqueueOutcome::Dropped);
    }
    let now = cx.clock_now;
    insert_message(
        conn,
        cx,
        id,
        None,
        round_up(timestamp_of(event)),
        event,
        now,
    )
    .await?;
    Ok(EnqueueOutcome::Enqueued)
}

/// `Store::terminate_instance`.
pub(super) async fn terminate(
    conn: &mut PgConnection,
    cx: &mut Cx,
    id: &InstanceId,
    event: &pb::HistoryEvent,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> R<TerminateOutcome> {
    let facts = lock_instances(conn, cx, id_list([id])).await?;
    let Some(target) = facts.get(id) else {
        return Err(StoreError::NotFound(id.clone()).into());
    };
    let now = round_down(now);
    match rules::terminate_action(&target.inst, target.has_parent) {
        TerminateAction::AlreadyTerminal => return Ok(TerminateOutcome::AlreadyTerminal),
        TerminateAction::Enqueue => {
            insert_message(conn, cx, id, None, now, event, now).await?;
            return Ok(TerminateOutcome::Enqueued);
        }
        // An episode already out for it fails its commit guard (terminal).
        TerminateAction::InPlace => {}
    }
    let hub = cx.hub.clone();
    sqlx::query(
        "WITH upd AS (UPDATE instances SET status = $3, output = $4, failure = NULL, \
           completed_at = $5, last_updated_at = $5 WHERE hub = $1 AND instance_id = $2) \
         DELETE FROM inbox WHERE hub = $1 AND instance_id = $2",
    )
    .bind(hub)
    .bind(id.as_str())
    .bind(RuntimeStatus::Terminated.name())
    .bind(reason)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(sql("terminate"))?;
    cx.changes.status(id);
    Ok(TerminateOutcome::TerminatedDirectly)
}

/// `Store::set_suspended`: the stored status flips at RPC time (PROTOCOL.md §3.6).
pub(super) async fn set_suspended(
    conn: &mut PgConnection,
    cx: &mut Cx,
    id: &InstanceId,
    suspend: bool,
    event: &pb::HistoryEvent,
    now: DateTime<Utc>,
) -> R<SuspendOutcome> {
    let facts = lock_instances(conn, cx, id_list([id])).await?;
    let Some(target) = facts.get(id) else {
        return Err(StoreError::NotFound(id.clone()).into());
    };
    let Some(next) = rules::suspend_flip(target.inst.status, suspend) else {
        return Ok(SuspendOutcome::Unchanged);
    };
    let now = round_down(now);
    let hub = cx.hub.clone();
    sqlx::query(
        "WITH upd AS (UPDATE instances SET status = $3, last_updated_at = $4 \
           WHERE hub = $1 AND instance_id = $2) \
         INSERT INTO inbox (hub, instance_id, target_execution, visible_at, payload) \
           VALUES ($1, $2, NULL, $4, $5)",
    )
    .bind(hub)
    .bind(id.as_str())
    .bind(next.name())
    .bind(now)
    .bind(encode(event))
    .execute(&mut *conn)
    .await
    .map_err(sql("suspend"))?;
    cx.changes.status(id);
    cx.changes.ready(id);
    Ok(SuspendOutcome::Changed)
}

/// `Store::complete_activity` as one statement, its own transaction: the row deleted,
/// its instance locked (the foreign key cascades deletions, so it exists) and judged as
/// it is after any commit the lock waited for, and the result put in the inbox when the
/// execution that scheduled it is current and live. Returns what to notify.
pub(super) async fn complete_activity(
    conn: &mut PgConnection,
    hub: &str,
    activity_id: i64,
    result: &pb::HistoryEvent,
    now: DateTime<Utc>,
) -> R<(ActivityOutcome, Changes)> {
    let visible = round_up(timestamp_of(result));
    let row = sqlx::query(&format!(
        "WITH a AS (DELETE FROM activities WHERE hub = $1 AND id = $2 \
           RETURNING instance_id, execution_id), \
         target AS (SELECT a.instance_id, a.execution_id AS scheduled_by, i.execution_id, \
             i.status FROM a JOIN instances i ON i.hub = $1 AND i.instance_id = a.instance_id \
           FOR UPDATE OF i), \
         delivered AS (INSERT INTO inbox (hub, instance_id, target_execution, visible_at, payload) \
           SELECT $1, instance_id, scheduled_by, $3, $4 FROM target \
           WHERE execution_id = scheduled_by AND status NOT IN {TERMINAL_SQL} \
           RETURNING instance_id) \
         SELECT instance_id, EXISTS (SELECT 1 FROM delivered) AS delivered FROM target"
    ))
    .bind(hub)
    .bind(activity_id)
    .bind(visible)
    .bind(encode(result))
    .fetch_optional(&mut *conn)
    .await
    .map_err(sql("activity completion"))?;
    let mut changes = Changes::default();
    let Some(row) = row else {
        return Ok((ActivityOutcome::Unknown, changes));
    };
    if !get::<bool>(&row, "delivered")? {
        return Ok((ActivityOutcome::Dropped, changes));
    }
    let id = InstanceId::new(get::<String>(&row, "instance_id")?);
    changes.message(&id, visible, now);
    Ok((ActivityOutcome::Delivered(id), changes))
}
