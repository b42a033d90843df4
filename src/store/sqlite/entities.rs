//! Durable entities (PROTOCOL.md §5): the entity record, its queue, one step's commit,
//! and the entity client queries. An entity row is created by the first message
//! addressed to it; every function runs inside the writer's savepoint or a read snapshot.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use sqlx::SqliteConnection;

use super::codec::{db_error, encode, micros, sq_error, visible_micros};
use super::hot::Hot;
use super::{inbox, instances};
use crate::domain::rules;
use crate::domain::{
    Change, EntityFilter, EntityRecord, EntityTransition, InstanceId, OutboundMessage,
};
use crate::proto as pb;
use crate::store::rows::{
    entity_page, entity_record, inbox_messages, lock_owners, plan_clean, wakeup,
};
use crate::store::{CommitOutcome, EntityWork, Lease, Result, StoreError};

/// Appends a message to an entity's queue, creating the entity row if needed.
pub(super) fn enqueue(
    conn: &Connection,
    target: &InstanceId,
    visible_at_us: i64,
    event: &pb::HistoryEvent,
    now_us: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO entities (instance_id, last_modified_at) VALUES (?, ?) \
           ON CONFLICT (instance_id) DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![target.as_str(), now_us]))
    .map_err(sq_error("entity enqueue"))?;
    conn.prepare_cached(
        "INSERT INTO entity_inbox (instance_id, visible_at, payload) VALUES (?, ?, ?)",
    )
    .and_then(|mut s| s.execute(params![target.as_str(), visible_at_us, encode(event)]))
    .map_err(sq_error("entity enqueue"))?;
    Ok(())
}

/// Routes one outbound message: entity targets go to the entity queue (always accepted),
/// orchestration targets through the orchestration inbox rules (§4.5). Visible targets
/// other than `committing` land in `touched`.
pub(super) fn route(
    conn: &Connection,
    hot: &Hot,
    committing: &InstanceId,
    message: &OutboundMessage,
    now_us: i64,
    touched: &mut BTreeSet<InstanceId>,
) -> Result<()> {
    let stored = if message.target.is_entity() {
        enqueue(
            conn,
            &message.target,
            visible_micros(message.visible_at),
            &message.event,
            now_us,
        )?;
        true
    } else {
        let stored = inbox::deliver(conn, hot, message)?;
        if !stored {
            release_dropped_grant(conn, message, now_us, touched)?;
        }
        stored
    };
    if stored && visible_micros(message.visible_at) <= now_us && message.target != *committing {
        touched.insert(message.target.clone());
    }
    Ok(())
}

/// A lock grant that cannot be delivered (the owner ended) would leave the entities
/// locked; §4.5 says to release them. The grant does not name them, so release every
/// entity this owner holds in that critical section.
fn release_dropped_grant(
    conn: &Connection,
    message: &OutboundMessage,
    now_us: i64,
    touched: &mut BTreeSet<InstanceId>,
) -> Result<()> {
    let Some(critical_section) = rules::undeliverable_grant(message) else {
        return Ok(());
    };
    let released: Vec<String> = conn
        .prepare_cached(
            "UPDATE entities SET locked_by = NULL, critical_section = NULL, \
               version = version + 1 \
             WHERE locked_by = ? AND critical_section = ? RETURNING instance_id",
        )
        .and_then(|mut s| {
            s.query_map(params![message.target.as_str(), critical_section], |r| {
                r.get(0)
            })?
            .collect()
        })
        .map_err(sq_error("entity lock release"))?;
    for id in released {
        let id = InstanceId::new(id);
        if has_visible(conn, &id, now_us)? {
            touched.insert(id);
        }
    }
    Ok(())
}

fn has_visible(conn: &Connection, id: &InstanceId, now_us: i64) -> Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM entity_inbox WHERE instance_id = ? AND visible_at <= ?)",
    )
    .and_then(|mut s| s.query_row(params![id.as_str(), now_us], |r| r.get(0)))
    .map_err(sq_error("entity inbox read"))
}

const RECORD_COLUMNS: &str = "e.instance_id, e.state, e.locked_by, e.critical_section, \
     e.last_modified_at, e.version, \
     (SELECT COUNT(*) FROM entity_inbox x WHERE x.instance_id = e.instance_id) AS backlog";

/// [`RECORD_COLUMNS`] as readers see them: a lock whose owner has ended is reported
/// released in the same snapshot as the owner's end. (The owner's final commit queues the
/// release; the entity applies it on its next step, which a reader must not have to wait
/// for.)
const READ_COLUMNS: &str = "e.instance_id, e.state, \
     CASE WHEN EXISTS (SELECT 1 FROM instances o WHERE o.instance_id = e.locked_by \
       AND o.status NOT IN ('COMPLETED', 'FAILED', 'TERMINATED', 'CANCELED')) \
       THEN e.locked_by END AS locked_by, \
     e.critical_section, e.last_modified_at, e.version, \
     (SELECT COUNT(*) FROM entity_inbox x WHERE x.instance_id = e.instance_id) AS backlog";

/// The entity record with its backlog, or `None`.
pub(super) async fn record(
    conn: &mut SqliteConnection,
    id: &InstanceId,
) -> Result<Option<EntityRecord>> {
    let sql = format!("SELECT {READ_COLUMNS} FROM entities e WHERE e.instance_id = ?");
    sqlx::query(&sql)
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error("entity read"))?
        .as_ref()
        .map(entity_record)
        .transpose()
}

/// What an entity step needs: the record, the visible queue in order, and which of the
/// orchestrations named by the lock and lock requests are still live.
pub(super) async fn work(
    conn: &mut SqliteConnection,
    id: &InstanceId,
    now: DateTime<Utc>,
    max_messages: u32,
) -> Result<Option<EntityWork>> {
    let Some(record) = record(conn, id).await? else {
        return Ok(None);
    };
    let rows = sqlx::query(
        "SELECT seq AS m_seq, visible_at AS m_visible, payload AS m_payload FROM entity_inbox \
         WHERE instance_id = ? AND visible_at <= ? ORDER BY seq LIMIT ?",
    )
    .bind(id.as_str())
    .bind(micros(now))
    .bind(i64::from(max_messages))
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error("entity inbox read"))?;
    let messages = inbox_messages(&rows, false)?;
    let live = live(conn, lock_owners(&record, &messages)).await?;
    Ok(Some(EntityWork {
        lease: Lease::default(),
        record,
        messages,
        live,
    }))
}

/// Which of `owners` are orchestrations that exist and are not terminal.
async fn live(conn: &mut SqliteConnection, owners: HashSet<String>) -> Result<HashSet<InstanceId>> {
    let mut live = HashSet::new();
    for owner in owners {
        if is_live(conn, &owner).await? {
            live.insert(InstanceId::new(owner));
        }
    }
    Ok(live)
}

/// Whether an orchestration (a lock owner or requester) exists and is not terminal.
async fn is_live(conn: &mut SqliteConnection, instance: &str) -> Result<bool> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM instances WHERE instance_id = ?")
            .bind(instance)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error("entity owner read"))?;
    Ok(status
        .as_deref()
        .map(super::codec::status)
        .transpose()?
        .is_some_and(|s| !s.is_terminal()))
}

/// Commits one entity step: guard on the record version, consumed queue rows, state,
/// lock, messages and started orchestrations.
pub(super) fn commit(conn: &Connection, hot: &Hot, t: &EntityTransition) -> Result<CommitOutcome> {
    let now = micros(t.now);
    let id = &t.entity;
    let version: Option<i64> = conn
        .prepare_cached("SELECT version FROM entities WHERE instance_id = ?")
        .and_then(|mut s| s.query_row([id.as_str()], |r| r.get(0)).optional())
        .map_err(sq_error("entity guard"))?;
    if version != Some(t.expected_version) {
        return Err(StoreError::LeaseLost(id.clone()));
    }
    let mut deleted = 0;
    {
        let mut stmt = conn
            .prepare_cached("DELETE FROM entity_inbox WHERE instance_id = ? AND seq = ?")
            .map_err(sq_error("entity inbox delete"))?;
        // A seq listed twice deletes nothing the second time, so it fails the check below.
        for seq in &t.consumed {
            deleted += stmt
                .execute(params![id.as_str(), seq])
                .map_err(sq_error("entity inbox delete"))?;
        }
    }
    if deleted != t.consumed.len() {
        // Rows the step planned with are gone: another step ran (cannot happen while one
        // process owns the file) or the entity was purged meanwhile.
        return Err(StoreError::LeaseLost(id.clone()));
    }
    let (set_state, state) = match &t.state {
        Change::Keep => (false, None),
        Change::Set(s) => (true, s.clone()),
    };
    let (set_lock, owner, section) = match &t.lock {
        Change::Keep => (false, None, None),
        Change::Set(None) => (true, None, None),
        Change::Set(Some(l)) => (
            true,
            Some(l.owner.to_string()),
            Some(l.critical_section.clone()),
        ),
    };
    conn.prepare_cached(
        "UPDATE entities SET \
           state = CASE WHEN ? THEN ? ELSE state END, \
           locked_by = CASE WHEN ? THEN ? ELSE locked_by END, \
           critical_section = CASE WHEN ? THEN ? ELSE critical_section END, \
           last_modified_at = CASE WHEN ? THEN ? ELSE last_modified_at END, \
           version = version + 1 \
         WHERE instance_id = ?",
    )
    .and_then(|mut s| {
        s.execute(params![
            set_state,
            state,
            set_lock,
            owner,
            set_lock,
            section,
            t.touch,
            now,
            id.as_str()
        ])
    })
    .map_err(sq_error("entity update"))?;

    let mut touched = BTreeSet::new();
    for new in &t.starts {
        // Replace a terminal instance, skip a live one (PROTOCOL.md §5.3).
        match hot.state(conn, &new.instance_id)? {
            Some(existing) if !existing.status.is_terminal() => {
                tracing::info!(instance_id = %new.instance_id, entity = %id, "entity start skipped: instance is live");
                continue;
            }
            Some(_) => instances::delete(conn, hot, &new.instance_id)?,
            None => {}
        }
        let visible = instances::insert_new(conn, hot, new)?;
        if visible <= now {
            touched.insert(new.instance_id.clone());
        }
    }
    for m in &t.messages {
        route(conn, hot, id, m, now, &mut touched)?;
    }
    let has_visible_inbox = has_visible(conn, id, now)?;
    Ok(CommitOutcome {
        activities: Vec::new(),
        has_visible_inbox,
        touched: touched.into_iter().collect(),
        activities_claimed: false,
    })
}

/// One page of entities for `QueryEntities`, ordered by id.
pub(super) async fn query(
    conn: &mut SqliteConnection,
    filter: &EntityFilter,
) -> Result<Vec<EntityRecord>> {
    let sql = format!(
        "SELECT {READ_COLUMNS} FROM entities e \
         WHERE (? IS NULL OR substr(e.instance_id, 1, length(?)) = ?) \
           AND (? IS NULL OR e.last_modified_at >= ?) \
           AND (? IS NULL OR e.last_modified_at < ?) \
           AND (? IS NULL OR e.instance_id > ?) \
         ORDER BY e.instance_id"
    );
    let prefix = filter.id_prefix.as_deref();
    let from = filter.modified_from.map(micros);
    let to = filter.modified_to.map(micros);
    let after = filter.after.as_deref();
    let rows = sqlx::query(&sql)
        .bind(prefix)
        .bind(prefix)
        .bind(prefix)
        .bind(from)
        .bind(from)
        .bind(to)
        .bind(to)
        .bind(after)
        .bind(after)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("entity query"))?;
    entity_page(&rows, filter)
}

/// `CleanEntityStorage` over one page of entity ids after `after`: deletes empty
/// entities (no state, no lock, no backlog) and releases locks whose owner is gone or
/// terminal. Returns (removed, released, last id looked at when more may follow).
pub(super) async fn clean(
    conn: &mut SqliteConnection,
    after: Option<&str>,
    limit: u32,
    remove_empty: bool,
    release_orphans: bool,
) -> Result<(u32, u32, Option<String>, Vec<InstanceId>)> {
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM entities e WHERE (? IS NULL OR e.instance_id > ?) \
         ORDER BY e.instance_id LIMIT ?"
    );
    let rows = sqlx::query(&sql)
        .bind(after)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("entity clean"))?;
    let records = rows.iter().map(entity_record).collect::<Result<Vec<_>>>()?;
    let owners = records
        .iter()
        .filter_map(|r| r.lock.as_ref().map(|l| l.owner.to_string()))
        .collect();
    let live = live(conn, owners).await?;
    let plan = plan_clean(&records, &live, limit, remove_empty, release_orphans);
    for id in &plan.unlock {
        sqlx::query(
            "UPDATE entities SET locked_by = NULL, critical_section = NULL, \
               version = version + 1 WHERE instance_id = ?",
        )
        .bind(id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db_error("entity clean"))?;
    }
    for id in &plan.remove {
        sqlx::query("DELETE FROM entities WHERE instance_id = ?")
            .bind(id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(db_error("entity clean"))?;
    }
    Ok((
        plan.remove.len() as u32,
        plan.unlock.len() as u32,
        plan.next,
        plan.unblocked,
    ))
}

/// Purge by id of an entity: deletes it when it has no lock and no backlog.
pub(super) async fn purge(conn: &mut SqliteConnection, id: &InstanceId) -> Result<u32> {
    let deleted = sqlx::query(
        "DELETE FROM entities WHERE instance_id = ? AND locked_by IS NULL \
           AND NOT EXISTS (SELECT 1 FROM entity_inbox x WHERE x.instance_id = entities.instance_id)",
    )
    .bind(id.as_str())
    .execute(&mut *conn)
    .await
    .map_err(db_error("entity purge"))?
    .rows_affected();
    Ok(u32::try_from(deleted).unwrap_or(u32::MAX))
}

/// Entities to dispatch after a restart: visible messages now, and when the others wake.
pub(super) async fn recover(
    conn: &mut SqliteConnection,
    now_us: i64,
) -> Result<(Vec<InstanceId>, Vec<(DateTime<Utc>, InstanceId)>)> {
    let ready = sqlx::query_scalar::<_, String>(
        "SELECT instance_id FROM entity_inbox WHERE visible_at <= ? \
         GROUP BY instance_id ORDER BY MIN(seq)",
    )
    .bind(now_us)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error("recover entities"))?
    .into_iter()
    .map(InstanceId::new)
    .collect();
    let wakeups = sqlx::query(
        "SELECT instance_id, MIN(visible_at) AS at FROM entity_inbox WHERE visible_at > ? \
         GROUP BY instance_id",
    )
    .bind(now_us)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error("recover entities"))?
    .iter()
    .map(wakeup)
    .collect::<Result<Vec<_>>>()?;
    Ok((ready, wakeups))
}
