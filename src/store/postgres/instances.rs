//! Instance lifecycle writes: create/replace, client events, terminate, suspend/resume,
//! activity completion. Each runs inside the caller's transaction and starts by locking
//! the instance row, so the facts the rules judge are the ones it writes against.

use chrono::{DateTime, Utc};

use super::notify::{Changes, CHANNEL};
use super::rows::{get, id_list, lock_instances};
use super::tx::{sql, Cx, R};
use super::writes::{start_visibility, Outbox};
use sqlx::PgConnection;

use crate::domain::events::timestamp_of;
use crate::domain::rules::{self, TerminateAction};
use crate::domain::{ExecutionId, InstanceId, NewInstance, ReusePolicy, RuntimeStatus};
use crate::proto as pb;
use crate::store::codec::{encode, round_down, round_up, tags_json};
use crate::store::{ActivityOutcome, EnqueueOutcome, StoreError, SuspendOutcome, TerminateOutcome};

/// The common `create_instance` (a fresh id) as ONE statement outside any explicit
/// transaction: insert the row unless the id is taken, its `ExecutionStarted`, and the
/// notification, all conditional on the insert. Returns whether it created the instance.
pub(super) async fn try_create(
    conn: &mut sqlx::PgConnection,
    hub: &str,
    owner: &str,
    new: &NewInstance,
) -> R<bool> {
    let visible = start_visibility(new);
    let created = round_down(new.created_at);
    let mut changes = Changes::default();
    changes.status(&new.instance_id);
    changes.message(&new.instance_id, visible, created);
    let payload = changes.payloads(hub, owner).concat();
    let row = sqlx::query(
        "WITH ins AS ( \
           INSERT INTO instances (hub, instance_id, execution_id, name, version, status, \
             created_at, last_updated_at, scheduled_start_at, input, parent_instance_id, tags, \
             history_len) \
           VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $6, $7, $8, $9, $10::jsonb, 0) \
           ON CONFLICT (hub, instance_id) DO NOTHING RETURNING instance_id), \
         start AS (INSERT INTO inbox (hub, instance_id, target_execution, visible_at, payload) \
           SELECT $1, instance_id, NULL, $11, $12 FROM ins) \
         SELECT pg_notify($13, $14) FROM ins",
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
    .bind(CHANNEL)
    .bind(payload)
    .fetch_optional(&mut *conn)
    .await
    .map_err(sql("instance insert"))?;
    Ok(row.is_some())
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

/// `Store::complete_activity`: deletes the row (the exactly-once guard: any node may
/// complete any activity) and routes the result to the execution that scheduled it
/// (PROTOCOL.md §4.7); the result is visible from its own timestamp.
pub(super) async fn complete_activity(
    conn: &mut PgConnection,
    cx: &mut Cx,
    activity_id: i64,
    result: &pb::HistoryEvent,
) -> R<ActivityOutcome> {
    let hub = cx.hub.clone();
    // One statement deletes the row and locks its instance (which exists: the foreign
    // key cascades deletions).
    let row = sqlx::query(
        "WITH a AS (DELETE FROM activities WHERE hub = $1 AND id = $2 \
           RETURNING instance_id, execution_id) \
         SELECT a.instance_id, a.execution_id AS scheduled_by, i.execution_id, i.status \
         FROM a JOIN instances i ON i.hub = $1 AND i.instance_id = a.instance_id \
         FOR UPDATE OF i",
    )
    .bind(hub)
    .bind(activity_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(sql("activity delete"))?;
    let Some(row) = row else {
        return Ok(ActivityOutcome::Unknown);
    };
    let id = InstanceId::new(get::<String>(&row, "instance_id")?);
    let scheduled_by = ExecutionId::new(get::<String>(&row, "scheduled_by")?);
    let current = ExecutionId::new(get::<String>(&row, "execution_id")?);
    let status = crate::store::codec::status(&get::<String>(&row, "status")?)?;
    if status.is_terminal() || current != scheduled_by {
        return Ok(ActivityOutcome::Dropped);
    }
    let now = cx.clock_now;
    insert_message(
        conn,
        cx,
        &id,
        Some(&scheduled_by),
        round_up(timestamp_of(result)),
        result,
        now,
    )
    .await?;
    Ok(ActivityOutcome::Delivered(id))
}
