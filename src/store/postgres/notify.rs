//! The change feed between processes sharing one database (STYLE.md §15): every write
//! describes what it changed ([`Changes`]) and, once committed, hands that to the
//! [`Notifier`], which sends it as NOTIFY payloads in batches; one background task per
//! store LISTENs and turns other processes' payloads into [`StoreChange`]s.
//!
//! Notices are never sent from inside the writes' own transactions: a transaction that
//! NOTIFYs holds a database-wide lock from its commit until the commit is flushed to
//! disk, so every notifying write would wait for every other one's WAL flush in turn.
//! The notifier's transactions write nothing else and commit without waiting for the
//! flush (`synchronous_commit = off`: a notice lost in a database crash is what the
//! dispatchers' sweep is for). A process that dies between a commit and its notice
//! leaves the same gap, closed the same way.
//!
//! Payload (JSON): `{"h": hub, "o": origin owner, "c": [change, ...]}` where a change is
//! `["r", id]` (ready), `["w", id, micros]` (wake-up), `["s", id]` (status), `["a"]`
//! (activities) or `["x"]` (something too large to describe: resync).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::InstanceId;
use crate::store::StoreChange;

/// The LISTEN/NOTIFY channel.
pub(super) const CHANNEL: &str = "durabletask";

/// PostgreSQL refuses payloads of 8000 bytes or more; keep a margin for the envelope.
const MAX_PAYLOAD: usize = 7_800;

/// Changes one or more transactions made, deduplicated, in the order they happened.
#[derive(Debug, Default)]
pub(super) struct Changes {
    items: Vec<StoreChange>,
    seen: HashSet<StoreChange>,
}

impl Changes {
    fn push(&mut self, change: StoreChange) {
        if self.seen.insert(change.clone()) {
            self.items.push(change);
        }
    }

    /// Whether there is nothing to tell.
    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Adds `other`'s changes after these.
    pub(super) fn append(&mut self, other: Changes) {
        for change in other.items {
            self.push(change);
        }
    }

    /// The instance or entity has a message visible now (or was released with one).
    pub(super) fn ready(&mut self, id: &InstanceId) {
        self.push(StoreChange::Ready(id.clone()));
    }

    /// The instance or entity gets a message visible at `at`.
    pub(super) fn wakeup(&mut self, id: &InstanceId, at: DateTime<Utc>) {
        self.push(StoreChange::Wakeup(id.clone(), at));
    }

    /// Ready when `visible <= now`, else a wake-up at `visible`.
    pub(super) fn message(&mut self, id: &InstanceId, visible: DateTime<Utc>, now: DateTime<Utc>) {
        if visible <= now {
            self.ready(id);
        } else {
            self.wakeup(id, visible);
        }
    }

    /// The instance's status changed.
    pub(super) fn status(&mut self, id: &InstanceId) {
        self.push(StoreChange::Status(id.clone()));
    }

    /// Activity rows were inserted or released.
    pub(super) fn activities(&mut self) {
        self.push(StoreChange::Activities);
    }

    /// The NOTIFY payloads, as few as fit the size limit.
    pub(super) fn payloads(&self, hub: &str, owner: &str) -> Vec<String> {
        if self.items.is_empty() {
            return Vec::new();
        }
        let head = format!(
            "{{\"h\":{},\"o\":{},\"c\":[",
            Value::from(hub),
            Value::from(owner)
        );
        let mut out = Vec::new();
        let mut current = head.clone();
        let mut count = 0usize;
        for change in &self.items {
            let mut item = encode(change);
            if head.len() + item.len() + 2 > MAX_PAYLOAD {
                // An id too long to describe: the receiver sweeps instead.
                item = "[\"x\"]".to_owned();
            }
            if current.len() + item.len() + 2 > MAX_PAYLOAD {
                current.push_str("]}");
                out.push(std::mem::replace(&mut current, head.clone()));
                count = 0;
            }
            if count > 0 {
                current.push(',');
            }
            current.push_str(&item);
            count += 1;
        }
        current.push_str("]}");
        out.push(current);
        out
    }
}

/// Sends committed [`Changes`] to other processes in batches, from its own connection;
/// see the module docs for why not from the writes' transactions.
#[derive(Debug, Default)]
pub(super) struct Notifier {
    pending: Mutex<Changes>,
    wake: Notify,
}

impl Notifier {
    /// Queues what a committed write changed; sent soon, together with whatever else
    /// is waiting.
    pub(super) fn publish(&self, changes: Changes) {
        if changes.is_empty() {
            return;
        }
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(changes);
        self.wake.notify_one();
    }

    fn take(&self) -> Changes {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The sending task: one batch at a time while changes arrive; after `cancel`, what
    /// is still queued is sent before it returns. A batch that cannot be sent is
    /// dropped (logged): the receivers' sweeps find its work.
    pub(super) async fn run(
        self: Arc<Self>,
        pool: PgPool,
        hub: String,
        owner: String,
        cancel: CancellationToken,
    ) {
        loop {
            let stop = tokio::select! {
                () = cancel.cancelled() => true,
                () = self.wake.notified() => false,
            };
            loop {
                let batch = self.take();
                if batch.is_empty() {
                    break;
                }
                let payloads = batch.payloads(&hub, &owner);
                let sent = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS n(p)")
                    .bind(CHANNEL)
                    .bind(&payloads)
                    .execute(&pool)
                    .await;
                if let Err(err) = sent {
                    tracing::warn!(error = %err, notices = payloads.len(), "could not notify other sidecars; their sweeps will find the work");
                }
            }
            if stop {
                return;
            }
        }
    }
}

fn encode(change: &StoreChange) -> String {
    let value = match change {
        StoreChange::Ready(id) => serde_json::json!(["r", id.as_str()]),
        StoreChange::Wakeup(id, at) => serde_json::json!(["w", id.as_str(), at.timestamp_micros()]),
        StoreChange::Status(id) => serde_json::json!(["s", id.as_str()]),
        StoreChange::Activities => serde_json::json!(["a"]),
        StoreChange::Resync => serde_json::json!(["x"]),
    };
    value.to_string()
}

/// The changes of one payload, unless it comes from `owner` itself or another hub.
pub(super) fn decode(payload: &str, hub: &str, owner: &str) -> Vec<StoreChange> {
    let Ok(value) = serde_json::from_str::<Value>(payload) else {
        tracing::warn!("undecodable store notification");
        return vec![StoreChange::Resync];
    };
    if value["h"].as_str() != Some(hub) || value["o"].as_str() == Some(owner) {
        return Vec::new();
    }
    let Some(items) = value["c"].as_array() else {
        return vec![StoreChange::Resync];
    };
    items
        .iter()
        .map(|item| {
            let id = || item[1].as_str().map(InstanceId::new);
            let change = match item[0].as_str() {
                Some("r") => id().map(StoreChange::Ready),
                Some("s") => id().map(StoreChange::Status),
                Some("a") => Some(StoreChange::Activities),
                Some("w") => id()
                    .zip(
                        item[2]
                            .as_i64()
                            .and_then(DateTime::<Utc>::from_timestamp_micros),
                    )
                    .map(|(id, at)| StoreChange::Wakeup(id, at)),
                _ => None,
            };
            change.unwrap_or(StoreChange::Resync)
        })
        .collect()
}

/// The listener task: LISTEN on [`CHANNEL`] over `pool` (its own connection), send
/// `Resync` after every (re)connect, forward other processes' changes, until `cancel`
/// fires or the receiver is gone.
pub(super) async fn listen(
    pool: PgPool,
    hub: String,
    owner: String,
    tx: UnboundedSender<StoreChange>,
    cancel: CancellationToken,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            () = cancel.cancelled() => return,
            r = connect(&pool) => r,
        };
        let mut listener = match connected {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(error = %err, "store change feed: cannot listen; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        delay = Duration::from_millis(100);
        // Anything committed while not listening was missed: the dispatcher sweeps.
        if tx.send(StoreChange::Resync).is_err() {
            return;
        }
        loop {
            let next = tokio::select! {
                () = cancel.cancelled() => return,
                n = listener.try_recv() => n,
            };
            match next {
                Ok(Some(n)) => {
                    for change in decode(n.payload(), &hub, &owner) {
                        if tx.send(change).is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => {
                    tracing::warn!("store change feed: connection lost; reconnecting");
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "store change feed failed; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_split_under_the_limit() {
        let mut changes = Changes::default();
        let at = DateTime::<Utc>::from_timestamp_micros(1_700_000_000_000_001).unwrap();
        for i in 0..500 {
            changes.ready(&InstanceId::new(format!("instance-{i:04}")));
        }
        changes.ready(&InstanceId::new("instance-0000"));
        changes.wakeup(&InstanceId::new("t"), at);
        changes.status(&InstanceId::new("it's"));
        changes.activities();
        let payloads = changes.payloads("default", "me");
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() < 8000));
        let decoded: Vec<StoreChange> = payloads
            .iter()
            .flat_map(|p| decode(p, "default", "other"))
            .collect();
        assert_eq!(decoded, changes.items);
        assert!(decode(&payloads[0], "default", "me").is_empty());
        assert!(decode(&payloads[0], "hub2", "other").is_empty());
    }
}
