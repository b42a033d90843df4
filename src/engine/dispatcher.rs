//! The imperative shell: keeps dispatch state in memory (ready instances, outstanding
//! episodes, activity queue, timers), pushes work to workers as soon as it is committed,
//! and commits each completed episode with one store call. No polling: a `Notify` wakes
//! the loop on every change, and the nearest timer bounds its sleep.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pb::history_event::EventType;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod entity;

use super::apply::{self, ApplyContext, IdSource};
use super::executor::{Reservation, StreamId, Unavailable, WorkExecutor, WorkKind, WorkTarget};
use super::plan::{plan_episode, Plan};
use super::watch::Watchers;
use super::EngineError;
use crate::domain::events::{event, orchestrator_started};
use crate::domain::{
    Clock, ExecutionId, InstanceId, InstanceRecord, OutboundMessage, StatusChange, Transition,
};
use crate::proto as pb;
use crate::store::{ActivityItem, ActivityOutcome, CommitOutcome, Lease, Store, StoreError};

mod rewinding;
mod skipping;

pub use skipping::SkipOutcome;

/// Engine tuning.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most inbox messages delivered in one episode.
    pub max_batch_messages: u32,
    /// Longest backoff after repeated explicit abandons.
    pub max_abandon_backoff: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch_messages: 1000,
            max_abandon_backoff: Duration::from_secs(60),
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

enum Phase {
    Fetching,
    Outstanding(Box<Episode>),
    Committing,
}

struct Episode {
    lease: Lease,
    record: InstanceRecord,
    past: Arc<Vec<pb::HistoryEvent>>,
    new_events: Vec<pb::HistoryEvent>,
    consumed: Vec<i64>,
    /// Actions of the `isPartial` chunks received so far (PROTOCOL.md §4.4.8).
    chunks: Vec<pb::OrchestratorAction>,
    /// The `chunkIndex` the next chunk must carry.
    next_chunk: i32,
}

struct Flight {
    reservation: Reservation,
    token: u64,
    phase: Phase,
    /// A message arrived while the episode was out: look again when it ends.
    again: bool,
    /// A rewind rewrote the instance's parent link after this flight read its history:
    /// the episode must be built again, not completed (see `rewinding`).
    superseded: bool,
}

struct ActivityState {
    item: ActivityItem,
    tokens: Vec<u64>,
    dispatched: Option<(u64, Reservation)>,
    abandons: u32,
}

#[derive(Default)]
struct DispatchState {
    ready: VecDeque<InstanceId>,
    ready_set: HashSet<InstanceId>,
    flights: HashMap<InstanceId, Flight>,
    orch_tokens: HashMap<u64, InstanceId>,
    timers: BinaryHeap<Reverse<(DateTime<Utc>, InstanceId)>>,
    activities: HashMap<i64, ActivityState>,
    activity_queue: VecDeque<i64>,
    activity_timers: BinaryHeap<Reverse<(DateTime<Utc>, i64)>>,
    /// The dispatched activity per (instance, task id). Token-less workers (the Go SDK)
    /// complete by that pair alone, so a second activity with the same pair (a newer
    /// execution after restart or continue-as-new) waits in `blocked` until the first
    /// one is done; otherwise its result could be taken for the other's.
    running: HashMap<(InstanceId, i32), i64>,
    blocked: HashMap<(InstanceId, i32), Vec<i64>>,
    /// Work no connected stream would take (work-item filters, PROTOCOL.md §4.1), or
    /// whose matching streams were full: looked at again when capacity changes.
    parked: Vec<Parked>,
    act_tokens: HashMap<u64, i64>,
    abandons: HashMap<InstanceId, u32>,
    recent: RecentTokens,
    /// Committed histories of running instances, so an episode does not re-read (and
    /// re-decode) a history that only ever grows by what this process appended.
    histories: HashMap<InstanceId, CachedHistory>,
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

struct CachedHistory {
    execution_id: ExecutionId,
    events: Arc<Vec<pb::HistoryEvent>>,
}

/// Most histories kept in memory; beyond it episodes read history from the store.
const HISTORY_CACHE_CAP: usize = 50_000;

impl DispatchState {
    fn mark_ready(&mut self, id: InstanceId) {
        if id.is_entity() {
            return self.entities.mark_ready(id);
        }
        if let Some(f) = self.flights.get_mut(&id) {
            f.again = true;
        } else if self.ready_set.insert(id.clone()) {
            self.ready.push_back(id);
        }
    }

    fn enqueue_activity(&mut self, item: ActivityItem) {
        let id = item.id;
        self.activities.insert(
            id,
            ActivityState {
                item,
                tokens: Vec::new(),
                dispatched: None,
                abandons: 0,
            },
        );
        self.activity_queue.push_back(id);
    }

    fn cache_history(
        &mut self,
        id: &InstanceId,
        execution_id: &ExecutionId,
        events: &Arc<Vec<pb::HistoryEvent>>,
    ) {
        if self.histories.len() < HISTORY_CACHE_CAP || self.histories.contains_key(id) {
            let entry = CachedHistory {
                execution_id: execution_id.clone(),
                events: Arc::clone(events),
            };
            self.histories.insert(id.clone(), entry);
        }
    }

    /// Keeps the cached history in step with a committed transition.
    fn advance_history(&mut self, t: &Transition) {
        let id = &t.instance_id;
        match &t.status {
            StatusChange::Progress => {
                let current = self.histories.get_mut(id).filter(|h| {
                    h.execution_id == t.expected_execution_id
                        && h.events.len() == t.expected_history_len as usize
                });
                match current {
                    Some(h) => {
                        Arc::make_mut(&mut h.events).extend(t.history_append.iter().cloned())
                    }
                    None => {
                        self.histories.remove(id);
                    }
                }
            }
            StatusChange::ContinuedAsNew { execution_id, .. } => {
                self.cache_history(id, execution_id, &Arc::new(Vec::new()));
            }
            StatusChange::Terminal { .. } => {
                self.histories.remove(id);
            }
        }
    }

    /// Brings the dispatch state in line with a committed episode: history cache, new
    /// activities, timers, and the other instances it sent messages to.
    fn committed(&mut self, t: &Transition, outcome: CommitOutcome, now: DateTime<Utc>) {
        self.advance_history(t);
        for item in outcome.activities {
            self.enqueue_activity(item);
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
            self.timers.push(Reverse((m.visible_at, m.target.clone())));
        }
    }

    /// An activity is no longer dispatched: activities waiting on its (instance, task
    /// id) pair go back to the front of the queue.
    fn activity_idle(&mut self, key: (InstanceId, i32), id: i64) {
        if self.running.get(&key) == Some(&id) {
            self.running.remove(&key);
            for waiting in self
                .blocked
                .remove(&key)
                .unwrap_or_default()
                .into_iter()
                .rev()
            {
                self.activity_queue.push_front(waiting);
            }
        }
    }

    /// Marks a dispatched activity as back in the queue's hands (stream lost, send failed,
    /// abandoned); its tokens stay valid for late completions.
    fn undispatch(&mut self, id: i64) {
        if let Some(a) = self.activities.get_mut(&id) {
            a.dispatched = None;
            let key = activity_key(&a.item);
            self.activity_idle(key, id);
        }
    }

    fn forget_activity(&mut self, id: i64) -> Option<ActivityState> {
        let state = self.activities.remove(&id)?;
        self.activity_idle(activity_key(&state.item), id);
        for t in &state.tokens {
            self.act_tokens.remove(t);
            self.recent.insert(*t);
        }
        Some(state)
    }
}

/// Tokens of recently finished work items, so an exact duplicate completion (a retry
/// whose first reply was lost) answers OK instead of NOT_FOUND.
#[derive(Default)]
struct RecentTokens {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl RecentTokens {
    const CAP: usize = 16_384;

    fn insert(&mut self, t: u64) {
        if self.set.insert(t) {
            self.order.push_back(t);
            if self.order.len() > Self::CAP {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
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
    capacity_changed: std::sync::atomic::AtomicBool,
    next_token: AtomicU64,
    tasks: TaskTracker,
    config: EngineConfig,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

const ORCH_PREFIX: char = 'o';
const ACT_PREFIX: char = 'a';

fn parse_token(token: &str, prefix: char) -> Option<u64> {
    token.strip_prefix(prefix)?.parse().ok()
}

impl Engine {
    /// Builds the engine; call [`Engine::recover`] then [`Engine::run`].
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        executor: Arc<dyn WorkExecutor>,
        config: EngineConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            clock,
            executor,
            watchers: Watchers::default(),
            state: Mutex::new(DispatchState::default()),
            wake: Notify::new(),
            capacity_changed: std::sync::atomic::AtomicBool::new(false),
            // Tokens start past the clock's microseconds so a restarted process never
            // re-issues a token an old worker may still hold.
            next_token: AtomicU64::new(1),
            tasks: TaskTracker::new(),
            config,
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
        let mut st = self.lock();
        for id in recovery.ready {
            st.mark_ready(id);
        }
        for (at, id) in recovery.wakeups {
            st.timers.push(Reverse((at, id)));
        }
        for item in recovery.activities {
            st.enqueue_activity(item);
        }
        tracing::info!(
            ready = st.ready.len(),
            timers = st.timers.len(),
            activities = st.activities.len(),
            "dispatch state recovered"
        );
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    /// Runs the dispatch loop until `cancel` fires, then waits for in-flight fetches.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
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
        self.lock().timers.push(Reverse((at, id.clone())));
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
    /// Opens a flight for `id` on `reservation`; its fetch is spawned once the lock is
    /// released.
    fn begin_fetch(
        &self,
        st: &mut DispatchState,
        id: InstanceId,
        reservation: Reservation,
        fetches: &mut Vec<(InstanceId, Reservation, u64)>,
    ) {
        let token = self.token();
        st.flights.insert(
            id.clone(),
            Flight {
                reservation,
                token,
                phase: Phase::Fetching,
                again: false,
                superseded: false,
            },
        );
        fetches.push((id, reservation, token));
    }

    fn unpark(&self, st: &mut DispatchState, fetches: &mut Vec<(InstanceId, Reservation, u64)>) {
        if st.parked.is_empty() || !self.capacity_changed.swap(false, Ordering::AcqRel) {
            return;
        }
        for p in std::mem::take(&mut st.parked) {
            match p {
                Parked::Orchestration(id, name, version) => {
                    if st.flights.contains_key(&id) {
                        continue;
                    }
                    let target = WorkTarget {
                        name: &name,
                        version: version.as_deref(),
                    };
                    match self.executor.reserve(WorkKind::Orchestration, Some(target)) {
                        Ok(reservation) => {
                            st.ready_set.remove(&id);
                            self.begin_fetch(st, id, reservation, fetches);
                        }
                        Err(_) => st.parked.push(Parked::Orchestration(id, name, version)),
                    }
                }
                Parked::Activity(aid) => st.activity_queue.push_back(aid),
                Parked::Entity(id) => st.entities.mark_ready(id),
            }
        }
    }

    /// A stream ended: everything outstanding on it goes back to its queue at once
    /// (not the worker's fault, so no backoff).
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
        for id in &lost {
            if let Some(f) = st.flights.remove(id) {
                st.orch_tokens.remove(&f.token);
            }
            st.mark_ready(id.clone());
        }
        // Their tokens stay valid: Python completes late over the old channel.
        let mut requeue: Vec<i64> = st
            .activities
            .iter()
            .filter(|(_, a)| a.dispatched.is_some_and(|(_, r)| r.stream == stream))
            .map(|(id, _)| *id)
            .collect();
        for id in &requeue {
            st.undispatch(*id);
        }
        requeue.sort_unstable();
        for id in requeue.into_iter().rev() {
            st.activity_queue.push_front(id);
        }
        st.entities.stream_closed(stream);
        drop(st);
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
        let mut sends = Vec::new();
        let (next, entity_fetches) = {
            let mut st = self.lock();
            while st.timers.peek().is_some_and(|Reverse((at, _))| *at <= now) {
                if let Some(Reverse((_, id))) = st.timers.pop() {
                    st.mark_ready(id);
                }
            }
            while st
                .activity_timers
                .peek()
                .is_some_and(|Reverse((at, _))| *at <= now)
            {
                if let Some(Reverse((_, id))) = st.activity_timers.pop() {
                    st.activity_queue.push_back(id);
                }
            }
            self.unpark(&mut st, &mut fetches);
            while let Some(id) = st.ready.pop_front() {
                st.ready_set.remove(&id);
                if let Some(f) = st.flights.get_mut(&id) {
                    f.again = true;
                    continue;
                }
                let Ok(reservation) = self.executor.reserve(WorkKind::Orchestration, None) else {
                    st.ready_set.insert(id.clone());
                    st.ready.push_front(id);
                    break;
                };
                self.begin_fetch(&mut st, id, reservation, &mut fetches);
            }
            while let Some(&aid) = st.activity_queue.front() {
                let item = match st.activities.get(&aid) {
                    Some(a) if a.dispatched.is_none() => a.item.clone(),
                    _ => {
                        st.activity_queue.pop_front();
                        continue;
                    }
                };
                let key = activity_key(&item);
                if st.running.get(&key).is_some_and(|&other| other != aid) {
                    st.activity_queue.pop_front();
                    st.blocked.entry(key).or_default().push(aid);
                    continue;
                }
                let reservation = match self
                    .executor
                    .reserve(WorkKind::Activity, Some(activity_target(&item)))
                {
                    Ok(r) => r,
                    Err(Unavailable::NoMatch) => {
                        st.activity_queue.pop_front();
                        st.parked.push(Parked::Activity(aid));
                        continue;
                    }
                    Err(Unavailable::Busy) => break,
                };
                st.activity_queue.pop_front();
                st.running.insert(key, aid);
                let token = self.token();
                let item = activity_work_item(&item, token);
                st.act_tokens.insert(token, aid);
                if let Some(a) = st.activities.get_mut(&aid) {
                    a.tokens.push(token);
                    a.dispatched = Some((token, reservation));
                }
                sends.push((aid, token, reservation, item));
            }
            let entity_fetches = self.take_ready_entities(&mut st);
            let t1 = st.timers.peek().map(|Reverse((at, _))| *at);
            let t2 = st.activity_timers.peek().map(|Reverse((at, _))| *at);
            (t1.into_iter().chain(t2).min(), entity_fetches)
        };
        for (aid, token, reservation, item) in sends {
            if !self.executor.send(reservation, item) {
                let mut st = self.lock();
                let ours = st
                    .activities
                    .get(&aid)
                    .is_some_and(|a| a.dispatched.is_some_and(|(t, _)| t == token));
                if ours {
                    st.undispatch(aid);
                    st.activity_queue.push_front(aid);
                }
            }
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

    async fn fetch_and_send(self: Arc<Self>, id: InstanceId, reservation: Reservation, token: u64) {
        let now = self.clock.now();
        let cached = {
            let st = self.lock();
            st.histories
                .get(&id)
                .map(|h| (h.execution_id.clone(), h.events.len() as u32))
        };
        let work = match self
            .store
            .orchestration_work(&id, now, self.config.max_batch_messages, cached)
            .await
        {
            Ok(w) => w,
            Err(err) => {
                tracing::warn!(instance_id = %id, error = %err, "could not load orchestration work; retrying in 1 s");
                self.end_flight(&id, reservation, Some(now + chrono::Duration::seconds(1)));
                return;
            }
        };
        let Some(work) = work else {
            self.end_flight(&id, reservation, None);
            return;
        };
        let history = match work.history {
            Some(events) => {
                let events = Arc::new(events);
                self.lock()
                    .cache_history(&id, &work.record.execution_id, &events);
                events
            }
            None => match self
                .lock()
                .histories
                .get(&id)
                .map(|h| Arc::clone(&h.events))
            {
                Some(events) => events,
                None => {
                    // Evicted between the two reads: look again right away.
                    self.end_flight(&id, reservation, Some(now));
                    return;
                }
            },
        };
        match plan_episode(&work.record, &history, work.messages) {
            Plan::Wait { stale } => {
                tracing::debug!(instance_id = %id, stale = stale.len(), "nothing to dispatch yet");
                if !stale.is_empty() {
                    if let Err(err) = self.store.discard_messages(&id, &stale).await {
                        tracing::warn!(instance_id = %id, error = %err, "could not discard stale messages");
                    }
                }
                self.end_flight(&id, reservation, None);
            }
            Plan::Dispatch { deliver, stale } => {
                let Some(reservation) = self.stream_for(&id, &work.record, reservation) else {
                    return;
                };
                let mut new_events = Vec::with_capacity(deliver.len() + 1);
                new_events.push(orchestrator_started(now));
                let mut consumed: Vec<i64> = deliver.iter().map(|m| m.seq).collect();
                consumed.extend(stale);
                new_events.extend(deliver.into_iter().map(|m| m.event));
                let item = pb::WorkItem {
                    completion_token: format!("{ORCH_PREFIX}{token}"),
                    request: Some(pb::work_item::Request::OrchestratorRequest(
                        pb::OrchestratorRequest {
                            instance_id: id.to_string(),
                            execution_id: Some(work.record.execution_id.to_string()),
                            past_events: history.as_ref().clone(),
                            new_events: new_events.clone(),
                            orchestration_trace_context: work.record.trace_context.clone(),
                            ..Default::default()
                        },
                    )),
                };
                let episode = Episode {
                    lease: work.lease,
                    record: work.record,
                    past: history,
                    new_events,
                    consumed,
                    chunks: Vec::new(),
                    next_chunk: 0,
                };
                {
                    let mut st = self.lock();
                    let Some(f) = st.flights.get_mut(&id) else {
                        return;
                    };
                    if f.superseded {
                        drop(st);
                        self.end_flight(&id, reservation, Some(now));
                        return;
                    }
                    f.phase = Phase::Outstanding(Box::new(episode));
                    st.orch_tokens.insert(token, id.clone());
                }
                tracing::debug!(instance_id = %id, stream = reservation.stream, "orchestration work item sent");
                if !self.executor.send(reservation, item) {
                    let mut st = self.lock();
                    st.orch_tokens.remove(&token);
                    st.flights.remove(&id);
                    st.mark_ready(id);
                    drop(st);
                    self.wake.notify_one();
                }
            }
        }
    }

    /// The reservation an episode goes out on: the one taken before the fetch when its
    /// stream's filters accept the orchestration, else one on a stream that does. With
    /// none, the flight ends and the instance is parked until capacity changes.
    fn stream_for(
        &self,
        id: &InstanceId,
        record: &InstanceRecord,
        reservation: Reservation,
    ) -> Option<Reservation> {
        let target = WorkTarget {
            name: &record.name,
            version: record.version.as_deref(),
        };
        if self
            .executor
            .accepts(reservation.stream, WorkKind::Orchestration, target)
        {
            return Some(reservation);
        }
        let other = self.executor.reserve(WorkKind::Orchestration, Some(target));
        let mut st = self.lock();
        match other {
            Ok(r) => {
                if let Some(f) = st.flights.get_mut(id) {
                    f.reservation = r;
                }
                drop(st);
                self.release(reservation);
                Some(r)
            }
            Err(_) => {
                st.flights.remove(id);
                let known = st
                    .parked
                    .iter()
                    .any(|p| matches!(p, Parked::Orchestration(pid, ..) if pid == id));
                if !known {
                    st.parked.push(Parked::Orchestration(
                        id.clone(),
                        record.name.clone(),
                        record.version.clone(),
                    ));
                }
                drop(st);
                tracing::debug!(instance_id = %id, name = %record.name, "no worker stream accepts the orchestration; parked");
                self.release(reservation);
                self.wake.notify_one();
                None
            }
        }
    }

    /// Ends a flight without a commit, releasing its capacity; the instance is looked at
    /// again when `retry_at` comes or when a message arrived meanwhile.
    fn end_flight(
        &self,
        id: &InstanceId,
        reservation: Reservation,
        retry_at: Option<DateTime<Utc>>,
    ) {
        self.release(reservation);
        let mut st = self.lock();
        if let Some(f) = st.flights.remove(id) {
            st.orch_tokens.remove(&f.token);
            if f.again {
                st.mark_ready(id.clone());
            }
        }
        if let Some(at) = retry_at {
            st.timers.push(Reverse((at, id.clone())));
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Applies a worker's `OrchestratorResponse` and commits it.
    pub async fn complete_orchestration(
        &self,
        response: pb::OrchestratorResponse,
    ) -> Result<(), CompletionError> {
        let token_text = response.completion_token.clone();
        let (id, flight_token, reservation, episode) = {
            let mut st = self.lock();
            let found = if token_text.is_empty() {
                // Old-proto workers (durabletask-go) send no token: the instance has at
                // most one outstanding episode.
                let id = InstanceId::new(response.instance_id.clone());
                st.flights
                    .get(&id)
                    .filter(|f| matches!(f.phase, Phase::Outstanding(_)))
                    .map(|f| (id.clone(), f.token))
            } else {
                parse_token(&token_text, ORCH_PREFIX)
                    .and_then(|t| st.orch_tokens.get(&t).map(|id| (id.clone(), t)))
            };
            let Some((id, token)) = found else {
                let duplicate = parse_token(&token_text, ORCH_PREFIX)
                    .is_some_and(|t| st.recent.set.contains(&t));
                return if duplicate {
                    Ok(())
                } else {
                    Err(CompletionError::Stale(token_text))
                };
            };
            if !response.instance_id.is_empty() && response.instance_id != id.as_str() {
                return Err(CompletionError::Invalid(format!(
                    "completion token belongs to instance '{id}', not '{}'",
                    response.instance_id
                )));
            }
            let Some(f) = st.flights.get_mut(&id) else {
                return Err(CompletionError::Stale(token_text));
            };
            if f.superseded && matches!(f.phase, Phase::Outstanding(_)) {
                let reservation = f.reservation;
                st.flights.remove(&id);
                st.orch_tokens.remove(&token);
                st.mark_ready(id.clone());
                drop(st);
                self.release(reservation);
                self.wake.notify_one();
                return Err(CompletionError::Stale(token_text));
            }
            let Phase::Outstanding(episode) = std::mem::replace(&mut f.phase, Phase::Committing)
            else {
                return Err(CompletionError::Stale(token_text));
            };
            let reservation = f.reservation;
            st.orch_tokens.remove(&token);
            (id, token, reservation, episode)
        };
        self.release(reservation);
        if let Some(history) = super::rewind::requested_history(&response) {
            return self
                .complete_with_rewind(id, flight_token, episode, history.to_vec(), token_text)
                .await;
        }
        let mut episode = episode;
        let mut response = response;
        if !episode.chunks.is_empty() {
            let mut actions = std::mem::take(&mut episode.chunks);
            actions.append(&mut response.actions);
            response.actions = actions;
        }

        let now = self.clock.now();
        let ctx = ApplyContext {
            instance_id: &id,
            execution_id: &episode.record.execution_id,
            past: &episode.past,
            new_events: &episode.new_events,
            consumed: &episode.consumed,
            now,
        };
        let (transition, rejected) = match apply::apply(&ctx, &response, &mut RandomIds) {
            Ok(t) => (t, None),
            Err(err) => {
                tracing::warn!(instance_id = %id, error = %err, "worker response cannot be applied; failing the orchestration");
                let failure = pb::TaskFailureDetails {
                    error_type: "InvalidOrchestratorResponse".into(),
                    error_message: err.to_string(),
                    ..Default::default()
                };
                match apply::fail(&ctx, failure) {
                    Ok(t) => (t, Some(err)),
                    Err(corrupt) => {
                        self.finish_flight(&id, flight_token, None, now);
                        return Err(CompletionError::Rejected(corrupt));
                    }
                }
            }
        };
        let lease = episode.lease;
        drop(episode);
        match self.store.commit_orchestration(&transition, lease).await {
            Ok(outcome) => {
                let has_visible_inbox = outcome.has_visible_inbox;
                self.lock().committed(&transition, outcome, now);
                self.finish_flight(&id, flight_token, Some(has_visible_inbox), now);
                self.watchers.notify(&id);
                for child in &transition.children {
                    self.watchers.notify(&child.instance.instance_id);
                }
                match rejected {
                    Some(err) => Err(CompletionError::Rejected(err)),
                    None => Ok(()),
                }
            }
            Err(StoreError::LeaseLost(_)) => {
                self.lock().histories.remove(&id);
                tracing::info!(instance_id = %id, "instance changed while its episode was out; completion dropped");
                self.finish_flight(&id, flight_token, Some(true), now);
                // The sidecar itself moved the instance on (terminated before its first
                // episode, purged, replaced): the worker did nothing wrong, and an error
                // here makes the Java worker abandon its stream. Its result is moot.
                Ok(())
            }
            Err(err) => {
                self.lock().histories.remove(&id);
                tracing::warn!(instance_id = %id, error = %err, "commit failed; the episode will be redelivered");
                self.finish_flight(&id, flight_token, None, now + chrono::Duration::seconds(1));
                Err(err.into())
            }
        }
    }

    /// Removes a committing flight; `ready` = look at the instance again now (`Some(true)`),
    /// not unless something arrived (`Some(false)`), or retry at `retry_at` (`None`).
    fn finish_flight(
        &self,
        id: &InstanceId,
        token: u64,
        ready: Option<bool>,
        retry_at: DateTime<Utc>,
    ) {
        let mut st = self.lock();
        let again = st.flights.remove(id).is_some_and(|f| f.again);
        st.recent.insert(token);
        match ready {
            Some(now_ready) => {
                if now_ready || again {
                    st.mark_ready(id.clone());
                }
            }
            None => st.timers.push(Reverse((retry_at, id.clone()))),
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Holds the actions of one `isPartial` chunk until the final chunk commits them all
    /// (PROTOCOL.md §4.4.8). Chunks must arrive in `chunkIndex` order; nothing is
    /// committed before the last one, and a lost or abandoned work item drops them.
    #[allow(deprecated)] // chunkIndex: still sent by .NET and Java
    pub fn append_chunk(&self, response: pb::OrchestratorResponse) -> Result<(), CompletionError> {
        let token_text = response.completion_token;
        let mut st = self.lock();
        let id = parse_token(&token_text, ORCH_PREFIX)
            .and_then(|t| st.orch_tokens.get(&t).cloned())
            .ok_or_else(|| CompletionError::Stale(token_text.clone()))?;
        let Some(Flight {
            phase: Phase::Outstanding(episode),
            ..
        }) = st.flights.get_mut(&id)
        else {
            return Err(CompletionError::Stale(token_text));
        };
        let index = response.chunk_index.unwrap_or(episode.next_chunk);
        if index != episode.next_chunk {
            return Err(CompletionError::Invalid(format!(
                "chunk {index} of work item '{token_text}' arrived out of order (expected chunk {})",
                episode.next_chunk
            )));
        }
        episode.next_chunk += 1;
        episode.chunks.extend(response.actions);
        Ok(())
    }

    /// Puts an orchestration work item back (explicit abandon): first retry at once,
    /// then with doubling backoff up to the configured cap.
    pub fn abandon_orchestration(&self, token_text: &str) {
        let Some(token) = parse_token(token_text, ORCH_PREFIX) else {
            return;
        };
        let mut st = self.lock();
        let Some(id) = st.orch_tokens.remove(&token) else {
            return;
        };
        let Some(f) = st.flights.remove(&id) else {
            return;
        };
        let n = st.abandons.entry(id.clone()).or_default();
        *n += 1;
        let delay = backoff(*n, self.config.max_abandon_backoff);
        if delay.is_zero() {
            st.mark_ready(id);
        } else {
            let at = self.clock.now() + chrono::Duration::from_std(delay).unwrap_or_default();
            st.timers.push(Reverse((at, id)));
        }
        drop(st);
        self.release(f.reservation);
        self.wake.notify_one();
    }

    /// Applies a worker's `ActivityResponse`. Exactly one result per activity is ever
    /// enqueued; a late completion over an old token is accepted while the activity is
    /// still open (PROTOCOL.md §4.8).
    pub async fn complete_activity(
        &self,
        response: pb::ActivityResponse,
    ) -> Result<(), CompletionError> {
        let token_text = response.completion_token.clone();
        let aid = {
            let st = self.lock();
            let found = if token_text.is_empty() {
                st.activities
                    .iter()
                    .find(|(_, a)| {
                        a.dispatched.is_some()
                            && a.item.instance_id.as_str() == response.instance_id
                            && a.item.scheduled.event_id == response.task_id
                    })
                    .map(|(id, _)| *id)
            } else {
                parse_token(&token_text, ACT_PREFIX).and_then(|t| st.act_tokens.get(&t).copied())
            };
            match found {
                Some(aid) => aid,
                None => {
                    let duplicate = parse_token(&token_text, ACT_PREFIX)
                        .is_some_and(|t| st.recent.set.contains(&t));
                    return if duplicate {
                        Ok(())
                    } else {
                        Err(CompletionError::Stale(token_text))
                    };
                }
            }
        };
        let now = self.clock.now();
        let kind = match response.failure_details {
            Some(failure) => EventType::TaskFailed(pb::TaskFailedEvent {
                task_scheduled_id: response.task_id,
                failure_details: Some(failure),
            }),
            None => EventType::TaskCompleted(pb::TaskCompletedEvent {
                task_scheduled_id: response.task_id,
                result: response.result,
            }),
        };
        let outcome = self
            .store
            .complete_activity(aid, event(-1, now, kind))
            .await?;
        let released = {
            let mut st = self.lock();
            let state = st.forget_activity(aid);
            if let ActivityOutcome::Delivered(instance) = &outcome {
                st.mark_ready(instance.clone());
            }
            state.and_then(|s| s.dispatched.map(|(_, r)| r))
        };
        if let Some(r) = released {
            self.release(r);
        }
        self.wake.notify_one();
        match outcome {
            ActivityOutcome::Delivered(_) | ActivityOutcome::Dropped => Ok(()),
            ActivityOutcome::Unknown => Err(CompletionError::Stale(token_text)),
        }
    }

    /// Puts an activity back (explicit abandon), with the same backoff as orchestrations.
    pub fn abandon_activity(&self, token_text: &str) {
        let Some(token) = parse_token(token_text, ACT_PREFIX) else {
            return;
        };
        let now = self.clock.now();
        let mut st = self.lock();
        let Some(&aid) = st.act_tokens.get(&token) else {
            return;
        };
        let Some(a) = st.activities.get_mut(&aid) else {
            return;
        };
        let Some((t, reservation)) = a.dispatched else {
            return;
        };
        if t != token {
            return;
        }
        a.abandons += 1;
        let delay = backoff(a.abandons, self.config.max_abandon_backoff);
        st.undispatch(aid);
        if delay.is_zero() {
            st.activity_queue.push_front(aid);
        } else {
            let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
            st.activity_timers.push(Reverse((at, aid)));
        }
        drop(st);
        self.release(reservation);
        self.wake.notify_one();
    }

    /// Forgets in-memory work of instances that were purged or wiped.
    pub fn forget_all(&self) {
        let mut st = self.lock();
        let flights = std::mem::take(&mut st.flights);
        let entity_reservations = st.entities.outstanding_reservations();
        *st = DispatchState::default();
        drop(st);
        for f in flights.into_values() {
            if !matches!(f.phase, Phase::Committing) {
                self.release(f.reservation);
            }
        }
        for r in entity_reservations {
            self.release(r);
        }
    }
}

/// 0 for the first abandon, then 1 s, 2 s, 4 s … up to `cap`.
fn backoff(abandons: u32, cap: Duration) -> Duration {
    if abandons <= 1 {
        return Duration::ZERO;
    }
    let secs = 1u64 << (abandons - 2).min(16);
    Duration::from_secs(secs).min(cap)
}

fn activity_target(item: &ActivityItem) -> WorkTarget<'_> {
    match &item.scheduled.event_type {
        Some(EventType::TaskScheduled(t)) => WorkTarget {
            name: &t.name,
            version: t.version.as_deref(),
        },
        _ => WorkTarget {
            name: "",
            version: None,
        },
    }
}

fn activity_key(item: &ActivityItem) -> (InstanceId, i32) {
    (item.instance_id.clone(), item.scheduled.event_id)
}

fn activity_work_item(item: &ActivityItem, token: u64) -> pb::WorkItem {
    let task = match &item.scheduled.event_type {
        Some(EventType::TaskScheduled(t)) => t.clone(),
        _ => pb::TaskScheduledEvent::default(),
    };
    pb::WorkItem {
        completion_token: format!("{ACT_PREFIX}{token}"),
        request: Some(pb::work_item::Request::ActivityRequest(
            pb::ActivityRequest {
                name: task.name,
                version: task.version,
                input: task.input,
                orchestration_instance: Some(pb::OrchestrationInstance {
                    instance_id: item.instance_id.to_string(),
                    execution_id: Some(item.execution_id.to_string()),
                }),
                task_id: item.scheduled.event_id,
                parent_trace_context: task.parent_trace_context,
                tags: task.tags,
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abandon_backoff_starts_immediate_then_doubles_to_the_cap() {
        let cap = Duration::from_secs(60);
        let got: Vec<u64> = (1..=9).map(|n| backoff(n, cap).as_secs()).collect();
        assert_eq!(got, vec![0, 1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn tokens_parse_only_with_their_kind_prefix() {
        assert_eq!(parse_token("o42", ORCH_PREFIX), Some(42));
        assert_eq!(parse_token("a42", ORCH_PREFIX), None);
        assert_eq!(parse_token("", ACT_PREFIX), None);
    }
}
