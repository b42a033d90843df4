//! The ready backlog for the metrics scrape: work ready to run but not yet sent to a
//! worker, per kind, and how long the oldest of it has waited. Read at scrape time under
//! the dispatch lock (a few field reads), so dispatching pays nothing for it.

use std::time::{Duration, Instant};

use super::{Engine, Parked};
use crate::metrics::Backlog;

impl Engine {
    /// The backlog per kind, indexed like `metrics::WorkKind::ALL` (orchestration,
    /// activity, entity). Parked work (no connected stream's filters accept it) counts as
    /// backlog; its age is not tracked, so the age is that of the oldest queued item.
    pub fn backlog(&self) -> [Backlog; 3] {
        let st = self.lock();
        let mut parked = [0usize; 3];
        for p in &st.parked {
            let kind = match p {
                Parked::Orchestration(..) => 0,
                Parked::Activity(_) => 1,
                Parked::Entity(_) => 2,
            };
            parked[kind] += 1;
        }
        let queues = [
            (st.ready.len(), st.ready.oldest()),
            st.activities.backlog(),
            st.entities.backlog(),
        ];
        drop(st);
        let now = Instant::now();
        let mut out = [Backlog::default(); 3];
        for (i, (queued, oldest)) in queues.into_iter().enumerate() {
            out[i] = Backlog {
                items: queued + parked[i],
                oldest: oldest.map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
            };
        }
        out
    }
}
