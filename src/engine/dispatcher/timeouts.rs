//! The work-item timeout: an item a worker stream received but did not complete within
//! the configured time is taken back and dispatched again, preferably to another stream
//! (PROTOCOL.md §4.8 "Leases": optional, for orchestration and entity episodes; activities
//! only when asked for, since an activity may legitimately run for hours and the protocol
//! has no heartbeat).
//!
//! No per-dispatch bookkeeping on the hot path: a sweep, a few times per timeout, lists
//! the tokens outstanding right now and remembers when it first saw each. A token seen
//! for longer than the timeout is abandoned through the ordinary abandon path, so the
//! item is requeued, its claim given back and a late completion with the old token gets
//! the stale-token answer (orchestrations, entities) or is still accepted once
//! (activities), exactly as after an explicit abandon (so it also counts as abandoned and
//! backs off when it keeps timing out). Memory is one map entry per outstanding item,
//! which the streams' concurrency hints bound.
//!
//! The stream keeps the capacity the item held (`WorkExecutor::hold`): the worker may
//! still be busy with it, or not be reading at all, and either way it should not get new
//! work in its place. A stuck stream therefore absorbs at most its concurrency hints'
//! worth of items, each delayed by the timeout, and nothing after; its capacity comes
//! back when it reconnects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::orchestration::Phase;
use super::tokens::{activity_token, format_token, ENTITY_PREFIX, ORCH_PREFIX};
use super::Engine;
use crate::engine::executor::Reservation;

/// A work item out with a worker, as the sweep sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Out {
    Orchestration(u64),
    Entity(u64),
    Activity(u64, i64),
}

/// How often the sweep runs for a timeout: often enough that an item is taken back
/// within a quarter of the timeout after it expired, at most once a second.
fn sweep_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

impl Engine {
    /// Starts the sweep when a timeout is configured; it stops with `cancel`.
    pub(super) fn start_timeout_sweep(self: &Arc<Self>, cancel: &CancellationToken) {
        let (episodes, activities) = (self.config.work_item_timeout, self.config.activity_timeout);
        let Some(every) = episodes
            .into_iter()
            .chain(activities)
            .min()
            .map(sweep_interval)
        else {
            return;
        };
        let this = Arc::clone(self);
        let stop = cancel.clone();
        self.tasks.spawn(async move {
            let mut seen: HashMap<Out, Instant> = HashMap::new();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                this.sweep_overdue(&mut seen, Instant::now());
            }
        });
    }

    /// Abandons every item outstanding longer than its timeout; `seen` carries first
    /// sightings from one sweep to the next.
    fn sweep_overdue(&self, seen: &mut HashMap<Out, Instant>, now: Instant) {
        let (episodes, activities) = (self.config.work_item_timeout, self.config.activity_timeout);
        let outstanding: Vec<(Out, Reservation)> = {
            let st = self.lock();
            let mut out = Vec::new();
            if episodes.is_some() {
                out.extend(
                    st.flights
                        .values()
                        .filter(|f| matches!(f.phase, Phase::Outstanding(_)))
                        .map(|f| (Out::Orchestration(f.token), f.reservation)),
                );
                out.extend(
                    st.entities
                        .outstanding_tokens()
                        .map(|(t, r)| (Out::Entity(t), r)),
                );
            }
            if activities.is_some() {
                out.extend(
                    st.activities
                        .outstanding_tokens()
                        .map(|(t, row, r)| (Out::Activity(t, row), r)),
                );
            }
            out
        };
        let mut next = HashMap::with_capacity(outstanding.len());
        let mut overdue = Vec::new();
        for (item, reservation) in outstanding {
            let since = seen.get(&item).copied().unwrap_or(now);
            let limit = match item {
                Out::Activity(..) => activities,
                Out::Orchestration(_) | Out::Entity(_) => episodes,
            };
            if limit.is_some_and(|limit| now.duration_since(since) >= limit) {
                overdue.push((item, reservation));
            } else {
                next.insert(item, since);
            }
        }
        *seen = next;
        for (item, reservation) in overdue {
            let (kind, token) = match item {
                Out::Orchestration(t) => ("orchestration", format_token(ORCH_PREFIX, t)),
                Out::Entity(t) => ("entity", format_token(ENTITY_PREFIX, t)),
                Out::Activity(t, row) => ("activity", activity_token(t, row)),
            };
            tracing::warn!(
                kind,
                completion_token = %token,
                "work item not completed within the work-item timeout; dispatching it again"
            );
            // Held before the abandon releases it, so the slot is never free in between.
            self.executor.hold(reservation);
            match item {
                Out::Orchestration(_) => self.abandon_orchestration(&token),
                Out::Entity(_) => self.abandon_entity(&token),
                Out::Activity(..) => self.abandon_activity(&token),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_runs_a_few_times_per_timeout_and_at_least_every_second() {
        assert_eq!(
            sweep_interval(Duration::from_millis(200)),
            Duration::from_millis(50)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(600)),
            Duration::from_secs(1)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(1)),
            Duration::from_millis(10)
        );
    }
}
