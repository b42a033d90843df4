//! Committing one orchestration episode (`Store::commit_orchestration`, PROTOCOL.md
//! §4.4.2): guard, consume, history, status, activities, children, messages — all inside
//! the writer's savepoint for this call, so a failure anywhere writes nothing.

use std::collections::BTreeSet;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::codec::{db_error, encode, micros, visible_micros};
use super::hot::{Hot, State};
use super::{inbox, instances};
use crate::domain::{InstanceId, OutboundMessage, RuntimeStatus, StatusChange, Transition};
use crate::proto as pb;
use crate::store::{ActivityItem, CommitOutcome, Result, StoreError};

/// History rows per INSERT statement: big enough to amortise the per-statement cost,
/// small enough to stay far below SQLite's bound-parameter limit. Fixed chunking keeps
/// the number of distinct (cached) statements small.
const HISTORY_ROWS_PER_INSERT: usize = 64;

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

    // (2) The delivered (or stale) messages leave the inbox.
    inbox::delete_seqs(conn, id, &t.consumed).await?;

    // (3) + (4) History and status.
    let custom_status = t.custom_status.as_deref();
    let trace_context = t.trace_context.as_ref().map(encode);
    match &t.status {
        StatusChange::Progress => {
            append_history(conn, id, t.expected_history_len, &t.history_append).await?;
            sqlx::query(
                "UPDATE instances SET \
                   status = CASE WHEN status = 'PENDING' THEN 'RUNNING' ELSE status END, \
                   custom_status = ?, trace_context = ?, last_updated_at = ?, \
                   history_len = history_len + ? WHERE instance_id = ?",
            )
            .bind(custom_status)
            .bind(trace_context)
            .bind(now)
            .bind(t.history_append.len() as i64)
            .bind(id.as_str())
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
                    history_len: current.history_len + t.history_append.len() as i64,
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
            append_history(conn, id, t.expected_history_len, &t.history_append).await?;
            sqlx::query(
                "UPDATE instances SET status = ?, output = ?, failure = ?, completed_at = ?, \
                   custom_status = ?, trace_context = ?, last_updated_at = ?, \
                   history_len = history_len + ? WHERE instance_id = ?",
            )
            .bind(status.name())
            .bind(output.as_deref())
            .bind(failure.as_ref().map(encode))
            .bind(now)
            .bind(custom_status)
            .bind(trace_context)
            .bind(now)
            .bind(t.history_append.len() as i64)
            .bind(id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(db_error("commit terminal"))?;
            // A terminal instance is never dispatched again (PROTOCOL.md §4.4.2 step 5).
            inbox::clear(conn, id).await?;
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

    // (5) Activities, for the execution the episode ran against.
    let mut activities = Vec::with_capacity(t.activities.len());
    for activity in &t.activities {
        let row_id =
            instances::insert_activity(conn, id, &t.expected_execution_id, &activity.scheduled)
                .await?;
        activities.push(ActivityItem {
            id: row_id,
            instance_id: id.clone(),
            execution_id: t.expected_execution_id.clone(),
            scheduled: activity.scheduled.clone(),
        });
    }

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

    // (6) Messages. The committing instance's own row is already updated, so the usual
    // drop rules give the right answer for messages to itself.
    for message in &t.messages {
        route(conn, hot, id, message, now, &mut touched).await?;
    }

    Ok(CommitOutcome {
        activities,
        has_visible_inbox: inbox::has_visible(conn, id, now).await?,
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

/// Appends `events` to the history at positions `first..`.
async fn append_history(
    conn: &mut SqliteConnection,
    id: &InstanceId,
    first: u32,
    events: &[pb::HistoryEvent],
) -> Result<()> {
    let mut seq = i64::from(first);
    for chunk in events.chunks(HISTORY_ROWS_PER_INSERT) {
        let mut insert: QueryBuilder<'_, Sqlite> =
            QueryBuilder::new("INSERT INTO history (instance_id, seq, payload) ");
        insert.push_values(chunk, |mut row, event| {
            row.push_bind(id.as_str())
                .push_bind(seq)
                .push_bind(encode(event));
            seq += 1;
        });
        insert
            .build()
            .execute(&mut *conn)
            .await
            .map_err(db_error("history append"))?;
    }
    Ok(())
}
