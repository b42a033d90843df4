//! What a metrics scrape samples from this server: connected worker streams and the ready
//! backlog. Both are in-memory reads; nothing here touches the store.

use super::AppState;
use crate::metrics::Snapshot;

impl AppState {
    /// The per-server gauges of a metrics scrape (instance counts are the door's to add:
    /// they read the store, so the door caches them).
    pub fn metrics_snapshot(&self, task_hub: &str) -> Snapshot {
        Snapshot {
            task_hub: task_hub.to_owned(),
            worker_streams: self.inner.hub.stream_count(),
            backlog: self.engine().backlog(),
            instances: None,
        }
    }
}
