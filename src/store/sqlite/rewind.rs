//! Applying a rewind (`Store::rewind`, PROTOCOL.md §4.10) inside the writer's savepoint
//! for this call: each guard is checked before its writes, and a failing guard (or any
//! error) rolls the whole call back, so a rewind is all or nothing.

use sqlx::SqliteConnection;

use super::codec::{db_error, hex_json_array, micros};
use super::hot::{Hot, State};
use super::writer::with_direct;
use super::{inbox, instances};
use crate::domain::{ParentRelink, RewindPlan, RewoundExecution};
use crate::store::codec::{
    missing_tasks, paired_activities, relink_started, rewind_guard_holds, rewound_status, Relink,
};
use crate::store::rows::activity_item;
use crate::store::{ActivityItem, Result, RewindOutcome, StoreError};

/// Runs the whole rewind; see `Store::rewind`.
pub(super) async fn rewind(
    conn: &mut SqliteConnection,
    hot: &Hot,
    plan: &RewindPlan,
) -> Result<RewindOutcome> {
    let mut activities = Vec::new();
    for x in &plan.executions {
        rewind_execution(conn, hot, x, micros(plan.now), &mut activities).await?;
    }
    for child in &plan.recreated {
        // Planned as purged; if the id exists again, the plan is stale.
        if with_direct(conn, |c| hot.state(c, &child.instance_id))
            .await?
            .is_some()
        {
            return Err(StoreError::LeaseLost(child.instance_id.clone()));
        }
        with_direct(conn, |c| instances::insert_new(c, hot, child)).await?;
    }
    for link in &plan.relinked {
        relink(conn, hot, link).await?;
    }
    Ok(RewindOutcome { activities })
}

/// Binds, in order: instance; instance, history events (hex JSON); execution, status,
/// now, history length, instance; instance, consumed seqs (JSON); new execution,
/// instance, old execution. Plain `?` parameters: sqlx misbinds numbered ones across
/// statements.
const REWIND_SQL: &str = "\
    DELETE FROM history WHERE instance_id = ?; \
    INSERT INTO history (instance_id, seq, payload) \
      SELECT ?, key, unhex(value) FROM json_each(?); \
    UPDATE instances SET execution_id = ?, status = ?, output = NULL, failure = NULL, \
      completed_at = NULL, trace_context = NULL, last_updated_at = ?, history_len = ?, \
      rewound_from = json_insert(coalesce(rewound_from, '[]'), '$[#]', execution_id) \
      WHERE instance_id = ?; \
    DELETE FROM inbox WHERE instance_id = ? AND seq IN (SELECT value FROM json_each(?)); \
    UPDATE inbox SET target_execution = ? WHERE instance_id = ? AND target_execution = ?";

async fn rewind_execution(
    conn: &mut SqliteConnection,
    hot: &Hot,
    x: &RewoundExecution,
    now: i64,
    activities: &mut Vec<ActivityItem>,
) -> Result<()> {
    let id = &x.instance_id;
    if !rewind_guard_holds(with_direct(conn, |c| hot.state(c, id)).await?.as_ref(), x) {
        return Err(StoreError::LeaseLost(id.clone()));
    }
    let status = rewound_status(x.expected_status);
    let consumed =
        serde_json::to_string(&x.consumed).map_err(|e| StoreError::Backend(e.to_string()))?;
    let history_len = x.history.len() as i64;
    // A rewound execution continues the old one: whatever still waits for the old
    // execution (inbox messages, open activities) now belongs to the new one.
    sqlx::query(REWIND_SQL)
        .bind(id.as_str())
        .bind(id.as_str())
        .bind(hex_json_array(&x.history))
        .bind(x.execution_id.as_str())
        .bind(status.name())
        .bind(now)
        .bind(history_len)
        .bind(id.as_str())
        .bind(id.as_str())
        .bind(consumed)
        .bind(x.execution_id.as_str())
        .bind(id.as_str())
        .bind(x.expected_execution_id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db_error("rewind"))?;

    let moved: Vec<ActivityItem> = sqlx::query(
        "UPDATE activities SET execution_id = ? WHERE instance_id = ? AND execution_id = ? \
         RETURNING id, instance_id, execution_id, payload",
    )
    .bind(x.execution_id.as_str())
    .bind(id.as_str())
    .bind(x.expected_execution_id.as_str())
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error("rewind activities"))?
    .iter()
    .map(activity_item)
    .collect::<Result<_>>()?;
    let missing = missing_tasks(x, &moved);
    activities.extend(moved);
    if !missing.is_empty() {
        let rows: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO activities (instance_id, execution_id, payload) \
             SELECT ?, ?, unhex(value) FROM json_each(?) RETURNING id",
        )
        .bind(id.as_str())
        .bind(x.execution_id.as_str())
        .bind(hex_json_array(missing.iter().copied()))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("rewind activities"))?;
        activities.extend(paired_activities(id, &x.execution_id, rows, missing));
    }

    with_direct(conn, |c| {
        for m in &x.messages {
            inbox::insert(
                c,
                &m.target,
                m.target_execution.as_ref(),
                super::codec::visible_micros(m.visible_at),
                &m.event,
            )?;
        }
        Ok(())
    })
    .await?;
    hot.set(
        id,
        State {
            status,
            execution_id: x.execution_id.clone(),
            history_len,
        },
    );
    Ok(())
}

/// Where a started child keeps its `ExecutionStarted` (second event of its first
/// episode), then where it looks when that was not enough, and where an unstarted
/// child's waits (its inbox).
const STARTED_IN_HISTORY_HEAD: &str =
    "SELECT seq, payload FROM history WHERE instance_id = ? ORDER BY seq LIMIT 8";
const STARTED_IN_HISTORY: &str =
    "SELECT seq, payload FROM history WHERE instance_id = ? ORDER BY seq";
const STARTED_IN_INBOX: &str = "SELECT seq, payload FROM inbox WHERE instance_id = ? ORDER BY seq";

/// Moves a live child's parent link (`ExecutionStarted.parentInstance`) to the parent's
/// new execution, where the child's completion reads it (`apply::parent_notice`).
async fn relink(conn: &mut SqliteConnection, hot: &Hot, link: &ParentRelink) -> Result<()> {
    let id = &link.instance_id;
    let stale = || StoreError::LeaseLost(id.clone());
    let state = with_direct(conn, |c| hot.state(c, id))
        .await?
        .ok_or_else(stale)?;
    if state.status.is_terminal() {
        // It finished since the plan was made; a new plan re-delivers its result.
        return Err(stale());
    }
    let parent: Option<String> =
        sqlx::query_scalar("SELECT parent_instance_id FROM instances WHERE instance_id = ?")
            .bind(id.as_str())
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error("rewind relink"))?;
    if parent.as_deref() != Some(link.parent_instance_id.as_str()) {
        return Err(stale());
    }
    let (searches, update): (&[&str], &str) = if state.history_len > 0 {
        (
            &[STARTED_IN_HISTORY_HEAD, STARTED_IN_HISTORY],
            "UPDATE history SET payload = ? WHERE instance_id = ? AND seq = ?",
        )
    } else {
        (
            &[STARTED_IN_INBOX],
            "UPDATE inbox SET payload = ? WHERE instance_id = ? AND seq = ?",
        )
    };
    for sql in searches {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(sql)
            .bind(id.as_str())
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error("rewind relink"))?;
        for (seq, payload) in rows {
            let payload = match relink_started(&payload, &link.parent_execution_id)? {
                Relink::NotStarted => continue,
                Relink::NoParent => return Ok(()),
                Relink::Rewritten(payload) => payload,
            };
            sqlx::query(update)
                .bind(payload)
                .bind(id.as_str())
                .bind(seq)
                .execute(&mut *conn)
                .await
                .map_err(db_error("rewind relink"))?;
            return Ok(());
        }
    }
    tracing::warn!(instance_id = %id, "rewind: child has no ExecutionStarted to relink");
    Ok(())
}
