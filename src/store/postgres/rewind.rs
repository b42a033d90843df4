//! Applying a rewind (`Store::rewind`, PROTOCOL.md §4.10) in one transaction: every
//! instance involved is locked first (in id order), each guard is checked before its
//! writes, and a failing guard (or any error) rolls the whole call back.

use chrono::{DateTime, Utc};

use super::instances;
use super::rows::{id_list, lock_instances, FactsMap};
use super::tx::{sql, Cx, R};
use super::writes::Outbox;
use sqlx::PgConnection;

use crate::domain::{ParentRelink, RewindPlan, RewoundExecution};
use crate::store::codec::{
    encode, missing_tasks, paired_activities, relink_started, rewind_guard_holds, rewound_status,
    round_down, round_up, Relink,
};
use crate::store::rows::activity_item;
use crate::store::{ActivityItem, RewindOutcome, StoreError};

/// Runs the whole rewind; see `Store::rewind`.
pub(super) async fn rewind(
    conn: &mut PgConnection,
    cx: &mut Cx,
    plan: &RewindPlan,
) -> R<RewindOutcome> {
    let now = round_down(plan.now);
    let mut facts = lock_instances(
        conn,
        cx,
        id_list(
            plan.executions
                .iter()
                .map(|x| &x.instance_id)
                .chain(plan.recreated.iter().map(|c| &c.instance_id))
                .chain(plan.relinked.iter().map(|l| &l.instance_id))
                .chain(
                    plan.executions
                        .iter()
                        .flat_map(|x| x.messages.iter().map(|m| &m.target)),
                ),
        ),
    )
    .await?;
    let mut activities = Vec::new();
    for x in &plan.executions {
        rewind_execution(conn, cx, &facts, x, now, &mut activities).await?;
    }
    let mut out = Outbox::default();
    for child in &plan.recreated {
        // Planned as purged; if the id exists again, the plan is stale.
        if facts.contains_key(&child.instance_id) {
            return Err(StoreError::LeaseLost(child.instance_id.clone()).into());
        }
        let visible = out.create(cx, &mut facts, child);
        cx.changes.message(&child.instance_id, visible, now);
    }
    out.flush(conn, cx, now).await?;
    for link in &plan.relinked {
        relink(conn, cx, &facts, link).await?;
    }
    if !activities.is_empty() {
        cx.changes.activities();
    }
    Ok(RewindOutcome { activities })
}

async fn rewind_execution(
    conn: &mut PgConnection,
    cx: &mut Cx,
    facts: &FactsMap,
    x: &RewoundExecution,
    now: DateTime<Utc>,
    activities: &mut Vec<ActivityItem>,
) -> R<()> {
    let id = &x.instance_id;
    if !rewind_guard_holds(facts.get(id).map(|f| &f.inst), x) {
        return Err(StoreError::LeaseLost(id.clone()).into());
    }
    let status = rewound_status(x.expected_status);
    let hub = cx.hub.clone();
    // A rewound execution continues the old one: whatever still waits for the old
    // execution (inbox messages, open activities) now belongs to the new one.
    // Its own statement: the new history reuses the old rows' keys.
    sqlx::query("DELETE FROM history WHERE hub = $1 AND instance_id = $2")
        .bind(&hub)
        .bind(id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(sql("rewind"))?;
    let moved: Vec<ActivityItem> = sqlx::query(
        "WITH new_history AS (INSERT INTO history (hub, instance_id, seq, payload) \
           SELECT $1, $2, o - 1, p FROM unnest($3::bytea[]) WITH ORDINALITY AS x(p, o)), \
         record AS (UPDATE instances SET execution_id = $4, status = $5, output = NULL, \
           failure = NULL, completed_at = NULL, trace_context = NULL, last_updated_at = $6, \
           history_len = $7, rewound_from = array_append(rewound_from, execution_id) \
           WHERE hub = $1 AND instance_id = $2), \
         consumed AS (DELETE FROM inbox WHERE hub = $1 AND instance_id = $2 AND seq = ANY($8)), \
         readdressed AS (UPDATE inbox SET target_execution = $4 \
           WHERE hub = $1 AND instance_id = $2 AND target_execution = $9 \
             AND NOT (seq = ANY($8))) \
         UPDATE activities SET execution_id = $4 \
           WHERE hub = $1 AND instance_id = $2 AND execution_id = $9 \
         RETURNING id, instance_id, execution_id, payload",
    )
    .bind(&hub)
    .bind(id.as_str())
    .bind(x.history.iter().map(encode).collect::<Vec<_>>())
    .bind(x.execution_id.as_str())
    .bind(status.name())
    .bind(now)
    .bind(x.history.len() as i64)
    .bind(&x.consumed)
    .bind(x.expected_execution_id.as_str())
    .fetch_all(&mut *conn)
    .await
    .map_err(sql("rewind"))?
    .iter()
    .map(activity_item)
    .collect::<Result<_, _>>()?;
    let missing = missing_tasks(x, &moved);
    activities.extend(moved);
    if !missing.is_empty() {
        let rows: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO activities (hub, instance_id, execution_id, payload) \
             SELECT $1, $2, $3, p FROM unnest($4::bytea[]) WITH ORDINALITY AS x(p, o) \
             ORDER BY o RETURNING id",
        )
        .bind(&hub)
        .bind(id.as_str())
        .bind(x.execution_id.as_str())
        .bind(missing.iter().map(|t| encode(*t)).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await
        .map_err(sql("rewind activities"))?;
        activities.extend(paired_activities(id, &x.execution_id, rows, missing));
    }
    for m in &x.messages {
        instances::insert_message(
            conn,
            cx,
            &m.target,
            m.target_execution.as_ref(),
            round_up(m.visible_at),
            &m.event,
            now,
        )
        .await?;
    }
    cx.changes.status(id);
    Ok(())
}

/// Where a started child keeps its `ExecutionStarted` (second event of its first
/// episode), then where it looks when that was not enough, and where an unstarted
/// child's waits (its inbox).
const STARTED_IN_HISTORY_HEAD: &str =
    "SELECT seq, payload FROM history WHERE hub = $1 AND instance_id = $2 ORDER BY seq LIMIT 8";
const STARTED_IN_HISTORY: &str =
    "SELECT seq, payload FROM history WHERE hub = $1 AND instance_id = $2 ORDER BY seq";
const STARTED_IN_INBOX: &str =
    "SELECT seq, payload FROM inbox WHERE hub = $1 AND instance_id = $2 ORDER BY seq";

/// Moves a live child's parent link (`ExecutionStarted.parentInstance`) to the parent's
/// new execution, where the child's completion reads it.
async fn relink(
    conn: &mut PgConnection,
    cx: &mut Cx,
    facts: &FactsMap,
    link: &ParentRelink,
) -> R<()> {
    let id = &link.instance_id;
    let stale = || StoreError::LeaseLost(id.clone());
    let state = facts.get(id).ok_or_else(stale)?;
    if state.inst.status.is_terminal() {
        // It finished since the plan was made; a new plan re-delivers its result.
        return Err(stale().into());
    }
    let hub = cx.hub.clone();
    let parent: Option<String> = sqlx::query_scalar(
        "SELECT parent_instance_id FROM instances WHERE hub = $1 AND instance_id = $2",
    )
    .bind(&hub)
    .bind(id.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(sql("rewind relink"))?;
    if parent.as_deref() != Some(link.parent_instance_id.as_str()) {
        return Err(stale().into());
    }
    let (searches, update): (&[&str], &str) = if state.inst.history_len > 0 {
        (
            &[STARTED_IN_HISTORY_HEAD, STARTED_IN_HISTORY],
            "UPDATE history SET payload = $1 WHERE hub = $2 AND instance_id = $3 AND seq = $4",
        )
    } else {
        (
            &[STARTED_IN_INBOX],
            "UPDATE inbox SET payload = $1 WHERE hub = $2 AND instance_id = $3 AND seq = $4",
        )
    };
    for sql_text in searches {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(sql_text)
            .bind(&hub)
            .bind(id.as_str())
            .fetch_all(&mut *conn)
            .await
            .map_err(sql("rewind relink"))?;
        for (seq, payload) in rows {
            let payload = match relink_started(&payload, &link.parent_execution_id)? {
                Relink::NotStarted => continue,
                Relink::NoParent => return Ok(()),
                Relink::Rewritten(payload) => payload,
            };
            sqlx::query(update)
                .bind(payload)
                .bind(&hub)
                .bind(id.as_str())
                .bind(seq)
                .execute(&mut *conn)
                .await
                .map_err(sql("rewind relink"))?;
            return Ok(());
        }
    }
    tracing::warn!(instance_id = %id, "rewind: child has no ExecutionStarted to relink");
    Ok(())
}
