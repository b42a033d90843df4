//! Committing one orchestration episode (`Store::commit_orchestration`, PROTOCOL.md
//! §4.4.2): guard, children, consume, history, status, activities, messages — all inside
//! the writer's savepoint for this call, so a failure anywhere writes nothing.
//!
//! Every SQLite call is a round trip to the connection's thread, and those round trips,
//! not SQLite, were most of a step's cost; so the common commit is one multi-statement
//! call. Its statements use plain `?` parameters bound in order: sqlx binds numbered
//! parameters (`?N`) of later statements wrongly when an earlier one skips numbers.

use std::borrow::Cow;
use std::collections::BTreeSet;

use sqlx::SqliteConnection;

use super::codec::{db_error, encode, hex_json_array, micros, visible_micros};
use super::hot::Hot;
use super::{entities, inbox, instances};
use crate::domain::rules::{self, ChildAction};
use crate::domain::{ExecutionId, InstanceId, OutboundMessage, StatusChange, Transition};
use crate::store::codec::facts_after;
use crate::store::{CommitOutcome, Result, StoreError};

/// Runs the whole commit; see the module docs and `Store::commit_orchestration`.
pub(super) async fn commit(
    conn: &mut SqliteConnection,
    hot: &Hot,
    t: &Transition,
) -> Result<CommitOutcome> {
    let id = &t.instance_id;
    let now = micros(t.now);

    // (1) Guard: the episode ran against the current execution and history.
    let current = hot.state(conn, id).await?;
    let guard_holds = rules::episode_guard_holds(
        current.as_ref(),
        &t.expected_execution_id,
        t.expected_history_len,
    );
    let Some(current) = current.filter(|_| guard_holds) else {
        return Err(StoreError::LeaseLost(id.clone()));
    };

    // (2) Children first, so a `sendEvent` to a child created by the same episode finds it
    // and lands after its `ExecutionStarted`.
    let mut touched = BTreeSet::new();
    create_children(conn, hot, t, now, &mut touched).await?;

    let next = facts_after(&current, t)?;
    if let StatusChange::ContinuedAsNew {
        execution_id,
        input,
        version,
        inbox_head,
    } = &t.status
    {
        continue_as_new(conn, t, execution_id, input, version, inbox_head).await?;
        hot.set(id, next);
        let accepted = accepted_messages(conn, hot, t, now, &mut touched).await?;
        let has_visible_inbox = inbox::insert_all_then_check(conn, &accepted, id, now).await?;
        return Ok(CommitOutcome {
            activities: Vec::new(),
            has_visible_inbox,
            touched: touched.into_iter().collect(),
            activities_claimed: false,
        });
    }

    // (3)-(7) One call. The routing mirror is updated first, so messages to the instance
    // itself are judged against its new state (dropped once terminal); if the call fails,
    // the writer's rollback clears the mirror.
    hot.set(id, next);
    let accepted = accepted_messages(conn, hot, t, now, &mut touched).await?;
    let messages = inbox::rows_json(&accepted)?;
    let history = hex_json_array(&t.history_append);
    let activity_rows = hex_json_array(t.activities.iter().map(|a| &a.scheduled));
    let custom_status = t.custom_status.as_deref();
    let trace_context = t.trace_context.as_ref().map(encode);
    let appended = t.history_append.len() as i64;
    let first_seq = i64::from(t.expected_history_len);
    let execution = t.expected_execution_id.as_str();
    let query = match &t.status {
        StatusChange::Terminal {
            status,
            output,
            failure,
        } => sqlx::query_scalar(TERMINAL_SQL)
            .bind(id.as_str())
            .bind(id.as_str())
            .bind(first_seq)
            .bind(history)
            .bind(status.name())
            .bind(output.as_deref())
            .bind(failure.as_ref().map(encode))
            .bind(now)
            .bind(custom_status)
            .bind(trace_context)
            .bind(now)
            .bind(appended)
            .bind(id.as_str()),
        _ => {
            let consumed = serde_json::to_string(&t.consumed)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            sqlx::query_scalar(PROGRESS_SQL)
                .bind(id.as_str())
                .bind(consumed)
                .bind(id.as_str())
                .bind(first_seq)
                .bind(history)
                .bind(custom_status)
                .bind(trace_context)
                .bind(now)
                .bind(appended)
                .bind(id.as_str())
        }
    };
    let mut rows: Vec<i64> = query
        // The shared tail: activities, messages, the visible-message check.
        .bind(id.as_str())
        .bind(execution)
        .bind(activity_rows)
        .bind(messages)
        .bind(id.as_str())
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("commit"))?;
    // Statements run in order: the activity ids, then the final SELECT's one row.
    let has_visible_inbox = rows.pop().is_some_and(|v| v != 0);
    Ok(CommitOutcome {
        activities: crate::store::codec::activity_items(t, rows)?,
        has_visible_inbox,
        touched: touched.into_iter().collect(),
        activities_claimed: false,
    })
}

/// The statements both one-call commits end with; binds: instance, execution, activity
/// payloads (hex JSON), then those of [`inbox::insert_rows_then_check`]: message rows,
/// instance, now.
macro_rules! commit_tail {
    () => {
        concat!(
            "INSERT INTO activities (instance_id, execution_id, payload) \
               SELECT ?, ?, unhex(value) FROM json_each(?) RETURNING id; ",
            inbox::insert_rows_then_check!()
        )
    };
}

/// Progress; binds: instance, consumed seqs (JSON), instance, first history seq, events
/// (hex JSON), custom status, trace context, now, events appended, instance, then the tail.
const PROGRESS_SQL: &str = concat!(
    "DELETE FROM inbox WHERE instance_id = ? AND seq IN (SELECT value FROM json_each(?)); \
     INSERT INTO history (instance_id, seq, payload) \
       SELECT ?, ? + key, unhex(value) FROM json_each(?); \
     UPDATE instances SET \
       status = CASE WHEN status = 'PENDING' THEN 'RUNNING' ELSE status END, \
       custom_status = ?, trace_context = ?, last_updated_at = ?, \
       history_len = history_len + ? WHERE instance_id = ?; ",
    commit_tail!()
);

/// Terminal: the whole inbox goes (a terminal instance is never dispatched again,
/// PROTOCOL.md §4.4.2 step 5). Binds: instance, instance, first history seq, events,
/// status, output, failure, now (completed), custom status, trace context, now (updated),
/// events appended, instance, then the tail.
const TERMINAL_SQL: &str = concat!(
    "DELETE FROM inbox WHERE instance_id = ?; \
     INSERT INTO history (instance_id, seq, payload) \
       SELECT ?, ? + key, unhex(value) FROM json_each(?); \
     UPDATE instances SET status = ?, output = ?, failure = ?, completed_at = ?, \
       custom_status = ?, trace_context = ?, last_updated_at = ?, \
       history_len = history_len + ? WHERE instance_id = ?; ",
    commit_tail!()
);

/// Continue-as-new: the old execution's history goes entirely, the record starts the new
/// execution, and the new inbox head goes before every waiting message.
async fn continue_as_new(
    conn: &mut SqliteConnection,
    t: &Transition,
    execution_id: &ExecutionId,
    input: &Option<String>,
    version: &Option<String>,
    inbox_head: &[crate::proto::HistoryEvent],
) -> Result<()> {
    let id = &t.instance_id;
    let now = micros(t.now);
    let custom_status = t.custom_status.as_deref();
    inbox::delete_seqs(conn, id, &t.consumed).await?;
    // The old execution's history goes entirely; `history_append` belongs to it.
    sqlx::query("DELETE FROM history WHERE instance_id = ?")
        .bind(id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db_error("commit continue-as-new"))?;
    // created_at is kept (§4.4.6 step 6); suspension survives; the trace context
    // belonged to the old execution's span; a scheduled start is not copied.
    sqlx::query(
        "UPDATE instances SET execution_id = ?, input = ?, version = ?, output = NULL, \
           failure = NULL, completed_at = NULL, scheduled_start_at = NULL, \
           status = CASE WHEN status = 'SUSPENDED' THEN 'SUSPENDED' ELSE 'RUNNING' END, \
           custom_status = ?, trace_context = NULL, last_updated_at = ?, history_len = 0, \
           rewound_from = NULL WHERE instance_id = ?",
    )
    .bind(execution_id.as_str())
    .bind(input.as_deref())
    .bind(version.as_deref())
    .bind(custom_status)
    .bind(now)
    .bind(id.as_str())
    .execute(&mut *conn)
    .await
    .map_err(db_error("commit continue-as-new"))?;
    inbox::put_head(conn, id, inbox_head, t.now, &t.expected_execution_id).await?;
    Ok(())
}

/// Creates the episode's sub-orchestrations (or tells the parent the id is taken).
async fn create_children(
    conn: &mut SqliteConnection,
    hot: &Hot,
    t: &Transition,
    now: i64,
    touched: &mut BTreeSet<InstanceId>,
) -> Result<()> {
    let id = &t.instance_id;
    for child in &t.children {
        let child_id = &child.instance.instance_id;
        let existing = hot.state(conn, child_id).await?.map(|s| s.status);
        match rules::child_action(existing) {
            ChildAction::Conflict => {
                entities::route(conn, hot, id, &child.on_conflict, now, touched).await?;
            }
            action => {
                if action == ChildAction::Replace {
                    instances::delete(conn, hot, child_id).await?;
                }
                let visible = instances::insert_new(conn, hot, &child.instance).await?;
                if visible <= now && child_id != id {
                    touched.insert(child_id.clone());
                }
            }
        }
    }
    Ok(())
}

/// The messages §4.5 lets through, in order (readdressed where a rewind replaced the
/// target's execution); targets visible now (other than the committing instance) go into
/// `touched`.
async fn accepted_messages<'t>(
    conn: &mut SqliteConnection,
    hot: &Hot,
    t: &'t Transition,
    now: i64,
    touched: &mut BTreeSet<InstanceId>,
) -> Result<Vec<Cow<'t, OutboundMessage>>> {
    let mut accepted = Vec::with_capacity(t.messages.len());
    for message in &t.messages {
        if message.target.is_entity() {
            // Entity queues accept everything (the first message creates the entity).
            entities::route(conn, hot, &t.instance_id, message, now, touched).await?;
        } else if let Some(message) = inbox::admit(conn, hot, message).await? {
            if visible_micros(message.visible_at) <= now && message.target != t.instance_id {
                touched.insert(message.target.clone());
            }
            accepted.push(message);
        }
    }
    Ok(accepted)
}
