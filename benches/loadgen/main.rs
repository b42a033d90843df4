//! `loadgen`: a protocol-level load generator for any `TaskHubSidecarService` sidecar.
//!
//! It is both client and worker and has no replay engine: the worker decides each episode
//! from its events (see `worker.rs`), activities echo their input. Because it speaks only
//! the wire protocol, the same workloads run against this crate's sidecar and against
//! durabletask-go (`--addr`), and the figures are comparable. See `benches/README.md`.
//!
//! Run with `cargo bench --bench loadgen -- --help`. Exit status 1 means a check failed:
//! a duplicate, missing or wrong result, a failed call, or an orchestration that did not
//! finish in time.

mod procstat;
mod soak;
mod stats;
mod worker;
mod workloads;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;

use stats::{median, ms, percentile_ms, rate};
use worker::{Clients, ErrorLog, Worker};
use workloads::{Cell, Ctx, Measured};

/// Load generator for Durable Task sidecars (TaskHubSidecarService over gRPC).
#[derive(Debug, Parser)]
// A later flag overrides an earlier one, so wrappers (benches/soak.sh) can set defaults.
#[command(name = "loadgen", args_override_self = true)]
struct Args {
    /// Sidecar address; several, comma-separated, for sidecars sharing one database:
    /// calls and work-item streams are spread over them.
    #[arg(long, default_value = "http://127.0.0.1:4001", value_delimiter = ',')]
    addr: Vec<String>,

    /// Workloads to run: w1..w7 and soak, comma-separated; `all` = w1..w7.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    workload: Vec<String>,

    /// PID of the sidecar process, to report its CPU-seconds and peak RSS (Linux /proc).
    #[arg(long)]
    sidecar_pid: Option<u32>,

    /// Number of GetWorkItems streams the worker opens.
    #[arg(long, default_value_t = 4)]
    streams: usize,

    /// HTTP/2 connections shared round-robin by client and completion calls.
    #[arg(long, default_value_t = 4)]
    connections: usize,

    /// Orchestrations per cell for W1 and W3, and timers for W5
    /// [default: 2000 (W1, W3), 10000 (W5); with --quick 20 and 50].
    #[arg(long)]
    orchestrations: Option<usize>,

    /// Closed-loop concurrency levels for W1; W3 uses the largest
    /// [default: 1,100,1000; with --quick 1,10].
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,

    /// Activities per W1 sequence.
    #[arg(long, value_delimiter = ',', default_value = "3,5")]
    steps: Vec<usize>,

    /// Cap per cell: no new orchestrations are started after this many seconds.
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,

    /// Seconds that in-flight orchestrations may take to finish after the cap.
    #[arg(long, default_value_t = 60)]
    drain_secs: u64,

    /// Idle time before the W7 start [default: 60; with --quick 2].
    #[arg(long)]
    idle_secs: Option<u64>,

    /// Run every cell this many times and report the median of each figure.
    #[arg(long, default_value_t = 1)]
    repeat: usize,

    /// Smoke mode for CI: tiny counts, a few seconds in total.
    #[arg(long)]
    quick: bool,

    /// Also print the results as JSON (one document on stdout, after the table).
    #[arg(long)]
    json: bool,

    /// Name of the sidecar under test, printed in the table (e.g. "ours", "durabletask-go").
    #[arg(long, default_value = "sidecar")]
    label: String,

    /// Skip the GetInstance check of every finished orchestration's stored output.
    #[arg(long)]
    skip_verify: bool,

    /// Soak: orchestrations kept in flight [default: 10000; with --quick 50].
    #[arg(long)]
    in_flight: Option<usize>,

    /// Soak: seconds during which new orchestrations start [default: 1800; with --quick 6].
    #[arg(long)]
    soak_secs: Option<u64>,

    /// Soak: seconds between report lines [default: 60; with --quick 2].
    #[arg(long)]
    report_secs: Option<f64>,

    /// Soak: the RSS and p99 verdicts leave out this first part
    /// [default: 300; with --quick 2].
    #[arg(long)]
    warmup_secs: Option<u64>,

    /// Soak: an orchestration not finished this long after its start is an error.
    #[arg(long, default_value_t = 600)]
    soak_timeout_secs: u64,

    /// Soak: fail when RSS at the end exceeds RSS after warm-up by more than this (%).
    #[arg(long, default_value_t = 20.0)]
    max_rss_growth_pct: f64,

    /// Soak: fail when the largest per-interval p99 after warm-up exceeds the smallest by
    /// more than this factor.
    #[arg(long, default_value_t = 3.0)]
    max_p99_ratio: f64,

    /// Soak: seed of the workload mix (same seed, same sequence of orchestrations).
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// `cargo bench` passes `--bench` to every bench target; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The figures of one cell: medians across repeats.
#[derive(Debug)]
struct Row {
    workload: &'static str,
    case: String,
    /// Named figures; absent ones print as "-".
    values: BTreeMap<&'static str, f64>,
    extras: Vec<(String, f64)>,
}

const COLUMNS: &[(&str, &str)] = &[
    ("orchestrations", "orch"),
    ("orch_per_s", "orch/s"),
    ("activities_per_s", "act/s"),
    ("steps_per_s", "steps/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("p999_ms", "p999 ms"),
    ("cpu_s_per_1k_orch", "CPU s/1k"),
    ("peak_rss_mb", "peak RSS MB"),
];

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let cells = plan(&args)?;
    let errors = Arc::new(ErrorLog::default());
    let clients = Arc::new(Clients::connect(&args.addr, args.connections).await?);
    let worker = Worker::start(Arc::clone(&clients), args.streams, Arc::clone(&errors)).await?;
    let ctx = Arc::new(Ctx {
        clients,
        worker,
        errors: Arc::clone(&errors),
        run_id: format!(
            "{:x}{:x}",
            worker::wall_clock_nanos() / 1_000_000,
            std::process::id()
        ),
        cap: Duration::from_secs(args.duration_secs),
        drain: Duration::from_secs(args.drain_secs),
    });
    if let Some(pid) = args.sidecar_pid {
        procstat::sample(pid)?; // fail early on a wrong pid
        if !procstat::reset_peak(pid) {
            eprintln!("note: cannot reset VmHWM of {pid}; peak RSS is since sidecar start");
        }
    }

    let mut rows = Vec::new();
    for cell in &cells {
        eprintln!("running {} {} ...", cell.workload(), cell.case());
        let mut runs = Vec::new();
        for r in 0..args.repeat.max(1) {
            runs.push(run_cell(&ctx, cell, &format!("r{r}"), &args).await?);
        }
        rows.push(merge(cell, runs));
    }
    let soak_doc = if wants_soak(&args) {
        Some(soak::run(&ctx, &soak_config(&args)).await)
    } else {
        None
    };
    ctx.worker.stop();

    if !rows.is_empty() {
        print_table(&args, &rows);
    }
    if args.json {
        let doc: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "label": args.label,
                    "workload": r.workload,
                    "case": r.case,
                    "figures": r.values,
                    "extras": r.extras.iter().cloned().collect::<BTreeMap<_, _>>(),
                    "commits_per_orch": null,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "label": args.label, "rows": doc, "soak": soak_doc })
            )
            .context("serialising results")?
        );
    }
    let failures = errors.count();
    if failures > 0 {
        eprintln!("\n{failures} check(s) FAILED; first messages:");
        for m in errors.messages() {
            eprintln!("  {m}");
        }
        std::process::exit(1);
    }
    eprintln!("all checks passed (exactly-once results, outputs verified)");
    Ok(())
}

fn wants_soak(args: &Args) -> bool {
    args.workload.iter().any(|w| w.eq_ignore_ascii_case("soak"))
}

/// The soak's parameters; `--quick` makes it a few-second smoke run without verdicts.
fn soak_config(args: &Args) -> soak::SoakConfig {
    let q = args.quick;
    soak::SoakConfig {
        in_flight: args.in_flight.unwrap_or(if q { 50 } else { 10_000 }),
        duration: Duration::from_secs(args.soak_secs.unwrap_or(if q { 6 } else { 1800 })),
        report_every: Duration::from_secs_f64(
            args.report_secs
                .unwrap_or(if q { 2.0 } else { 60.0 })
                .max(0.1),
        ),
        warmup: Duration::from_secs(args.warmup_secs.unwrap_or(if q { 2 } else { 300 })),
        timeout: Duration::from_secs(args.soak_timeout_secs),
        streams: args.streams,
        sidecar_pid: args.sidecar_pid,
        seed: args.seed,
        max_rss_growth_pct: args.max_rss_growth_pct,
        max_p99_ratio: args.max_p99_ratio,
        judge: !q,
        verify: !args.skip_verify,
    }
}

/// Turns the arguments into the list of cells to run.
fn plan(args: &Args) -> Result<Vec<Cell>> {
    let q = args.quick;
    let mut wanted: Vec<String> = args.workload.iter().map(|w| w.to_lowercase()).collect();
    if wanted.iter().any(|w| w == "all") {
        wanted = (1..=7).map(|i| format!("w{i}")).collect();
    }
    let concurrency =
        args.concurrency
            .clone()
            .unwrap_or_else(|| if q { vec![1, 10] } else { vec![1, 100, 1000] });
    let count = args.orchestrations.unwrap_or(if q { 20 } else { 2000 });
    let mut cells = Vec::new();
    for w in &wanted {
        match w.as_str() {
            "w1" => {
                for &steps in &args.steps {
                    for &c in &concurrency {
                        cells.push(Cell::Sequence {
                            steps: steps.max(1),
                            concurrency: c.max(1),
                            count,
                        });
                    }
                }
            }
            "w2" => {
                let (widths, reps) = if q {
                    (vec![10, 50], 1)
                } else {
                    (vec![100, 1000], 3)
                };
                cells.extend(widths.into_iter().map(|width| Cell::FanOut { width, reps }));
            }
            "w3" => cells.push(Cell::StartOnly {
                concurrency: concurrency.iter().copied().max().unwrap_or(1).max(1),
                count,
            }),
            "w4" => cells.push(Cell::Events {
                events: if q { 20 } else { 1000 },
            }),
            "w5" => cells.push(Cell::Timers {
                count: args.orchestrations.unwrap_or(if q { 50 } else { 10_000 }),
                delay_ms: 1000,
            }),
            "w6" => cells.push(if q {
                Cell::LongSequence { steps: 30, reps: 1 }
            } else {
                Cell::LongSequence {
                    steps: 200,
                    reps: 3,
                }
            }),
            "w7" => cells.push(Cell::ColdStart {
                idle: Duration::from_secs(args.idle_secs.unwrap_or(if q { 2 } else { 60 })),
            }),
            // Not a cell: `main` runs it after the cells.
            "soak" => {}
            other => bail!("unknown workload {other:?} (expected w1..w7, soak or all)"),
        }
    }
    Ok(cells)
}

/// One run of one cell: resource readings around the timed section, then verification.
async fn run_cell(ctx: &Arc<Ctx>, cell: &Cell, tag: &str, args: &Args) -> Result<Measured> {
    let before = match args.sidecar_pid {
        Some(pid) => {
            procstat::reset_peak(pid);
            Some(procstat::sample(pid)?)
        }
        None => None,
    };
    // The loadgen shares the machine with the sidecar, so its own CPU use is reported too:
    // a loadgen near one full core means the figures are partly the generator's limit.
    let self_before = procstat::sample(std::process::id())?;
    let counters = ctx.worker.counters();
    let episodes0 = counters.episodes.load(std::sync::atomic::Ordering::Relaxed);
    let activities0 = counters
        .activities
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut m = workloads::run(ctx, cell, tag).await;
    let episodes = counters.episodes.load(std::sync::atomic::Ordering::Relaxed) - episodes0;
    let activities = counters
        .activities
        .load(std::sync::atomic::Ordering::Relaxed)
        - activities0;
    let mut figures: Vec<(String, f64)> = Vec::new();
    let mut put = |k: &str, v: Option<f64>| {
        if let Some(v) = v {
            figures.push((k.to_string(), v));
        }
    };
    put("orchestrations", Some(m.orchestrations as f64));
    put("orch_per_s", rate(m.orchestrations, m.elapsed));
    put("activities_per_s", rate(activities, m.elapsed));
    put("steps_per_s", rate(episodes + activities, m.elapsed));
    put("p50_ms", percentile_ms(&m.latencies, 50.0));
    put("p99_ms", percentile_ms(&m.latencies, 99.0));
    put("p999_ms", percentile_ms(&m.latencies, 99.9));
    if let (Some(pid), Some(before)) = (args.sidecar_pid, before) {
        let after = procstat::sample(pid)?;
        if m.orchestrations > 0 {
            let cpu = after.cpu_secs - before.cpu_secs;
            put(
                "cpu_s_per_1k_orch",
                Some(cpu * 1000.0 / m.orchestrations as f64),
            );
        }
        put("peak_rss_mb", Some(after.peak_rss_kib as f64 / 1024.0));
    }
    let self_cpu = procstat::sample(std::process::id())?.cpu_secs - self_before.cpu_secs;
    if m.orchestrations > 0 {
        put(
            "loadgen_cpu_s_per_1k",
            Some(self_cpu * 1000.0 / m.orchestrations as f64),
        );
    }
    put("elapsed_ms", Some(ms(m.elapsed)));
    // Stash the generic figures in front of the workload's own; `merge` splits them again.
    figures.append(&mut m.extras);
    m.extras = figures;
    if !args.skip_verify {
        workloads::verify(ctx, std::mem::take(&mut m.to_verify)).await;
    }
    Ok(m)
}

/// Medians across the repeats of one cell, figure by figure.
fn merge(cell: &Cell, runs: Vec<Measured>) -> Row {
    let mut by_name: Vec<(String, Vec<f64>)> = Vec::new();
    for run in runs {
        for (k, v) in run.extras {
            match by_name.iter_mut().find(|(name, _)| *name == k) {
                Some((_, vs)) => vs.push(v),
                None => by_name.push((k, vec![v])),
            }
        }
    }
    let mut values = BTreeMap::new();
    let mut extras = Vec::new();
    for (k, vs) in by_name {
        let Some(m) = median(&vs) else { continue };
        match COLUMNS.iter().find(|(key, _)| *key == k) {
            Some((key, _)) => {
                values.insert(*key, m);
            }
            None => extras.push((k, m)),
        }
    }
    Row {
        workload: cell.workload(),
        case: cell.case(),
        values,
        extras,
    }
}

fn print_table(args: &Args, rows: &[Row]) {
    let mut header = vec![
        "sidecar".to_string(),
        "workload".to_string(),
        "case".to_string(),
    ];
    header.extend(COLUMNS.iter().map(|(_, title)| title.to_string()));
    header.push("commits/orch".into());
    header.push("notes".into());
    let mut lines = vec![header];
    for r in rows {
        let mut line = vec![args.label.clone(), r.workload.to_string(), r.case.clone()];
        for (key, _) in COLUMNS {
            let shown = match r.values.get(key) {
                None => "-".to_string(),
                // A count; medians of counts can be halves, which is fine to round.
                Some(v) if *key == "orchestrations" => format!("{v:.0}"),
                Some(v) => fmt(*v),
            };
            line.push(shown);
        }
        // No portable way to count a sidecar's commits from outside yet.
        line.push("n/a".into());
        let notes: Vec<String> = r
            .extras
            .iter()
            .filter(|(k, _)| k != "elapsed_ms")
            .map(|(k, v)| format!("{k}={}", fmt(*v)))
            .collect();
        line.push(notes.join(" "));
        lines.push(line);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    println!(
        "\nloadgen against {} ({}), medians of {} run(s){}",
        args.addr.join(","),
        args.label,
        args.repeat.max(1),
        if args.quick { ", --quick" } else { "" }
    );
    for (n, line) in lines.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            // Left-align the text columns and the free-form notes, right-align numbers.
            .map(|(i, (c, w))| {
                if i < 3 || i == line.len() - 1 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        println!("| {} |", cells.join(" | "));
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            println!("|-{}-|", rule.join("-|-"));
        }
    }
}

/// Three significant figures are all a benchmark on a shared 2-core machine can claim.
fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
