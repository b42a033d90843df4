//! Rows a write adds, gathered in memory and inserted as arrays in one statement: new
//! instances with their `ExecutionStarted`, inbox messages (admitted by the rules of
//! PROTOCOL.md §4.5 against the locked facts), and entity queue messages.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};

use super::rows::{get, Facts, FactsMap};
use super::tx::{sql, Cx, R};
use sqlx::PgConnection;

use crate::domain::rules::{self, Admission};
use crate::domain::{ExecutionId, InstanceId, NewInstance, OutboundMessage};
use crate::proto as pb;
use crate::store::codec::{encode, round_down, round_up, tags_json};

/// Pending inserts of one call; see the module docs.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    instances: Vec<NewInstance>,
    inbox_target: Vec<String>,
    inbox_execution: Vec<Option<String>>,
    inbox_visible: Vec<DateTime<Utc>>,
    inbox_payload: Vec<Vec<u8>>,
    entity_target: Vec<String>,
    entity_visible: Vec<DateTime<Utc>>,
    entity_payload: Vec<Vec<u8>>,
}

impl Outbox {
    /// Whether nothing is pending.
    pub(super) fn is_empty(&self) -> bool {
        self.instances.is_empty() && self.inbox_target.is_empty() && self.entity_target.is_empty()
    }

    /// Adds an inbox row as is (no checks).
    pub(super) fn push_inbox(
        &mut self,
        target: &InstanceId,
        execution: Option<&ExecutionId>,
        visible_at: DateTime<Utc>,
        event: &pb::HistoryEvent,
    ) {
        self.inbox_target.push(target.to_string());
        self.inbox_execution
            .push(execution.map(ExecutionId::to_string));
        self.inbox_visible.push(visible_at);
        self.inbox_payload.push(encode(event));
    }

    /// Adds an entity queue row (the entity row is created if missing).
    pub(super) fn push_entity(
        &mut self,
        target: &InstanceId,
        visible_at: DateTime<Utc>,
        event: &pb::HistoryEvent,
    ) {
        self.entity_target.push(target.to_string());
        self.entity_visible.push(visible_at);
        self.entity_payload.push(encode(event));
    }

    /// Creates an instance (PENDING, its `ExecutionStarted` visible at the scheduled
    /// start or creation time, whichever is later: PROTOCOL.md §3.1 step 4), records its
    /// facts, and notes the status change and its wake-up. Returns the visibility time.
    pub(super) fn create(
        &mut self,
        cx: &mut Cx,
        facts: &mut FactsMap,
        new: &NewInstance,
    ) -> DateTime<Utc> {
        let visible = start_visibility(new);
        self.instances.push(new.clone());
        self.push_inbox(&new.instance_id, None, visible, &new.start_event);
        facts.insert(
            new.instance_id.clone(),
            Facts::fresh(new.execution_id.clone(), new.parent_instance_id.is_some()),
        );
        cx.changes.status(&new.instance_id);
        visible
    }

    /// Appends this outbox's inserts as CTEs to `q` (`first`: no `WITH` written yet).
    /// Instances come first and inbox rows keep their order, so a message to a child
    /// created by the same call lands after its `ExecutionStarted`.
    pub(super) fn push_ctes(
        &self,
        q: &mut QueryBuilder<'static, Postgres>,
        first: &mut bool,
        hub: &str,
        now: DateTime<Utc>,
    ) -> R<()> {
        if !self.instances.is_empty() {
            let mut tags = Vec::with_capacity(self.instances.len());
            for i in &self.instances {
                tags.push(tags_json(&i.tags)?);
            }
            cte(q, first, "new_instances");
            q.push(
                "INSERT INTO instances (hub, instance_id, execution_id, name, version, status, \
                 created_at, last_updated_at, scheduled_start_at, input, parent_instance_id, \
                 tags, history_len) SELECT ",
            )
            .push_bind(hub.to_owned())
            .push(", i, e, n, v, 'PENDING', c, c, s, inp, p, t::jsonb, 0 FROM unnest(")
            .push_bind(self.map(|i| i.instance_id.to_string()))
            .push("::text[], ")
            .push_bind(self.map(|i| i.execution_id.to_string()))
            .push("::text[], ")
            .push_bind(self.map(|i| i.name.clone()))
            .push("::text[], ")
            .push_bind(self.map(|i| i.version.clone()))
            .push("::text[], ")
            .push_bind(self.map(|i| round_down(i.created_at)))
            .push("::timestamptz[], ")
            .push_bind(self.map(|i| i.scheduled_start_at.map(round_down)))
            .push("::timestamptz[], ")
            .push_bind(self.map(|i| i.input.clone()))
            .push("::text[], ")
            .push_bind(self.map(|i| i.parent_instance_id.as_ref().map(InstanceId::to_string)))
            .push("::text[], ")
            .push_bind(tags)
            .push("::text[]) AS x(i, e, n, v, c, s, inp, p, t))");
        }
        if !self.inbox_target.is_empty() {
            cte(q, first, "new_inbox");
            q.push(
                "INSERT INTO inbox (hub, instance_id, target_execution, visible_at, payload) \
                 SELECT ",
            )
            .push_bind(hub.to_owned())
            .push(", t, e, v, p FROM unnest(")
            .push_bind(self.inbox_target.clone())
            .push("::text[], ")
            .push_bind(self.inbox_execution.clone())
            .push("::text[], ")
            .push_bind(self.inbox_visible.clone())
            .push("::timestamptz[], ")
            .push_bind(self.inbox_payload.clone())
            .push("::bytea[]) WITH ORDINALITY AS x(t, e, v, p, o) ORDER BY o)");
        }
        if !self.entity_target.is_empty() {
            cte(q, first, "new_entities");
            q.push("INSERT INTO entities (hub, instance_id, last_modified_at) SELECT DISTINCT ")
                .push_bind(hub.to_owned())
                .push(", t, ")
                .push_bind(round_down(now))
                .push("::timestamptz FROM unnest(")
                .push_bind(self.entity_target.clone())
                .push("::text[]) AS x(t) ON CONFLICT (hub, instance_id) DO NOTHING)");
            cte(q, first, "new_entity_inbox");
            q.push("INSERT INTO entity_inbox (hub, instance_id, visible_at, payload) SELECT ")
                .push_bind(hub.to_owned())
                .push(", t, v, p FROM unnest(")
                .push_bind(self.entity_target.clone())
                .push("::text[], ")
                .push_bind(self.entity_visible.clone())
                .push("::timestamptz[], ")
                .push_bind(self.entity_payload.clone())
                .push("::bytea[]) WITH ORDINALITY AS x(t, v, p, o) ORDER BY o)");
        }
        Ok(())
    }

    fn map<T>(&self, f: impl Fn(&NewInstance) -> T) -> Vec<T> {
        self.instances.iter().map(f).collect()
    }

    /// Inserts everything pending (one statement; nothing when empty).
    pub(super) async fn flush(
        &self,
        conn: &mut PgConnection,
        cx: &mut Cx,
        now: DateTime<Utc>,
    ) -> R<()> {
        if self.is_empty() {
            return Ok(());
        }
        let mut q = QueryBuilder::new("");
        let mut first = true;
        let hub = cx.hub.clone();
        self.push_ctes(&mut q, &mut first, &hub, now)?;
        q.push(" SELECT 1");
        q.build()
            .execute(&mut *conn)
            .await
            .map_err(sql("insert rows"))?;
        Ok(())
    }
}

/// Writes `WITH name AS (` or `, name AS (`.
pub(super) fn cte(q: &mut QueryBuilder<'static, Postgres>, first: &mut bool, name: &str) {
    q.push(if *first { "WITH " } else { ", " });
    q.push(name).push(" AS (");
    *first = false;
}

/// When a new instance's `ExecutionStarted` becomes visible.
pub(super) fn start_visibility(new: &NewInstance) -> DateTime<Utc> {
    let created = round_up(new.created_at);
    new.scheduled_start_at
        .map_or(created, |at| round_up(at).max(created))
}

/// The message as it may be stored (PROTOCOL.md §4.5), judged against the locked facts:
/// `None` when it is dropped; readdressed when a rewind replaced the named execution.
pub(super) fn admit(facts: &FactsMap, msg: &OutboundMessage) -> Option<OutboundMessage> {
    let target = facts.get(&msg.target);
    let admission = match rules::admit(target.map(|f| &f.inst), msg) {
        Admission::AskRewound => {
            let target = target?;
            let wanted = msg
                .target_execution
                .as_ref()
                .map_or("", ExecutionId::as_str);
            rules::admit_after_rewind_check(
                &target.inst,
                target.rewound_from.iter().any(|e| e == wanted),
            )
        }
        other => other,
    };
    match admission {
        Admission::Deliver => Some(msg.clone()),
        Admission::Readdress(execution) => Some(OutboundMessage {
            target_execution: Some(execution),
            ..msg.clone()
        }),
        Admission::Drop | Admission::AskRewound => None,
    }
}

/// Routes one outbound message: entity targets to the entity queue (always accepted),
/// orchestrations through [`admit`]. A stored message visible now to a target other than
/// `committing` lands in `touched`; later ones are noted as wake-ups. Returns whether a
/// message for `committing` itself became visible now.
#[allow(clippy::too_many_arguments)]
pub(super) async fn route(
    conn: &mut PgConnection,
    cx: &mut Cx,
    out: &mut Outbox,
    facts: &FactsMap,
    committing: &InstanceId,
    message: &OutboundMessage,
    now: DateTime<Utc>,
    touched: &mut BTreeSet<InstanceId>,
) -> R<bool> {
    let visible = round_up(message.visible_at);
    if message.target.is_entity() {
        out.push_entity(&message.target, visible, &message.event);
    } else if let Some(m) = admit(facts, message) {
        out.push_inbox(&m.target, m.target_execution.as_ref(), visible, &m.event);
    } else {
        release_dropped_grant(conn, cx, message, now, touched).await?;
        return Ok(false);
    }
    if visible > now {
        cx.changes.wakeup(&message.target, visible);
        return Ok(false);
    }
    if message.target == *committing {
        return Ok(true);
    }
    touched.insert(message.target.clone());
    Ok(false)
}

/// A lock grant that cannot be delivered (the owner ended) would leave the entities
/// locked; §4.5 says to release them. The grant does not name them, so release every
/// entity this owner holds in that critical section.
async fn release_dropped_grant(
    conn: &mut PgConnection,
    cx: &mut Cx,
    message: &OutboundMessage,
    now: DateTime<Utc>,
    touched: &mut BTreeSet<InstanceId>,
) -> R<()> {
    let Some(critical_section) = rules::undeliverable_grant(message) else {
        return Ok(());
    };
    let hub = cx.hub.clone();
    let rows = sqlx::query(
        "UPDATE entities e SET locked_by = NULL, critical_section = NULL, \
           version = version + 1 \
         WHERE hub = $1 AND locked_by = $2 AND critical_section = $3 \
         RETURNING instance_id, EXISTS (SELECT 1 FROM entity_inbox x \
           WHERE x.hub = $1 AND x.instance_id = e.instance_id AND x.visible_at <= $4) AS visible",
    )
    .bind(hub)
    .bind(message.target.as_str())
    .bind(critical_section)
    .bind(now)
    .fetch_all(&mut *conn)
    .await
    .map_err(sql("entity lock release"))?;
    for row in &rows {
        if get::<bool>(row, "visible")? {
            touched.insert(InstanceId::new(get::<String>(row, "instance_id")?));
        }
    }
    Ok(())
}

/// Notes every touched target as ready.
pub(super) fn note_touched(cx: &mut Cx, touched: &BTreeSet<InstanceId>) {
    for id in touched {
        cx.changes.ready(id);
    }
}
