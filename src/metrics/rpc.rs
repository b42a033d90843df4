//! Request metrics of the two doors: gRPC by method and status code, HTTP by route
//! template and status.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use super::{register, LATENCY_BUCKETS};

/// Method names the `method` label takes: the `TaskHubSidecarService` RPCs (the Dapr
/// fork's service has the same names), health and reflection. Anything else is `other`,
/// so a client sending made-up paths cannot grow the label set without bound.
const METHODS: &[&str] = &[
    "Hello",
    "StartInstance",
    "GetInstance",
    "RewindInstance",
    "RestartInstance",
    "WaitForInstanceStart",
    "WaitForInstanceCompletion",
    "RaiseEvent",
    "TerminateInstance",
    "SuspendInstance",
    "ResumeInstance",
    "QueryInstances",
    "ListInstanceIds",
    "PurgeInstances",
    "GetWorkItems",
    "CompleteActivityTask",
    "CompleteOrchestratorTask",
    "CompleteEntityTask",
    "StreamInstanceHistory",
    "CreateTaskHub",
    "DeleteTaskHub",
    "SignalEntity",
    "GetEntity",
    "QueryEntities",
    "CleanEntityStorage",
    "AbandonTaskActivityWorkItem",
    "AbandonTaskOrchestratorWorkItem",
    "AbandonTaskEntityWorkItem",
    "SkipGracefulOrchestrationTerminations",
    "Check",
    "Watch",
    "ServerReflectionInfo",
    "other",
];

/// Server-streaming (or bidirectional) methods: counted when they open and when they
/// close, never timed (a worker stream lives for hours).
const STREAMING: &[&str] = &[
    "GetWorkItems",
    "StreamInstanceHistory",
    "Watch",
    "ServerReflectionInfo",
];

/// gRPC status code names as the gRPC spec and grpc-go spell them, by code number; one
/// more slot for a code outside 0..=16.
const CODES: [&str; 18] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
    "Unrecognized",
];

/// The `grpc-status` number of CANCELLED: how a stream the client closed ends.
pub const CANCELLED: i32 = 1;

/// A gRPC method, resolved once per request from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcMethod(usize);

impl GrpcMethod {
    /// The method of a request path `/package.Service/Method`.
    pub fn from_path(path: &str) -> Self {
        let name = path.rsplit('/').next().unwrap_or_default();
        Self(
            METHODS
                .iter()
                .position(|m| *m == name)
                .unwrap_or(METHODS.len() - 1),
        )
    }

    /// The label value.
    pub fn name(self) -> &'static str {
        METHODS[self.0]
    }

    /// Whether the method streams its responses.
    pub fn is_streaming(self) -> bool {
        STREAMING.contains(&self.name())
    }
}

/// Label children of one method × code, resolved on first use.
type Children = (IntCounter, Histogram);

/// gRPC request counters and latency.
#[derive(Debug)]
pub struct GrpcMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    children: Vec<[OnceLock<Children>; CODES.len()]>,
    /// Per method; `None` for unary methods (no series for them).
    opened: Vec<Option<IntCounter>>,
}

impl GrpcMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let requests = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "durabletask_grpc_requests_total",
                    "gRPC requests finished, by method and status code (a stream counts when it closes).",
                ),
                &["method", "code"],
            ),
        );
        let duration = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "durabletask_grpc_request_duration_seconds",
                    "Time to answer a unary gRPC request, by method and status code.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["method", "code"],
            ),
        );
        let streams = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "durabletask_grpc_streams_opened_total",
                    "Streaming gRPC requests that opened their response stream, by method.",
                ),
                &["method"],
            ),
        );
        Self {
            requests,
            duration,
            children: METHODS
                .iter()
                .map(|_| std::array::from_fn(|_| OnceLock::new()))
                .collect(),
            opened: METHODS
                .iter()
                .map(|m| {
                    STREAMING
                        .contains(m)
                        .then(|| streams.with_label_values(&[*m]))
                })
                .collect(),
        }
    }

    /// A streaming request opened its response stream.
    pub fn stream_opened(&self, method: GrpcMethod) {
        if let Some(opened) = &self.opened[method.0] {
            opened.inc();
        }
    }

    /// A request finished with gRPC status `code`; `took` is its latency (`None` for a
    /// stream, whose lifetime is no latency).
    pub fn finished(&self, method: GrpcMethod, code: i32, took: Option<Duration>) {
        let slot = usize::try_from(code)
            .ok()
            .filter(|c| *c < CODES.len() - 1)
            .unwrap_or(CODES.len() - 1);
        let (count, latency) = self.children[method.0][slot].get_or_init(|| {
            let labels = [method.name(), CODES[slot]];
            (
                self.requests.with_label_values(&labels),
                self.duration.with_label_values(&labels),
            )
        });
        count.inc();
        if let Some(took) = took {
            latency.observe(took.as_secs_f64());
        }
    }
}

/// HTTP API request counters and latency.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let labels = &["method", "route", "status"];
        Self {
            requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "durabletask_http_requests_total",
                        "HTTP requests answered, by method, route template and status.",
                    ),
                    labels,
                ),
            ),
            duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "durabletask_http_request_duration_seconds",
                        "Time to answer an HTTP request, by method, route template and status.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                ),
            ),
        }
    }

    /// A request to `route` (the router's template, `unmatched` when none matched) was
    /// answered with `status` after `took`. The label lookup hashes three short strings
    /// and takes a read lock: cheap next to an HTTP request, and routes are few.
    pub fn observe(&self, method: &str, route: &str, status: &str, took: Duration) {
        let labels = [method, route, status];
        self.requests.with_label_values(&labels).inc();
        self.duration
            .with_label_values(&labels)
            .observe(took.as_secs_f64());
    }
}
