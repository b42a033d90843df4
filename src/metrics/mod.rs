//! Prometheus metrics: one process-wide registry and typed handles to every metric the
//! sidecar records, rendered in the Prometheus text format by [`render`] (served by the
//! HTTP door at `/metrics`). Every other layer records through here; this module depends
//! on no other layer (it is a leaf, like `domain`).
//!
//! The registry is a global (`OnceLock`), not an `Arc` passed down: a process is one
//! scrape target, the store and engine record without one more parameter through every
//! constructor, and a handle is a `&'static` (no refcount traffic). Several servers in one
//! process (tests) therefore share the counters; what is per server (instances, backlog,
//! worker streams) is sampled at scrape time from the server being scraped.
//!
//! Hot-path cost: every label child an observation can hit is resolved once (at start-up,
//! or on first use for gRPC method × code) and kept; an observation is then an atomic add
//! on a counter or histogram bucket: no allocation, no lock, no label hashing.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

mod retention;
mod rpc;

pub use retention::RetentionMetrics;
pub use rpc::{GrpcMethod, GrpcMetrics, HttpMetrics, CANCELLED};

/// The kinds of work the dispatcher hands to workers (the `kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    /// Orchestration episodes.
    Orchestration,
    /// Activity executions.
    Activity,
    /// Entity operation batches.
    Entity,
}

impl WorkKind {
    /// Every kind, in label-child order.
    pub const ALL: [WorkKind; 3] = [
        WorkKind::Orchestration,
        WorkKind::Activity,
        WorkKind::Entity,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            WorkKind::Orchestration => "orchestration",
            WorkKind::Activity => "activity",
            WorkKind::Entity => "entity",
        }
    }
}

/// A storage backend (the `backend` label of commit metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The SQLite group-commit writer.
    Sqlite,
    /// PostgreSQL transactions.
    Postgres,
}

/// One counter per work kind, resolved at start-up.
#[derive(Debug)]
pub struct PerKind([IntCounter; 3]);

impl PerKind {
    fn new(registry: &Registry, name: &str, help: &str) -> Self {
        let vec = register(
            registry,
            IntCounterVec::new(Opts::new(name, help), &["kind"]),
        );
        Self(WorkKind::ALL.map(|k| vec.with_label_values(&[k.label()])))
    }

    /// Adds one for `kind`.
    pub fn inc(&self, kind: WorkKind) {
        self.0[kind as usize].inc();
    }

    /// Adds `n` for `kind`.
    pub fn add(&self, kind: WorkKind, n: usize) {
        self.0[kind as usize].inc_by(n as u64);
    }
}

/// Work-item lifecycle counters, by kind.
#[derive(Debug)]
pub struct WorkMetrics {
    /// Sent to a worker stream.
    pub dispatched: PerKind,
    /// Result committed.
    pub completed: PerKind,
    /// Explicitly abandoned by the worker (`AbandonTask*WorkItem`).
    pub abandoned: PerKind,
    /// Sent before, put back to be sent again (stream lost, send failed, commit failed).
    pub redelivered: PerKind,
}

/// Store commit metrics, by backend.
#[derive(Debug)]
pub struct CommitMetrics {
    batch_size: [Histogram; 2],
    duration: [Histogram; 2],
    disk_full: [IntCounter; 2],
}

impl CommitMetrics {
    /// One committed transaction of `backend` that carried `requests` store calls and took
    /// `took` from BEGIN to the end of COMMIT.
    pub fn observe(&self, backend: Backend, requests: usize, took: Duration) {
        self.batch_size[backend as usize].observe(requests as f64);
        self.duration[backend as usize].observe(took.as_secs_f64());
    }

    /// One statement or commit of `backend` that failed because the disk was full.
    pub fn disk_full(&self, backend: Backend) {
        self.disk_full[backend as usize].inc();
    }
}

/// Ready work of one kind at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    /// Items ready but not yet sent to a worker.
    pub items: usize,
    /// How long the oldest of them has been waiting (zero when there are none).
    pub oldest: Duration,
}

/// What a scrape samples from the server being scraped.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The task hub these figures are of.
    pub task_hub: String,
    /// Connected `GetWorkItems` streams.
    pub worker_streams: usize,
    /// Ready backlog, indexed like [`WorkKind::ALL`].
    pub backlog: [Backlog; 3],
    /// Instances per runtime status label (`None`: not sampled).
    pub instances: Option<Vec<(&'static str, u64)>>,
}

/// Every metric of the sidecar.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// gRPC requests.
    pub grpc: GrpcMetrics,
    /// HTTP API requests.
    pub http: HttpMetrics,
    /// Work-item lifecycle.
    pub work: WorkMetrics,
    /// Store commits.
    pub commits: CommitMetrics,
    /// How late timers fire: delivery time minus due time.
    pub timer_lateness: Histogram,
    /// How long an entity lock request waited before the entity granted it.
    pub entity_lock_wait: Histogram,
    /// Requests refused before doing any work, by reason (`pending_writes`: the
    /// admission bound in front of the store was full).
    pub rejected: IntCounterVec,
    /// What the retention task purged.
    pub retention: RetentionMetrics,
    worker_streams: IntGaugeVec,
    backlog_items: IntGaugeVec,
    backlog_age: prometheus::GaugeVec,
    instances: IntGaugeVec,
}

/// The process-wide metrics, created on first use.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Registers `metric` (built from constant, valid options) and returns it.
fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("metric options are constant and valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

/// Histogram buckets for durations from sub-millisecond to a minute (seconds).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Buckets for waits that can last minutes (timers, entity locks).
const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");
        let histogram = |name: &str, help: &str, buckets: &[f64], labels: &[&str]| {
            register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                    labels,
                ),
            )
        };
        let commit_sizes = histogram(
            "durabletask_store_commit_batch_size",
            "Store calls carried by one committed database transaction (SQLite group commit batches several).",
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            &["backend"],
        );
        let commit_times = histogram(
            "durabletask_store_commit_duration_seconds",
            "Time from BEGIN to the end of COMMIT of one database transaction.",
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ],
            &["backend"],
        );
        let disk_full = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "durabletask_store_disk_full_total",
                    "Database writes that failed because the disk was full (the callers got UNAVAILABLE / 503).",
                ),
                &["backend"],
            ),
        );
        let backends = ["sqlite", "postgres"];
        let commits = CommitMetrics {
            batch_size: backends.map(|b| commit_sizes.with_label_values(&[b])),
            duration: backends.map(|b| commit_times.with_label_values(&[b])),
            disk_full: backends.map(|b| disk_full.with_label_values(&[b])),
        };
        let timer_lateness = histogram(
            "durabletask_timer_lateness_seconds",
            "How late a durable timer reached its orchestration: delivery time minus due time.",
            WAIT_BUCKETS,
            &[],
        )
        .with_label_values::<&str>(&[]);
        let entity_lock_wait = histogram(
            "durabletask_entity_lock_wait_seconds",
            "Time from an entity lock request reaching the entity to the entity granting it.",
            WAIT_BUCKETS,
            &[],
        )
        .with_label_values::<&str>(&[]);
        let work = WorkMetrics {
            dispatched: PerKind::new(
                &registry,
                "durabletask_work_items_dispatched_total",
                "Work items sent to a worker stream.",
            ),
            completed: PerKind::new(
                &registry,
                "durabletask_work_items_completed_total",
                "Work items whose result was committed.",
            ),
            abandoned: PerKind::new(
                &registry,
                "durabletask_work_items_abandoned_total",
                "Work items a worker abandoned explicitly (AbandonTask*WorkItem).",
            ),
            redelivered: PerKind::new(
                &registry,
                "durabletask_work_items_redelivered_total",
                "Work items sent before and put back to be sent again (worker stream lost, send failed, commit failed).",
            ),
        };
        let retention = RetentionMetrics::new(&registry);
        let grpc = GrpcMetrics::new(&registry);
        let http = HttpMetrics::new(&registry);
        let rejected = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "durabletask_rejected_requests_total",
                    "Requests refused because the sidecar was overloaded, by reason (pending_writes: too many writes waiting for the store).",
                ),
                &["reason"],
            ),
        );
        let worker_streams = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "durabletask_worker_streams",
                    "Connected GetWorkItems worker streams, by task hub.",
                ),
                &["task_hub"],
            ),
        );
        let backlog_items = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "durabletask_backlog_items",
                    "Work ready to run but not yet sent to a worker, by task hub.",
                ),
                &["task_hub", "kind"],
            ),
        );
        let backlog_age = register(
            &registry,
            prometheus::GaugeVec::new(
                Opts::new(
                    "durabletask_backlog_oldest_age_seconds",
                    "How long the oldest ready work item of a task hub has waited for a worker (0 when none waits).",
                ),
                &["task_hub", "kind"],
            ),
        );
        let instances = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "durabletask_instances",
                    "Orchestration instances in the store, by task hub and runtime status (sampled at most every few seconds).",
                ),
                &["task_hub", "status"],
            ),
        );
        Self {
            registry,
            grpc,
            http,
            work,
            commits,
            timer_lateness,
            entity_lock_wait,
            rejected,
            retention,
            worker_streams,
            backlog_items,
            backlog_age,
            instances,
        }
    }
}

/// Sets the scrape-time gauges from one snapshot per task hub and renders every metric in the Prometheus
/// text format (version 0.0.4).
pub fn render(snapshots: &[Snapshot]) -> String {
    let m = get();
    for snapshot in snapshots {
        let hub = snapshot.task_hub.as_str();
        m.worker_streams
            .with_label_values(&[hub])
            .set(i64::try_from(snapshot.worker_streams).unwrap_or(i64::MAX));
        for (kind, backlog) in WorkKind::ALL.iter().zip(&snapshot.backlog) {
            m.backlog_items
                .with_label_values(&[hub, kind.label()])
                .set(i64::try_from(backlog.items).unwrap_or(i64::MAX));
            m.backlog_age
                .with_label_values(&[hub, kind.label()])
                .set(backlog.oldest.as_secs_f64());
        }
        if let Some(instances) = &snapshot.instances {
            for (status, n) in instances {
                m.instances
                    .with_label_values(&[hub, *status])
                    .set(i64::try_from(*n).unwrap_or(i64::MAX));
            }
        }
    }
    let mut out = Vec::new();
    if let Err(err) = TextEncoder::new().encode(&m.registry.gather(), &mut out) {
        tracing::error!(error = %err, "encoding metrics failed");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
