//! Ownership of work between processes (STYLE.md §15): giving claims back, claiming
//! activities, renewing every claim of this owner. Claims of instances and entities are
//! taken by `orchestration_work`/`entity_work`; commits check and release them. Every
//! expiry is computed and compared on the DATABASE clock, so nodes with skewed clocks
//! agree on who holds what; `clock_timestamp()`, not `now()` (the transaction's start), so
//! a claim that waited on a lock does not write an expiry that has already passed.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::tx::{sql, R};
use crate::domain::InstanceId;
use crate::store::codec::round_down;
use crate::store::Lease;

/// Releases an instance (`entity` = false) or entity claim when this owner still holds
/// it at `lease`'s epoch; returns whether it did and a message is visible at `now` (so
/// another node may take it at once).
#[allow(clippy::too_many_arguments)]
pub(super) async fn release(
    conn: &mut PgConnection,
    hub: &str,
    owner: &str,
    entity: bool,
    id: &InstanceId,
    lease: Lease,
    now: DateTime<Utc>,
) -> R<bool> {
    let (table, queue) = if entity {
        ("entities", "entity_inbox")
    } else {
        ("instances", "inbox")
    };
    let sql_text = format!(
        "UPDATE {table} SET lease_owner = NULL, lease_expires = NULL \
         WHERE hub = $1 AND instance_id = $2 AND lease_owner = $3 AND lease_epoch = $4 \
         RETURNING EXISTS (SELECT 1 FROM {queue} \
           WHERE hub = $1 AND instance_id = $2 AND visible_at <= $5) AS waiting"
    );
    let waiting: Option<bool> = sqlx::query_scalar(&sql_text)
        .bind(hub)
        .bind(id.as_str())
        .bind(owner)
        .bind(lease.epoch)
        .bind(round_down(now))
        .fetch_optional(&mut *conn)
        .await
        .map_err(sql("release claim"))?;
    Ok(waiting == Some(true))
}

/// Claims the activity rows that are unclaimed, expired or already this owner's; returns
/// their ids in the order given.
pub(super) async fn claim_activities(
    conn: &mut PgConnection,
    hub: &str,
    owner: &str,
    lease_ms: i64,
    ids: &[i64],
) -> R<Vec<i64>> {
    let claimed: Vec<i64> = sqlx::query_scalar(
        // A plain keyed update: the rows are locked in key order (no deadlock between
        // two claimers), and one that another sidecar is claiming or completing is
        // waited for (one short statement) and then judged as it is. A `SKIP LOCKED`
        // subquery would not wait, but the planner joins it back with a scan of the
        // whole table, which under churn is far slower than the wait.
        "UPDATE activities SET lease_owner = $3, \
           lease_expires = clock_timestamp() + $4 * interval '1 millisecond', lease_epoch = lease_epoch + 1 \
         WHERE hub = $1 AND id = ANY($2) \
           AND (lease_owner IS NULL OR lease_owner = $3 OR lease_expires < clock_timestamp()) \
         RETURNING id",
    )
    .bind(hub)
    .bind(ids)
    .bind(owner)
    .bind(lease_ms)
    .fetch_all(&mut *conn)
    .await
    .map_err(sql("claim activities"))?;
    Ok(ids
        .iter()
        .copied()
        .filter(|id| claimed.contains(id))
        .collect())
}

/// Gives activity claims of this owner back; returns whether it held any. `unsent`:
/// only claims still as the creating commit made them (epoch 0: every claim since
/// increments it).
pub(super) async fn release_activities(
    conn: &mut PgConnection,
    hub: &str,
    owner: &str,
    ids: &[i64],
    unsent: bool,
) -> R<bool> {
    let released = sqlx::query(
        "UPDATE activities SET lease_owner = NULL, lease_expires = NULL \
         WHERE hub = $1 AND id = ANY($2) AND lease_owner = $3 AND (NOT $4 OR lease_epoch = 0)",
    )
    .bind(hub)
    .bind(ids)
    .bind(owner)
    .bind(unsent)
    .execute(&mut *conn)
    .await
    .map_err(sql("release activity"))?;
    Ok(released.rows_affected() > 0)
}

/// Extends this owner's claims on the named instances and entities, and on every
/// activity row it holds, by the lease duration: three updates in one statement (one
/// round trip, one transaction).
pub(super) async fn renew(
    conn: &mut PgConnection,
    hub: &str,
    owner: &str,
    lease_ms: i64,
    instances: &[String],
    entities: &[String],
) -> R<()> {
    sqlx::query(
        "WITH i AS (UPDATE instances SET lease_expires = clock_timestamp() + $3 * interval '1 millisecond' \
           WHERE hub = $1 AND instance_id = ANY($4) AND lease_owner = $2), \
         e AS (UPDATE entities SET lease_expires = clock_timestamp() + $3 * interval '1 millisecond' \
           WHERE hub = $1 AND instance_id = ANY($5) AND lease_owner = $2) \
         UPDATE activities SET lease_expires = clock_timestamp() + $3 * interval '1 millisecond' \
           WHERE hub = $1 AND lease_owner = $2",
    )
    .bind(hub)
    .bind(owner)
    .bind(lease_ms)
    .bind(instances)
    .bind(entities)
    .execute(&mut *conn)
    .await
    .map_err(sql("renew leases"))?;
    Ok(())
}

/// Gives back every claim of this owner (graceful shutdown): the named instances and
/// entities, and its activity rows, so other nodes take them over at once instead of
/// after the lease expires. Returns whether activities were released.
pub(super) async fn release_all(
    conn: &mut PgConnection,
    hub: &str,
    owner: &str,
    instances: &[String],
    entities: &[String],
) -> R<bool> {
    let released: i64 = sqlx::query_scalar(
        "WITH i AS (UPDATE instances SET lease_owner = NULL, lease_expires = NULL \
           WHERE hub = $1 AND instance_id = ANY($3) AND lease_owner = $2), \
         e AS (UPDATE entities SET lease_owner = NULL, lease_expires = NULL \
           WHERE hub = $1 AND instance_id = ANY($4) AND lease_owner = $2), \
         a AS (UPDATE activities SET lease_owner = NULL, lease_expires = NULL \
           WHERE hub = $1 AND lease_owner = $2 RETURNING id) \
         SELECT count(*) FROM a",
    )
    .bind(hub)
    .bind(owner)
    .bind(instances)
    .bind(entities)
    .fetch_one(&mut *conn)
    .await
    .map_err(sql("release claims"))?;
    Ok(released > 0)
}
