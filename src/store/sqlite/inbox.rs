//! Inbox rows: insertion, the routing/drop rules of PROTOCOL.md §4.5, visibility reads,
//! and the continue-as-new reordering that puts a new head before waiting messages.

use std::borrow::Cow;

use sqlx::SqliteConnection;

use super::codec::{db_error, encode, micros, push_hex, visible_micros};
use super::hot::Hot;
use crate::domain::rules::{self, Admission};
use crate::domain::{ExecutionId, InstanceId, OutboundMessage};
use crate::proto as pb;
use crate::store::Result;

/// Appends one message to `id`'s inbox (no checks); returns its seq.
pub(super) async fn insert(
    conn: &mut SqliteConnection,
    id: &InstanceId,
    target_execution: Option<&ExecutionId>,
    visible_at_us: i64,
    event: &pb::HistoryEvent,
) -> Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO inbox (instance_id, target_execution, visible_at, payload) \
         VALUES (?, ?, ?, ?) RETURNING seq",
    )
    .bind(id.as_str())
    .bind(target_execution.map(ExecutionId::as_str))
    .bind(visible_at_us)
    .bind(encode(event))
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error("inbox insert"))
}

/// The message as it may be stored (PROTOCOL.md §4.5), or `None` when it is dropped: the
/// target must exist, be non-terminal and, for execution-scoped messages, still run that
/// execution. A message for an execution that a rewind replaced is readdressed to the
/// current one, which continues it (§4.10). Dropped messages are never stored.
pub(super) async fn admit<'m>(
    conn: &mut SqliteConnection,
    hot: &Hot,
    msg: &'m OutboundMessage,
) -> Result<Option<Cow<'m, OutboundMessage>>> {
    let target = hot.state(conn, &msg.target).await?;
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
            let rewound: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM instances, json_each(instances.rewound_from) \
                 WHERE instance_id = ? AND json_each.value = ?)",
            )
            .bind(msg.target.as_str())
            .bind(wanted)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error("inbox admit"))?;
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
pub(super) async fn deliver(
    conn: &mut SqliteConnection,
    hot: &Hot,
    msg: &OutboundMessage,
) -> Result<bool> {
    let Some(msg) = admit(conn, hot, msg).await? else {
        return Ok(false);
    };
    insert(
        conn,
        &msg.target,
        msg.target_execution.as_ref(),
        visible_micros(msg.visible_at),
        &msg.event,
    )
    .await?;
    Ok(true)
}

/// Two statements: insert the rows of [`rows_json`], then report whether an instance
/// has a message visible by a time. Binds: rows, instance, now. A macro so that the
/// one-call commit can `concat!` it onto its own statements.
macro_rules! insert_rows_then_check {
    () => {
        "INSERT INTO inbox (instance_id, target_execution, visible_at, payload) \
           SELECT value ->> 0, value ->> 1, value ->> 2, unhex(value ->> 3) FROM json_each(?); \
         SELECT EXISTS (SELECT 1 FROM inbox WHERE instance_id = ? AND visible_at <= ?)"
    };
}
pub(super) use insert_rows_then_check;

/// Inbox rows as the JSON array `[[target, execution|null, visible_at, "hex"], ...]`
/// that the batched inserts read with `json_each`.
pub(super) fn rows_json(messages: &[Cow<'_, OutboundMessage>]) -> Result<String> {
    let json = |s: &str| {
        serde_json::to_string(s).map_err(|e| crate::store::StoreError::Backend(e.to_string()))
    };
    let mut rows = String::from("[");
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            rows.push(',');
        }
        let target = json(m.target.as_str())?;
        let execution = match &m.target_execution {
            Some(e) => json(e.as_str())?,
            None => "null".to_string(),
        };
        rows.push_str(&format!(
            "[{target},{execution},{},\"",
            visible_micros(m.visible_at)
        ));
        push_hex(&mut rows, &encode(&m.event));
        rows.push_str("\"]");
    }
    rows.push(']');
    Ok(rows)
}

/// Stores already-accepted messages in order (one statement), then answers whether
/// `id` has a message visible at `now_us` (same call: each call is a round trip).
pub(super) async fn insert_all_then_check(
    conn: &mut SqliteConnection,
    messages: &[Cow<'_, OutboundMessage>],
    id: &InstanceId,
    now_us: i64,
) -> Result<bool> {
    let rows = rows_json(messages)?;
    sqlx::query_scalar(insert_rows_then_check!())
        .bind(rows)
        .bind(id.as_str())
        .bind(now_us)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error("inbox insert"))
}

/// Deletes the given rows of `id` (rows of other instances are never touched).
pub(super) async fn delete_seqs(
    conn: &mut SqliteConnection,
    id: &InstanceId,
    seqs: &[i64],
) -> Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    // One statement with a JSON array instead of one per row or a variable-length IN list,
    // so the prepared statement is cached whatever the count.
    let list = serde_json::to_string(seqs)
        .map_err(|e| crate::store::StoreError::Backend(e.to_string()))?;
    sqlx::query(
        "DELETE FROM inbox WHERE instance_id = ? AND seq IN (SELECT value FROM json_each(?))",
    )
    .bind(id.as_str())
    .bind(list)
    .execute(&mut *conn)
    .await
    .map_err(db_error("inbox delete"))?;
    Ok(())
}

/// Deletes every message of `id`.
pub(super) async fn clear(conn: &mut SqliteConnection, id: &InstanceId) -> Result<()> {
    sqlx::query("DELETE FROM inbox WHERE instance_id = ?")
        .bind(id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db_error("inbox clear"))?;
    Ok(())
}

/// Continue-as-new (PROTOCOL.md §4.4.6 step 2): `head` (ExecutionStarted + carry-over
/// events) goes before every message still waiting, which keep their relative order.
///
/// Seqs only grow, so the waiting rows are moved behind the head by copying them to new
/// seqs and deleting the originals. Rows addressed to `old_execution` are dropped on the
/// way: they can never be delivered to the new execution (§4.5).
pub(super) async fn put_head(
    conn: &mut SqliteConnection,
    id: &InstanceId,
    head: &[pb::HistoryEvent],
    now: chrono::DateTime<chrono::Utc>,
    old_execution: &ExecutionId,
) -> Result<()> {
    sqlx::query("DELETE FROM inbox WHERE instance_id = ? AND target_execution = ?")
        .bind(id.as_str())
        .bind(old_execution.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db_error("inbox drop stale"))?;
    let last: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM inbox WHERE instance_id = ?")
        .bind(id.as_str())
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error("inbox read"))?;
    let now_us = micros(now);
    for event in head {
        insert(conn, id, None, now_us, event).await?;
    }
    if let Some(last) = last {
        sqlx::query(
            "INSERT INTO inbox (instance_id, target_execution, visible_at, payload) \
             SELECT instance_id, target_execution, visible_at, payload FROM inbox \
             WHERE instance_id = ? AND seq <= ? ORDER BY seq",
        )
        .bind(id.as_str())
        .bind(last)
        .execute(&mut *conn)
        .await
        .map_err(db_error("inbox reorder"))?;
        sqlx::query("DELETE FROM inbox WHERE instance_id = ? AND seq <= ?")
            .bind(id.as_str())
            .bind(last)
            .execute(&mut *conn)
            .await
            .map_err(db_error("inbox reorder"))?;
    }
    Ok(())
}
