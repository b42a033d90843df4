//! The imperative shell: keeps dispatch state in memory (ready instances, outstanding
//! episodes, activity queue, timers), pushes work to workers as soon as it is committed,
//! and commits each completed episode with one store call. No polling: a `Notify` wakes
//! the loop on every change, and the nearest timer bounds its sleep.
//!
//! One file per job: `queue` (ready queues and timers, shared by every kind of work),
//! `tokens` (completion tokens), `history` (the history cache), `orchestration` (the
//! orchestration work-item lifecycle), `activity` (the activity lifecycle), `entity` (entity
//! steps), `work_items` (building what workers receive), `ownership` (claims, renewal and
//! the change feed when several processes share the store), `rewinding` and `skipping`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::apply::IdSource;
use super::executor::{Reservation, StreamId, WorkExecutor, WorkKind, WorkTarget};
use super::watch::Watchers;
use super::EngineError;
use crate::domain::{Clock, ExecutionId, InstanceId, OutboundMessage, Transition};
use crate::metrics::WorkKind as MetricKind;
use crate::store::{CommitOutcome, Store, StoreError};

mod activity;
mod backlog;
mod entity;
mod history;
mod orchestration;
mod ownership;
mod queue;
mod rewinding;
mod skipping;
mod timeouts;
mod tokens;
mod work_items;

use orchestration::{Episode, Flight, Phase};
pub use skipping::SkipOutcome;

/// Engine tuning.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most inbox messages delivered in one episode.
    pub max_batch_messages: u32,
    /// Longest backoff after repeated explicit abandons.
    pub max_abandon_backoff: Duration,
    /// How often this process renews the leases it holds (shared stores only); well under
    /// the store's lease duration.
    pub lease_renewal: Duration,
    /// How often the safety sweep looks for due work that no notification announced
    /// (shared stores only): work of a crashed process whose leases expired, or a missed
    /// notification.
    pub sweep: Duration,
    /// An orchestration or entity work item not completed this long after it was sent
    /// is taken back and dispatched again (`None` = never; see `timeouts`).
    pub work_item_timeout: Option<Duration>,
    /// The same for activities; off by default, as activities may run for hours.
    pub activity_timeout: Option<Duration>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch_messages: 1000,
            max_abandon_backoff: Duration::from_secs(60),
            lease_renewal: Duration::from_secs(3),
            sweep: Duration::from_secs(5),
            work_item_timeout: Some(Duration::from_secs(600)),
            activity_timeout: None,
        }
    }
}

/// Why a completion was not applied.
#[derive(Debug, thiserror::Error)]
pub enum CompletionError {
    /// Unknown or superseded completion token (PROTOCOL.md §4.8).
    #[error("no outstanding work item matches completion token '{0}'")]
    Stale(String),
    /// The response does not fit the work item.
    #[error("{0}")]
    Invalid(String),
    /// The actions could not be applied; the orchestration was failed instead.
    #[error("orchestration failed: {0}")]
    Rejected(EngineError),
    /// The store failed; the work item will be redelivered.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Default)]
struct DispatchState {
    ready: queue::ReadyQueue<InstanceId>,
    flights: HashMap<InstanceId, Flight>,
    orch_tokens: HashMap<u64, InstanceId>,
    /// Wake-ups of instances and entities (timers, scheduled starts, retries).
    timers: queue::Timers<InstanceId>,
    activities: activity::ActivityDispatch,
    /// Work no connected stream would take (work-item filters, PROTOCOL.md §4.1), or
    /// whose matching streams were full: looked at again when capacity changes.
    parked: Vec<Parked>,
    abandons: HashMap<InstanceId, u32>,
    recent: tokens::RecentTokens,
    histories: history::HistoryCache,
    /// Entities: their own ready queue (so a full entity capacity never blocks
    /// orchestrations), one step in flight per entity.
    entities: entity::EntityDispatch,
}

/// Work waiting for a stream whose filters accept it.
enum Parked {
    /// An orchestration, with the name and version its filters match on.
    Orchestration(InstanceId, String, Option<String>),
    /// An activity row.
    Activity(i64),
    /// An entity.
    Entity(InstanceId),
}

impl DispatchState {
    /// Whether an episode or entity step of `id` is out (fetching, at a worker, or
    /// committing).
    fn in_flight(&self, id: &InstanceId) -> bool {
        if id.is_entity() {
            self.entities.in_flight(id)
        } else {
            self.flights.contains_key(id)
        }
    }

    fn mark_ready(&mut self, id: InstanceId) {
        if let Some(id) = self.route_ready(id) {
            self.ready.push_back(id);
        }
    }

    /// Hands a ready entity to its queue and marks an instance in flight to run again;
    /// returns any other instance, for the caller to queue where it belongs.
    fn route_ready(&mut self, id: InstanceId) -> Option<InstanceId> {
        if id.is_entity() {
            self.entities.mark_ready(id);
            return None;
        }
        match self.flights.get_mut(&id) {
            Some(f) => {
                f.again = true;
                None
            }
            None => Some(id),
        }
    }

    /// Makes instances whose wake-up is due ready ahead of the rest of the queue, in the
    /// order they came due: their lateness is what a timer's user sees, while the work
    /// queued behind them (new starts, mostly) has no time it was promised.
    fn fire_timers(&mut self, now: DateTime<Utc>) {
        let mut due = Vec::new();
        while let Some(id) = self.timers.pop_due(now) {
            due.extend(self.route_ready(id));
        }
        for id in due.into_iter().rev() {
            self.ready.push_front(id);
        }
    }

    /// Brings the dispatch state in line with a committed episode: history cache, new
    /// activities, timers, and the other instances it sent messages to.
    fn committed(&mut self, t: &Transition, outcome: CommitOutcome, now: DateTime<Utc>) {
        self.histories.advance(t);
        for item in outcome.activities {
            self.activities.enqueue(item, outcome.activities_claimed);
        }
        self.arm_timers(&t.messages, now);
        for other in outcome.touched {
            if other != t.instance_id {
                self.mark_ready(other);
            }
        }
        self.abandons.remove(&t.instance_id);
    }

    /// Arms a wake-up for every message that becomes visible later than `now` (timers,
    /// delayed signals), so its target is looked at then.
    fn arm_timers(&mut self, messages: &[OutboundMessage], now: DateTime<Utc>) {
        for m in messages.iter().filter(|m| m.visible_at > now) {
            self.timers.push(m.visible_at, m.target.clone());
        }
    }
}

struct RandomIds;

impl IdSource for RandomIds {
    fn execution_id(&mut self) -> ExecutionId {
        ExecutionId::generate()
    }
}

impl super::entity::EntityIds for RandomIds {
    fn request_id(&mut self) -> String {
        ExecutionId::generate().to_string()
    }
    fn instance_id(&mut self) -> InstanceId {
        InstanceId::generate()
    }
    fn execution_id(&mut self) -> ExecutionId {
        ExecutionId::generate()
    }
}

/// The dispatcher and completion router.
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    executor: Arc<dyn WorkExecutor>,
    watchers: Watchers,
    state: Mutex<DispatchState>,
    wake: Notify,
    /// Set when capacity came back or a stream connected: parked work is retried.
    capacity_changed: AtomicBool,
    next_token: AtomicU64,
    tasks: TaskTracker,
    config: EngineConfig,
    /// Other processes share the store: claims and releases matter, and the change
    /// feed, renewal and sweep run (see `ownership`).
    shared: bool,
    /// The store's change feed, taken by `run`.
    changes: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<crate::store::StoreChange>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.store)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds the engine; call [`Engine::recover`] then [`Engine::run`].
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        executor: Arc<dyn WorkExecutor>,
        config: EngineConfig,
    ) -> Arc<Self> {
        let changes = store.subscribe();
        Arc::new(Self {
            store,
            clock,
            executor,
            watchers: Watchers::default(),
            state: Mutex::new(DispatchState::default()),
            wake: Notify::new(),
            capacity_changed: AtomicBool::new(false),
            // Tokens start past the clock's microseconds so a restarted process never
            // re-issues a token an old worker may still hold.
            next_token: AtomicU64::new(1),
            tasks: TaskTracker::new(),
            config,
            shared: changes.is_some(),
            changes: Mutex::new(changes),
        })
    }

    fn lock(&self) -> MutexGuard<'_, DispatchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn token(&self) -> u64 {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// The per-instance change signals `WaitForInstance*` waits on.
    pub fn watchers(&self) -> &Watchers {
        &self.watchers
    }

    /// Rebuilds the in-memory queues from the store (start-up).
    pub async fn recover(&self) -> Result<(), StoreError> {
        let now = self.clock.now();
        let seed = u64::try_from(now.timestamp_micros()).unwrap_or(1);
        self.next_token.store(seed, Ordering::Relaxed);
        let recovery = self.store.recover(now).await?;
        let (ready, timers, activities) = {
            let mut st = self.lock();
            st.absorb(recovery);
            (st.ready.len(), st.timers.len(), st.activities.len())
        };
        tracing::info!(ready, timers, activities, "dispatch state recovered");
        self.wake.notify_one();
        Ok(())
    }

    /// Runs the dispatch loop until `cancel` fires, then waits for in-flight fetches.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        if self.shared {
            self.start_ownership_tasks(&cancel);
        }
        self.start_timeout_sweep(&cancel);
        loop {
            let next = self.pump();
            let sleep = match next {
                Some(at) => (at - self.clock.now()).to_std().unwrap_or(Duration::ZERO),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// An instance has new visible messages.
    pub fn instance_ready(&self, id: &InstanceId) {
        self.lock().mark_ready(id.clone());
        self.wake.notify_one();
    }

    /// An instance gets a message that becomes visible at `at`.
    pub fn schedule_wakeup(&self, id: &InstanceId, at: DateTime<Utc>) {
        if at <= self.clock.now() {
            return self.instance_ready(id);
        }
        self.lock().timers.push(at, id.clone());
        self.wake.notify_one();
    }

    /// Wakes the loop after worker capacity appeared (a stream connected).
    pub fn capacity_available(&self) {
        self.capacity_changed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Gives a reservation back to the executor; parked work may fit now.
    fn release(&self, reservation: Reservation) {
        self.executor.release(reservation);
        self.capacity_changed.store(true, Ordering::Release);
    }

    /// Re-queues parked work (capacity changed). Orchestrations are retried with their
    /// known name, so one no stream accepts is not fetched again.
    fn unpark(&self, st: &mut DispatchState, fetches: &mut Vec<(InstanceId, Reservation, u64)>) {
        if st.parked.is_empty() || !self.capacity_changed.swap(false, Ordering::AcqRel) {
            return;
        }
        // Capacity only shrinks during one pass (the lock is held), so a (name, version) no
        // stream took stays refused for the rest of it: asking again for each parked
        // instance would scan every stream's filters per instance, which with thousands of
        // each pinned a core.
        let mut refused: HashSet<(String, Option<String>)> = HashSet::new();
        for p in std::mem::take(&mut st.parked) {
            match p {
                Parked::Orchestration(id, name, version) => {
                    if st.flights.contains_key(&id) {
                        continue;
                    }
                    let key = (name, version);
                    if refused.contains(&key) {
                        st.parked.push(Parked::Orchestration(id, key.0, key.1));
                        continue;
                    }
                    let target = WorkTarget {
                        name: &key.0,
                        version: key.1.as_deref(),
                    };
                    match self.executor.reserve(WorkKind::Orchestration, Some(target)) {
                        Ok(reservation) => self.begin_fetch(st, id, reservation, fetches),
                        Err(_) => {
                            refused.insert(key.clone());
                            st.parked.push(Parked::Orchestration(id, key.0, key.1));
                        }
                    }
                }
                Parked::Activity(aid) => st.activities.requeue(aid),
                Parked::Entity(id) => st.entities.mark_ready(id),
            }
        }
    }

    /// A stream ended: everything outstanding on it goes back to its queue at once
    /// (not the worker's fault, so no backoff), and its claims are given back.
    pub fn stream_closed(&self, stream: StreamId) {
        let mut st = self.lock();
        let lost: Vec<InstanceId> = st
            .flights
            .iter()
            .filter(|(_, f)| {
                f.reservation.stream == stream && matches!(f.phase, Phase::Outstanding(_))
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut claims = Vec::new();
        for id in &lost {
            if let Some(f) = st.flights.remove(id) {
                st.orch_tokens.remove(&f.token);
                if let Phase::Outstanding(episode) = &f.phase {
                    claims.push((id.clone(), episode.lease));
                }
            }
            st.mark_ready(id.clone());
        }
        let activities = st.activities.stream_closed(stream);
        let entity_claims = st.entities.stream_closed(stream);
        drop(st);
        let redelivered = &crate::metrics::get().work.redelivered;
        redelivered.add(MetricKind::Orchestration, claims.len());
        redelivered.add(MetricKind::Activity, activities.len());
        redelivered.add(MetricKind::Entity, entity_claims.len());
        for (id, lease) in claims.into_iter().chain(entity_claims) {
            self.release_claim(&id, lease);
        }
        self.release_activity_claims(activities, false);
        if !lost.is_empty() {
            tracing::info!(
                stream,
                episodes = lost.len(),
                "requeued work of a closed stream"
            );
        }
        self.wake.notify_one();
    }

    /// Dispatches everything that can go now; returns the next timer deadline.
    fn pump(self: &Arc<Self>) -> Option<DateTime<Utc>> {
        let now = self.clock.now();
        let mut fetches = Vec::new();
        let (next, sends, entity_fetches, unsent) = {
            let mut st = self.lock();
            st.fire_timers(now);
            st.activities.fire_timers(now);
            self.unpark(&mut st, &mut fetches);
            while let Some(id) = st.ready.pop_front() {
                if let Some(f) = st.flights.get_mut(&id) {
                    f.again = true;
                    continue;
                }
                let Ok(reservation) = self.executor.reserve(WorkKind::Orchestration, None) else {
                    st.ready.put_back(id);
                    break;
                };
                self.begin_fetch(&mut st, id, reservation, &mut fetches);
            }
            let sends = self.take_ready_activities(&mut st);
            let unsent = st.activities.release_unsent();
            let entity_fetches = self.take_ready_entities(&mut st);
            let next = st
                .timers
                .next()
                .into_iter()
                .chain(st.activities.next_timer())
                .min();
            (next, sends, entity_fetches, unsent)
        };
        self.release_activity_claims(unsent, true);
        let (claimed, unclaimed): (Vec<_>, Vec<_>) =
            sends.into_iter().partition(|s| s.claimed || !self.shared);
        self.send_activities(claimed);
        if !unclaimed.is_empty() {
            // Claiming is a database round trip: not on the dispatch loop.
            let this = Arc::clone(self);
            self.tasks.spawn(this.claim_and_send_activities(unclaimed));
        }
        for (id, reservation, token) in fetches {
            let this = Arc::clone(self);
            self.tasks
                .spawn(async move { this.fetch_and_send(id, reservation, token).await });
        }
        for (id, reservation, token) in entity_fetches {
            let this = Arc::clone(self);
            self.tasks
                .spawn(async move { this.run_entity_step(id, reservation, token).await });
        }
        next
    }

    /// Forgets in-memory work of instances that were purged or wiped.
    pub fn forget_all(&self) {
        let mut st = self.lock();
        let flights = std::mem::take(&mut st.flights);
        let mut reservations = st.entities.outstanding_reservations();
        // Activities out with workers hold capacity too; their results are moot now.
        reservations.extend(st.activities.outstanding_reservations());
        *st = DispatchState::default();
        drop(st);
        for f in flights.into_values() {
            if !matches!(f.phase, Phase::Committing) {
                self.release(f.reservation);
            }
        }
        for r in reservations {
            self.release(r);
        }
    }
}

#[cfg(test)]
mod tests;
