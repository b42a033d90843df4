//! Purging terminal instances (PROTOCOL.md §3.11). Deleting the instance row cascades to
//! its history, inbox and activities (see the first migration).

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::codec::{db_error, micros, TERMINAL_SQL};
use super::hot::Hot;
use super::queries::push_statuses;
use super::writer::with_direct;
use crate::domain::InstanceId;
use crate::store::codec::purge_statuses;
use crate::store::{PurgeFilter, Result};

/// Purges `id` if it is terminal; with `recursive`, also every terminal descendant found
/// through `parent_instance_id` (live descendants are kept, but the walk continues below
/// them). Returns how many instances were deleted.
pub(super) async fn purge_instance(
    conn: &mut SqliteConnection,
    hot: &Hot,
    id: &InstanceId,
    recursive: bool,
) -> Result<u32> {
    // Only terminal instances are purged, and the cache holds live ones; the descendants
    // deleted below are terminal too, so no cached entry goes stale.
    match with_direct(conn, |c| hot.state(c, id)).await? {
        Some(root) if root.status.is_terminal() => {}
        _ => return Ok(0),
    }
    let deleted = if recursive {
        // UNION (not UNION ALL) de-duplicates, so even a corrupt parent cycle terminates.
        // `+status` keeps SQLite off the status index: with it, every purge scanned all
        // terminal instances instead of looking the tree's ids up by primary key.
        let sql = format!(
            "WITH RECURSIVE tree(id) AS ( \
               SELECT ? UNION \
               SELECT i.instance_id FROM instances i JOIN tree ON i.parent_instance_id = tree.id) \
             DELETE FROM instances WHERE instance_id IN (SELECT id FROM tree) AND +status IN {TERMINAL_SQL}"
        );
        sqlx::query(&sql)
            .bind(id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(db_error("purge"))?
            .rows_affected()
    } else {
        sqlx::query("DELETE FROM instances WHERE instance_id = ?")
            .bind(id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(db_error("purge"))?
            .rows_affected()
    };
    Ok(u32::try_from(deleted).unwrap_or(u32::MAX))
}

/// Purges up to `batch` matching root instances. Returns (deleted, whether more roots
/// may match). Callers loop, one writer request per batch, so a large purge never holds
/// the writer for long and can stop at a deadline between batches.
pub(super) async fn purge_batch(
    conn: &mut SqliteConnection,
    hot: &Hot,
    filter: &PurgeFilter,
    recursive: bool,
    batch: u32,
) -> Result<(u32, bool)> {
    let Some(statuses) = purge_statuses(filter) else {
        return Ok((0, false));
    };
    let mut q: QueryBuilder<'_, Sqlite> = QueryBuilder::new(format!(
        "SELECT instance_id FROM instances WHERE status IN {TERMINAL_SQL} AND substr(instance_id, 1, 1) <> '@'"
    ));
    push_statuses(&mut q, &statuses);
    if let Some(from) = filter.created_from {
        q.push(" AND created_at >= ").push_bind(micros(from));
    }
    if let Some(to) = filter.created_to {
        q.push(" AND created_at < ").push_bind(micros(to));
    }
    if let Some(before) = filter.completed_before {
        // What ended before `before` was created before it too: the created_at bound lets
        // the (status, created_at) index skip everything newer.
        q.push(" AND completed_at < ")
            .push_bind(micros(before))
            .push(" AND created_at < ")
            .push_bind(micros(before));
    }
    if filter.roots_only {
        // A NULL parent matches no row, so top-level instances pass too.
        q.push(
            " AND NOT EXISTS \
             (SELECT 1 FROM instances p WHERE p.instance_id = instances.parent_instance_id)",
        );
    }
    q.push(" ORDER BY created_at, instance_id LIMIT ")
        .push_bind(i64::from(batch));
    let ids: Vec<String> = q
        .build_query_scalar()
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("purge select"))?;
    let mut deleted = 0u32;
    for id in &ids {
        // An earlier recursive purge in this batch may already have taken it: then 0.
        deleted = deleted.saturating_add(
            purge_instance(conn, hot, &InstanceId::new(id.as_str()), recursive).await?,
        );
    }
    Ok((deleted, ids.len() as u64 >= u64::from(batch)))
}

/// Deletes everything (task hub delete/recreate).
pub(super) async fn wipe(conn: &mut SqliteConnection) -> Result<()> {
    // Children first is not needed (cascade), but explicit deletes are cheaper than
    // cascading row by row.
    for sql in [
        "DELETE FROM history",
        "DELETE FROM inbox",
        "DELETE FROM activities",
        "DELETE FROM instances",
        "DELETE FROM entity_inbox",
        "DELETE FROM entities",
    ] {
        sqlx::query(sql)
            .execute(&mut *conn)
            .await
            .map_err(db_error("wipe"))?;
    }
    Ok(())
}
