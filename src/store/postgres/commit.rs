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
use crate::domain::{ExecutionId, InstanceId, StatusChange, Transition};
use crate::proto as pb;
use crate::store::codec::{activity_items, encode, facts_after, round_down};
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
        _ => write_episode(conn, cx, t, &out, next_status, now).await?,
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
    })
}

/// The common commit (progress or terminal) as one statement: consumed (or, when
/// terminal, all) inbox rows deleted, history appended, the record updated and its lease
/// released, activities and the outbox inserted; it returns the activity ids and whether
/// a message of the instance that was there before stays visible.
async fn write_episode(
    conn: &mut PgConnection,
    cx: &mut Cx,
    t: &Transition,
    out: &Outbox,
    next_status: crate::domain::RuntimeStatus,
    now: DateTime<Utc>,
) -> R<(Vec<i64>, bool)> {
    let hub = cx.hub.clone();
    let id = t.instance_id.as_str();
    let terminal = matches!(t.status, StatusChange::Terminal { .. });
    let mut q: QueryBuilder<'static, Postgres> = QueryBuilder::new("");
    let mut first = true;
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
    q.push(")");

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
            .push("::bytea[]) WITH ORDINALITY AS x(p, o))");
    }

    cte(&mut q, &mut first, "record");
    q.push("UPDATE instances SET status = ")
        .push_bind(next_status.name())
        .push(", custom_status = ")
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
        .push_bind(id.to_owned())
        .push(")");

    let with_activities = !t.activities.is_empty();
    if with_activities {
        cte(&mut q, &mut first, "scheduled");
        q.push("INSERT INTO activities (hub, instance_id, execution_id, payload) SELECT ")
            .push_bind(hub.clone())
            .push(", ")
            .push_bind(id.to_owned())
            .push(", ")
            .push_bind(t.expected_execution_id.to_string())
            .push(", p FROM unnest(")
            .push_bind(
                t.activities
                    .iter()
                    .map(|a| encode(&a.scheduled))
                    .collect::<Vec<_>>(),
            )
            .push("::bytea[]) WITH ORDINALITY AS x(p, o) ORDER BY o RETURNING id)");
    }

    // The statement's snapshot predates its own deletes and inserts: rows it consumed
    // are excluded here, and new messages to itself are counted by the caller.
    q.push(" SELECT ");
    if with_activities {
        q.push("ARRAY(SELECT id FROM scheduled)");
    } else {
        q.push("'{}'::bigint[]");
    }
    q.push(" AS ids, ");
    if terminal {
        q.push("false");
    } else {
        q.push("EXISTS (SELECT 1 FROM inbox WHERE hub = ")
            .push_bind(hub)
            .push(" AND instance_id = ")
            .push_bind(id.to_owned())
            .push(" AND visible_at <= ")
            .push_bind(now)
            .push(" AND NOT (seq = ANY(")
            .push_bind(t.consumed.clone())
            .push(")))");
    }
    q.push(" AS visible");
    let row = q
        .build()
        .fetch_one(&mut *conn)
        .await
        .map_err(sql("commit"))?;
    Ok((get(&row, "ids")?, get(&row, "visible")?))
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
