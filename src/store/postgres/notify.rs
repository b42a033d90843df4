//! The change feed between processes sharing one database (STYLE.md §15): every write
//! transaction queues NOTIFY payloads describing what it changed, sent with its COMMIT;
//! one background task per store LISTENs and turns other processes' payloads into
//! [`StoreChange`]s.
//!
//! Payload (JSON): `{"h": hub, "o": origin owner, "c": [change, ...]}` where a change is
//! `["r", id]` (ready), `["w", id, micros]` (wake-up), `["s", id]` (status), `["a"]`
//! (activities) or `["x"]` (something too large to describe: resync).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::domain::InstanceId;
use crate::store::StoreChange;

/// The LISTEN/NOTIFY channel.
pub(super) const CHANNEL: &str = "durabletask";

/// PostgreSQL refuses payloads of 8000 bytes or more; keep a margin for the envelope.
const MAX_PAYLOAD: usize = 7_800;

/// Changes one transaction made, deduplicated, in the order they happened.
#[derive(Debug, Default)]
pub(super) struct Changes {
    items: Vec<StoreChange>,
}

impl Changes {
    fn push(&mut self, change: StoreChange) {
        if !self.items.contains(&change) {
            self.items.push(change);
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
