//! The workloads W1–W7 of issue 3, each as one or more benchmark *cells* (a workload
//! with fixed parameters, e.g. "W1 N=3 C=100").
//!
//! A cell's timed section starts with its first `StartInstance` call and ends with the
//! acknowledgement of the last completing `CompleteOrchestratorTask`. Each cell returns the
//! instances it finished together with their expected outputs; `main` checks them with
//! `GetInstance` *after* the timed section (and after reading the sidecar's CPU time), so
//! verification neither slows nor inflates the figures.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durabletask_sidecar::proto as pb;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::stats::{mean_ms, ms, percentile_ms, rate};
use crate::worker::{index_list, script, Clients, EpisodeNote, ErrorLog, Worker};

/// Shared handles and limits for every cell of a run.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) clients: Arc<Clients>,
    pub(crate) worker: Worker,
    pub(crate) errors: Arc<ErrorLog>,
    /// Unique per loadgen process, so runs against the same database never collide.
    pub(crate) run_id: String,
    /// After this long a cell starts no new orchestrations.
    pub(crate) cap: Duration,
    /// How long in-flight orchestrations may take to finish after the cap.
    pub(crate) drain: Duration,
}

/// One benchmark cell.
#[derive(Debug, Clone)]
pub(crate) enum Cell {
    /// Sequence of `steps` activities, closed loop of `count` orchestrations at `concurrency`.
    Sequence {
        steps: usize,
        concurrency: usize,
        count: usize,
    },
    /// `reps` fan-out/fan-in orchestrations of `width` activities, one after another.
    FanOut { width: usize, reps: usize },
    /// `count` orchestrations that complete in their first episode, `concurrency` in flight.
    StartOnly { concurrency: usize, count: usize },
    /// One orchestration receiving `events` sequential external events.
    Events { events: usize },
    /// `count` orchestrations each waiting for one `delay_ms` timer, all in flight at once.
    Timers { count: usize, delay_ms: usize },
    /// `reps` sequences of `steps` activities, one after another, timed per step.
    LongSequence { steps: usize, reps: usize },
    /// One orchestration started after `idle` without traffic.
    ColdStart { idle: Duration },
}

impl Cell {
    pub(crate) fn workload(&self) -> &'static str {
        match self {
            Cell::Sequence { .. } => "W1",
            Cell::FanOut { .. } => "W2",
            Cell::StartOnly { .. } => "W3",
            Cell::Events { .. } => "W4",
            Cell::Timers { .. } => "W5",
            Cell::LongSequence { .. } => "W6",
            Cell::ColdStart { .. } => "W7",
        }
    }

    /// Human-readable parameters, also used (slugged) in instance ids.
    pub(crate) fn case(&self) -> String {
        match self {
            Cell::Sequence {
                steps, concurrency, ..
            } => format!("seq N={steps} C={concurrency}"),
            Cell::FanOut { width, .. } => format!("fan-out {width}"),
            Cell::StartOnly { concurrency, .. } => format!("start-only C={concurrency}"),
            Cell::Events { events } => format!("{events} events"),
            Cell::Timers { count, delay_ms } => format!("{count} x {delay_ms}ms timers"),
            Cell::LongSequence { steps, .. } => format!("seq N={steps} per-step"),
            Cell::ColdStart { idle } => format!("start after {}s idle", idle.as_secs_f64()),
        }
    }
}

/// What a cell measured.
#[derive(Debug, Default)]
pub(crate) struct Measured {
    pub(crate) orchestrations: u64,
    pub(crate) elapsed: Duration,
    /// End-to-end latencies: `StartInstance` call to the ack of the completing episode.
    pub(crate) latencies: Vec<Duration>,
    /// Workload-specific figures (name, value), printed in the notes column.
    pub(crate) extras: Vec<(String, f64)>,
    /// (instance id, expected output) of every finished orchestration, checked afterwards.
    pub(crate) to_verify: Vec<(String, String)>,
}

/// Runs one cell; `tag` makes its instance ids unique within the run (e.g. the repeat).
pub(crate) async fn run(ctx: &Arc<Ctx>, cell: &Cell, tag: &str) -> Measured {
    let slug: String = cell
        .case()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let prefix = format!("lg-{}-{}-{slug}-{tag}", ctx.run_id, cell.workload());
    match cell {
        Cell::Sequence {
            steps,
            concurrency,
            count,
        } => {
            let spec = Spec::new(script::SEQUENCE, steps.to_string(), index_list(*steps));
            closed_loop(ctx, &prefix, spec, *count, *concurrency, None).await
        }
        Cell::StartOnly { concurrency, count } => {
            let spec = Spec::new(script::START_ONLY, "\"x\"".into(), "\"x\"".into());
            closed_loop(ctx, &prefix, spec, *count, *concurrency, None).await
        }
        Cell::Timers { count, delay_ms } => {
            let spec = Spec::new(script::TIMER, delay_ms.to_string(), "\"fired\"".into());
            // All timers in flight at once, but bound the burst of StartInstance calls.
            let limit = Arc::new(Semaphore::new(256));
            let mut m = closed_loop(ctx, &prefix, spec, *count, *count, Some(limit)).await;
            let late = std::mem::take(&mut m.extras);
            let lateness: Vec<Duration> = late
                .iter()
                .map(|(_, v)| Duration::from_secs_f64(v / 1000.0))
                .collect();
            push(
                &mut m.extras,
                "lateness_p50_ms",
                percentile_ms(&lateness, 50.0),
            );
            push(
                &mut m.extras,
                "lateness_p99_ms",
                percentile_ms(&lateness, 99.0),
            );
            push(
                &mut m.extras,
                "lateness_max_ms",
                percentile_ms(&lateness, 100.0),
            );
            m
        }
        Cell::FanOut { width, reps } => fan_out(ctx, &prefix, *width, *reps).await,
        Cell::Events { events } => events_cell(ctx, &prefix, *events).await,
        Cell::LongSequence { steps, reps } => long_sequence(ctx, &prefix, *steps, *reps).await,
        Cell::ColdStart { idle } => cold_start(ctx, &prefix, *idle).await,
    }
}

fn push(extras: &mut Vec<(String, f64)>, name: &str, value: Option<f64>) {
    if let Some(v) = value {
        extras.push((name.to_string(), v));
    }
}

/// The orchestration a cell starts and the output it must end with.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    pub(crate) input: String,
    pub(crate) expected: String,
}

impl Spec {
    pub(crate) fn new(name: &'static str, input: String, expected: String) -> Self {
        Self {
            name,
            input,
            expected,
        }
    }
}

/// One finished orchestration.
#[derive(Debug)]
struct Finished {
    id: String,
    latency: Duration,
    acked: Instant,
    timer_lateness: Option<Duration>,
}

pub(crate) async fn start(ctx: &Ctx, id: &str, spec: &Spec) -> Result<(), String> {
    ctx.clients
        .get()
        .start_instance(pb::CreateInstanceRequest {
            // Always our own id: durabletask-go does not generate one.
            instance_id: id.to_string(),
            name: spec.name.to_string(),
            input: Some(spec.input.clone()),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("StartInstance {id} failed: {s}"))
}

/// The next note for a watched instance, or an error at `deadline`.
pub(crate) async fn next_note(
    rx: &mut mpsc::UnboundedReceiver<EpisodeNote>,
    deadline: Instant,
    id: &str,
) -> Result<EpisodeNote, String> {
    match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
        Ok(Some(note)) => match &note.failed {
            Some(why) => Err(format!("{id}: {why}")),
            None => Ok(note),
        },
        Ok(None) => Err(format!("{id}: worker went away")),
        Err(_) => Err(format!(
            "{id}: not completed in time (raise --duration-secs?)"
        )),
    }
}

/// Starts one orchestration and waits (on worker notes, not on the sidecar) for the ack
/// of its completing episode.
async fn run_one(
    ctx: &Ctx,
    id: String,
    spec: &Spec,
    start_limit: Option<&Semaphore>,
    deadline: Instant,
) -> Result<Finished, String> {
    let mut rx = ctx.worker.watch(&id);
    let started = Instant::now();
    let outcome = async {
        {
            // The permit only bounds concurrent StartInstance calls, not the orchestration.
            let _permit = match start_limit {
                Some(s) => Some(s.acquire().await.map_err(|e| e.to_string())?),
                None => None,
            };
            start(ctx, &id, spec).await?;
        }
        loop {
            let note = next_note(&mut rx, deadline, &id).await?;
            if let Some(output) = note.completed {
                if output != spec.expected {
                    return Err(format!(
                        "{id}: output {output:?}, expected {:?}",
                        spec.expected
                    ));
                }
                return Ok(Finished {
                    id: id.clone(),
                    latency: note.acked - started,
                    acked: note.acked,
                    timer_lateness: note.timer_lateness,
                });
            }
        }
    }
    .await;
    ctx.worker.unwatch(&id);
    outcome
}

/// Keeps `concurrency` orchestrations in flight until `count` have been started or the
/// cap is reached, then waits for the ones in flight.
async fn closed_loop(
    ctx: &Arc<Ctx>,
    prefix: &str,
    spec: Spec,
    count: usize,
    concurrency: usize,
    start_limit: Option<Arc<Semaphore>>,
) -> Measured {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let stop_starting = t0 + ctx.cap;
    let deadline = stop_starting + ctx.drain;
    let spec = Arc::new(spec);
    let mut drivers = JoinSet::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let (ctx, next, spec, limit) = (
            Arc::clone(ctx),
            Arc::clone(&next),
            Arc::clone(&spec),
            start_limit.clone(),
        );
        let prefix = prefix.to_string();
        drivers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() >= stop_starting {
                    return done;
                }
                let id = format!("{prefix}-{i}");
                match run_one(&ctx, id, &spec, limit.as_deref(), deadline).await {
                    Ok(f) => done.push(f),
                    Err(e) => ctx.errors.record(e),
                }
            }
        });
    }
    let mut finished: Vec<Finished> = Vec::new();
    while let Some(r) = drivers.join_next().await {
        match r {
            Ok(done) => finished.extend(done),
            Err(e) => ctx.errors.record(format!("driver task panicked: {e}")),
        }
    }
    let end = finished.iter().map(|f| f.acked).max().unwrap_or(t0);
    Measured {
        orchestrations: finished.len() as u64,
        elapsed: end - t0,
        latencies: finished.iter().map(|f| f.latency).collect(),
        // Only the timer cell reads these (raw lateness samples, replaced by percentiles).
        extras: finished
            .iter()
            .filter_map(|f| f.timer_lateness.map(|l| ("lateness".to_string(), ms(l))))
            .collect(),
        to_verify: finished
            .into_iter()
            .map(|f| (f.id, spec.expected.clone()))
            .collect(),
    }
}

/// W2: one fan-out/fan-in orchestration at a time; the figure is activities per second.
async fn fan_out(ctx: &Arc<Ctx>, prefix: &str, width: usize, reps: usize) -> Measured {
    let spec = Spec::new(script::FAN_OUT, width.to_string(), index_list(width));
    let mut m = Measured::default();
    for r in 0..reps.max(1) {
        let deadline = Instant::now() + ctx.cap + ctx.drain;
        match run_one(ctx, format!("{prefix}-{r}"), &spec, None, deadline).await {
            Ok(f) => {
                m.orchestrations += 1;
                m.elapsed += f.latency;
                m.latencies.push(f.latency);
                m.to_verify.push((f.id, spec.expected.clone()));
            }
            Err(e) => ctx.errors.record(e),
        }
    }
    m
}

/// W4: the client raises event k+1 only after the episode that consumed event k was
/// acknowledged, so each event costs one full raise → dispatch → commit round trip.
async fn events_cell(ctx: &Arc<Ctx>, prefix: &str, events: usize) -> Measured {
    let id = format!("{prefix}-0");
    let spec = Spec::new(script::EVENTS, events.to_string(), events.to_string());
    let deadline = Instant::now() + ctx.cap + ctx.drain;
    let mut m = Measured::default();
    let mut rx = ctx.worker.watch(&id);
    let started = Instant::now();
    let outcome: Result<(), String> = async {
        start(ctx, &id, &spec).await?;
        let mut raised_at: Vec<Instant> = Vec::with_capacity(events);
        let mut per_event: Vec<Duration> = Vec::with_capacity(events);
        loop {
            let note = next_note(&mut rx, deadline, &id).await?;
            // `progress` = events consumed so far; the newest one finished its round trip.
            if note.progress > 0 && note.progress == raised_at.len() {
                per_event.push(note.acked - raised_at[note.progress - 1]);
            }
            if let Some(output) = note.completed {
                if output != spec.expected {
                    return Err(format!(
                        "{id}: output {output:?}, expected {:?}",
                        spec.expected
                    ));
                }
                let first = raised_at.first().copied().unwrap_or(started);
                m.orchestrations = 1;
                m.elapsed = note.acked - first;
                m.latencies.push(note.acked - started);
                push(
                    &mut m.extras,
                    "events_per_s",
                    rate(events as u64, m.elapsed),
                );
                push(
                    &mut m.extras,
                    "event_p50_ms",
                    percentile_ms(&per_event, 50.0),
                );
                push(
                    &mut m.extras,
                    "event_p99_ms",
                    percentile_ms(&per_event, 99.0),
                );
                m.to_verify.push((id.clone(), spec.expected.clone()));
                return Ok(());
            }
            if note.progress == raised_at.len() && raised_at.len() < events {
                let k = raised_at.len();
                raised_at.push(Instant::now());
                ctx.clients
                    .get()
                    .raise_event(pb::RaiseEventRequest {
                        instance_id: id.clone(),
                        name: script::EVENT_NAME.into(),
                        input: Some(k.to_string()),
                    })
                    .await
                    .map_err(|s| format!("RaiseEvent {id} #{k} failed: {s}"))?;
            }
        }
    }
    .await;
    ctx.worker.unwatch(&id);
    if let Err(e) = outcome {
        ctx.errors.record(e);
    }
    m
}

/// W6: per-step latency = time between the arrivals of consecutive orchestrator episodes
/// (schedule ack → activity dispatch → activity commit → next episode dispatch). If the
/// sidecar reloads or rewrites the whole history per step, late steps get slower.
async fn long_sequence(ctx: &Arc<Ctx>, prefix: &str, steps: usize, reps: usize) -> Measured {
    let spec = Spec::new(script::SEQUENCE, steps.to_string(), index_list(steps));
    let mut m = Measured::default();
    // per_step[k] = latencies of step k+1 across the repetitions.
    let mut per_step: Vec<Vec<Duration>> = vec![Vec::new(); steps];
    for r in 0..reps.max(1) {
        let id = format!("{prefix}-{r}");
        let deadline = Instant::now() + ctx.cap + ctx.drain;
        let mut rx = ctx.worker.watch(&id);
        let started = Instant::now();
        let outcome: Result<(), String> = async {
            start(ctx, &id, &spec).await?;
            let mut arrivals: Vec<Instant> = Vec::with_capacity(steps + 1);
            loop {
                let note = next_note(&mut rx, deadline, &id).await?;
                // Episode k (k results seen) arrives once step k is done.
                if note.progress == arrivals.len() {
                    arrivals.push(note.arrived);
                }
                if let Some(output) = note.completed {
                    if output != spec.expected {
                        return Err(format!(
                            "{id}: output {output:?}, expected {:?}",
                            spec.expected
                        ));
                    }
                    for (k, pair) in arrivals.windows(2).enumerate() {
                        per_step[k].push(pair[1] - pair[0]);
                    }
                    m.orchestrations += 1;
                    m.elapsed += note.acked - started;
                    m.latencies.push(note.acked - started);
                    m.to_verify.push((id.clone(), spec.expected.clone()));
                    return Ok(());
                }
            }
        }
        .await;
        ctx.worker.unwatch(&id);
        if let Err(e) = outcome {
            ctx.errors.record(e);
        }
    }
    let median_of = |k: usize| -> Option<f64> {
        let v: Vec<f64> = per_step.get(k)?.iter().map(|d| ms(*d)).collect();
        crate::stats::median(&v)
    };
    let window = |range: std::ops::Range<usize>| -> Vec<Duration> {
        per_step[range].iter().flatten().copied().collect()
    };
    let early = 10.min(steps);
    push(
        &mut m.extras,
        &format!("step{early}_ms"),
        median_of(early - 1),
    );
    push(
        &mut m.extras,
        &format!("step{steps}_ms"),
        median_of(steps - 1),
    );
    let w = 20.min(steps / 2).max(1);
    let first = mean_ms(&window(0..w));
    let last = mean_ms(&window(steps - w..steps));
    push(&mut m.extras, &format!("first{w}_mean_ms"), first);
    push(&mut m.extras, &format!("last{w}_mean_ms"), last);
    if let (Some(f), Some(l)) = (first, last) {
        push(&mut m.extras, "last_over_first", Some(l / f));
    }
    m
}

/// W7: after `idle` with connected but silent streams, how long until the first work item
/// of a new orchestration arrives. Shows polling back-off in the sidecar.
async fn cold_start(ctx: &Arc<Ctx>, prefix: &str, idle: Duration) -> Measured {
    tokio::time::sleep(idle).await;
    let id = format!("{prefix}-0");
    let spec = Spec::new(script::START_ONLY, "\"x\"".into(), "\"x\"".into());
    let deadline = Instant::now() + ctx.cap + ctx.drain;
    let mut m = Measured::default();
    let mut rx = ctx.worker.watch(&id);
    let started = Instant::now();
    let outcome: Result<(), String> = async {
        start(ctx, &id, &spec).await?;
        let start_rpc = started.elapsed();
        let note = next_note(&mut rx, deadline, &id).await?;
        if note.completed.as_deref() != Some(spec.expected.as_str()) {
            return Err(format!("{id}: unexpected completion {:?}", note.completed));
        }
        m.orchestrations = 1;
        m.elapsed = note.acked - started;
        m.latencies.push(note.acked - started);
        m.extras
            .push(("first_dispatch_ms".into(), ms(note.arrived - started)));
        m.extras.push(("start_rpc_ms".into(), ms(start_rpc)));
        m.to_verify.push((id.clone(), spec.expected.clone()));
        Ok(())
    }
    .await;
    ctx.worker.unwatch(&id);
    if let Err(e) = outcome {
        ctx.errors.record(e);
    }
    m
}

/// Checks with `GetInstance` that every finished orchestration is COMPLETED with the
/// expected output (see [`check_stored`]), 32 at a time.
pub(crate) async fn verify(ctx: &Arc<Ctx>, items: Vec<(String, String)>) {
    let limit = Arc::new(Semaphore::new(32));
    let mut checks = JoinSet::new();
    for (id, expected) in items {
        let (ctx, limit) = (Arc::clone(ctx), Arc::clone(&limit));
        checks.spawn(async move {
            let _permit = limit.acquire().await.map_err(|e| e.to_string())?;
            check_stored(&ctx, &id, &expected).await
        });
    }
    while let Some(r) = checks.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => ctx.errors.record(e),
            Err(e) => ctx.errors.record(format!("verify task panicked: {e}")),
        }
    }
}

/// Checks with `GetInstance` that `id` is COMPLETED with output `expected`.
/// durabletask-go acknowledges a completion *before* committing it, so a not-yet-completed
/// status is retried for a while before it counts as an error.
pub(crate) async fn check_stored(ctx: &Ctx, id: &str, expected: &str) -> Result<(), String> {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let state = ctx
            .clients
            .get()
            .get_instance(pb::GetInstanceRequest {
                instance_id: id.to_string(),
                get_inputs_and_outputs: true,
            })
            .await
            .map_err(|s| format!("GetInstance {id} failed: {s}"))?
            .into_inner()
            .orchestration_state;
        let status = state.as_ref().map(|s| s.orchestration_status);
        if status == Some(pb::OrchestrationStatus::Completed as i32) {
            let output = state.and_then(|s| s.output).unwrap_or_default();
            return if output == expected {
                Ok(())
            } else {
                Err(format!(
                    "{id}: stored output {output:?}, expected {expected:?}"
                ))
            };
        }
        if Instant::now() >= give_up {
            return Err(format!(
                "{id}: stored status {status:?}, expected COMPLETED"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
