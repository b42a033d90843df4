//! Committing one orchestration episode (`Store::commit_orchestration`, PROTOCOL.md
//! §4.4.2): guard, children, consume, history, status, activities, messages — all inside
//! the writer's savepoint for this call, so a failure anywhere writes nothing.
//!
//! Runs on the writer's direct connection (see `writer`): each statement is a plain call
//! into SQLite with a cached prepared statement, so rows are written one statement each.

use std::borrow::Cow;
use std::collections::BTreeSet;

use rusqlite::{params, Connection};

use super::codec::{encode, micros, sq_error, visible_micros};
use super::hot::Hot;
use super::{entities, inbox, instances};
use crate::domain::rules::{self, ChildAction};
use crate::domain::{ExecutionId, InstanceId, OutboundMessage, StatusChange, Transition};
use crate::store::codec::facts_after;
use crate::store::{CommitOutcome, Result, StoreError};

/// Runs the whole commit; see the module docs and `Store::commit_orchestration`.
pub(super) fn commit(conn: &Connection, hot: &Hot, t: &Transition) -> Result<CommitOutcome> {
    let id = &t.instance_id;
    let now = micros(t.now);

    // (1) Guard: the episode ran against the current execution and history.
    let current = hot.state(conn, id)?;
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
    create_children(conn, hot, t, now, &mut touched)?;

    let next = facts_after(&current, t)?;
    if let StatusChange::ContinuedAsNew {
        execution_id,
        input,
        version,
        inbox_head,
    } = &t.status
    {
        continue_as_new(conn, t, execution_id, input, version, inbox_head)?;
        hot.set(id, next);
        let accepted = accepted_messages(conn, hot, t, now, &mut touched)?;
        let has_visible_inbox = inbox::insert_all_then_check(conn, &accepted, id, now)?;
        return Ok(CommitOutcome {
            activities: Vec::new(),
            has_visible_inbox,
            touched: touched.into_iter().collect(),
            activities_claimed: false,
        });
    }

    // (3)-(7) The routing mirror is updated first, so messages to the instance itself are
    // judged against its new state (dropped once terminal); if a statement fails, the
    // writer's rollback clears the mirror.
    hot.set(id, next);
    let accepted = accepted_messages(conn, hot, t, now, &mut touched)?;
    let custom_status = t.custom_status.as_deref();
    let trace_context = t.trace_context.as_ref().map(encode);
    let appended = t.history_append.len() as i64;
    let first_seq = i64::from(t.expected_history_len);
    match &t.status {
        StatusChange::Terminal {
            status,
            output,
            failure,
        } => {
            // The whole inbox goes: a terminal instance is never dispatched again
            // (PROTOCOL.md §4.4.2 step 5).
            inbox::clear(conn, id)?;
            append_history(conn, t, first_seq)?;
            conn.prepare_cached(
                "UPDATE instances SET status = ?, output = ?, failure = ?, completed_at = ?, \
                   custom_status = ?, trace_context = ?, last_updated_at = ?, \
                   history_len = history_len + ? WHERE instance_id = ?",
            )
            .and_then(|mut s| {
                s.execute(params![
                    status.name(),
                    output.as_deref(),
                    failure.as_ref().map(encode),
                    now,
                    custom_status,
                    trace_context,
                    now,
                    appended,
                    id.as_str()
                ])
            })
            .map_err(sq_error("commit"))?;
        }
        _ => {
            inbox::delete_seqs(conn, id, &t.consumed)?;
            append_history(conn, t, first_seq)?;
            conn.prepare_cached(
                "UPDATE instances SET \
                   status = CASE WHEN status = 'PENDING' THEN 'RUNNING' ELSE status END, \
                   custom_status = ?, trace_context = ?, last_updated_at = ?, \
                   history_len = history_len + ? WHERE instance_id = ?",
            )
            .and_then(|mut s| {
                s.execute(params![
                    custom_status,
                    trace_context,
                    now,
                    appended,
                    id.as_str()
                ])
            })
            .map_err(sq_error("commit"))?;
        }
    }
    let activity_ids = insert_activities(conn, t)?;
    let has_visible_inbox = inbox::insert_all_then_check(conn, &accepted, id, now)?;
    Ok(CommitOutcome {
        activities: crate::store::codec::activity_items(t, activity_ids)?,
        has_visible_inbox,
        touched: touched.into_iter().collect(),
        activities_claimed: false,
    })
}

/// Appends the episode's events from `first_seq` on.
fn append_history(conn: &Connection, t: &Transition, first_seq: i64) -> Result<()> {
    if t.history_append.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached("INSERT INTO history (instance_id, seq, payload) VALUES (?, ?, ?)")
        .map_err(sq_error("commit history"))?;
    for (seq, event) in (first_seq..).zip(&t.history_append) {
        stmt.execute(params![t.instance_id.as_str(), seq, encode(event)])
            .map_err(sq_error("commit history"))?;
    }
    Ok(())
}

/// Inserts the scheduled activities; returns their ids in order.
fn insert_activities(conn: &Connection, t: &Transition) -> Result<Vec<i64>> {
    if t.activities.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO activities (instance_id, execution_id, payload) VALUES (?, ?, ?) \
             RETURNING id",
        )
        .map_err(sq_error("commit activities"))?;
    t.activities
        .iter()
        .map(|a| {
            stmt.query_row(
                params![
                    t.instance_id.as_str(),
                    t.expected_execution_id.as_str(),
                    encode(&a.scheduled)
                ],
                |r| r.get(0),
            )
            .map_err(sq_error("commit activities"))
        })
        .collect()
}

/// Continue-as-new: the old execution's history goes entirely, the record starts the new
/// execution, and the new inbox head goes before every waiting message.
fn continue_as_new(
    conn: &Connection,
    t: &Transition,
    execution_id: &ExecutionId,
    input: &Option<String>,
    version: &Option<String>,
    inbox_head: &[crate::proto::HistoryEvent],
) -> Result<()> {
    let id = &t.instance_id;
    let now = micros(t.now);
    let custom_status = t.custom_status.as_deref();
    inbox::delete_seqs(conn, id, &t.consumed)?;
    // The old execution's history goes entirely; `history_append` belongs to it.
    conn.prepare_cached("DELETE FROM history WHERE instance_id = ?")
        .and_then(|mut s| s.execute([id.as_str()]))
        .map_err(sq_error("commit continue-as-new"))?;
    // created_at is kept (§4.4.6 step 6); suspension survives; the trace context
    // belonged to the old execution's span; a scheduled start is not copied.
    conn.prepare_cached(
        "UPDATE instances SET execution_id = ?, input = ?, version = ?, output = NULL, \
           failure = NULL, completed_at = NULL, scheduled_start_at = NULL, \
           status = CASE WHEN status = 'SUSPENDED' THEN 'SUSPENDED' ELSE 'RUNNING' END, \
           custom_status = ?, trace_context = NULL, last_updated_at = ?, history_len = 0, \
           rewound_from = NULL WHERE instance_id = ?",
    )
    .and_then(|mut s| {
        s.execute(params![
            execution_id.as_str(),
            input.as_deref(),
            version.as_deref(),
            custom_status,
            now,
            id.as_str()
        ])
    })
    .map_err(sq_error("commit continue-as-new"))?;
    inbox::put_head(conn, id, inbox_head, t.now, &t.expected_execution_id)?;
    Ok(())
}

/// Creates the episode's sub-orchestrations (or tells the parent the id is taken).
fn create_children(
    conn: &Connection,
    hot: &Hot,
    t: &Transition,
    now: i64,
    touched: &mut BTreeSet<InstanceId>,
) -> Result<()> {
    let id = &t.instance_id;
    for child in &t.children {
        let child_id = &child.instance.instance_id;
        let existing = hot.state(conn, child_id)?.map(|s| s.status);
        match rules::child_action(existing) {
            ChildAction::Conflict => {
                entities::route(conn, hot, id, &child.on_conflict, now, touched)?;
            }
            action => {
                if action == ChildAction::Replace {
                    instances::delete(conn, hot, child_id)?;
                }
                let visible = instances::insert_new(conn, hot, &child.instance)?;
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
fn accepted_messages<'t>(
    conn: &Connection,
    hot: &Hot,
    t: &'t Transition,
    now: i64,
    touched: &mut BTreeSet<InstanceId>,
) -> Result<Vec<Cow<'t, OutboundMessage>>> {
    let mut accepted = Vec::with_capacity(t.messages.len());
    for message in &t.messages {
        if message.target.is_entity() {
            // Entity queues accept everything (the first message creates the entity).
            entities::route(conn, hot, &t.instance_id, message, now, touched)?;
        } else if let Some(message) = inbox::admit(conn, hot, message)? {
            if visible_micros(message.visible_at) <= now && message.target != t.instance_id {
                touched.insert(message.target.clone());
            }
            accepted.push(message);
        }
    }
    Ok(accepted)
}
