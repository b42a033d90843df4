//! The soak workload (`--workload soak`, issue 11 §6): a steady mixed load held for a long
//! time, to show that the sidecar neither fails, leaks memory nor slows down.
//!
//! `--in-flight` driver tasks each run one orchestration after another until the soak ends,
//! so that many are always in flight. Each draws its next orchestration from a fixed mix
//! (seeded, so a run can be repeated): a sequence of 1–5 activities, a fan-out of 5–20, a
//! 1–5 s timer, an external event that the driver raises 0–2 s after the start, and three
//! calls of its own counter entity. Every output is checked twice: when the completing
//! episode is acknowledged, and then with `GetInstance`, so the loadgen's memory stays flat
//! too (nothing is kept for a check at the end).
//!
//! Every `--report-secs` one line shows that interval: completions, rate, end-to-end p50
//! and p99, errors so far, the sidecar's RSS and CPU. The verdicts compare the intervals
//! after `--warmup-secs`: RSS at the end against RSS after warm-up, and the spread of the
//! per-interval p99. End-to-end latency includes the timers and event delays on purpose:
//! the mix is steady, so its p99 should be too.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durabletask_sidecar::proto as pb;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::procstat;
use crate::stats::percentile_ms;
use crate::worker::{index_list, script};
use crate::workloads::{check_stored, next_note, start, Ctx, Spec};

/// Parameters of one soak run (see the `--in-flight` … flags in `main.rs`).
#[derive(Debug, Clone)]
pub(crate) struct SoakConfig {
    pub(crate) in_flight: usize,
    pub(crate) duration: Duration,
    pub(crate) report_every: Duration,
    pub(crate) warmup: Duration,
    /// An orchestration not finished this long after its start is an error.
    pub(crate) timeout: Duration,
    pub(crate) streams: usize,
    pub(crate) sidecar_pid: Option<u32>,
    pub(crate) seed: u64,
    pub(crate) max_rss_growth_pct: f64,
    pub(crate) max_p99_ratio: f64,
    /// Whether the RSS and p99 verdicts can fail the run (not in a few-second smoke run).
    pub(crate) judge: bool,
    pub(crate) verify: bool,
}

/// The kinds of orchestration in the mix, drawn with equal weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sequence,
    FanOut,
    Timer,
    Event,
    Entity,
}

const KINDS: [Kind; 5] = [
    Kind::Sequence,
    Kind::FanOut,
    Kind::Timer,
    Kind::Event,
    Kind::Entity,
];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Sequence => "sequence",
            Kind::FanOut => "fan-out",
            Kind::Timer => "timer",
            Kind::Event => "event",
            Kind::Entity => "entity",
        }
    }

    fn index(self) -> usize {
        KINDS.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// One orchestration to run.
#[derive(Debug)]
struct Job {
    kind: Kind,
    spec: Spec,
    /// Event jobs: how long after the start the driver raises the event.
    raise_after: Option<Duration>,
}

fn draw(rng: &mut fastrand::Rng) -> Job {
    let kind = KINDS[rng.usize(..KINDS.len())];
    let (spec, raise_after) = match kind {
        Kind::Sequence => {
            let n = rng.usize(1..=5);
            (
                Spec::new(script::SEQUENCE, n.to_string(), index_list(n)),
                None,
            )
        }
        Kind::FanOut => {
            let m = rng.usize(5..=20);
            (
                Spec::new(script::FAN_OUT, m.to_string(), index_list(m)),
                None,
            )
        }
        Kind::Timer => {
            let delay_ms = rng.usize(1000..=5000);
            (
                Spec::new(script::TIMER, delay_ms.to_string(), "\"fired\"".into()),
                None,
            )
        }
        Kind::Event => (
            Spec::new(script::EVENTS, "1".into(), "1".into()),
            Some(Duration::from_millis(rng.u64(0..=2000))),
        ),
        Kind::Entity => (
            Spec::new(script::ENTITY_CALLS, "3".into(), "3".into()),
            None,
        ),
    };
    Job {
        kind,
        spec,
        raise_after,
    }
}

/// What the drivers share with the reporter.
#[derive(Debug, Default)]
struct Shared {
    acc: Mutex<Acc>,
    in_flight: AtomicUsize,
    completed: AtomicU64,
    verified: AtomicU64,
}

#[derive(Debug, Default)]
struct Acc {
    /// Latencies of the current interval; the reporter takes them.
    interval: Vec<Duration>,
    /// Completions and latencies per kind over the whole run, for the summary.
    per_kind: [Vec<Duration>; 5],
}

/// One report line.
#[derive(Debug, Clone)]
struct Interval {
    phase: &'static str,
    elapsed: Duration,
    completed: usize,
    orch_per_s: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    errors: u64,
    in_flight: usize,
    rss_mb: Option<f64>,
    sidecar_cpu_pct: Option<f64>,
    loadgen_cpu_pct: Option<f64>,
}

/// Runs the soak and prints its lines and summary; failed checks go to `ctx.errors`.
/// Returns the figures as JSON.
pub(crate) async fn run(ctx: &Arc<Ctx>, cfg: &SoakConfig) -> Value {
    let shared = Arc::new(Shared::default());
    let prefix = format!("lg-{}-soak", ctx.run_id);
    let t0 = Instant::now();
    let stop_starting = t0 + cfg.duration;
    // All drivers start at once: bound the opening burst of StartInstance calls.
    let start_limit = Arc::new(Semaphore::new(256));
    let mut drivers = JoinSet::new();
    for slot in 0..cfg.in_flight.max(1) {
        let (ctx, shared, limit) = (
            Arc::clone(ctx),
            Arc::clone(&shared),
            Arc::clone(&start_limit),
        );
        let (prefix, cfg) = (prefix.clone(), cfg.clone());
        drivers.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(cfg.seed.wrapping_mul(1_000_003) ^ slot as u64);
            let mut n = 0u64;
            while Instant::now() < stop_starting {
                let job = draw(&mut rng);
                let id = format!("{prefix}-{slot}-{n}");
                n += 1;
                shared.in_flight.fetch_add(1, Ordering::Relaxed);
                let outcome = run_job(&ctx, &id, &job, &limit, cfg.timeout).await;
                shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                let result = match outcome {
                    Ok(latency) => {
                        shared.completed.fetch_add(1, Ordering::Relaxed);
                        {
                            let mut acc = shared.acc.lock().expect("soak stats mutex poisoned");
                            acc.interval.push(latency);
                            acc.per_kind[job.kind.index()].push(latency);
                        }
                        if cfg.verify {
                            check_stored(&ctx, &id, &job.spec.expected)
                                .await
                                .map(|()| shared.verified.fetch_add(1, Ordering::Relaxed))
                        } else {
                            Ok(0)
                        }
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    ctx.errors.record(e);
                    // Back off so a dead sidecar does not turn into a busy loop of errors.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
    }

    print_header(cfg);
    let every = cfg.report_every.max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval_at((t0 + every).into(), every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut meter = Meter::new(cfg.sidecar_pid, t0);
    let mut intervals: Vec<Interval> = Vec::new();
    let mut tick = 0u32;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                tick += 1;
                // Phases by the nominal end of the interval, so the tick at the end of the
                // soak still counts as steady even if it fires a few ms late.
                let nominal = every * tick;
                let phase = if nominal <= cfg.warmup {
                    "warm-up"
                } else if nominal <= cfg.duration {
                    "steady"
                } else {
                    "drain"
                };
                let line = meter.interval(phase, &shared, ctx.errors.count());
                print_line(&line);
                intervals.push(line);
            }
            joined = drivers.join_next() => match joined {
                None => break,
                Some(Err(e)) => ctx.errors.record(format!("soak driver panicked: {e}")),
                Some(Ok(())) => {}
            },
        }
    }
    let last = meter.interval("drain", &shared, ctx.errors.count());
    if last.completed > 0 {
        print_line(&last);
        intervals.push(last);
    }
    summarise(ctx, cfg, &shared, &intervals, t0.elapsed())
}

/// Starts `job`, raises its event if it has one, and waits for the acknowledgement of its
/// completing episode; returns the end-to-end latency.
async fn run_job(
    ctx: &Ctx,
    id: &str,
    job: &Job,
    start_limit: &Semaphore,
    timeout: Duration,
) -> Result<Duration, String> {
    let mut rx = ctx.worker.watch(id);
    let started = Instant::now();
    let deadline = started + timeout;
    let outcome = async {
        {
            let _permit = start_limit.acquire().await.map_err(|e| e.to_string())?;
            start(ctx, id, &job.spec).await?;
        }
        if let Some(delay) = job.raise_after {
            // Notes that arrive meanwhile wait in the channel.
            tokio::time::sleep(delay).await;
            ctx.clients
                .get()
                .raise_event(pb::RaiseEventRequest {
                    instance_id: id.to_string(),
                    name: script::EVENT_NAME.into(),
                    input: Some("0".into()),
                })
                .await
                .map_err(|s| format!("RaiseEvent {id} failed: {s}"))?;
        }
        loop {
            let note = next_note(&mut rx, deadline, id).await?;
            if let Some(output) = note.completed {
                if output != job.spec.expected {
                    return Err(format!(
                        "{id} ({}): output {output:?}, expected {:?}",
                        job.kind.label(),
                        job.spec.expected
                    ));
                }
                return Ok(note.acked - started);
            }
        }
    }
    .await;
    ctx.worker.unwatch(id);
    outcome
}

/// Reads the per-interval figures: rates since the previous reading, RSS now.
#[derive(Debug)]
struct Meter {
    pid: Option<u32>,
    t0: Instant,
    last_at: Instant,
    last_sidecar_cpu: Option<f64>,
    last_self_cpu: Option<f64>,
}

impl Meter {
    fn new(pid: Option<u32>, t0: Instant) -> Self {
        Self {
            pid,
            t0,
            last_at: t0,
            last_sidecar_cpu: pid
                .and_then(|p| procstat::sample(p).ok())
                .map(|s| s.cpu_secs),
            last_self_cpu: procstat::sample(std::process::id())
                .ok()
                .map(|s| s.cpu_secs),
        }
    }

    fn interval(&mut self, phase: &'static str, shared: &Shared, errors: u64) -> Interval {
        let now = Instant::now();
        let secs = (now - self.last_at).as_secs_f64().max(1e-9);
        self.last_at = now;
        let latencies = std::mem::take(
            &mut shared
                .acc
                .lock()
                .expect("soak stats mutex poisoned")
                .interval,
        );
        let sidecar = self.pid.and_then(|p| procstat::sample(p).ok());
        let own = procstat::sample(std::process::id()).ok();
        let cpu_pct = |last: &mut Option<f64>, now: Option<f64>| -> Option<f64> {
            let pct = match (*last, now) {
                (Some(a), Some(b)) => Some((b - a) / secs * 100.0),
                _ => None,
            };
            *last = now;
            pct
        };
        Interval {
            phase,
            elapsed: now - self.t0,
            completed: latencies.len(),
            orch_per_s: latencies.len() as f64 / secs,
            p50_ms: percentile_ms(&latencies, 50.0),
            p99_ms: percentile_ms(&latencies, 99.0),
            errors,
            in_flight: shared.in_flight.load(Ordering::Relaxed),
            rss_mb: sidecar.map(|s| s.rss_kib as f64 / 1024.0),
            sidecar_cpu_pct: cpu_pct(&mut self.last_sidecar_cpu, sidecar.map(|s| s.cpu_secs)),
            loadgen_cpu_pct: cpu_pct(&mut self.last_self_cpu, own.map(|s| s.cpu_secs)),
        }
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

fn print_header(cfg: &SoakConfig) {
    println!(
        "\nsoak: {} in flight, {} worker streams, {} s (warm-up {} s), a line every {} s",
        cfg.in_flight,
        cfg.streams,
        cfg.duration.as_secs(),
        cfg.warmup.as_secs(),
        cfg.report_every.as_secs_f64()
    );
    println!(
        "| elapsed s | phase   | completed | orch/s | p50 ms | p99 ms | errors | in flight | RSS MB | sidecar CPU % | loadgen CPU % |"
    );
    println!(
        "|----------:|---------|----------:|-------:|-------:|-------:|-------:|----------:|-------:|--------------:|--------------:|"
    );
}

fn print_line(i: &Interval) {
    println!(
        "| {:>9.0} | {:<7} | {:>9} | {:>6.1} | {:>6} | {:>6} | {:>6} | {:>9} | {:>6} | {:>13} | {:>13} |",
        i.elapsed.as_secs_f64(),
        i.phase,
        i.completed,
        i.orch_per_s,
        opt(i.p50_ms, 0),
        opt(i.p99_ms, 0),
        i.errors,
        i.in_flight,
        opt(i.rss_mb, 1),
        opt(i.sidecar_cpu_pct, 0),
        opt(i.loadgen_cpu_pct, 0),
    );
}

/// Prints the totals and verdicts, records failed verdicts as errors, returns the JSON.
fn summarise(
    ctx: &Ctx,
    cfg: &SoakConfig,
    shared: &Shared,
    intervals: &[Interval],
    elapsed: Duration,
) -> Value {
    let completed = shared.completed.load(Ordering::Relaxed);
    let verified = shared.verified.load(Ordering::Relaxed);
    let errors = ctx.errors.count();
    let counters = ctx.worker.counters();
    let acc = shared.acc.lock().expect("soak stats mutex poisoned");
    let per_kind: Vec<Value> = KINDS
        .iter()
        .map(|k| {
            let l = &acc.per_kind[k.index()];
            json!({
                "kind": k.label(),
                "completed": l.len(),
                "p50_ms": percentile_ms(l, 50.0),
                "p99_ms": percentile_ms(l, 99.0),
            })
        })
        .collect();
    println!(
        "\nsoak total: {completed} orchestrations completed in {:.0} s, {errors} errors, \
         {verified} outputs verified with GetInstance{}",
        elapsed.as_secs_f64(),
        if cfg.verify { "" } else { " (--skip-verify)" }
    );
    let kinds: Vec<String> = KINDS
        .iter()
        .map(|k| {
            let l = &acc.per_kind[k.index()];
            format!(
                "{} {} (p50 {} ms, p99 {} ms)",
                k.label(),
                l.len(),
                opt(percentile_ms(l, 50.0), 0),
                opt(percentile_ms(l, 99.0), 0)
            )
        })
        .collect();
    println!("by kind: {}", kinds.join(", "));
    println!(
        "worker: {} episodes, {} activities, {} entity operations acknowledged",
        counters.episodes.load(Ordering::Relaxed),
        counters.activities.load(Ordering::Relaxed),
        counters.entity_operations.load(Ordering::Relaxed)
    );
    drop(acc);

    let mut failed: Vec<String> = Vec::new();
    let steady: Vec<&Interval> = intervals.iter().filter(|i| i.phase == "steady").collect();
    // The RSS after warm-up is the reading at the end of the last warm-up interval; without
    // a warm-up, the first steady one.
    let rss_warm = intervals
        .iter()
        .rfind(|i| i.phase == "warm-up")
        .or(steady.first().copied())
        .and_then(|i| i.rss_mb);
    let rss_end = steady.last().and_then(|i| i.rss_mb);
    let rss_max = steady
        .iter()
        .filter_map(|i| i.rss_mb)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let p99s: Vec<f64> = steady.iter().filter_map(|i| i.p99_ms).collect();
    let p99_min = p99s.iter().copied().reduce(f64::min);
    let p99_max = p99s.iter().copied().reduce(f64::max);
    let judged = cfg.judge && steady.len() >= 3;
    let verdict = |ok: bool| {
        if !judged {
            "not judged (fewer than 3 intervals after warm-up, or --quick)"
        } else if ok {
            "ok"
        } else {
            "FAILED"
        }
    };

    let mut rss_json = Value::Null;
    if let (Some(warm), Some(end)) = (rss_warm, rss_end) {
        let growth = end - warm;
        let pct = growth / warm * 100.0;
        let ok = pct <= cfg.max_rss_growth_pct;
        println!(
            "RSS: {warm:.1} MB after warm-up, {end:.1} MB at the end ({growth:+.1} MB, {pct:+.1}%), \
             max {} MB after warm-up; limit +{}%: {}",
            opt(rss_max, 1),
            cfg.max_rss_growth_pct,
            verdict(ok)
        );
        if judged && !ok {
            failed.push(format!(
                "RSS grew {pct:.1}% after warm-up (limit {}%)",
                cfg.max_rss_growth_pct
            ));
        }
        rss_json = json!({
            "after_warmup_mb": warm, "end_mb": end, "max_after_warmup_mb": rss_max,
            "growth_mb": growth, "growth_pct": pct,
        });
    } else if cfg.sidecar_pid.is_none() {
        println!("RSS: not measured (no --sidecar-pid)");
    }
    let mut p99_json = Value::Null;
    if let (Some(lo), Some(hi)) = (p99_min, p99_max) {
        let ratio = hi / lo.max(1e-9);
        let ok = ratio <= cfg.max_p99_ratio;
        println!(
            "p99 after warm-up: {lo:.0}–{hi:.0} ms over {} intervals, max/min {ratio:.2}; \
             limit {}: {}",
            p99s.len(),
            cfg.max_p99_ratio,
            verdict(ok)
        );
        if judged && !ok {
            failed.push(format!(
                "per-interval p99 varied {ratio:.2}x after warm-up (limit {}x)",
                cfg.max_p99_ratio
            ));
        }
        p99_json = json!({ "min_ms": lo, "max_ms": hi, "max_over_min": ratio });
    }
    // A steady interval without a single completion means the sidecar stalled.
    let stalls = steady.iter().filter(|i| i.completed == 0).count();
    if stalls > 0 {
        failed.push(format!(
            "{stalls} interval(s) after warm-up completed nothing"
        ));
    }
    if completed == 0 {
        failed.push("the soak completed no orchestration".into());
    }
    for f in &failed {
        ctx.errors.record(format!("soak check: {f}"));
    }

    json!({
        "in_flight": cfg.in_flight,
        "streams": cfg.streams,
        "duration_s": cfg.duration.as_secs(),
        "warmup_s": cfg.warmup.as_secs(),
        "elapsed_s": elapsed.as_secs_f64(),
        "completed": completed,
        "verified": verified,
        "errors": errors,
        "by_kind": per_kind,
        "rss": rss_json,
        "p99_after_warmup": p99_json,
        "checks_failed": failed,
        "intervals": intervals.iter().map(|i| json!({
            "phase": i.phase,
            "elapsed_s": i.elapsed.as_secs_f64(),
            "completed": i.completed,
            "orch_per_s": i.orch_per_s,
            "p50_ms": i.p50_ms,
            "p99_ms": i.p99_ms,
            "errors": i.errors,
            "in_flight": i.in_flight,
            "rss_mb": i.rss_mb,
            "sidecar_cpu_pct": i.sidecar_cpu_pct,
            "loadgen_cpu_pct": i.loadgen_cpu_pct,
        })).collect::<Vec<_>>(),
    })
}
