//! Purging terminal instances (PROTOCOL.md §3.11) and wiping a task hub. Deleting the
//! instance row cascades to its history, inbox and activities.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};

use super::queries::push_statuses;
use super::tx::{sql, Cx, R};
use sqlx::PgConnection;

use crate::domain::{InstanceId, RuntimeStatus};
use crate::store::codec::{purge_statuses, round_down, TERMINAL_SQL};
use crate::store::PurgeFilter;

/// Purges `id` if it is terminal; with `recursive`, also every terminal descendant found
/// through `parent_instance_id` (live descendants are kept, but the walk continues below
/// them). Returns how many instances were deleted.
pub(super) async fn purge_instance(
    conn: &mut PgConnection,
    cx: &mut Cx,
    id: &InstanceId,
    recursive: bool,
) -> R<u32> {
    let hub = cx.hub.clone();
    // The root is locked first so a concurrent commit cannot make it live meanwhile.
    let root: Option<String> = sqlx::query_scalar(
        "SELECT status FROM instances WHERE hub = $1 AND instance_id = $2 FOR UPDATE",
    )
    .bind(&hub)
    .bind(id.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(sql("purge"))?;
    let terminal = root
        .as_deref()
        .and_then(RuntimeStatus::from_name)
        .is_some_and(RuntimeStatus::is_terminal);
    if !terminal {
        return Ok(0);
    }
    let deleted: Vec<String> = if recursive {
        // UNION (not UNION ALL) de-duplicates, so even a corrupt parent cycle terminates.
        let sql_text = format!(
            "WITH RECURSIVE tree(id) AS ( \
               SELECT $2::text COLLATE \"C\" UNION \
               SELECT i.instance_id FROM instances i JOIN tree ON i.hub = $1 \
                 AND i.parent_instance_id = tree.id) \
             DELETE FROM instances WHERE hub = $1 AND instance_id IN (SELECT id FROM tree) \
               AND status IN {TERMINAL_SQL} RETURNING instance_id"
        );
        sqlx::query_scalar(&sql_text)
            .bind(&hub)
            .bind(id.as_str())
            .fetch_all(&mut *conn)
            .await
            .map_err(sql("purge"))?
    } else {
        sqlx::query_scalar(
            "DELETE FROM instances WHERE hub = $1 AND instance_id = $2 RETURNING instance_id",
        )
        .bind(&hub)
        .bind(id.as_str())
        .fetch_all(&mut *conn)
        .await
        .map_err(sql("purge"))?
    };
    for gone in &deleted {
        cx.changes.status(&InstanceId::new(gone.as_str()));
    }
    Ok(u32::try_from(deleted.len()).unwrap_or(u32::MAX))
}

/// Purges up to `batch` matching root instances. Returns (deleted, whether more roots
/// may match). Callers loop, one transaction per batch, so a large purge never holds
/// locks for long and can stop at a deadline between batches.
pub(super) async fn purge_batch(
    conn: &mut PgConnection,
    cx: &mut Cx,
    filter: &PurgeFilter,
    recursive: bool,
    batch: u32,
) -> R<(u32, bool)> {
    let Some(statuses) = purge_statuses(filter) else {
        return Ok((0, false));
    };
    let mut q: QueryBuilder<'_, Postgres> =
        QueryBuilder::new("SELECT instance_id FROM instances WHERE hub = ");
    q.push_bind(cx.hub.clone()).push(format!(
        " AND status IN {TERMINAL_SQL} AND NOT starts_with(instance_id, '@')"
    ));
    push_statuses(&mut q, &statuses);
    push_range(&mut q, filter.created_from, filter.created_to);
    if let Some(before) = filter.completed_before {
        // What ended before `before` was created before it too: the created_at bound lets
        // the (hub, status, created_at) index skip everything newer.
        let before = round_down(before);
        q.push(" AND completed_at < ")
            .push_bind(before)
            .push(" AND created_at < ")
            .push_bind(before);
    }
    if filter.roots_only {
        // A NULL parent matches no row, so top-level instances pass too; without an OR
        // around it the planner makes this an anti join on the primary key.
        q.push(
            " AND NOT EXISTS (SELECT 1 FROM instances p \
             WHERE p.hub = instances.hub AND p.instance_id = instances.parent_instance_id)",
        );
    }
    q.push(" ORDER BY created_at, instance_id LIMIT ")
        .push_bind(i64::from(batch));
    let ids: Vec<String> = q
        .build_query_scalar()
        .fetch_all(&mut *conn)
        .await
        .map_err(sql("purge select"))?;
    let mut deleted = 0u32;
    for id in &ids {
        // An earlier recursive purge in this batch may already have taken it: then 0.
        deleted = deleted.saturating_add(
            purge_instance(conn, cx, &InstanceId::new(id.as_str()), recursive).await?,
        );
    }
    Ok((deleted, ids.len() as u64 >= u64::from(batch)))
}

fn push_range(
    q: &mut QueryBuilder<'_, Postgres>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) {
    if let Some(from) = from {
        q.push(" AND created_at >= ").push_bind(round_down(from));
    }
    if let Some(to) = to {
        q.push(" AND created_at < ").push_bind(round_down(to));
    }
}

/// Deletes everything of the hub (task hub delete/recreate).
pub(super) async fn wipe(conn: &mut PgConnection, cx: &mut Cx) -> R<()> {
    let hub = cx.hub.clone();
    sqlx::query(
        "WITH a AS (DELETE FROM instances WHERE hub = $1) \
         DELETE FROM entities WHERE hub = $1",
    )
    .bind(hub)
    .execute(&mut *conn)
    .await
    .map_err(sql("wipe"))?;
    Ok(())
}
