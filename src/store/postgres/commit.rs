//! Committing one orchestration episode (`Store::commit_orchestration`, PROTOCOL.md
//! §4.4.2) in one transaction of few round trips: lock every instance the episode
//! touches (its own row, its children, its message targets) in one statement, check the
//! lease and the guard, decide children and message admission in memory with
//! `domain::rules`, then write history, status, inbox, activities, children and messages
//! in one statement of array inserts.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};

use super::rows::{get, id_list, lock_instances};
use super::tx::{sql, Cx, R};
use super::writes::{cte, note_touched, route, Outbox};
use sqlx::PgConnection;

use crate::domain::rules::{self, ChildAction};
use crate::domain::RuntimeStatus;
use crate::domain::{ExecutionId, InstanceId, StatusChange, Transition};
use crate::proto as pb;
use crate::store::codec::{
    activity_items, check_terminal_status, encode, facts_after, round_down, TERMINAL_SQL,
};
use crate::store::{CommitOutcome, Lease, StoreError};

/// Runs the whole commit; see the module docs and `Store::commit_orchestration`.
pub(super) async fn commit(
    conn: &mut PgConnection,
    cx: &mut Cx,
    t: &Transition,
    lease: Lease,
) -> R<CommitOutcome> {
    let id = &t.instance_id;
    let now = round_down(t.now);

    let mut ids: Vec<&InstanceId> = vec![id];
    ids.extend(t.children.iter().map(|c| &c.instance.instance_id));
    ids.extend(
        t.messages
            .iter()
            .chain(t.children.iter().map(|c| &c.on_conflict))
            .map(|m| &m.target)
            .filter(|target| !target.is_entity()),
    );
    let mut facts = lock_instances(conn, cx, id_list(ids)).await?;

    // (1) Lease (fencing token) and guard: the episode ran against the current execution
    // and history, and nobody claimed the instance since.
    let lease_holds = facts.get(id).is_some_and(|f| {
        f.lease_owner.as_deref() == Some(cx.owner.as_str()) && f.lease_epoch == lease.epoch
    });
    let current = facts.get(id).map(|f| f.inst.clone());
    if !lease_holds
        || !rules::episode_guard_holds(
            current.as_ref(),
            &t.expected_execution_id,
            t.expected_history_len,
        )
    {
        return Err(StoreError::LeaseLost(id.clone()).into());
    }
    let Some(current) = current else {
        return Err(StoreError::LeaseLost(id.clone()).into());
    };

    // (2) Children first, so a `sendEvent` to a child created by the same episode finds it
    // and lands after its `ExecutionStarted`.
    let mut out = Outbox::default();
    let mut touched = BTreeSet::new();
    let mut self_visible = false;
    let mut replaced = Vec::new();
    for child in &t.children {
        let child_id = &child.instance.instance_id;
        match rules::child_action(facts.get(child_id).map(|f| f.inst.status)) {
            ChildAction::Conflict => {
                self_visible |= route(
                    conn,
                    cx,
                    &mut out,
                    &facts,
                    id,
                    &child.on_conflict,
                    now,
                    &mut touched,
                )
                .await?;
            }
            action => {
                if action == ChildAction::Replace {
                    replaced.push(child_id.as_str());
                }
                let visible = out.create(cx, &mut facts, &child.instance);
                if visible <= now && child_id != id {
                    touched.insert(child_id.clone());
                } else if visible > now {
                    cx.changes.wakeup(child_id, visible);
                }
            }
        }
    }
    if !replaced.is_empty() {
        let hub = cx.hub.clone();
        sqlx::query("DELETE FROM instances WHERE hub = $1 AND instance_id = ANY($2)")
            .bind(hub)
            .bind(&replaced)
            .execute(&mut *conn)
            .await
            .map_err(sql("commit replace child"))?;
    }

    // (3) The instance's own next state, so that messages to itself are judged against
    // it (dropped once terminal).
    let me = facts
        .get_mut(id)
        .ok_or_else(|| StoreError::LeaseLost(id.clone()))?;
    me.inst = facts_after(&current, t)?;
    if let StatusChange::ContinuedAsNew { .. } = &t.status {
        me.rewound_from.clear();
    }
    let next_status = me.inst.status;
    if next_status != current.status || !matches!(t.status, StatusChange::Progress) {
        cx.changes.status(id);
    }
    for message in &t.messages {
        self_visible |= route(conn, cx, &mut out, &facts, id, message, now, &mut touched).await?;
    }

    // (4) The writes.
    let (activity_ids, visible) = match &t.status {
        StatusChange::ContinuedAsNew {
            execution_id,
            input,
            version,
            inbox_head,
        } => {
            let head = Head {
                execution_id,
                input,
                version,
                inbox_head,
                status: next_status,
            };
            continue_as_new(conn, cx, t, &head, now).await?;
            (Vec::new(), flush_then_check(conn, cx, &out, id, now).await?)
        }
        _ => {
            let written =
                write_episode(conn, cx, t, &out, Guard::Checked(next_status), now).await?;
            (written.activity_ids, written.visible)
        }
    };
    let has_visible_inbox = visible || self_visible;
    if has_visible_inbox {
        cx.changes.ready(id);
    }
    if !t.activities.is_empty() {
        cx.changes.activities();
    }
    note_touched(cx, &touched);
    Ok(CommitOutcome {
        activities: activity_items(t, activity_ids)?,
        has_visible_inbox,
        touched: touched.into_iter().collect(),
        activities_claimed: true,
    })
}

/// How `write_episode` knows it may write.
enum Guard<'a> {
    /// The caller locked the row and checked lease and guard in this transaction, and
    /// decided the next status.
    Checked(RuntimeStatus),
    /// Nothing was checked: the statement checks lease and guard itself, on the row it
    /// updates, derives the next status from that row with `rules`, and writes nothing
    /// when they fail. It runs as its own transaction.
    Fenced { owner: &'a str, lease: Lease },
}

/// What `write_episode` did: whether it wrote (always, unless `Guard::Fenced` failed),
/// the activity ids, and whether a message of the instance that was there before stays
/// visible.
struct Written {
    applied: bool,
    activity_ids: Vec<i64>,
    visible: bool,
}

/// The common commit (progress or terminal) as one statement: the record updated and its
/// lease released, consumed (or, when terminal, all) inbox rows deleted, history
/// appended, activities and the outbox inserted. Every write hangs off the record's
/// update, so under `Guard::Fenced` a failed guard writes nothing.
async fn write_episode(
    conn: &mut PgConnection,
    cx: &mut Cx,
    t: &Transition,
    out: &Outbox,
    guard: Guard<'_>,
    now: DateTime<Utc>,
) -> R<Written> {
    let hub = cx.hub.clone();
    let id = t.instance_id.as_str();
    let terminal = matches!(t.status, StatusChange::Terminal { .. });
    let mut q: QueryBuilder<'static, Postgres> = QueryBuilder::new("");
    let mut first = true;

    cte(&mut q, &mut first, "record");
    q.push("UPDATE instances SET status = ");
    match (&guard, &t.status) {
        (Guard::Checked(next), _) => {
            q.push_bind(next.name());
        }
        (Guard::Fenced { .. }, StatusChange::Terminal { status, .. }) => {
            q.push_bind(status.name());
        }
        (Guard::Fenced { .. }, _) => {
            // The rule applied to the row as it is now (a suspend may have flipped it
            // while the episode was out).
            q.push("CASE status");
            for from in RuntimeStatus::ALL.iter().filter(|s| !s.is_terminal()) {
                q.push(" WHEN ")
                    .push_bind(from.name())
                    .push(" THEN ")
                    .push_bind(rules::status_after_progress(*from).name());
            }
            q.push(" END");
        }
    }
    q.push(", custom_status = ")
        .push_bind(t.custom_status.clone())
        .push(", trace_context = ")
        .push_bind(t.trace_context.as_ref().map(encode))
        .push(", last_updated_at = ")
        .push_bind(now)
        .push(", history_len = history_len + ")
        .push_bind(t.history_append.len() as i64)
        .push(", lease_owner = NULL, lease_expires = NULL");
    if let StatusChange::Terminal {
        output, failure, ..
    } = &t.status
    {
        q.push(", output = ")
            .push_bind(output.clone())
            .push(", failure = ")
            .push_bind(failure.as_ref().map(encode))
            .push(", completed_at = ")
            .push_bind(now);
    }
    q.push(" WHERE hub = ")
        .push_bind(hub.clone())
        .push(" AND instance_id = ")
        .push_bind(id.to_owned());
    if let Guard::Fenced { owner, lease } = &guard {
        // The same predicate `commit` checks on the locked row: the fencing token, then
        // `rules::episode_guard_holds`.
        q.push(" AND lease_owner = ")
            .push_bind(owner.to_string())
            .push(" AND lease_epoch = ")
            .push_bind(lease.epoch)
            .push(" AND execution_id = ")
            .push_bind(t.expected_execution_id.to_string())
            .push(" AND history_len = ")
            .push_bind(i64::from(t.expected_history_len))
            .push(" AND status NOT IN ")
            .push(TERMINAL_SQL);
    }
    q.push(" RETURNING instance_id)");
    // Every other write reads the record's output, so it waits for the update and does
    // nothing when the update matched no row.
    let applied = " AND EXISTS (SELECT 1 FROM record)";

    out.push_ctes(&mut q, &mut first, &hub, now)?;

    cte(&mut q, &mut first, "consumed");
    q.push("DELETE FROM inbox WHERE hub = ")
        .push_bind(hub.clone())
        .push(" AND instance_id = ")
        .push_bind(id.to_owned());
    if !terminal {
        // A terminal instance is never dispatched again: its whole inbox goes (§4.4.2
        // step 5).
        q.push(" AND seq = ANY(")
            .push_bind(t.consumed.clone())
            .push(")");
    }
    q.push(applied).push(")");

    if !t.history_append.is_empty() {
        cte(&mut q, &mut first, "appended");
        q.push("INSERT INTO history (hub, instance_id, seq, payload) SELECT ")
            .push_bind(hub.clone())
            .push(", ")
            .push_bind(id.to_owned())
            .push(", ")
            .push_bind(i64::from(t.expected_history_len))
            .push(" + o - 1, p FROM unnest(")
            .push_bind(t.history_append.iter().map(encode).collect::<Vec<_>>())
            .push("::bytea[]) WITH ORDINALITY AS x(p, o) WHERE true")
            .push(applied)
            .push(")");
    }

    let with_activities = !t.activities.is_empty();
    if with_activities {
        // Claimed for this owner from the start (`CommitOutcome::activities_claimed`).
        cte(&mut q, &mut first, "scheduled");
        q.push(
            "INSERT INTO activities (hub, instance_id, execution_id, lease_owner, \
             lease_expires, payload) SELECT ",
        )
        .push_bind(hub.clone())
        .push(", ")
        .push_bind(id.to_owned())
        .push(", ")
        .push_bind(t.expected_execution_id.to_string())
        .push(", ")
        .push_bind(cx.owner.clone())
        .push(", clock_timestamp() + ")
        .push_bind(cx.lease_ms)
        .push(" * interval '1 millisecond', p FROM unnest(")
        .push_bind(
            t.activities
                .iter()
                .map(|a| encode(&a.scheduled))
                .collect::<Vec<_>>(),
        )
        .push("::bytea[]) WITH ORDINALITY AS x(p, o) WHERE true")
        .push(applied)
        .push(" ORDER BY o RETURNING id)");
    }

    // The statement's snapshot predates its own deletes and inserts: rows it consumed
    // are excluded here, and new messages to itself are counted by the caller.
    cte(&mut q, &mut first, "waiting");
    q.push("SELECT ");
    if terminal {
        q.push("false");
    } else {
        q.push("EXISTS (SELECT 1 FROM inbox WHERE hub = ")
            .push_bind(hub.clone())
            .push(" AND instance_id = ")
            .push_bind(id.to_owned())
            .push(" AND visible_at <= ")
            .push_bind(now)
            .push(" AND NOT (seq = ANY(")
            .push_bind(t.consumed.clone())
            .push(")))");
    }
    q.push(" AS visible)");

    q.push(" SELECT EXISTS (SELECT 1 FROM record) AS applied, ");
    if with_activities {
        q.push("ARRAY(SELECT id FROM scheduled)");
    } else {
        q.push("'{}'::bigint[]");
    }
    q.push(" AS ids, (SELECT visible FROM waiting) AS visible");
    let row = q
        .build()
        .fetch_one(&mut *conn)
        .await
        .map_err(sql("commit"))?;
    Ok(Written {
        applied: get(&row, "applied")?,
        activity_ids: get(&row, "ids")?,
        visible: get(&row, "visible")?,
    })
}

/// Whether an episode's commit can skip the locked read of `commit`: it creates no
/// children, sends no messages and does not continue as new, so nothing in it is judged
/// against another row, and its own row's checks fit in the statement (`Guard::Fenced`).
/// Most episodes of activity-driven orchestrations are such.
pub(super) fn fits_one_statement(t: &Transition) -> bool {
    t.children.is_empty()
        && t.messages.is_empty()
        && !matches!(t.status, StatusChange::ContinuedAsNew { .. })
}

/// `commit` for an episode that [`fits_one_statement`]: one statement, its own
/// transaction, one round trip. `LeaseLost` when the lease or the guard fails, exactly
/// where `commit` would say so.
pub(super) async fn commit_at_once(
    conn: &mut PgConnection,
    cx: &mut Cx,
    t: &Transition,
    lease: Lease,
) -> R<CommitOutcome> {
    check_terminal_status(t)?;
    let owner = cx.owner.clone();
    let guard = Guard::Fenced {
        owner: &owner,
        lease,
    };
    let written = write_episode(conn, cx, t, &Outbox::default(), guard, round_down(t.now)).await?;
    if !written.applied {
        return Err(StoreError::LeaseLost(t.instance_id.clone()).into());
    }
    if matches!(t.status, StatusChange::Terminal { .. }) || t.expected_history_len == 0 {
        // The first commit may turn PENDING into RUNNING; announcing a status that did
        // not change only makes a waiter look again.
        cx.changes.status(&t.instance_id);
    }
    if !t.activities.is_empty() {
        cx.changes.activities();
    }
    if written.visible {
        cx.changes.ready(&t.instance_id);
    }
    Ok(CommitOutcome {
        activities: activity_items(t, written.activity_ids)?,
        has_visible_inbox: written.visible,
        touched: Vec::new(),
        activities_claimed: true,
    })
}

/// Inserts the outbox, then says whether `id` has a message visible at `now` (one
/// statement; the check does not see the statement's own inserts).
async fn flush_then_check(
    conn: &mut PgConnection,
    cx: &mut Cx,
    out: &Outbox,
    id: &InstanceId,
    now: DateTime<Utc>,
) -> R<bool> {
    let hub = cx.hub.clone();
    let mut q: QueryBuilder<'static, Postgres> = QueryBuilder::new("");
    let mut first = true;
    out.push_ctes(&mut q, &mut first, &hub, now)?;
    q.push(" SELECT EXISTS (SELECT 1 FROM inbox WHERE hub = ")
        .push_bind(hub)
        .push(" AND instance_id = ")
        .push_bind(id.to_string())
        .push(" AND visible_at <= ")
        .push_bind(now)
        .push(")");
    q.build_query_scalar()
        .fetch_one(&mut *conn)
        .await
        .map_err(sql("commit messages"))
}

/// What continue-as-new starts.
struct Head<'a> {
    execution_id: &'a ExecutionId,
    input: &'a Option<String>,
    version: &'a Option<String>,
    inbox_head: &'a [pb::HistoryEvent],
    status: crate::domain::RuntimeStatus,
}

/// Continue-as-new in one statement: the old execution's history goes entirely, the
/// record starts the new execution (lease released), and the inbox is rebuilt with the
/// new head (PROTOCOL.md §4.4.6 step 2) before every message still waiting, minus those
/// consumed and those addressed to the old execution (undeliverable now, §4.5). Seqs only
/// grow, so waiting rows are moved behind the head by re-inserting them in order.
async fn continue_as_new(
    conn: &mut PgConnection,
    cx: &mut Cx,
    t: &Transition,
    head: &Head<'_>,
    now: DateTime<Utc>,
) -> R<()> {
    let hub = cx.hub.clone();
    let id = t.instance_id.as_str();
    // created_at is kept (§4.4.6 step 6); suspension survives; the trace context belonged
    // to the old execution's span; a scheduled start is not copied.
    sqlx::query(
        "WITH old_history AS (DELETE FROM history WHERE hub = $1 AND instance_id = $2), \
         record AS (UPDATE instances SET execution_id = $3, input = $4, version = $5, \
           output = NULL, failure = NULL, completed_at = NULL, scheduled_start_at = NULL, \
           status = $11, \
           custom_status = $6, trace_context = NULL, last_updated_at = $7, history_len = 0, \
           rewound_from = NULL, lease_owner = NULL, lease_expires = NULL \
           WHERE hub = $1 AND instance_id = $2), \
         waiting AS (DELETE FROM inbox WHERE hub = $1 AND instance_id = $2 \
           RETURNING seq, target_execution, visible_at, payload) \
         INSERT INTO inbox (hub, instance_id, target_execution, visible_at, payload) \
         SELECT $1, $2, e, v, p FROM ( \
           SELECT 0 AS part, o AS k, NULL::text AS e, $7::timestamptz AS v, p \
             FROM unnest($8::bytea[]) WITH ORDINALITY AS h(p, o) \
           UNION ALL \
           SELECT 1, seq, target_execution, visible_at, payload FROM waiting \
             WHERE NOT (seq = ANY($9)) AND target_execution IS DISTINCT FROM $10 \
         ) AS rows ORDER BY part, k",
    )
    .bind(hub)
    .bind(id)
    .bind(head.execution_id.as_str())
    .bind(head.input.as_deref())
    .bind(head.version.as_deref())
    .bind(t.custom_status.as_deref())
    .bind(now)
    .bind(head.inbox_head.iter().map(encode).collect::<Vec<_>>())
    .bind(&t.consumed)
    .bind(t.expected_execution_id.as_str())
    .bind(head.status.name())
    .execute(&mut *conn)
    .await
    .map_err(sql("commit continue-as-new"))?;
    Ok(())
}
