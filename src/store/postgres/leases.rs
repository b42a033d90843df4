//! Ownership of work between processes (STYLE.md §15): giving claims back, claiming
//! activities, renewing every claim of this owner. Claims of instances and entities are
//! taken by `orchestration_work`/`entity_work`; commits check and release them. Every
//! expiry is computed and compared on the DATABASE clock, so nodes with skewed clocks
//! agree on who holds what; `clock_timestamp()`, not `now()` (the transaction's start), so
//! a claim that waited on a lock does not write an expiry that has already passed.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::notify::{Changes, CHANNEL};
use super::tx::{sql, R};
use crate::domain::InstanceId;
use crate::store::codec::round_down;
use crate::store::Lease;

/// Releases an instance (`entity` = false) or entity claim when this owner still holds
/// it at `lease`'s epoch, and in the same statement notifies `Ready` when a message is
/// visible at `now` (another node may take it at once).
#[allow(clippy::too_many_arguments)]
pub(super) async fn release(
    conn: &mut PgConnection,
    hub: &str,
    owner: &str,
    entity: bool,
    id: &InstanceId,
    lease: Lease,
    now: DateTime<Utc>,
) -> R<()> {
    let (table, queue) = if entity {
        ("entities", "entity_inbox")
    } else {
        ("instances", "inbox")
    };
    let mut changes = Changes::default();
    changes.ready(id);
    let sql_text = format!(
        "WITH released AS (UPDATE {table} SET lease_owner = NULL, lease_expires = NULL \
           WHERE hub = $1 AND instance_id = $2 AND lease_owner = $3 AND lease_epoch = $4 \
           RETURNING instance_id) \
         SELECT pg_notify($6, $7) FROM released WHERE EXISTS (SELECT 1 FROM {queue} \
           WHERE hub = $1 AND instance_id = $2 AND visible_at <= $5)"
    );
    sqlx::query(&sql_text)
        .bind(hub)
        .bind(id.as_str())
        .bind(owner)
        .bind(lease.epoch)
        .bind(round_down(now))
        .bind(CHANNEL)
        .bind(changes.payloads(hub, owner).concat())
        .fetch_optional(&mut *conn)
        .await
        .map_err(sql("release claim"))?;
    Ok(())
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
        // SKIP LOCKED: several sidecars hear of the same new activities and try to claim
        // them at once; a row another one is claiming (or completing) is theirs, so
        // skip it rather than queue behind its lock.
        "UPDATE activities SET lease_owner = $3, \
           lease_expires = clock_timestamp() + $4 * interval '1 millisecond', lease_epoch = lease_epoch + 1 \
         WHERE hub = $1 AND id IN (SELECT id FROM activities WHERE hub = $1 AND id = ANY($2) \
           AND (lease_owner IS NULL OR lease_owner = $3 OR lease_expires < clock_timestamp()) \
           FOR UPDATE SKIP LOCKED) \
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

/// Gives an activity claim of this owner back, telling other nodes it can be sent.
pub(super) async fn release_activity(
    conn: &mut PgConnection,
    hub: &str,
    owner: &str,
    id: i64,
) -> R<()> {
    let mut changes = Changes::default();
    changes.activities();
    sqlx::query(
        "WITH released AS (UPDATE activities SET lease_owner = NULL, lease_expires = NULL \
           WHERE hub = $1 AND id = $2 AND lease_owner = $3 RETURNING id) \
         SELECT pg_notify($4, $5) FROM released",
    )
    .bind(hub)
    .bind(id)
    .bind(owner)
    .bind(CHANNEL)
    .bind(changes.payloads(hub, owner).concat())
    .fetch_optional(&mut *conn)
    .await
    .map_err(sql("release activity"))?;
    Ok(())
}

/// Extends every claim of this owner by the lease duration: three updates in one
/// statement (one round trip, one transaction).
pub(super) async fn renew(conn: &mut PgConnection, hub: &str, owner: &str, lease_ms: i64) -> R<()> {
    sqlx::query(
        "WITH i AS (UPDATE instances SET lease_expires = clock_timestamp() + $3 * interval '1 millisecond' \
           WHERE hub = $1 AND lease_owner = $2), \
         e AS (UPDATE entities SET lease_expires = clock_timestamp() + $3 * interval '1 millisecond' \
           WHERE hub = $1 AND lease_owner = $2) \
         UPDATE activities SET lease_expires = clock_timestamp() + $3 * interval '1 millisecond' \
           WHERE hub = $1 AND lease_owner = $2",
    )
    .bind(hub)
    .bind(owner)
    .bind(lease_ms)
    .execute(&mut *conn)
    .await
    .map_err(sql("renew leases"))?;
    Ok(())
}
