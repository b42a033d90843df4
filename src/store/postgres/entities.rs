//! Durable entities (PROTOCOL.md §5): the entity record, its queue, one step's claim and
//! commit, and the entity client queries. An entity row is created by the first message
//! addressed to it.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::queries::Claim;
use super::rows::{get, id_list, lock_instances};
use super::tx::{sql, Cx, R};
use super::writes::{cte, note_touched, route, Outbox};
use crate::domain::{Change, EntityFilter, EntityRecord, EntityTransition, InstanceId};
use crate::proto as pb;
use crate::store::codec::{round_down, round_up, TERMINAL_SQL};
use crate::store::rows::{entity_page, entity_record, lock_owners, plan_clean};
use crate::store::{CommitOutcome, EntityWork, Lease, StoreError};

/// `Store::signal_entity`: appends a message, creating the entity row if needed.
pub(super) async fn signal(
    conn: &mut PgConnection,
    cx: &mut Cx,
    id: &InstanceId,
    event: &pb::HistoryEvent,
    visible_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> R<()> {
    let (visible, now) = (round_up(visible_at), round_down(now));
    let mut out = Outbox::default();
    out.push_entity(id, visible, event);
    out.flush(conn, cx, now).await?;
    cx.changes.message(id, visible, now);
    Ok(())
}

const RECORD_COLUMNS: &str = "e.instance_id, e.state, e.locked_by, e.critical_section, \
     e.last_modified_at, e.version, \
     (SELECT COUNT(*) FROM entity_inbox x WHERE x.hub = e.hub AND x.instance_id = e.instance_id) \
       AS backlog";

/// [`RECORD_COLUMNS`] as readers see them: a lock whose owner has ended is reported
/// released in the same snapshot as the owner's end. (The owner's final commit queues the
/// release; the entity applies it on its next step, which a reader must not have to wait
/// for.)
const READ_COLUMNS: &str = "e.instance_id, e.state, \
     CASE WHEN EXISTS (SELECT 1 FROM instances o WHERE o.hub = e.hub \
       AND o.instance_id = e.locked_by \
       AND o.status NOT IN ('COMPLETED', 'FAILED', 'TERMINATED', 'CANCELED')) \
       THEN e.locked_by END AS locked_by, \
     e.critical_section, e.last_modified_at, e.version, \
     (SELECT COUNT(*) FROM entity_inbox x WHERE x.hub = e.hub AND x.instance_id = e.instance_id) \
       AS backlog";

/// The entity record with its backlog, or `None`.
pub(super) async fn record(
    conn: &mut PgConnection,
    hub: &str,
    id: &InstanceId,
) -> R<Option<EntityRecord>> {
    let sql_text =
        format!("SELECT {READ_COLUMNS} FROM entities e WHERE e.hub = $1 AND e.instance_id = $2");
    let row = sqlx::query(&sql_text)
        .bind(hub)
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(sql("entity read"))?;
    Ok(row.as_ref().map(entity_record).transpose()?)
}

/// Visible queue messages of an entity; binds as `Claim::messages` does.
const QUEUE_READ: &str = "SELECT seq AS m_seq, visible_at AS m_visible, payload AS m_payload \
     FROM entity_inbox WHERE hub = $1 AND instance_id = $2 AND visible_at <= $3 \
     ORDER BY seq LIMIT $4";

/// `Store::entity_work`: claims the entity (as `orchestration_work` claims instances),
/// then reads its visible queue, then which of the orchestrations named by the lock and
/// lock requests are live.
#[allow(clippy::too_many_arguments)]
pub(super) async fn work(
    conn: &mut PgConnection,
    hub: &str,
    owner: &str,
    lease_ms: i64,
    id: &InstanceId,
    now: DateTime<Utc>,
    max_messages: u32,
) -> R<Option<EntityWork>> {
    let sql_text = format!(
        "UPDATE entities e SET lease_owner = $3, \
           lease_expires = clock_timestamp() + $4 * interval '1 millisecond', \
           lease_epoch = lease_epoch + 1 \
         WHERE hub = $1 AND instance_id = $2 \
           AND (lease_owner IS NULL OR lease_owner = $3 OR lease_expires < clock_timestamp()) \
         RETURNING {RECORD_COLUMNS}, e.lease_epoch"
    );
    let claim = Claim {
        hub,
        owner,
        lease_ms,
        id,
        now,
        max_messages,
    };
    let Some((rows, lease)) = claim.run(conn, &sql_text, "entity claim").await? else {
        return Ok(None);
    };
    let record = entity_record(&rows[0])?;
    // A statement of its own, after the claim: see `queries::orchestration_work`.
    let messages = claim
        .messages(conn, QUEUE_READ, "entity queue read", false)
        .await?;
    let owners = lock_owners(&record, &messages);
    let live = live(conn, hub, owners.into_iter().collect()).await?;
    Ok(Some(EntityWork {
        lease,
        record,
        messages,
        live,
    }))
}

/// Which of `ids` are orchestrations that exist and are not terminal.
async fn live(conn: &mut PgConnection, hub: &str, ids: Vec<String>) -> R<HashSet<InstanceId>> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let sql_text = format!(
        "SELECT instance_id FROM instances WHERE hub = $1 AND instance_id = ANY($2) \
         AND status NOT IN {TERMINAL_SQL}"
    );
    let live: Vec<String> = sqlx::query_scalar(&sql_text)
        .bind(hub)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(sql("entity owner read"))?;
    Ok(live.into_iter().map(InstanceId::new).collect())
}

/// Commits one entity step: the orchestrations it writes to are locked first (in id
/// order, as every write does), then the entity rows (its own and its targets', in id
/// order); the lease and the record version are checked; then one statement deletes the
/// consumed rows, updates the record, and inserts messages and started orchestrations.
/// The claim stays held until `release_entity`.
pub(super) async fn commit(
    conn: &mut PgConnection,
    cx: &mut Cx,
    t: &EntityTransition,
    lease: Lease,
) -> R<CommitOutcome> {
    let now = round_down(t.now);
    let id = &t.entity;
    let mut facts = lock_instances(
        conn,
        cx,
        id_list(
            t.messages
                .iter()
                .map(|m| &m.target)
                .filter(|target| !target.is_entity())
                .chain(t.starts.iter().map(|s| &s.instance_id)),
        ),
    )
    .await?;
    let mut entity_ids: Vec<&str> = t
        .messages
        .iter()
        .map(|m| &m.target)
        .filter(|target| target.is_entity())
        .chain([id])
        .map(InstanceId::as_str)
        .collect();
    entity_ids.sort_unstable();
    entity_ids.dedup();
    let hub = cx.hub.clone();
    let rows = sqlx::query(
        "SELECT instance_id, version, lease_owner, lease_epoch FROM entities \
         WHERE hub = $1 AND instance_id = ANY($2) ORDER BY instance_id FOR UPDATE",
    )
    .bind(&hub)
    .bind(&entity_ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(sql("entity lock"))?;
    let mut holds = false;
    for row in &rows {
        if get::<String>(row, "instance_id")? == id.as_str() {
            holds = get::<i64>(row, "version")? == t.expected_version
                && get::<Option<String>>(row, "lease_owner")?.as_deref() == Some(cx.owner.as_str())
                && get::<i64>(row, "lease_epoch")? == lease.epoch;
        }
    }
    if !holds {
        return Err(StoreError::LeaseLost(id.clone()).into());
    }

    let mut out = Outbox::default();
    let mut touched = BTreeSet::new();
    let mut replaced = Vec::new();
    for new in &t.starts {
        // Replace a terminal instance, skip a live one (PROTOCOL.md §5.3).
        match facts.get(&new.instance_id) {
            Some(existing) if !existing.inst.status.is_terminal() => {
                tracing::info!(instance_id = %new.instance_id, entity = %id, "entity start skipped: instance is live");
                continue;
            }
            Some(_) => replaced.push(new.instance_id.as_str()),
            None => {}
        }
        let visible = out.create(cx, &mut facts, new);
        if visible <= now {
            touched.insert(new.instance_id.clone());
        } else {
            cx.changes.wakeup(&new.instance_id, visible);
        }
    }
    if !replaced.is_empty() {
        sqlx::query("DELETE FROM instances WHERE hub = $1 AND instance_id = ANY($2)")
            .bind(&hub)
            .bind(&replaced)
            .execute(&mut *conn)
            .await
            .map_err(sql("entity start replace"))?;
    }
    let mut self_visible = false;
    for m in &t.messages {
        self_visible |= route(conn, cx, &mut out, &facts, id, m, now, &mut touched).await?;
    }

    let mut q: QueryBuilder<'static, Postgres> = QueryBuilder::new("");
    let mut first = true;
    out.push_ctes(&mut q, &mut first, &hub, now)?;
    cte(&mut q, &mut first, "consumed");
    q.push("DELETE FROM entity_inbox WHERE hub = ")
        .push_bind(hub.clone())
        .push(" AND instance_id = ")
        .push_bind(id.to_string())
        .push(" AND seq = ANY(")
        .push_bind(t.consumed.clone())
        .push(") RETURNING 1)");
    cte(&mut q, &mut first, "record");
    // The claim stays held: the step's batch commits next, and `release_entity` ends it.
    q.push("UPDATE entities SET version = version + 1");
    if let Change::Set(state) = &t.state {
        q.push(", state = ").push_bind(state.clone());
    }
    if let Change::Set(lock) = &t.lock {
        q.push(", locked_by = ")
            .push_bind(lock.as_ref().map(|l| l.owner.to_string()))
            .push(", critical_section = ")
            .push_bind(lock.as_ref().map(|l| l.critical_section.clone()));
    }
    if t.touch {
        q.push(", last_modified_at = ").push_bind(now);
    }
    q.push(" WHERE hub = ")
        .push_bind(hub.clone())
        .push(" AND instance_id = ")
        .push_bind(id.to_string())
        .push(")");
    q.push(" SELECT (SELECT COUNT(*) FROM consumed) AS deleted, EXISTS (SELECT 1 FROM entity_inbox WHERE hub = ")
        .push_bind(hub)
        .push(" AND instance_id = ")
        .push_bind(id.to_string())
        .push(" AND visible_at <= ")
        .push_bind(now)
        .push(" AND NOT (seq = ANY(")
        .push_bind(t.consumed.clone())
        .push("))) AS visible");
    let row = q
        .build()
        .fetch_one(&mut *conn)
        .await
        .map_err(sql("entity commit"))?;
    if get::<i64>(&row, "deleted")? != t.consumed.len() as i64 {
        // Rows the step planned with are gone (the entity was purged meanwhile): the
        // transaction rolls back.
        return Err(StoreError::LeaseLost(id.clone()).into());
    }
    // No Ready for the entity itself: it stays claimed, and `release_entity` says so.
    let has_visible_inbox = get::<bool>(&row, "visible")? || self_visible;
    note_touched(cx, &touched);
    Ok(CommitOutcome {
        activities: Vec::new(),
        has_visible_inbox,
        touched: touched.into_iter().collect(),
        activities_claimed: false,
    })
}

/// One page of entities for `QueryEntities`, ordered by id.
pub(super) async fn query(
    conn: &mut PgConnection,
    hub: &str,
    filter: &EntityFilter,
) -> R<Vec<EntityRecord>> {
    let mut q = QueryBuilder::new(format!(
        "SELECT {READ_COLUMNS} FROM entities e WHERE e.hub = "
    ));
    q.push_bind(hub.to_owned());
    if let Some(prefix) = &filter.id_prefix {
        q.push(" AND starts_with(e.instance_id, ")
            .push_bind(prefix.clone())
            .push(")");
    }
    if let Some(from) = filter.modified_from {
        q.push(" AND e.last_modified_at >= ")
            .push_bind(round_down(from));
    }
    if let Some(to) = filter.modified_to {
        q.push(" AND e.last_modified_at < ")
            .push_bind(round_down(to));
    }
    if let Some(after) = &filter.after {
        q.push(" AND e.instance_id > ").push_bind(after.clone());
    }
    q.push(" ORDER BY e.instance_id");
    let rows = q
        .build()
        .fetch_all(&mut *conn)
        .await
        .map_err(sql("entity query"))?;
    Ok(entity_page(&rows, filter)?)
}

/// `CleanEntityStorage` over one page of entity ids after `after`: deletes empty
/// entities (no state, no lock, no backlog) and releases locks whose owner is gone or
/// terminal. Returns (removed, released, last id looked at when more may follow,
/// entities whose queue can move again).
pub(super) async fn clean(
    conn: &mut PgConnection,
    cx: &mut Cx,
    after: Option<&str>,
    limit: u32,
    remove_empty: bool,
    release_orphans: bool,
) -> R<(u32, u32, Option<String>, Vec<InstanceId>)> {
    let hub = cx.hub.clone();
    let sql_text = format!(
        "SELECT {RECORD_COLUMNS} FROM entities e WHERE e.hub = $1 \
         AND ($2::text IS NULL OR e.instance_id > $2) ORDER BY e.instance_id LIMIT $3 \
         FOR UPDATE OF e"
    );
    let rows = sqlx::query(&sql_text)
        .bind(&hub)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(sql("entity clean"))?;
    let records = rows
        .iter()
        .map(entity_record)
        .collect::<Result<Vec<_>, _>>()?;
    let owners = records
        .iter()
        .filter_map(|r| r.lock.as_ref().map(|l| l.owner.to_string()))
        .collect();
    let live = live(&mut *conn, &hub, owners).await?;
    let plan = plan_clean(&records, &live, limit, remove_empty, release_orphans);
    let unlock = id_list(&plan.unlock);
    let remove = id_list(&plan.remove);
    // Two statements: one statement must not both update and delete a row.
    if !unlock.is_empty() {
        sqlx::query(
            "UPDATE entities SET locked_by = NULL, critical_section = NULL, \
               version = version + 1 WHERE hub = $1 AND instance_id = ANY($2)",
        )
        .bind(&hub)
        .bind(&unlock)
        .execute(&mut *conn)
        .await
        .map_err(sql("entity clean"))?;
    }
    if !remove.is_empty() {
        sqlx::query("DELETE FROM entities WHERE hub = $1 AND instance_id = ANY($2)")
            .bind(&hub)
            .bind(&remove)
            .execute(&mut *conn)
            .await
            .map_err(sql("entity clean"))?;
    }
    for id in &plan.unblocked {
        cx.changes.ready(id);
    }
    Ok((
        remove.len() as u32,
        unlock.len() as u32,
        plan.next,
        plan.unblocked,
    ))
}

/// Purge by id of an entity: deletes it when it has no lock and no backlog.
pub(super) async fn purge(conn: &mut PgConnection, cx: &mut Cx, id: &InstanceId) -> R<u32> {
    let hub = cx.hub.clone();
    let deleted = sqlx::query(
        "DELETE FROM entities e WHERE hub = $1 AND instance_id = $2 AND locked_by IS NULL \
           AND NOT EXISTS (SELECT 1 FROM entity_inbox x \
             WHERE x.hub = e.hub AND x.instance_id = e.instance_id)",
    )
    .bind(hub)
    .bind(id.as_str())
    .execute(&mut *conn)
    .await
    .map_err(sql("entity purge"))?
    .rows_affected();
    Ok(u32::try_from(deleted).unwrap_or(u32::MAX))
}
