//! Reads: instance records, histories, episode snapshots (with their claim), paged
//! queries, and the recovery and due-work sweeps.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::rows::{get, INSTANCE_COLUMNS};
use super::tx::{sql, R};
use crate::domain::{ExecutionId, InstanceId, InstanceRecord, RuntimeStatus};
use crate::proto as pb;
use crate::store::codec::{decode_event, round_down, TERMINAL_SQL};
use crate::store::rows::{
    activity_item, completed, history_is_current, inbox_messages, instance_record, wakeup,
};
use crate::store::{CompletedFilter, InstanceFilter, Lease, OrchestrationWork, Recovery};

/// The record of `id`, if any.
pub(super) async fn instance(
    conn: &mut PgConnection,
    hub: &str,
    id: &InstanceId,
) -> R<Option<InstanceRecord>> {
    let sql_text =
        format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE hub = $1 AND instance_id = $2");
    let row = sqlx::query(&sql_text)
        .bind(hub)
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(sql("instance read"))?;
    Ok(row.as_ref().map(instance_record).transpose()?)
}

/// The current execution's history, in order.
async fn events(conn: &mut PgConnection, hub: &str, id: &InstanceId) -> R<Vec<pb::HistoryEvent>> {
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT payload FROM history WHERE hub = $1 AND instance_id = $2 ORDER BY seq",
    )
    .bind(hub)
    .bind(id.as_str())
    .fetch_all(&mut *conn)
    .await
    .map_err(sql("history read"))?;
    Ok(payloads
        .iter()
        .map(|p| decode_event(p))
        .collect::<Result<_, _>>()?)
}

/// `Store::history`: the execution and its events in one statement (one snapshot).
pub(super) async fn history(
    conn: &mut PgConnection,
    hub: &str,
    id: &InstanceId,
) -> R<Option<(ExecutionId, Vec<pb::HistoryEvent>)>> {
    let rows = sqlx::query(
        "SELECT i.execution_id, h.payload FROM instances i \
         LEFT JOIN history h ON h.hub = i.hub AND h.instance_id = i.instance_id \
         WHERE i.hub = $1 AND i.instance_id = $2 ORDER BY h.seq",
    )
    .bind(hub)
    .bind(id.as_str())
    .fetch_all(&mut *conn)
    .await
    .map_err(sql("history read"))?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let execution = ExecutionId::new(get::<String>(first, "execution_id")?);
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(payload) = get::<Option<Vec<u8>>>(row, "payload")? {
            events.push(decode_event(&payload)?);
        }
    }
    Ok(Some((execution, events)))
}

/// `Store::orchestration_work`: claims the instance (the record comes back with the
/// claim), then reads the visible messages, then the history only when the caller's
/// cached copy is not current. The reads must be statements of their own: a claim that
/// waited for another sidecar's commit on the row sees that commit's row, but the rest of
/// its statement would still read the snapshot from before it, and deliver messages that
/// commit consumed. Once the claim is held, no other owner can commit the instance. `None` for unknown or
/// terminal instances and for instances another owner holds a live lease on.
///
/// The claim succeeds when the row is unleased, leased by this owner, or its lease
/// expired by the database clock; every claim bumps the epoch (the fencing token). A
/// history read racing a change of the instance is harmless: the commit's guard fails.
#[allow(clippy::too_many_arguments)]
pub(super) async fn orchestration_work(
    conn: &mut PgConnection,
    hub: &str,
    owner: &str,
    lease_ms: i64,
    id: &InstanceId,
    now: DateTime<Utc>,
    max_messages: u32,
    cached: Option<&(ExecutionId, u32)>,
) -> R<Option<OrchestrationWork>> {
    let sql_text = format!(
        "UPDATE instances SET lease_owner = $3, \
           lease_expires = clock_timestamp() + $4 * interval '1 millisecond', \
           lease_epoch = lease_epoch + 1 \
         WHERE hub = $1 AND instance_id = $2 AND status NOT IN {TERMINAL_SQL} \
           AND (lease_owner IS NULL OR lease_owner = $3 OR lease_expires < clock_timestamp()) \
         RETURNING {INSTANCE_COLUMNS}, lease_epoch"
    );
    let claim = Claim {
        hub,
        owner,
        lease_ms,
        id,
        now,
        max_messages,
    };
    let Some((rows, lease)) = claim.run(conn, &sql_text, "episode claim").await? else {
        return Ok(None);
    };
    let record = instance_record(&rows[0])?;
    let messages = claim
        .messages(conn, INBOX_READ, "episode inbox read", true)
        .await?;
    let history = if history_is_current(cached, &record) {
        None
    } else {
        Some(events(conn, hub, id).await?)
    };
    Ok(Some(OrchestrationWork {
        lease,
        record,
        history,
        messages,
    }))
}

/// Visible messages of an instance, in order; binds as [`Claim::messages`] does.
const INBOX_READ: &str = "SELECT seq AS m_seq, target_execution AS m_target, \
       visible_at AS m_visible, payload AS m_payload FROM inbox \
     WHERE hub = $1 AND instance_id = $2 AND visible_at <= $3 ORDER BY seq LIMIT $4";

/// The arguments of a claim statement, as `orchestration_work` and `entity_work` bind
/// them: `$1` hub, `$2` id, `$3` owner, `$4` lease in ms; the message read that follows
/// uses `now` and `max_messages`.
pub(super) struct Claim<'a> {
    pub(super) hub: &'a str,
    pub(super) owner: &'a str,
    pub(super) lease_ms: i64,
    pub(super) id: &'a InstanceId,
    pub(super) now: DateTime<Utc>,
    pub(super) max_messages: u32,
}

impl Claim<'_> {
    /// Runs the claim statement `sql_text`: the claimed row and the lease its
    /// `lease_epoch` grants, or `None` when nothing was claimed.
    pub(super) async fn run(
        &self,
        conn: &mut PgConnection,
        sql_text: &str,
        op: &'static str,
    ) -> R<Option<(Vec<PgRow>, Lease)>> {
        let rows = sqlx::query(sql_text)
            .bind(self.hub)
            .bind(self.id.as_str())
            .bind(self.owner)
            .bind(self.lease_ms)
            .fetch_all(&mut *conn)
            .await
            .map_err(sql(op))?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let epoch: i64 = get(first, "lease_epoch")?;
        Ok(Some((rows, Lease { epoch })))
    }

    /// Reads the claimed item's visible messages with `sql_text` (a fresh statement, so
    /// it sees every commit the claim waited for); binds `$1` hub, `$2` id, `$3` now,
    /// `$4` most messages.
    pub(super) async fn messages(
        &self,
        conn: &mut PgConnection,
        sql_text: &str,
        op: &'static str,
        targeted: bool,
    ) -> R<Vec<crate::store::InboxMessage>> {
        let rows = sqlx::query(sql_text)
            .bind(self.hub)
            .bind(self.id.as_str())
            .bind(round_down(self.now))
            .bind(i64::from(self.max_messages))
            .fetch_all(&mut *conn)
            .await
            .map_err(sql(op))?;
        Ok(inbox_messages(&rows, targeted)?)
    }
}

/// Adds `AND status = ANY(...)` for a non-empty list.
pub(super) fn push_statuses(q: &mut QueryBuilder<'_, Postgres>, statuses: &[RuntimeStatus]) {
    if statuses.is_empty() {
        return;
    }
    q.push(" AND status = ANY(")
        .push_bind(statuses.iter().map(|s| s.name()).collect::<Vec<_>>())
        .push(")");
}

/// Adds the conditions of `f` other than its cursor: statuses, created window, id prefix,
/// name. Entity ids (`@…`) are excluded by the caller's base statement.
fn push_instance_filter(q: &mut QueryBuilder<'_, Postgres>, f: &InstanceFilter) {
    push_statuses(q, &f.statuses);
    if let Some(from) = f.created_from {
        q.push(" AND created_at >= ").push_bind(round_down(from));
    }
    if let Some(to) = f.created_to {
        q.push(" AND created_at < ").push_bind(round_down(to));
    }
    if let Some(prefix) = f.id_prefix.as_deref().filter(|p| !p.is_empty()) {
        // starts_with compares code points exactly; LIKE would need escaping.
        q.push(" AND starts_with(instance_id, ")
            .push_bind(prefix.to_owned())
            .push(")");
    }
    if let Some(name) = f.name.as_deref() {
        q.push(" AND name = ").push_bind(name.to_owned());
    }
}

/// `Store::query_instances`: keyset page ordered by (created_at, instance_id), ascending
/// or (`newest_first`) descending; entity ids (`@…`) are never returned.
pub(super) async fn query_instances(
    conn: &mut PgConnection,
    hub: &str,
    f: &InstanceFilter,
) -> R<Vec<InstanceRecord>> {
    let mut q = QueryBuilder::new(format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances WHERE hub = "
    ));
    q.push_bind(hub.to_owned())
        .push(" AND NOT starts_with(instance_id, '@')");
    push_instance_filter(&mut q, f);
    let (after, order) = if f.newest_first {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some((created, after_id)) = &f.after {
        q.push(format!(" AND (created_at, instance_id) {after} ("))
            .push_bind(round_down(*created))
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
        .map_err(sql("query instances"))?;
    Ok(rows.iter().map(instance_record).collect::<Result<_, _>>()?)
}

/// `Store::count_instances`: how many instances match `f` (cursor and limit ignored), per
/// status.
pub(super) async fn count_instances(
    conn: &mut PgConnection,
    hub: &str,
    f: &InstanceFilter,
) -> R<Vec<(RuntimeStatus, u64)>> {
    let mut q = QueryBuilder::new("SELECT status, COUNT(*) FROM instances WHERE hub = ");
    q.push_bind(hub.to_owned())
        .push(" AND NOT starts_with(instance_id, '@')");
    push_instance_filter(&mut q, f);
    q.push(" GROUP BY status");
    let rows: Vec<(String, i64)> = q
        .build_query_as()
        .fetch_all(&mut *conn)
        .await
        .map_err(sql("count instances"))?;
    Ok(crate::store::rows::status_counts(rows))
}

/// `Store::list_completed`: terminal instances ordered by (completed_at, instance_id).
pub(super) async fn list_completed(
    conn: &mut PgConnection,
    hub: &str,
    f: &CompletedFilter,
) -> R<Vec<(InstanceId, DateTime<Utc>)>> {
    let mut q = QueryBuilder::new("SELECT instance_id, completed_at FROM instances WHERE hub = ");
    q.push_bind(hub.to_owned()).push(format!(
        " AND completed_at IS NOT NULL AND status IN {TERMINAL_SQL} \
         AND NOT starts_with(instance_id, '@')"
    ));
    push_statuses(&mut q, &f.statuses);
    if let Some(from) = f.completed_from {
        q.push(" AND completed_at >= ").push_bind(round_down(from));
    }
    if let Some(to) = f.completed_to {
        q.push(" AND completed_at < ").push_bind(round_down(to));
    }
    if let Some((completed, after_id)) = &f.after {
        q.push(" AND (completed_at, instance_id) > (")
            .push_bind(round_down(*completed))
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
        .map_err(sql("list completed"))?;
    Ok(rows.iter().map(completed).collect::<Result<_, _>>()?)
}

/// The sweep behind `Store::recover` (`limit` = `None`: everything) and
/// `Store::due_work`: instances and entities with a visible message and no live foreign
/// lease (oldest message first, the fairness order of PROTOCOL.md §4.2), when the others
/// wake (until `horizon`, if given), and activities nobody else holds a live claim on
/// (with `own_activities`, this owner's claims too).
#[allow(clippy::too_many_arguments)]
pub(super) async fn sweep(
    conn: &mut PgConnection,
    hub: &str,
    owner: &str,
    now: DateTime<Utc>,
    horizon: Option<DateTime<Utc>>,
    limit: Option<u32>,
    own_activities: bool,
) -> R<Recovery> {
    let now = round_down(now);
    let limit = limit.map_or(i64::MAX, i64::from);
    let free =
        "(o.lease_owner IS NULL OR o.lease_owner = $2 OR o.lease_expires < clock_timestamp())";
    let ready_sql = format!(
        "SELECT instance_id FROM ( \
           (SELECT x.instance_id, MIN(x.seq) AS oldest, 0 AS kind FROM inbox x \
            JOIN instances o ON o.hub = x.hub AND o.instance_id = x.instance_id \
            WHERE x.hub = $1 AND x.visible_at <= $3 AND o.status NOT IN {TERMINAL_SQL} \
              AND {free} \
            GROUP BY x.instance_id ORDER BY oldest LIMIT $4) \
           UNION ALL \
           (SELECT x.instance_id, MIN(x.seq), 1 FROM entity_inbox x \
            JOIN entities o ON o.hub = x.hub AND o.instance_id = x.instance_id \
            WHERE x.hub = $1 AND x.visible_at <= $3 AND {free} \
            GROUP BY x.instance_id ORDER BY MIN(x.seq) LIMIT $4) \
         ) AS due ORDER BY kind, oldest"
    );
    let ready = sqlx::query_scalar::<_, String>(&ready_sql)
        .bind(hub)
        .bind(owner)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(sql("sweep ready"))?
        .into_iter()
        .map(InstanceId::new)
        .collect();
    let wakeups_sql = format!(
        "SELECT instance_id, at FROM ( \
           (SELECT x.instance_id, MIN(x.visible_at) AS at FROM inbox x \
            JOIN instances i ON i.hub = x.hub AND i.instance_id = x.instance_id \
            WHERE x.hub = $1 AND x.visible_at > $2 AND ($3::timestamptz IS NULL OR x.visible_at <= $3) \
              AND i.status NOT IN {TERMINAL_SQL} \
            GROUP BY x.instance_id ORDER BY at LIMIT $4) \
           UNION ALL \
           (SELECT instance_id, MIN(visible_at) AS at FROM entity_inbox \
            WHERE hub = $1 AND visible_at > $2 AND ($3::timestamptz IS NULL OR visible_at <= $3) \
            GROUP BY instance_id ORDER BY at LIMIT $4) \
         ) AS later ORDER BY at"
    );
    let wakeups = sqlx::query(&wakeups_sql)
        .bind(hub)
        .bind(now)
        .bind(horizon)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(sql("sweep wakeups"))?
        .iter()
        .map(wakeup)
        .collect::<Result<Vec<_>, _>>()?;
    let mine = if own_activities {
        " OR lease_owner = $2"
    } else {
        ""
    };
    let activities_sql = format!(
        "SELECT id, instance_id, execution_id, payload FROM activities \
         WHERE hub = $1 AND (lease_owner IS NULL OR lease_expires < clock_timestamp(){mine}) \
         ORDER BY id LIMIT $3"
    );
    let activities = sqlx::query(&activities_sql)
        .bind(hub)
        .bind(owner)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(sql("sweep activities"))?
        .iter()
        .map(activity_item)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Recovery {
        ready,
        wakeups,
        activities,
    })
}
