//! Committing one orchestration episode (`Store::commit_orchestration`, PROTOCOL.md
//! §4.4.2): guard, consume, history, status, activities, children, messages — all inside
//! the writer's savepoint for this call, so a failure anywhere writes nothing.

use std::collections::BTreeSet;

use sqlx::SqliteConnection;

use super::codec::{db_error, encode, hex_json_array, micros, visible_micros};
use super::hot::{Hot, State};
use super::{inbox, instances};
use crate::domain::{InstanceId, OutboundMessage, RuntimeStatus, StatusChange, Transition};
use crate::store::{ActivityItem, CommitOutcome, Result, StoreError};

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
    let guard_holds = current.as_ref().is_some_and(|s| {
        s.execution_id == t.expected_execution_id
            && s.history_len == i64::from(t.expected_history_len)
            && !s.status.is_terminal()
    });
    let Some(current) = current.filter(|_| guard_holds) else {
        return Err(StoreError::LeaseLost(id.clone()));
    };

    // (2)-(4) Consumed messages leave the inbox, the history grows, the record follows:
    // one call of three statements (every call is a round trip to SQLite's thread).
    let custom_status = t.custom_status.as_deref();
    let trace_context = t.trace_context.as_ref().map(encode);
    let consumed =
        serde_json::to_string(&t.consumed).map_err(|e| StoreError::Backend(e.to_string()))?;
    let history = hex_json_array(&t.history_append);
    let appended = t.history_append.len() as i64;
    match &t.status {
        StatusChange::Progress => {
            sqlx::query(PROGRESS_SQL)
                .bind(id.as_str())
                .bind(&consumed)
                .bind(i64::from(t.expected_history_len))
                .bind(&history)
                .bind(custom_status)
                .bind(trace_context)
                .bind(now)
                .bind(appended)
                .execute(&mut *conn)
                .await
                .map_err(db_error("commit progress"))?;
            let status = match current.status {
                RuntimeStatus::Pending => RuntimeStatus::Running,
                other => other,
            };
            hot.set(
                id,
                State {
                    status,
                    execution_id: current.execution_id.clone(),
                    history_len: current.history_len + appended,
                },
            );
        }
        StatusChange::Terminal {
            status,
            output,
            failure,
        } => {
            if !status.is_terminal() {
                return Err(StoreError::Backend(format!(
                    "terminal commit with status {status}"
                )));
            }
            // A terminal instance is never dispatched again, so its whole inbox goes
            // (PROTOCOL.md §4.4.2 step 5).
            sqlx::query(TERMINAL_SQL_BATCH)
                .bind(id.as_str())
                .bind(i64::from(t.expected_history_len))
                .bind(&history)
                .bind(status.name())
                .bind(output.as_deref())
                .bind(failure.as_ref().map(encode))
                .bind(now)
                .bind(custom_status)
                .bind(trace_context)
                .bind(appended)
                .execute(&mut *conn)
                .await
                .map_err(db_error("commit terminal"))?;
            hot.set(
                id,
                State {
                    status: *status,
                    ..current.clone()
                },
            );
        }
        StatusChange::ContinuedAsNew {
            execution_id,
            input,
            version,
            inbox_head,
        } => {
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
                   custom_status = ?, trace_context = NULL, last_updated_at = ?, history_len = 0 \
                 WHERE instance_id = ?",
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
            let status = match current.status {
                RuntimeStatus::Suspended => RuntimeStatus::Suspended,
                _ => RuntimeStatus::Running,
            };
            hot.set(
                id,
                State {
                    status,
                    execution_id: execution_id.clone(),
                    history_len: 0,
                },
            );
        }
    }

    // (5) Activities, for the execution the episode ran against, in one statement.
    let activities = insert_activities(conn, t).await?;

    // (7 before 6) Children first, so a `sendEvent` to a child created by the same
    // episode finds it and lands after its `ExecutionStarted`.
    let mut touched = BTreeSet::new();
    for child in &t.children {
        let child_id = &child.instance.instance_id;
        match hot.state(conn, child_id).await? {
            Some(existing) if !existing.status.is_terminal() => {
                route(conn, hot, id, &child.on_conflict, now, &mut touched).await?;
            }
            existing => {
                // A terminal child is replaced (retries reuse child ids, PROTOCOL.md §4.4.3).
                if existing.is_some() {
                    instances::delete(conn, hot, child_id).await?;
                }
                let visible = instances::insert_new(conn, hot, &child.instance).await?;
                if visible <= now && child_id != id {
                    touched.insert(child_id.clone());
                }
            }
        }
    }

    // (6) Messages. The committing instance's own state is already updated, so the usual
    // drop rules give the right answer for messages to itself.
    let mut accepted = Vec::with_capacity(t.messages.len());
    for message in &t.messages {
        if inbox::accepts(conn, hot, message).await? {
            if visible_micros(message.visible_at) <= now && message.target != *id {
                touched.insert(message.target.clone());
            }
            accepted.push(message);
        }
    }
    let has_visible_inbox = inbox::insert_all_then_check(conn, &accepted, id, now).await?;

    Ok(CommitOutcome {
        activities,
        has_visible_inbox,
        touched: touched.into_iter().collect(),
    })
}

/// Delivers one message; records its target in `touched` when it is visible now and not
/// the committing instance (that one is reported through `has_visible_inbox`).
async fn route(
    conn: &mut SqliteConnection,
    hot: &Hot,
    committing: &InstanceId,
    message: &OutboundMessage,
    now_us: i64,
    touched: &mut BTreeSet<InstanceId>,
) -> Result<()> {
    let stored = inbox::deliver(conn, hot, message).await?;
    if stored && visible_micros(message.visible_at) <= now_us && message.target != *committing {
        touched.insert(message.target.clone());
    }
    Ok(())
}

/// Progress: ?1 instance, ?2 consumed seqs (JSON), ?3 first history seq, ?4 events
/// (hex JSON), ?5 custom status, ?6 trace context, ?7 now, ?8 events appended.
const PROGRESS_SQL: &str = "\
    DELETE FROM inbox WHERE instance_id = ?1 AND seq IN (SELECT value FROM json_each(?2)); \
    INSERT INTO history (instance_id, seq, payload) \
      SELECT ?1, ?3 + key, unhex(value) FROM json_each(?4); \
    UPDATE instances SET \
      status = CASE WHEN status = 'PENDING' THEN 'RUNNING' ELSE status END, \
      custom_status = ?5, trace_context = ?6, last_updated_at = ?7, \
      history_len = history_len + ?8 WHERE instance_id = ?1";

/// Terminal: ?1 instance, ?2 first history seq, ?3 events (hex JSON), ?4 status,
/// ?5 output, ?6 failure, ?7 now, ?8 custom status, ?9 trace context, ?10 appended.
const TERMINAL_SQL_BATCH: &str = "\
    DELETE FROM inbox WHERE instance_id = ?1; \
    INSERT INTO history (instance_id, seq, payload) \
      SELECT ?1, ?2 + key, unhex(value) FROM json_each(?3); \
    UPDATE instances SET status = ?4, output = ?5, failure = ?6, completed_at = ?7, \
      custom_status = ?8, trace_context = ?9, last_updated_at = ?7, \
      history_len = history_len + ?10 WHERE instance_id = ?1";

/// Inserts the commit's activities with one statement and returns their rows.
async fn insert_activities(
    conn: &mut SqliteConnection,
    t: &Transition,
) -> Result<Vec<ActivityItem>> {
    if t.activities.is_empty() {
        return Ok(Vec::new());
    }
    let payloads = hex_json_array(t.activities.iter().map(|a| &a.scheduled));
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO activities (instance_id, execution_id, payload) \
         SELECT ?1, ?2, unhex(value) FROM json_each(?3) RETURNING id",
    )
    .bind(t.instance_id.as_str())
    .bind(t.expected_execution_id.as_str())
    .bind(payloads)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error("activity insert"))?;
    // Rows are inserted in array order and ids only grow (AUTOINCREMENT), but RETURNING
    // does not promise an order: sorting restores it.
    ids.sort_unstable();
    if ids.len() != t.activities.len() {
        return Err(StoreError::Backend(
            "activity insert returned the wrong number of rows".into(),
        ));
    }
    Ok(ids
        .into_iter()
        .zip(&t.activities)
        .map(|(id, a)| ActivityItem {
            id,
            instance_id: t.instance_id.clone(),
            execution_id: t.expected_execution_id.clone(),
            scheduled: a.scheduled.clone(),
        })
        .collect())
}
