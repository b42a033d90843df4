//! Retention (`--retention`): a background task that purges ended instances once they are
//! older than a per-status age, per task hub, and cleans entity storage (empty entities,
//! orphaned locks) on the same passes.
//!
//! Age is counted from when an instance ended (`completed_at`), not from its creation.
//! Only roots of instance trees are selected (no parent, or the parent is gone) and they
//! are purged recursively, so a sub-orchestration leaves with its root, under the root's
//! rule, however old the child itself is; a child still running when its root goes stays
//! (the recursive purge keeps live instances) and becomes a root of its own once it ends.
//!
//! Each purge runs in the store's batches (one transaction per 100 roots), so live
//! commits interleave with it. Several sidecars sharing a PostgreSQL database each run
//! the task: a purge re-checks and locks each root in its own transaction, so two passes
//! racing on the same instance delete it once and the other finds nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{AppState, Result, TaskHubs};
use crate::domain::{RuntimeStatus, TaskHubName};
use crate::store::PurgeFilter;

/// Shortest and longest time between two retention passes.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// The statuses a rule can name, with their names in the syntax.
const STATUSES: [(&str, RuntimeStatus); 4] = [
    ("completed", RuntimeStatus::Completed),
    ("failed", RuntimeStatus::Failed),
    ("terminated", RuntimeStatus::Terminated),
    ("canceled", RuntimeStatus::Canceled),
];

fn status_label(status: RuntimeStatus) -> &'static str {
    STATUSES
        .iter()
        .find(|(_, s)| *s == status)
        .map_or("other", |(name, _)| name)
}

/// How long ended instances are kept, by status: `None` keeps them (`off`).
type Rules = BTreeMap<&'static str, Option<Duration>>;

/// The parsed `--retention` value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    global: Rules,
    hubs: BTreeMap<TaskHubName, Rules>,
}

impl RetentionPolicy {
    /// Parses `[HUB:]STATUS=AGE` entries separated by commas, e.g.
    /// `completed=7d,failed=30d,orders:completed=1d`. STATUS is completed, failed,
    /// terminated or canceled; AGE a duration such as `90s`, `15m`, `12h`, `7d` (or
    /// `off`, to keep that status forever, e.g. for one hub). An empty value is no
    /// retention. The error names the entry at fault.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut policy = Self::default();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (key, age) = entry.split_once('=').ok_or_else(|| {
                format!("entry {entry:?} must look like STATUS=AGE or HUB:STATUS=AGE")
            })?;
            let (hub, status) = match key.split_once(':') {
                Some((hub, status)) => {
                    let hub = TaskHubName::parse(hub.trim())
                        .map_err(|err| format!("entry {entry:?}: {err}"))?;
                    (Some(hub), status)
                }
                None => (None, key),
            };
            let status = status.trim().to_ascii_lowercase();
            let Some((name, _)) = STATUSES.iter().find(|(name, _)| *name == status) else {
                return Err(format!(
                    "entry {entry:?}: unknown status {status:?}; expected completed, failed, terminated or canceled"
                ));
            };
            let age = parse_age(age.trim()).map_err(|err| format!("entry {entry:?}: {err}"))?;
            let rules = match hub {
                Some(hub) => policy.hubs.entry(hub).or_default(),
                None => &mut policy.global,
            };
            if rules.insert(name, age).is_some() {
                return Err(format!(
                    "entry {entry:?}: this status already has an age{}",
                    if key.contains(':') {
                        " for this task hub"
                    } else {
                        ""
                    }
                ));
            }
        }
        Ok(policy)
    }

    /// Whether no hub has any rule (nothing to run).
    pub fn is_empty(&self) -> bool {
        self.global.values().all(Option::is_none)
            && self.hubs.values().all(|r| r.values().all(Option::is_none))
    }

    /// The hubs named by per-hub entries.
    pub fn named_hubs(&self) -> impl Iterator<Item = &TaskHubName> {
        self.hubs.keys()
    }

    /// The rules of `hub`: its own entries over the global ones; statuses kept forever
    /// are left out.
    pub fn rules_for(&self, hub: &TaskHubName) -> Vec<(RuntimeStatus, Duration)> {
        let mut rules = self.global.clone();
        if let Some(own) = self.hubs.get(hub) {
            rules.extend(own.iter().map(|(k, v)| (*k, *v)));
        }
        STATUSES
            .iter()
            .filter_map(|(name, status)| Some((*status, (*rules.get(name)?)?)))
            .collect()
    }

    /// Time between passes: a tenth of the shortest age, so an instance outlives its age
    /// by at most about 10%, within [`MIN_INTERVAL`, `MAX_INTERVAL`].
    pub fn interval(&self) -> Duration {
        let shortest = self
            .global
            .values()
            .chain(self.hubs.values().flat_map(BTreeMap::values))
            .flatten()
            .min()
            .copied()
            .unwrap_or(MAX_INTERVAL);
        (shortest / 10).clamp(MIN_INTERVAL, MAX_INTERVAL)
    }
}

impl fmt::Display for RetentionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entry = |hub: Option<&TaskHubName>, status: &str, age: &Option<Duration>| {
            let prefix = hub.map(|h| format!("{h}:")).unwrap_or_default();
            let age = age.map_or("off".to_string(), |a| {
                humantime::format_duration(a).to_string()
            });
            format!("{prefix}{status}={age}")
        };
        let entries: Vec<String> = self
            .global
            .iter()
            .map(|(s, a)| entry(None, s, a))
            .chain(
                self.hubs
                    .iter()
                    .flat_map(|(h, r)| r.iter().map(move |(s, a)| entry(Some(h), s, a))),
            )
            .collect();
        f.write_str(&entries.join(","))
    }
}

fn parse_age(raw: &str) -> Result<Option<Duration>, String> {
    if raw.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let age = humantime::parse_duration(raw).map_err(|err| {
        format!("age {raw:?} is not a duration such as 90s, 15m, 12h or 7d ({err})")
    })?;
    if age.is_zero() {
        return Err(format!("age {raw:?} must be more than zero"));
    }
    // The cut-off is `now - age` on a chrono clock: refuse ages it cannot subtract.
    if chrono::Duration::from_std(age).is_err() || age > Duration::from_secs(100 * 365 * 86_400) {
        return Err(format!("age {raw:?} is longer than 100 years"));
    }
    Ok(Some(age))
}

/// What one retention pass did on one hub.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Instances purged per status rule (children counted with their root).
    pub purged: Vec<(RuntimeStatus, u32)>,
    /// Empty entities removed.
    pub entities_removed: u32,
    /// Orphaned entity locks released.
    pub locks_released: u32,
}

impl AppState {
    /// One retention pass over this hub: purges, per rule, the ended instance trees whose
    /// root ended more than the rule's age ago, then cleans entity storage.
    pub async fn apply_retention(
        &self,
        rules: &[(RuntimeStatus, Duration)],
    ) -> Result<RetentionReport> {
        let now = self.clock().now();
        let mut report = RetentionReport::default();
        for &(status, age) in rules {
            let Some(before) = chrono::Duration::from_std(age)
                .ok()
                .and_then(|age| now.checked_sub_signed(age))
            else {
                continue;
            };
            let filter = PurgeFilter {
                statuses: vec![status],
                completed_before: Some(before),
                roots_only: true,
                ..PurgeFilter::default()
            };
            // The store purges in batches of its own (one transaction each), so live
            // commits are served between them.
            let (purged, _) = self.store().purge_where(&filter, true, None).await?;
            report.purged.push((status, purged));
        }
        let mut token = None;
        loop {
            let page = self.clean_entity_storage(token, true, true).await?;
            report.entities_removed = report.entities_removed.saturating_add(page.removed);
            report.locks_released = report.locks_released.saturating_add(page.released);
            match page.token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        Ok(report)
    }
}

/// Runs retention passes over every open hub until `shutdown` fires. A pass that fails
/// on one hub is logged and retried on the next pass.
pub async fn run(hubs: TaskHubs, policy: Arc<RetentionPolicy>, shutdown: CancellationToken) {
    let interval = policy.interval();
    tracing::info!(retention = %policy, interval = ?interval, "retention task started");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        for (name, state) in hubs.list() {
            let rules = policy.rules_for(&name);
            if rules.is_empty() {
                continue;
            }
            let report = tokio::select! {
                // Dropping a purge between or inside its transactions is safe: each
                // batch commits whole or not at all.
                () = shutdown.cancelled() => return,
                report = state
                    .apply_retention(&rules)
                    .instrument(tracing::debug_span!("retention_pass", task_hub = %name)) => report,
            };
            match report {
                Ok(report) => record(&name, &rules, &report),
                Err(err) => tracing::warn!(
                    task_hub = %name,
                    error = %err,
                    "retention pass failed; retrying on the next pass"
                ),
            }
        }
    }
}

fn record(hub: &TaskHubName, rules: &[(RuntimeStatus, Duration)], report: &RetentionReport) {
    let metrics = &crate::metrics::get().retention;
    for &(status, purged) in &report.purged {
        if purged == 0 {
            continue;
        }
        let label = status_label(status);
        metrics.purged(hub.as_str(), label, u64::from(purged));
        let age = rules
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, age)| humantime::format_duration(*age).to_string())
            .unwrap_or_default();
        tracing::info!(
            task_hub = %hub,
            status = label,
            purged,
            older_than = %age,
            "retention purged ended instances"
        );
    }
    if report.entities_removed > 0 || report.locks_released > 0 {
        metrics.entities_cleaned(
            hub.as_str(),
            u64::from(report.entities_removed),
            u64::from(report.locks_released),
        );
        tracing::info!(
            task_hub = %hub,
            removed = report.entities_removed,
            locks_released = report.locks_released,
            "retention cleaned entity storage"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(name: &str) -> TaskHubName {
        TaskHubName::parse(name).unwrap()
    }

    #[test]
    fn global_and_per_hub_rules() {
        let p = RetentionPolicy::parse(
            " completed=7d, failed=30d ,terminated=12h,Orders:completed=1d,orders:failed=off",
        )
        .unwrap();
        let day = Duration::from_secs(86_400);
        assert_eq!(
            p.rules_for(&hub("default")),
            vec![
                (RuntimeStatus::Completed, 7 * day),
                (RuntimeStatus::Failed, 30 * day),
                (RuntimeStatus::Terminated, Duration::from_secs(12 * 3600)),
            ]
        );
        // The hub's own entries override the global ones for their status only.
        assert_eq!(
            p.rules_for(&hub("orders")),
            vec![
                (RuntimeStatus::Completed, day),
                (RuntimeStatus::Terminated, Duration::from_secs(12 * 3600)),
            ]
        );
        assert_eq!(p.named_hubs().collect::<Vec<_>>(), vec![&hub("orders")]);
        assert_eq!(p.interval(), MAX_INTERVAL);
        assert!(!p.is_empty());
    }

    #[test]
    fn units_and_interval() {
        let p = RetentionPolicy::parse("canceled=90s,completed=15m").unwrap();
        assert_eq!(
            p.rules_for(&hub("a")),
            vec![
                (RuntimeStatus::Completed, Duration::from_secs(900)),
                (RuntimeStatus::Canceled, Duration::from_secs(90)),
            ]
        );
        assert_eq!(p.interval(), Duration::from_secs(9));
        assert_eq!(
            RetentionPolicy::parse("completed=1s").unwrap().interval(),
            MIN_INTERVAL
        );
        assert_eq!(p.to_string(), "canceled=1m 30s,completed=15m");
    }

    #[test]
    fn empty_and_off_only_run_nothing() {
        for raw in ["", " , ", "completed=off", "x:failed=off"] {
            let p = RetentionPolicy::parse(raw).unwrap();
            assert!(p.is_empty(), "{raw:?}");
            assert!(p.rules_for(&hub("x")).is_empty(), "{raw:?}");
        }
    }

    #[test]
    fn errors_name_the_entry() {
        for (raw, wanted) in [
            ("completed", "entry \"completed\" must look like STATUS=AGE"),
            (
                "running=1d",
                "entry \"running=1d\": unknown status \"running\"",
            ),
            (
                "completed=7",
                "entry \"completed=7\": age \"7\" is not a duration",
            ),
            ("completed=soon", "entry \"completed=soon\": age \"soon\""),
            (
                "failed=0s",
                "entry \"failed=0s\": age \"0s\" must be more than zero",
            ),
            (
                "completed=1d,completed=2d",
                "entry \"completed=2d\": this status already has an age",
            ),
            (
                "a:failed=1d,A:failed=2d",
                "already has an age for this task hub",
            ),
            (
                "9x:completed=1d",
                "entry \"9x:completed=1d\": task hub name \"9x\" must start with a letter",
            ),
            (
                "completed=200000000000d",
                "entry \"completed=200000000000d\": age",
            ),
        ] {
            let err = RetentionPolicy::parse(raw).unwrap_err();
            assert!(err.contains(wanted), "{raw:?}: {err}");
        }
    }
}
