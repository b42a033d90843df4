//! Retention metrics: what the background purge removed, by task hub. Recorded once per
//! pass and hub, so the label lookups here are off the hot path.

use prometheus::{IntCounterVec, Opts, Registry};

use super::register;

/// Counters of the retention task (`--retention`).
#[derive(Debug)]
pub struct RetentionMetrics {
    purged: IntCounterVec,
    entities_removed: IntCounterVec,
    locks_released: IntCounterVec,
}

impl RetentionMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        Self {
            purged: counter(
                "durabletask_retention_purged_total",
                "Ended instances the retention task purged, by task hub and the status of their root (sub-orchestrations count with their root).",
                &["task_hub", "status"],
            ),
            entities_removed: counter(
                "durabletask_retention_entities_removed_total",
                "Empty entities (no state, lock or queued work) the retention task removed, by task hub.",
                &["task_hub"],
            ),
            locks_released: counter(
                "durabletask_retention_entity_locks_released_total",
                "Entity locks the retention task released because their owner had ended or was gone, by task hub.",
                &["task_hub"],
            ),
        }
    }

    /// `n` instances of `task_hub` purged under the rule for `status` (a label such as
    /// `completed`).
    pub fn purged(&self, task_hub: &str, status: &str, n: u64) {
        self.purged.with_label_values(&[task_hub, status]).inc_by(n);
    }

    /// Entities removed and locks released by one cleaning of `task_hub`.
    pub fn entities_cleaned(&self, task_hub: &str, removed: u64, released: u64) {
        self.entities_removed
            .with_label_values(&[task_hub])
            .inc_by(removed);
        self.locks_released
            .with_label_values(&[task_hub])
            .inc_by(released);
    }
}
