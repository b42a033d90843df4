//! The worker hub: live `GetWorkItems` streams, their capacity (the request's concurrency
//! hints), keep-alive pings, and the routing of completions to the engine.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{AppState, Result, ServiceError};
use crate::engine::{Reservation, StreamId, Unavailable, WorkExecutor, WorkKind, WorkTarget};
use crate::proto as pb;

/// Cap used when a worker sends no concurrency hint (0 or negative).
const DEFAULT_CAPACITY: usize = 1000;

#[derive(Debug)]
struct Slot {
    tx: mpsc::Sender<Box<pb::WorkItem>>,
    /// Items put into `tx` so far (work and pings): with the channel's fill level, tells
    /// how many the stream has taken (see `keep_alive`).
    sent: Arc<AtomicU64>,
    limits: [usize; 3],
    used: [usize; 3],
    /// `None` = the stream takes everything.
    filters: Option<Filters>,
}

/// A stream's `workItemFilters` (PROTOCOL.md §4.1): per kind, the accepted names and
/// their versions (empty = any version). A kind with no entry accepts nothing.
#[derive(Debug, Default)]
struct Filters {
    names: [HashMap<String, Vec<String>>; 3],
}

impl Filters {
    fn from_request(f: &pb::WorkItemFilters) -> Self {
        let mut names: [HashMap<String, Vec<String>>; 3] = Default::default();
        let mut add = |k: usize, name: String, versions: &[String]| {
            // Filters with the same name merge their version lists; an empty list on any
            // of them means every version.
            let entry = names[k].entry(name);
            match entry {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    if e.get().is_empty() || versions.is_empty() {
                        e.get_mut().clear();
                    } else {
                        e.get_mut().extend(versions.iter().cloned());
                    }
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(versions.to_vec());
                }
            }
        };
        for o in &f.orchestrations {
            add(0, o.name.clone(), &o.versions);
        }
        for a in &f.activities {
            add(1, a.name.clone(), &a.versions);
        }
        for e in &f.entities {
            add(2, e.name.to_lowercase(), &[]);
        }
        Self { names }
    }

    fn accepts(&self, kind: WorkKind, target: WorkTarget<'_>) -> bool {
        // Entity names arrive lower-cased (`WorkTarget`), as the filters store them.
        self.names[slot_index(kind)]
            .get(target.name)
            .is_some_and(|versions| {
                versions.is_empty() || versions.iter().any(|v| v == target.version.unwrap_or(""))
            })
    }
}

fn slot_accepts(slot: &Slot, kind: WorkKind, target: Option<WorkTarget<'_>>) -> bool {
    match (&slot.filters, target) {
        (None, _) | (_, None) => true,
        (Some(f), Some(t)) => f.accepts(kind, t),
    }
}

#[derive(Debug, Default)]
struct HubInner {
    streams: BTreeMap<StreamId, Slot>,
    /// Round-robin position per kind: the last stream that got an item.
    cursor: [StreamId; 3],
}

/// A stream just registered: its id, both ends of its queue, and its sent counter.
#[derive(Debug)]
pub struct Connected {
    /// The stream's id.
    pub id: StreamId,
    /// What the transport reads from.
    pub rx: mpsc::Receiver<Box<pb::WorkItem>>,
    /// For keep-alive pings.
    pub tx: mpsc::Sender<Box<pb::WorkItem>>,
    /// Items put into the queue so far.
    pub sent: Arc<AtomicU64>,
}

/// Connected workers. Implements the engine's [`WorkExecutor`].
#[derive(Debug, Default)]
pub struct WorkerHub {
    inner: Mutex<HubInner>,
    next_id: AtomicU64,
}

fn slot_index(kind: WorkKind) -> usize {
    match kind {
        WorkKind::Orchestration => 0,
        WorkKind::Activity => 1,
        WorkKind::Entity => 2,
    }
}

fn limit(hint: i32) -> usize {
    usize::try_from(hint)
        .ok()
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_CAPACITY)
}

impl WorkerHub {
    fn lock(&self) -> MutexGuard<'_, HubInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a stream with the request's concurrency hints.
    pub fn connect(&self, request: &pb::GetWorkItemsRequest) -> Connected {
        let limits = [
            limit(request.max_concurrent_orchestration_work_items),
            limit(request.max_concurrent_activity_work_items),
            // Python runs entities while sending 0: 0 means "no hint", not "none".
            limit(request.max_concurrent_entity_work_items),
        ];
        // Room for every item the limits allow plus a few pings: sends never block. Items
        // are boxed because the channel allocates its slots 32 at a time, the first 32 up
        // front: 32 pointers instead of 32 inline `WorkItem`s (272 bytes each) is ~8 KiB
        // less per idle stream.
        let (tx, rx) = mpsc::channel(limits.iter().sum::<usize>() + 4);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let sent = Arc::new(AtomicU64::new(0));
        self.lock().streams.insert(
            id,
            Slot {
                tx: tx.clone(),
                sent: Arc::clone(&sent),
                limits,
                used: [0; 3],
                filters: request
                    .work_item_filters
                    .as_ref()
                    .map(Filters::from_request),
            },
        );
        Connected { id, rx, tx, sent }
    }

    /// Forgets a stream.
    pub fn disconnect(&self, id: StreamId) {
        self.lock().streams.remove(&id);
    }

    /// Number of connected streams.
    pub fn stream_count(&self) -> usize {
        self.lock().streams.len()
    }
}

impl WorkExecutor for WorkerHub {
    fn reserve(
        &self,
        kind: WorkKind,
        target: Option<WorkTarget<'_>>,
    ) -> std::result::Result<Reservation, Unavailable> {
        let k = slot_index(kind);
        let mut inner = self.lock();
        let after = inner.cursor[k];
        let mut matched = inner.streams.is_empty();
        let pick = inner
            .streams
            .range(after + 1..)
            .chain(inner.streams.range(..=after))
            .filter(|(_, s)| slot_accepts(s, kind, target))
            .inspect(|_| matched = true)
            .find(|(_, s)| s.used[k] < s.limits[k])
            .map(|(id, _)| *id);
        let Some(pick) = pick else {
            return Err(if matched {
                Unavailable::Busy
            } else {
                Unavailable::NoMatch
            });
        };
        inner.cursor[k] = pick;
        if let Some(s) = inner.streams.get_mut(&pick) {
            s.used[k] += 1;
        }
        Ok(Reservation { stream: pick, kind })
    }

    fn accepts(&self, stream: StreamId, kind: WorkKind, target: WorkTarget<'_>) -> bool {
        self.lock()
            .streams
            .get(&stream)
            .is_some_and(|s| slot_accepts(s, kind, Some(target)))
    }

    fn send(&self, reservation: Reservation, item: pb::WorkItem) -> bool {
        let (tx, sent) = match self.lock().streams.get(&reservation.stream) {
            Some(s) => (s.tx.clone(), Arc::clone(&s.sent)),
            None => return false,
        };
        match tx.try_send(Box::new(item)) {
            Ok(()) => {
                sent.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.release(reservation);
                false
            }
        }
    }

    fn hold(&self, reservation: Reservation) {
        let k = slot_index(reservation.kind);
        if let Some(s) = self.lock().streams.get_mut(&reservation.stream) {
            s.used[k] += 1;
        }
    }

    fn release(&self, reservation: Reservation) {
        let k = slot_index(reservation.kind);
        if let Some(s) = self.lock().streams.get_mut(&reservation.stream) {
            s.used[k] = s.used[k].saturating_sub(1);
        }
    }
}

impl AppState {
    /// Opens a work-item stream: registers it, keeps it alive with pings, and when the
    /// client goes away (or the server drains) hands its outstanding items back.
    pub fn open_work_stream(
        &self,
        request: &pb::GetWorkItemsRequest,
    ) -> Result<mpsc::Receiver<Box<pb::WorkItem>>> {
        if self.shutdown_token().is_cancelled() {
            return Err(ServiceError::ShuttingDown);
        }
        let hub = &self.inner.hub;
        let Connected { id, rx, tx, sent } = hub.connect(request);
        tracing::info!(
            stream = id,
            orchestrations = request.max_concurrent_orchestration_work_items,
            activities = request.max_concurrent_activity_work_items,
            "worker connected"
        );
        let state = self.clone();
        let watch = Watch {
            ping_every: self.options().health_ping_interval,
            stall_after: self.options().stalled_stream_timeout,
        };
        self.inner.tasks.spawn(async move {
            let end = keep_alive(&tx, &sent, watch, state.shutdown_token()).await;
            drop(tx);
            state.inner.hub.disconnect(id);
            state.engine().stream_closed(id);
            match end {
                StreamEnd::Stalled(unread) => tracing::warn!(
                    stream = id,
                    unread,
                    "worker stream stopped reading its work items; closed it and redelivered its work"
                ),
                StreamEnd::Gone => tracing::info!(stream = id, "worker disconnected"),
            }
        });
        self.engine().capacity_available();
        Ok(rx)
    }

    /// Routes a `CompleteOrchestratorTask`.
    pub async fn complete_orchestrator_task(
        &self,
        response: pb::OrchestratorResponse,
    ) -> Result<()> {
        #[allow(deprecated)] // still sent by .NET and Java for oversized responses
        let partial = response.is_partial;
        if partial {
            return Ok(self.engine().append_chunk(response)?);
        }
        Ok(self.engine().complete_orchestration(response).await?)
    }

    /// Routes a `CompleteActivityTask`.
    pub async fn complete_activity_task(&self, response: pb::ActivityResponse) -> Result<()> {
        Ok(self.engine().complete_activity(response).await?)
    }

    /// `AbandonTaskOrchestratorWorkItem`: idempotent, unknown tokens are fine.
    pub fn abandon_orchestration(&self, token: &str) {
        self.engine().abandon_orchestration(token);
    }

    /// `AbandonTaskActivityWorkItem`: idempotent, unknown tokens are fine.
    pub fn abandon_activity(&self, token: &str) {
        self.engine().abandon_activity(token);
    }
}

/// What `keep_alive` watches.
#[derive(Debug, Clone, Copy)]
struct Watch {
    ping_every: Duration,
    stall_after: Option<Duration>,
}

/// Why `keep_alive` returned.
#[derive(Debug)]
enum StreamEnd {
    /// The client went away or the server is draining.
    Gone,
    /// Items sat in the channel unread for the stall timeout (how many).
    Stalled(usize),
}

/// Sends a `HealthPing` every `ping_every` until the receiver is dropped or shutdown
/// starts, and ends the stream when it stops taking its items.
///
/// A stream "takes" an item when the transport pulls it from the channel; that stops once
/// the peer's HTTP/2 flow-control window is full, i.e. the worker stopped reading. Items
/// then sit in the channel, and everything else the stream holds waits with them. So:
/// items unread and none taken for `stall_after` => the stream is given up, which sends
/// its outstanding work to other streams (`stream_closed`). The channel is bounded, so a
/// stalled stream never holds more than its concurrency hints plus a few pings meanwhile.
async fn keep_alive(
    tx: &mpsc::Sender<Box<pb::WorkItem>>,
    sent: &AtomicU64,
    watch: Watch,
    shutdown: &tokio_util::sync::CancellationToken,
) -> StreamEnd {
    let mut ping = tokio::time::interval(watch.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the first ping is due one interval in.
    ping.tick().await;
    // Without a stall timeout the check returns at once, so its period hardly matters.
    let check_every = watch.stall_after.map_or(Duration::from_secs(3600), |t| {
        (t / 4).max(Duration::from_millis(10))
    });
    let mut check = tokio::time::interval(check_every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut taken_before = 0u64;
    let mut progress_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tx.closed() => return StreamEnd::Gone,
            _ = shutdown.cancelled() => return StreamEnd::Gone,
            _ = ping.tick() => {
                let ping = Box::new(pb::WorkItem {
                    completion_token: String::new(),
                    request: Some(pb::work_item::Request::HealthPing(pb::HealthPing {})),
                });
                // A full channel means the stream is busy (or stalled, which the check
                // below catches); a skipped ping changes nothing.
                if tx.try_send(ping).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ = check.tick() => {
                let Some(stall_after) = watch.stall_after else { continue };
                let unread = tx.max_capacity() - tx.capacity();
                // A send counted after its item entered the channel can make this dip
                // for a moment; that reads as progress, which only delays a verdict.
                let taken = sent.load(Ordering::Relaxed).saturating_sub(unread as u64);
                let now = tokio::time::Instant::now();
                if unread == 0 || taken != taken_before {
                    taken_before = taken;
                    progress_at = now;
                } else if now.duration_since(progress_at) >= stall_after {
                    return StreamEnd::Stalled(unread);
                }
            }
        }
    }
}
