//! Reads: instance records, histories, episode snapshots, paged queries and recovery.
//! The sqlx functions take a connection already inside a (read) transaction where they
//! need one snapshot over several statements; the two small hot reads (`instance`,
//! `episode`) are single rusqlite statements run inline (see `reader`).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::codec::{db_error, decode_event, get, micros, sq_error, INSTANCE_COLUMNS, TERMINAL_SQL};
use crate::domain::{ExecutionId, InstanceId, InstanceRecord, RuntimeStatus};
use crate::proto as pb;
use crate::store::rows::{activity_item, completed, inbox_message, instance_record, wakeup};
use crate::store::{CompletedFilter, InboxMessage, InstanceFilter, Recovery, Result};

/// The record of `id`, if any (an inline read, see `reader`).
pub(super) fn instance(
    conn: &rusqlite::Connection,
    id: &InstanceId,
) -> Result<Option<InstanceRecord>> {
    static SQL: LazyLock<String> =
        LazyLock::new(|| format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?"));
    let mut stmt = conn
        .prepare_cached(&SQL)
        .map_err(sq_error("instance read"))?;
    let mut rows = stmt
        .query([id.as_str()])
        .map_err(sq_error("instance read"))?;
    match rows.next().map_err(sq_error("instance read"))? {
        Some(row) => instance_record(row).map(Some),
        None => Ok(None),
    }
}

/// The current execution's history, in order.
pub(super) async fn events(
    conn: &mut SqliteConnection,
    id: &InstanceId,
) -> Result<Vec<pb::HistoryEvent>> {
    let payloads: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT payload FROM history WHERE instance_id = ? ORDER BY seq")
            .bind(id.as_str())
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error("history read"))?;
    payloads.iter().map(|p| decode_event(p)).collect()
}

/// `Store::history`.
pub(super) async fn history(
    conn: &mut SqliteConnection,
    id: &InstanceId,
) -> Result<Option<(ExecutionId, Vec<pb::HistoryEvent>)>> {
    let execution: Option<String> =
        sqlx::query_scalar("SELECT execution_id FROM instances WHERE instance_id = ?")
            .bind(id.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error("history read"))?;
    match execution {
        None => Ok(None),
        Some(execution) => Ok(Some((ExecutionId::new(execution), events(conn, id).await?))),
    }
}

/// The record and the visible messages of an episode (an inline read, see `reader`),
/// from ONE statement, so the pair is consistent without a read transaction; `None` for
/// unknown instances. `Store::orchestration_work` adds the history when the caller's
/// cached copy is not current. A history read racing a change of the instance is
/// harmless: the commit's guard then fails and the episode is redone.
pub(super) fn episode(
    conn: &rusqlite::Connection,
    id: &InstanceId,
    now: DateTime<Utc>,
    max_messages: u32,
) -> Result<Option<(InstanceRecord, Vec<InboxMessage>)>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {INSTANCE_COLUMNS}, m.seq AS m_seq, m.target_execution AS m_target, \
               m.visible_at AS m_visible, m.payload AS m_payload \
             FROM instances LEFT JOIN ( \
               SELECT seq, target_execution, visible_at, payload FROM inbox \
               WHERE instance_id = ?1 AND visible_at <= ?2 ORDER BY seq LIMIT ?3) AS m \
             WHERE instance_id = ?1 ORDER BY m.seq"
        )
    });
    let mut stmt = conn
        .prepare_cached(&SQL)
        .map_err(sq_error("episode read"))?;
    let mut rows = stmt
        .query(rusqlite::params![
            id.as_str(),
            micros(now),
            i64::from(max_messages)
        ])
        .map_err(sq_error("episode read"))?;
    let Some(first) = rows.next().map_err(sq_error("episode read"))? else {
        return Ok(None);
    };
    let record = instance_record(first)?;
    let mut messages: Vec<InboxMessage> = inbox_message(first, true)?.into_iter().collect();
    while let Some(row) = rows.next().map_err(sq_error("episode read"))? {
        messages.extend(inbox_message(row, true)?);
    }
    Ok(Some((record, messages)))
}

/// Adds `AND status IN (...)` for a non-empty list.
pub(super) fn push_statuses(q: &mut QueryBuilder<'_, Sqlite>, statuses: &[RuntimeStatus]) {
    if statuses.is_empty() {
        return;
    }
    q.push(" AND status IN (");
    let mut list = q.separated(", ");
    for s in statuses {
        list.push_bind(s.name());
    }
    list.push_unseparated(")");
}

/// Adds the conditions of `f` other than its cursor: statuses, created window, id prefix,
/// name. Entity ids (`@…`) are excluded by the caller's base statement.
fn push_instance_filter(q: &mut QueryBuilder<'_, Sqlite>, f: &InstanceFilter) {
    push_statuses(q, &f.statuses);
    if let Some(from) = f.created_from {
        q.push(" AND created_at >= ").push_bind(micros(from));
    }
    if let Some(to) = f.created_to {
        q.push(" AND created_at < ").push_bind(micros(to));
    }
    if let Some(prefix) = f.id_prefix.as_deref().filter(|p| !p.is_empty()) {
        // substr/length count characters, as `chars()` does; LIKE would fold ASCII case
        // and ids are case-sensitive.
        q.push(" AND substr(instance_id, 1, ")
            .push_bind(prefix.chars().count() as i64)
            .push(") = ")
            .push_bind(prefix.to_owned());
    }
    if let Some(name) = f.name.as_deref() {
        q.push(" AND name = ").push_bind(name.to_owned());
    }
}

/// `Store::query_instances`: keyset page ordered by (created_at, instance_id), ascending
/// or (`newest_first`) descending; entity ids (`@…`) are never returned.
pub(super) async fn query_instances(
    conn: &mut SqliteConnection,
    f: &InstanceFilter,
) -> Result<Vec<InstanceRecord>> {
    let mut q = QueryBuilder::new(format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances WHERE substr(instance_id, 1, 1) <> '@'"
    ));
    push_instance_filter(&mut q, f);
    let (after, order) = if f.newest_first {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some((created, after_id)) = &f.after {
        q.push(format!(" AND (created_at, instance_id) {after} ("))
            .push_bind(micros(*created))
            .push(", ")
            .push_bind(after_id.clone())
            .push(")");
    }
    q.push(format!(
        " ORDER BY created_at {order}, instance_id {order} LIMIT "
    ))
    .push_bind(i64::from(f.limit));
    let rows = q
        .build()
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("query instances"))?;
    rows.iter().map(instance_record).collect()
}

/// `Store::count_instances`: how many instances match `f` (cursor and limit ignored), per
/// status.
pub(super) async fn count_instances(
    conn: &mut SqliteConnection,
    f: &InstanceFilter,
) -> Result<Vec<(RuntimeStatus, u64)>> {
    let mut q = QueryBuilder::new(
        "SELECT status, COUNT(*) FROM instances WHERE substr(instance_id, 1, 1) <> '@'",
    );
    push_instance_filter(&mut q, f);
    q.push(" GROUP BY status");
    let rows: Vec<(String, i64)> = q
        .build_query_as()
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("count instances"))?;
    Ok(crate::store::rows::status_counts(rows))
}

/// `Store::list_completed`: terminal instances ordered by (completed_at, instance_id).
pub(super) async fn list_completed(
    conn: &mut SqliteConnection,
    f: &CompletedFilter,
) -> Result<Vec<(InstanceId, DateTime<Utc>)>> {
    let mut q = QueryBuilder::new(format!(
        "SELECT instance_id, completed_at FROM instances WHERE completed_at IS NOT NULL \
         AND status IN {TERMINAL_SQL} AND substr(instance_id, 1, 1) <> '@'"
    ));
    push_statuses(&mut q, &f.statuses);
    if let Some(from) = f.completed_from {
        q.push(" AND completed_at >= ").push_bind(micros(from));
    }
    if let Some(to) = f.completed_to {
        q.push(" AND completed_at < ").push_bind(micros(to));
    }
    if let Some((completed, after_id)) = &f.after {
        q.push(" AND (completed_at, instance_id) > (")
            .push_bind(micros(*completed))
            .push(", ")
            .push_bind(after_id.clone())
            .push(")");
    }
    q.push(" ORDER BY completed_at, instance_id LIMIT ")
        .push_bind(i64::from(f.limit));
    let rows = q
        .build()
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("list completed"))?;
    rows.iter().map(completed).collect()
}

/// `Store::recover`.
pub(super) async fn recover(conn: &mut SqliteConnection, now: DateTime<Utc>) -> Result<Recovery> {
    let now_us = micros(now);
    // Oldest visible message first, so recovery dispatches in the fairness order of
    // PROTOCOL.md §4.2.
    let ready_sql = format!(
        "SELECT x.instance_id, MIN(x.seq) AS oldest FROM inbox x \
         JOIN instances i ON i.instance_id = x.instance_id \
         WHERE x.visible_at <= ? AND i.status NOT IN {TERMINAL_SQL} \
         GROUP BY x.instance_id ORDER BY oldest"
    );
    let ready = sqlx::query(&ready_sql)
        .bind(now_us)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("recover ready"))?
        .iter()
        .map(|row| Ok(InstanceId::new(get::<String>(row, "instance_id")?)))
        .collect::<Result<Vec<_>>>()?;
    let wakeups_sql = format!(
        "SELECT x.instance_id, MIN(x.visible_at) AS at FROM inbox x \
         JOIN instances i ON i.instance_id = x.instance_id \
         WHERE x.visible_at > ? AND i.status NOT IN {TERMINAL_SQL} \
         GROUP BY x.instance_id ORDER BY at"
    );
    let wakeups = sqlx::query(&wakeups_sql)
        .bind(now_us)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("recover wakeups"))?
        .iter()
        .map(wakeup)
        .collect::<Result<Vec<_>>>()?;
    let activities =
        sqlx::query("SELECT id, instance_id, execution_id, payload FROM activities ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error("recover activities"))?
            .iter()
            .map(activity_item)
            .collect::<Result<Vec<_>>>()?;
    Ok(Recovery {
        ready,
        wakeups,
        activities,
    })
}
