//! Working beside other processes on one shared store (STYLE.md §15). Who works on what
//! lives in the store as leases: every fetch claims, every commit presents its claim's
//! epoch, and this file gives claims back, keeps them alive, and learns of work that other
//! processes wrote:
//!
//! - the change feed (`Store::subscribe`, LISTEN/NOTIFY on PostgreSQL) marks instances
//!   ready, arms wake-ups and wakes `WaitForInstance*` waiters as other processes commit;
//! - a slow sweep (`Store::due_work`) catches what no notification announced: work whose
//!   claimant died and whose lease expired, or notifications lost while reconnecting;
//! - renewal extends this process's leases well before they expire.
//!
//! A single-process store (SQLite) has no feed, and none of this runs.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{DispatchState, Engine};
use crate::domain::InstanceId;
use crate::store::{Lease, Recovery, StoreChange};

/// Most rows of each kind one sweep takes in.
const SWEEP_LIMIT: u32 = 1000;

/// Shortest time between two sweeps, however many notifications ask for one.
const MIN_SWEEP_GAP: std::time::Duration = std::time::Duration::from_millis(200);

impl DispatchState {
    /// Takes in work the store reported (start-up recovery or a sweep). Known activity
    /// rows are left as they are, and so are instances and entities with a flight here:
    /// the flight's commit reports whether messages are still waiting, so marking them
    /// again would only cost a claim and a release that find nothing.
    pub(super) fn absorb(&mut self, found: Recovery) {
        for id in found.ready {
            if !self.in_flight(&id) {
                self.mark_ready(id);
            }
        }
        for (at, id) in found.wakeups {
            self.timers.push(at, id);
        }
        for item in found.activities {
            self.activities.enqueue(item, false);
        }
    }
}

impl Engine {
    /// Gives back a claim on an instance or entity, off the caller's path (a no-op on a
    /// single-process store). A failure only delays others until the lease expires.
    pub(super) fn release_claim(&self, id: &InstanceId, lease: Lease) {
        if !self.shared {
            return;
        }
        let store = Arc::clone(&self.store);
        let id = id.clone();
        self.tasks.spawn(async move {
            let released = if id.is_entity() {
                store.release_entity(&id, lease).await
            } else {
                store.release_orchestration(&id, lease).await
            };
            if let Err(err) = released {
                tracing::warn!(instance_id = %id, error = %err, "could not release a claim; it expires instead");
            }
        });
    }

    /// Gives back the claims on activity rows that went back to the queue, off the
    /// caller's path (a no-op on a single-process store). `unsent`: pre-claimed rows that
    /// never went out, whose claim is only given back while still the commit's own.
    pub(super) fn release_activity_claims(&self, activities: Vec<i64>, unsent: bool) {
        if !self.shared || activities.is_empty() {
            return;
        }
        let store = Arc::clone(&self.store);
        self.tasks.spawn(async move {
            let released = if unsent {
                store.release_unsent_activities(&activities).await
            } else {
                store.release_activities(&activities).await
            };
            if let Err(err) = released {
                tracing::warn!(activities = activities.len(), error = %err, "could not release activity claims; they expire instead");
            }
        });
    }

    /// Starts the change feed, the sweep and lease renewal; they stop with `cancel`.
    pub(super) fn start_ownership_tasks(self: &Arc<Self>, cancel: &CancellationToken) {
        let sweep_now = Arc::new(Notify::new());
        let feed = self
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut feed) = feed {
            let this = Arc::clone(self);
            let (cancel, sweep_now) = (cancel.clone(), Arc::clone(&sweep_now));
            self.tasks.spawn(async move {
                loop {
                    let change = tokio::select! {
                        _ = cancel.cancelled() => return,
                        change = feed.recv() => change,
                    };
                    let Some(change) = change else {
                        tracing::warn!("store change feed ended; relying on the sweep");
                        return;
                    };
                    this.apply_change(change, &sweep_now);
                }
            });
        }
        let this = Arc::clone(self);
        let stop = cancel.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(this.config.sweep) => {}
                    _ = sweep_now.notified() => {}
                }
                this.sweep().await;
                // Under load every commit elsewhere announces activities; one sweep per
                // pause answers all that arrived meanwhile instead of one each.
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(MIN_SWEEP_GAP) => {}
                }
            }
        });
        let this = Arc::clone(self);
        let stop = cancel.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(this.config.lease_renewal) => {}
                }
                if let Err(err) = this.store.renew_leases().await {
                    tracing::warn!(error = %err, "could not renew leases; work held here may be taken over");
                }
            }
        });
    }

    /// What another process's commit means here.
    fn apply_change(&self, change: StoreChange, sweep_now: &Notify) {
        match change {
            StoreChange::Ready(id) => self.instance_ready(&id),
            StoreChange::Wakeup(id, at) => self.schedule_wakeup(&id, at),
            StoreChange::Status(id) => self.watchers.notify(&id),
            // Both are answered by one look at the store, coalesced by the `Notify`.
            StoreChange::Activities | StoreChange::Resync => sweep_now.notify_one(),
        }
    }

    /// One look for due work nobody here knows of.
    async fn sweep(&self) {
        let now = self.clock.now();
        let horizon = now + chrono::Duration::from_std(self.config.sweep).unwrap_or_default();
        match self.store.due_work(now, horizon, SWEEP_LIMIT).await {
            Ok(found) => {
                if found.ready.is_empty() && found.wakeups.is_empty() && found.activities.is_empty()
                {
                    return;
                }
                tracing::debug!(
                    ready = found.ready.len(),
                    wakeups = found.wakeups.len(),
                    activities = found.activities.len(),
                    "sweep found work"
                );
                self.lock().absorb(found);
                self.wake.notify_one();
            }
            Err(err) => tracing::warn!(error = %err, "sweep for due work failed"),
        }
    }
}
