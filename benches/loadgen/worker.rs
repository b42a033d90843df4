//! The worker half of the load generator: several `GetWorkItems` streams answered by
//! scripted orchestrators and echo activities, with no replay engine.
//!
//! Each orchestrator work item is decided from its events alone (see [`decide`]): the
//! orchestration's name selects the script, its input is the script's parameter. Every
//! item is answered on its own spawned task, so many completions are in flight at once and
//! a slow commit of one instance never holds up the stream.
//!
//! The drivers in `workloads.rs` learn about progress through [`EpisodeNote`]s: after the
//! sidecar acknowledged an orchestrator completion, the worker sends a note to whoever
//! [`Worker::watch`]es that instance. The ack of the episode that carried
//! `CompleteOrchestration` is what ends an orchestration's end-to-end latency, so the hot
//! path never calls `WaitForInstanceCompletion` (durabletask-go polls for it).
//!
//! Every completion echoes `completionToken` *and* `instanceId`/`taskId`: durabletask-go
//! predates tokens and correlates by instance id and (instance id, task id) instead.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use durabletask_sidecar::proto as pb;
use pb::history_event::EventType;
use pb::orchestrator_action::OrchestratorActionType;
use pb::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

pub(crate) type Client = TaskHubSidecarServiceClient<Channel>;

/// Orchestration names understood by [`decide`]; the input is the script's parameter.
pub(crate) mod script {
    /// Input `N`: N activities one after another; output `[0,1,…,N-1]`.
    pub(crate) const SEQUENCE: &str = "lg_sequence";
    /// Input `N`: N activities scheduled at once; output `[0,1,…,N-1]`.
    pub(crate) const FAN_OUT: &str = "lg_fan_out";
    /// Completes in its first episode with its input as output.
    pub(crate) const START_ONLY: &str = "lg_start_only";
    /// Input `N`: waits for N raised events carrying 0..N; output `N`.
    pub(crate) const EVENTS: &str = "lg_events";
    /// Input `ms`: one timer `ms` after the first episode; output `"fired"`.
    pub(crate) const TIMER: &str = "lg_timer";
    /// Name of the events that [`EVENTS`] waits for.
    pub(crate) const EVENT_NAME: &str = "lg_next";
    /// Name of the one activity (it echoes its input).
    pub(crate) const ECHO: &str = "lg_echo";
    /// Input `N`: N calls of `add 1` on its own counter entity ([`entity_id`]), one after
    /// another; call k must return k+1. Output `N`.
    pub(crate) const ENTITY_CALLS: &str = "lg_entity_calls";
    /// Entity name of the counters; keyed by the calling orchestration's instance id.
    pub(crate) const COUNTER: &str = "lg_counter";
    /// The counter's one operation: adds its (integer) input, returns the new value.
    pub(crate) const ADD: &str = "add";

    /// The counter entity that orchestration `instance_id` calls.
    pub(crate) fn entity_id(instance_id: &str) -> String {
        format!("@{COUNTER}@{instance_id}")
    }
}

/// Output that [`decide`] produces for a sequence or fan-out of `n` activities.
pub(crate) fn index_list(n: usize) -> String {
    let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!("[{}]", items.join(","))
}

/// What the worker tells a watching driver after the sidecar acknowledged an episode.
#[derive(Debug, Clone)]
pub(crate) struct EpisodeNote {
    /// When the work item came off the stream.
    pub(crate) arrived: Instant,
    /// When the sidecar answered the completion call.
    pub(crate) acked: Instant,
    /// Activity results (sequence, fan-out) or raised events seen so far, this episode included.
    pub(crate) progress: usize,
    /// `Some(output)` when this episode completed the orchestration and the ack was OK.
    pub(crate) completed: Option<String>,
    /// Set when the episode or its completion call failed; the orchestration will not finish.
    pub(crate) failed: Option<String>,
    /// Timer scripts: arrival of the `TimerFired` episode minus the timer's `fireAt`.
    pub(crate) timer_lateness: Option<Duration>,
}

/// Counters of acknowledged work, read as deltas around each benchmark cell.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Orchestrator episodes whose completion was acknowledged OK.
    pub(crate) episodes: AtomicU64,
    /// Activity completions acknowledged OK.
    pub(crate) activities: AtomicU64,
    /// Entity operations whose batch completion was acknowledged OK.
    pub(crate) entity_operations: AtomicU64,
}

/// Errors seen by the worker; all of them fail the run (exit code 1).
#[derive(Debug, Default)]
pub(crate) struct ErrorLog {
    count: AtomicU64,
    // Only the first few messages are kept: one bug tends to repeat thousands of times.
    first: Mutex<Vec<String>>,
}

impl ErrorLog {
    pub(crate) fn record(&self, msg: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock().expect("error log mutex poisoned");
        if first.len() < 20 {
            first.push(msg);
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn messages(&self) -> Vec<String> {
        self.first.lock().expect("error log mutex poisoned").clone()
    }
}

/// A round-robin pool of HTTP/2 connections: one connection would cap the number of
/// concurrent calls at the server's stream limit and serialise everything on one socket.
#[derive(Debug)]
pub(crate) struct Clients {
    clients: Vec<Client>,
    next: AtomicUsize,
}

impl Clients {
    /// Connects `connections` connections, spread round-robin over `addrs` (several
    /// sidecars sharing one database: clients and streams are spread over all of them).
    pub(crate) async fn connect(addrs: &[String], connections: usize) -> Result<Self> {
        let connections = connections.max(addrs.len()).max(1);
        let mut clients = Vec::with_capacity(connections);
        // A sidecar started just before the loadgen (as in a CI smoke run) may not be
        // listening yet: retry for a while instead of making every script sleep.
        let give_up = Instant::now() + Duration::from_secs(15);
        for i in 0..connections {
            let addr = &addrs[i % addrs.len()];
            let endpoint = Endpoint::from_shared(addr.to_string())
                .with_context(|| format!("bad --addr {addr}"))?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5));
            let channel = loop {
                match endpoint.connect().await {
                    Ok(channel) => break channel,
                    Err(_) if Instant::now() < give_up => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(e).with_context(|| format!("connecting to {addr}")),
                }
            };
            clients.push(
                Client::new(channel)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            );
        }
        Ok(Self {
            clients,
            next: AtomicUsize::new(0),
        })
    }

    /// A client on the next connection (clients are cheap handles to a shared channel).
    pub(crate) fn get(&self) -> Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].clone()
    }
}

/// The running worker: its streams, counters and the instances drivers are watching.
#[derive(Debug)]
pub(crate) struct Worker {
    inner: Arc<Inner>,
    cancel: CancellationToken,
}

#[derive(Debug)]
struct Inner {
    clients: Arc<Clients>,
    counters: Counters,
    errors: Arc<ErrorLog>,
    watchers: Mutex<HashMap<String, mpsc::UnboundedSender<EpisodeNote>>>,
}

impl Worker {
    /// Opens `streams` work-item streams and starts answering them.
    pub(crate) async fn start(
        clients: Arc<Clients>,
        streams: usize,
        errors: Arc<ErrorLog>,
    ) -> Result<Self> {
        let inner = Arc::new(Inner {
            clients,
            counters: Counters::default(),
            errors,
            watchers: Mutex::new(HashMap::new()),
        });
        let cancel = CancellationToken::new();
        let mut opened = Vec::new();
        for n in 0..streams.max(1) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            opened.push(rx);
            tokio::spawn(run_stream(n, tx, Arc::clone(&inner), cancel.clone()));
        }
        // Prefer to have every stream open before the first workload starts. grpc-go
        // servers (durabletask-go) send no response headers until the first work item,
        // so the open call cannot complete before then: wait only briefly. The request
        // itself has reached the server by then, which is what matters.
        let all = futures::future::join_all(opened);
        let _ = tokio::time::timeout(Duration::from_secs(1), all).await;
        Ok(Self { inner, cancel })
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Notes for `instance_id` go to the returned receiver until [`Worker::unwatch`].
    pub(crate) fn watch(&self, instance_id: &str) -> mpsc::UnboundedReceiver<EpisodeNote> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner
            .watchers
            .lock()
            .expect("watchers mutex poisoned")
            .insert(instance_id.to_string(), tx);
        rx
    }

    pub(crate) fn unwatch(&self, instance_id: &str) {
        self.inner
            .watchers
            .lock()
            .expect("watchers mutex poisoned")
            .remove(instance_id);
    }

    pub(crate) fn stop(&self) {
        self.cancel.cancel();
    }
}

async fn open_stream(client: &Client) -> Result<tonic::Streaming<pb::WorkItem>> {
    let mut client = client.clone();
    let request = pb::GetWorkItemsRequest {
        // High hints: the loadgen itself must never be the flow-control bottleneck.
        max_concurrent_orchestration_work_items: 10_000,
        max_concurrent_activity_work_items: 10_000,
        max_concurrent_entity_work_items: 10_000,
        ..Default::default()
    };
    Ok(client
        .get_work_items(request)
        .await
        .context("opening GetWorkItems stream")?
        .into_inner())
}

async fn run_stream(
    n: usize,
    opened: tokio::sync::oneshot::Sender<()>,
    inner: Arc<Inner>,
    cancel: CancellationToken,
) {
    let mut client = inner.clients.get();
    let first = tokio::select! {
        _ = cancel.cancelled() => return,
        first = open_stream(&client) => first,
    };
    let mut stream = match first {
        Ok(s) => s,
        Err(e) => {
            inner.errors.record(format!("work-item stream {n}: {e:#}"));
            return;
        }
    };
    let _ = opened.send(());
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return,
            next = stream.message() => next,
        };
        match next {
            Ok(Some(item)) => {
                let arrived = Instant::now();
                // Completions go back to the sidecar that sent the item.
                tokio::spawn(handle(item, arrived, Arc::clone(&inner), client.clone()));
            }
            other => {
                // A stream ending mid-run is an anomaly worth failing the run for, but keep
                // working: the sidecar requeues the stream's items and we take them again.
                let why = match other {
                    Err(status) => format!("{status}"),
                    _ => "ended by the server".to_string(),
                };
                inner
                    .errors
                    .record(format!("work-item stream {n} lost: {why}"));
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                    let next = inner.clients.get();
                    if let Ok(s) = open_stream(&next).await {
                        stream = s;
                        client = next;
                        break;
                    }
                }
            }
        }
    }
}

async fn handle(item: pb::WorkItem, arrived: Instant, inner: Arc<Inner>, mut client: Client) {
    let token = item.completion_token;
    match item.request {
        Some(pb::work_item::Request::OrchestratorRequest(req)) => {
            orchestrate(req, token, arrived, &inner, client).await;
        }
        Some(pb::work_item::Request::ActivityRequest(req)) => {
            let instance_id = req
                .orchestration_instance
                .map(|i| i.instance_id)
                .unwrap_or_default();
            let response = pb::ActivityResponse {
                instance_id: instance_id.clone(),
                task_id: req.task_id,
                // Echo: the orchestrator checks that result i came back for task i.
                result: req.input,
                failure_details: None,
                completion_token: token,
            };
            match client.complete_activity_task(response).await {
                Ok(_) => {
                    inner.counters.activities.fetch_add(1, Ordering::Relaxed);
                }
                Err(status) => inner.errors.record(format!(
                    "CompleteActivityTask {instance_id}#{} failed: {status}",
                    req.task_id
                )),
            }
        }
        Some(pb::work_item::Request::EntityRequestV2(req)) => {
            entity_batch(req, token, &inner, client).await;
        }
        // Keep-alives need no answer; only the soak's counters use entities, and the
        // sidecar sends entity work as V2 (`entityRequestV2`).
        _ => {}
    }
}

/// Runs one batch for a counter entity: every `add` adds its input to the state (absent
/// state = 0) and returns the new value. Anything else fails the run: the soak only ever
/// calls `add` with an integer.
async fn entity_batch(req: pb::EntityRequest, token: String, inner: &Inner, mut client: Client) {
    let entity = req.instance_id.clone();
    let mut value: i64 = match req.entity_state.as_deref().map(str::parse) {
        None => 0,
        Some(Ok(v)) => v,
        Some(Err(_)) => {
            inner.errors.record(format!(
                "entity {entity}: state {:?} is not an integer",
                req.entity_state
            ));
            return;
        }
    };
    let mut results = Vec::with_capacity(req.operation_requests.len());
    for op in &req.operation_requests {
        let (operation, input) = match &op.event_type {
            Some(EventType::EntityOperationCalled(c)) => (&c.operation, &c.input),
            Some(EventType::EntityOperationSignaled(s)) => (&s.operation, &s.input),
            other => {
                inner.errors.record(format!(
                    "entity {entity}: batch holds a {} event",
                    other.as_ref().map_or("missing", |_| "non-operation")
                ));
                return;
            }
        };
        let add = input.as_deref().and_then(|s| s.parse::<i64>().ok());
        let Some(add) = add.filter(|_| operation == script::ADD) else {
            inner.errors.record(format!(
                "entity {entity}: unexpected operation {operation:?} with input {input:?}"
            ));
            return;
        };
        value += add;
        results.push(pb::OperationResult {
            result_type: Some(pb::operation_result::ResultType::Success(
                pb::OperationResultSuccess {
                    result: Some(value.to_string()),
                    ..Default::default()
                },
            )),
        });
    }
    let operations = results.len() as u64;
    let result = pb::EntityBatchResult {
        results,
        entity_state: Some(value.to_string()),
        completion_token: token,
        ..Default::default()
    };
    match client.complete_entity_task(result).await {
        Ok(_) => {
            inner
                .counters
                .entity_operations
                .fetch_add(operations, Ordering::Relaxed);
        }
        Err(status) => inner
            .errors
            .record(format!("CompleteEntityTask {entity} failed: {status}")),
    }
}

async fn orchestrate(
    req: pb::OrchestratorRequest,
    token: String,
    arrived: Instant,
    inner: &Inner,
    mut client: Client,
) {
    let instance_id = req.instance_id.clone();
    let (actions, decision) = match decide(&req) {
        // Take the actions out: a fan-out episode carries a thousand of them.
        Ok(mut d) => (std::mem::take(&mut d.actions), d),
        Err(why) => {
            inner.errors.record(format!("{instance_id}: {why}"));
            // Fail the orchestration so the sidecar stops dispatching it.
            let fail = action(
                0,
                OrchestratorActionType::CompleteOrchestration(pb::CompleteOrchestrationAction {
                    orchestration_status: pb::OrchestrationStatus::Failed as i32,
                    failure_details: Some(pb::TaskFailureDetails {
                        error_type: "LoadgenCheck".into(),
                        error_message: why.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            );
            (
                vec![fail],
                Decision {
                    failed: Some(why),
                    ..Decision::default()
                },
            )
        }
    };
    let response = pb::OrchestratorResponse {
        instance_id: instance_id.clone(),
        actions,
        completion_token: token,
        ..Default::default()
    };
    let result = client.complete_orchestrator_task(response).await;
    let acked = Instant::now();
    let mut note = EpisodeNote {
        arrived,
        acked,
        progress: decision.progress,
        completed: None,
        failed: decision.failed,
        timer_lateness: decision.timer_lateness,
    };
    match result {
        Ok(_) => {
            inner.counters.episodes.fetch_add(1, Ordering::Relaxed);
            if note.failed.is_none() {
                note.completed = decision.output;
            }
        }
        Err(status) => {
            let msg = format!("CompleteOrchestratorTask {instance_id} failed: {status}");
            inner.errors.record(msg.clone());
            note.failed = Some(msg);
        }
    }
    let watcher = inner
        .watchers
        .lock()
        .expect("watchers mutex poisoned")
        .get(&instance_id)
        .cloned();
    if let Some(tx) = watcher {
        // The driver may have given up (timeout) and dropped its receiver: nothing to do.
        let _ = tx.send(note);
    }
}

/// The actions of one episode plus what the driver needs to know about it.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    pub(crate) actions: Vec<pb::OrchestratorAction>,
    /// `Some(output)` when `actions` completes the orchestration.
    pub(crate) output: Option<String>,
    pub(crate) progress: usize,
    pub(crate) failed: Option<String>,
    pub(crate) timer_lateness: Option<Duration>,
}

/// Everything the scripts need from an episode's events (`pastEvents` then `newEvents`).
#[derive(Debug, Default)]
struct Seen {
    name: Option<String>,
    input: Option<String>,
    /// Timestamp of this episode's `OrchestratorStarted` (the last one seen).
    started_at: Option<prost_types::Timestamp>,
    scheduled: BTreeSet<i32>,
    /// taskScheduledId → result; a second `TaskCompleted` for the same id is an error.
    results: BTreeMap<i32, String>,
    duplicates: Vec<i32>,
    raised: Vec<String>,
    timer_created: bool,
    timer_fired: Option<prost_types::Timestamp>,
    /// Entity calls sent so far (their history events), in order.
    entity_calls: Vec<String>,
    /// requestId → output of answered entity calls; a second answer is a duplicate.
    entity_results: BTreeMap<String, String>,
    entity_duplicates: Vec<String>,
    entity_failures: Vec<String>,
}

fn scan(req: &pb::OrchestratorRequest) -> Seen {
    let mut seen = Seen::default();
    for event in req.past_events.iter().chain(req.new_events.iter()) {
        match &event.event_type {
            Some(EventType::ExecutionStarted(s)) => {
                seen.name = Some(s.name.clone());
                seen.input = s.input.clone();
            }
            Some(EventType::OrchestratorStarted(_)) => seen.started_at = event.timestamp,
            Some(EventType::TaskScheduled(_)) => {
                seen.scheduled.insert(event.event_id);
            }
            Some(EventType::TaskCompleted(c)) => {
                let result = c.result.clone().unwrap_or_default();
                if seen.results.insert(c.task_scheduled_id, result).is_some() {
                    seen.duplicates.push(c.task_scheduled_id);
                }
            }
            Some(EventType::EventRaised(e)) => {
                seen.raised.push(e.input.clone().unwrap_or_default());
            }
            Some(EventType::TimerCreated(_)) => seen.timer_created = true,
            Some(EventType::TimerFired(f)) => seen.timer_fired = f.fire_at,
            Some(EventType::EntityOperationCalled(c)) => {
                seen.entity_calls.push(c.request_id.clone());
            }
            Some(EventType::EntityOperationCompleted(c)) => {
                let output = c.output.clone().unwrap_or_default();
                if seen
                    .entity_results
                    .insert(c.request_id.clone(), output)
                    .is_some()
                {
                    seen.entity_duplicates.push(c.request_id.clone());
                }
            }
            Some(EventType::EntityOperationFailed(f)) => seen.entity_failures.push(format!(
                "{}: {:?}",
                f.request_id,
                f.failure_details.as_ref().map(|d| &d.error_message)
            )),
            _ => {}
        }
    }
    seen
}

/// Decides an episode from its events. `Err` means the sidecar broke exactly-once or
/// ordering (a duplicate, unexpected or wrong result); the run then fails.
pub(crate) fn decide(req: &pb::OrchestratorRequest) -> Result<Decision, String> {
    let seen = scan(req);
    if !seen.duplicates.is_empty() {
        return Err(format!(
            "duplicate TaskCompleted for task ids {:?}",
            seen.duplicates
        ));
    }
    if let Some(id) = seen.results.keys().find(|id| !seen.scheduled.contains(id)) {
        return Err(format!(
            "TaskCompleted for task {id} that was never scheduled"
        ));
    }
    // Activities echo their input, which is the task id: anything else is a misrouted result.
    if let Some((id, r)) = seen.results.iter().find(|(id, r)| **r != id.to_string()) {
        return Err(format!("task {id} returned {r:?}, expected \"{id}\""));
    }
    let name = seen
        .name
        .clone()
        .ok_or("no ExecutionStarted in the episode")?;
    let param = |what: &str| -> Result<usize, String> {
        seen.input
            .as_deref()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{what} needs a numeric input, got {:?}", seen.input))
    };
    let mut d = Decision::default();
    match name.as_str() {
        script::SEQUENCE | script::FAN_OUT => {
            let n = param(&name)?;
            let done = seen.results.len();
            d.progress = done;
            if done == n {
                d.output = Some(index_list(n));
                d.actions.push(complete(n as i32, d.output.clone()));
            } else if name == script::SEQUENCE && seen.scheduled.len() == done {
                // Task ids are 0..n in order, so the next one is the number done so far.
                d.actions.push(schedule(done as i32));
            } else if name == script::FAN_OUT && seen.scheduled.is_empty() {
                d.actions.extend((0..n as i32).map(schedule));
            }
            // Otherwise results are still outstanding: an episode with no actions.
        }
        script::START_ONLY => {
            d.output = Some(seen.input.clone().unwrap_or_default());
            d.actions.push(complete(0, d.output.clone()));
        }
        script::EVENTS => {
            let n = param(&name)?;
            for (i, input) in seen.raised.iter().enumerate() {
                if *input != i.to_string() {
                    return Err(format!("event {i} carried {input:?}: lost or reordered"));
                }
            }
            d.progress = seen.raised.len();
            if d.progress >= n {
                d.output = Some(n.to_string());
                d.actions.push(complete(0, d.output.clone()));
            }
        }
        script::TIMER => {
            let delay_ms = param(&name)?;
            if let Some(fire_at) = seen.timer_fired {
                d.timer_lateness = Some(lateness(&fire_at));
                d.output = Some("\"fired\"".to_string());
                d.actions.push(complete(1, d.output.clone()));
            } else if !seen.timer_created {
                let base = seen
                    .started_at
                    .ok_or("OrchestratorStarted has no timestamp")?;
                d.actions.push(timer(0, add_ms(base, delay_ms)));
            }
        }
        script::ENTITY_CALLS => {
            let n = param(&name)?;
            entity_calls(&req.instance_id, n, &seen, &mut d)?;
        }
        other => return Err(format!("unknown orchestration {other:?}")),
    }
    Ok(d)
}

/// The [`script::ENTITY_CALLS`] script: call k (action id k, request id `<instance>:k`)
/// goes out once call k-1 has been answered, and must come back as k+1 because the counter
/// is this orchestration's own and starts at 0. A lost, repeated or misrouted answer, or a
/// value off by any amount (an operation applied twice or lost) fails the run.
fn entity_calls(instance_id: &str, n: usize, seen: &Seen, d: &mut Decision) -> Result<(), String> {
    if !seen.entity_duplicates.is_empty() || !seen.entity_failures.is_empty() {
        return Err(format!(
            "entity answers repeated {:?} or failed {:?}",
            seen.entity_duplicates, seen.entity_failures
        ));
    }
    let request_id = |k: usize| format!("{instance_id}:{k}");
    for (k, sent) in seen.entity_calls.iter().enumerate() {
        if *sent != request_id(k) {
            return Err(format!(
                "entity call {k} has request id {sent:?} in the history"
            ));
        }
    }
    for (id, output) in &seen.entity_results {
        let k = seen
            .entity_calls
            .iter()
            .position(|sent| sent == id)
            .ok_or_else(|| format!("entity answer for unknown request {id:?}"))?;
        if *output != (k + 1).to_string() {
            return Err(format!(
                "entity call {k} returned {output:?}, expected \"{}\"",
                k + 1
            ));
        }
    }
    let done = seen.entity_results.len();
    d.progress = done;
    if done == n {
        d.output = Some(n.to_string());
        d.actions.push(complete(n as i32, d.output.clone()));
    } else if seen.entity_calls.len() == done {
        d.actions.push(action(
            done as i32,
            OrchestratorActionType::SendEntityMessage(pb::SendEntityMessageAction {
                entity_message_type: Some(
                    pb::send_entity_message_action::EntityMessageType::EntityOperationCalled(
                        pb::EntityOperationCalledEvent {
                            request_id: request_id(done),
                            operation: script::ADD.into(),
                            input: Some("1".into()),
                            target_instance_id: Some(script::entity_id(instance_id)),
                            ..Default::default()
                        },
                    ),
                ),
            }),
        ));
    }
    Ok(())
}

fn action(id: i32, kind: OrchestratorActionType) -> pb::OrchestratorAction {
    pb::OrchestratorAction {
        id,
        orchestrator_action_type: Some(kind),
    }
}

fn schedule(id: i32) -> pb::OrchestratorAction {
    action(
        id,
        OrchestratorActionType::ScheduleTask(pb::ScheduleTaskAction {
            name: script::ECHO.into(),
            input: Some(id.to_string()),
            ..Default::default()
        }),
    )
}

fn complete(id: i32, result: Option<String>) -> pb::OrchestratorAction {
    action(
        id,
        OrchestratorActionType::CompleteOrchestration(pb::CompleteOrchestrationAction {
            orchestration_status: pb::OrchestrationStatus::Completed as i32,
            result,
            ..Default::default()
        }),
    )
}

fn timer(id: i32, fire_at: prost_types::Timestamp) -> pb::OrchestratorAction {
    action(
        id,
        OrchestratorActionType::CreateTimer(pb::CreateTimerAction {
            fire_at: Some(fire_at),
        }),
    )
}

fn add_ms(t: prost_types::Timestamp, ms: usize) -> prost_types::Timestamp {
    let total_nanos = i64::from(t.nanos) + (ms as i64 % 1000) * 1_000_000;
    prost_types::Timestamp {
        seconds: t.seconds + ms as i64 / 1000 + total_nanos / 1_000_000_000,
        nanos: (total_nanos % 1_000_000_000) as i32,
    }
}

/// Now (wall clock) minus `fire_at`; zero if the timer arrived early by our clock.
fn lateness(fire_at: &prost_types::Timestamp) -> Duration {
    let now = wall_clock_nanos();
    let fire = i128::from(fire_at.seconds) * 1_000_000_000 + i128::from(fire_at.nanos);
    Duration::from_nanos(u64::try_from(now - fire).unwrap_or(0))
}

/// Nanoseconds since the Unix epoch. Timer lateness compares the sidecar's `fireAt`
/// (wall clock, same machine) with ours, so this must be the real clock; the crate's
/// testable domain clock is not reachable from outside and would not be the same clock.
#[allow(clippy::disallowed_methods)]
pub(crate) fn wall_clock_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}
