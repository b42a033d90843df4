//! Inbox rows: insertion, the routing/drop rules of PROTOCOL.md §4.5, visibility reads,
//! and the continue-as-new reordering that puts a new head before waiting messages.
//!
//! Runs on the writer's direct connection (see `writer`): every statement is a plain
//! call into SQLite, so one statement per row with cached statements is the cheap form.

use std::borrow::Cow;

use rusqlite::{params, Connection};

use super::codec::{encode, micros, sq_error, visible_micros};
use super::hot::Hot;
use crate::domain::rules::{self, Admission};
use crate::domain::{ExecutionId, InstanceId, OutboundMessage};
use crate::proto as pb;
use crate::store::Result;

/// Appends one message to `id`'s inbox (no checks); returns its seq.
pub(super) fn insert(
    conn: &Connection,
    id: &InstanceId,
    target_execution: Option<&ExecutionId>,
    visible_at_us: i64,
    event: &pb::HistoryEvent,
) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO inbox (instance_id, target_execution, visible_at, payload) \
         VALUES (?, ?, ?, ?) RETURNING seq",
    )
    .and_then(|mut s| {
        s.query_row(
            params![
                id.as_str(),
                target_execution.map(ExecutionId::as_str),
                visible_at_us,
                encode(event)
            ],
            |r| r.get(0),
        )
    })
    .map_err(sq_error("inbox insert"))
}

/// The message as it may be stored (PROTOCOL.md §4.5), or `None` when it is dropped: the
/// target must exist, be non-terminal and, for execution-scoped messages, still run that
/// execution. A message for an execution that a rewind replaced is readdressed to the
/// current one, which continues it (§4.10). Dropped messages are never stored.
pub(super) fn admit<'m>(
    conn: &Connection,
    hot: &Hot,
    msg: &'m OutboundMessage,
) -> Result<Option<Cow<'m, OutboundMessage>>> {
    let target = hot.state(conn, &msg.target)?;
    let Some(target) = target else {
        return Ok(None);
    };
    let admission = match rules::admit(Some(&target), msg) {
        Admission::AskRewound => {
            // Rare (only a mismatch gets here), so the extra read stays off the common path.
            let wanted = msg
                .target_execution
                .as_ref()
                .map_or("", ExecutionId::as_str);
            let rewound: bool = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM instances, json_each(instances.rewound_from) \
                     WHERE instance_id = ? AND json_each.value = ?)",
                )
                .and_then(|mut s| s.query_row([msg.target.as_str(), wanted], |r| r.get(0)))
                .map_err(sq_error("inbox admit"))?;
            rules::admit_after_rewind_check(&target, rewound)
        }
        other => other,
    };
    Ok(match admission {
        Admission::Deliver => Some(Cow::Borrowed(msg)),
        Admission::Readdress(execution) => Some(Cow::Owned(OutboundMessage {
            target_execution: Some(execution),
            ..msg.clone()
        })),
        Admission::Drop | Admission::AskRewound => None,
    })
}

/// Delivers one outbound message unless [`admit`] drops it; returns whether it was
/// stored.
pub(super) fn deliver(conn: &Connection, hot: &Hot, msg: &OutboundMessage) -> Result<bool> {
    let Some(msg) = admit(conn, hot, msg)? else {
        return Ok(false);
    };
    insert(
        conn,
        &msg.target,
        msg.target_execution.as_ref(),
        visible_micros(msg.visible_at),
        &msg.event,
    )?;
    Ok(true)
}

/// Stores already-accepted messages in order, then answers whether `id` has a message
/// visible at `now_us`.
pub(super) fn insert_all_then_check(
    conn: &Connection,
    messages: &[Cow<'_, OutboundMessage>],
    id: &InstanceId,
    now_us: i64,
) -> Result<bool> {
    for m in messages {
        insert(
            conn,
            &m.target,
            m.target_execution.as_ref(),
            visible_micros(m.visible_at),
            &m.event,
        )?;
    }
    has_visible(conn, id, now_us)
}

/// Whether `id` has a message visible at `now_us`.
pub(super) fn has_visible(conn: &Connection, id: &InstanceId, now_us: i64) -> Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM inbox WHERE instance_id = ? AND visible_at <= ?)",
    )
    .and_then(|mut s| s.query_row(params![id.as_str(), now_us], |r| r.get(0)))
    .map_err(sq_error("inbox read"))
}

/// Deletes the given rows of `id` (rows of other instances are never touched).
pub(super) fn delete_seqs(conn: &Connection, id: &InstanceId, seqs: &[i64]) -> Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached("DELETE FROM inbox WHERE instance_id = ? AND seq = ?")
        .map_err(sq_error("inbox delete"))?;
    for seq in seqs {
        stmt.execute(params![id.as_str(), seq])
            .map_err(sq_error("inbox delete"))?;
    }
    Ok(())
}

/// Deletes every message of `id`.
pub(super) fn clear(conn: &Connection, id: &InstanceId) -> Result<()> {
    conn.prepare_cached("DELETE FROM inbox WHERE instance_id = ?")
        .and_then(|mut s| s.execute([id.as_str()]))
        .map_err(sq_error("inbox clear"))?;
    Ok(())
}

/// Continue-as-new (PROTOCOL.md §4.4.6 step 2): `head` (ExecutionStarted + carry-over
/// events) goes before every message still waiting, which keep their relative order.
///
/// Seqs only grow, so the waiting rows are moved behind the head by copying them to new
/// seqs and deleting the originals. Rows addressed to `old_execution` are dropped on the
/// way: they can never be delivered to the new execution (§4.5).
pub(super) fn put_head(
    conn: &Connection,
    id: &InstanceId,
    head: &[pb::HistoryEvent],
    now: chrono::DateTime<chrono::Utc>,
    old_execution: &ExecutionId,
) -> Result<()> {
    conn.prepare_cached("DELETE FROM inbox WHERE instance_id = ? AND target_execution = ?")
        .and_then(|mut s| s.execute([id.as_str(), old_execution.as_str()]))
        .map_err(sq_error("inbox drop stale"))?;
    let last: Option<i64> = conn
        .prepare_cached("SELECT MAX(seq) FROM inbox WHERE instance_id = ?")
        .and_then(|mut s| s.query_row([id.as_str()], |r| r.get(0)))
        .map_err(sq_error("inbox read"))?;
    let now_us = micros(now);
    for event in head {
        insert(conn, id, None, now_us, event)?;
    }
    if let Some(last) = last {
        conn.prepare_cached(
            "INSERT INTO inbox (instance_id, target_execution, visible_at, payload) \
             SELECT instance_id, target_execution, visible_at, payload FROM inbox \
             WHERE instance_id = ? AND seq <= ? ORDER BY seq",
        )
        .and_then(|mut s| s.execute(params![id.as_str(), last]))
        .map_err(sq_error("inbox reorder"))?;
        conn.prepare_cached("DELETE FROM inbox WHERE instance_id = ? AND seq <= ?")
            .and_then(|mut s| s.execute(params![id.as_str(), last]))
            .map_err(sq_error("inbox reorder"))?;
    }
    Ok(())
}
