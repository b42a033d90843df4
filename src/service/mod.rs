//! Use cases behind the RPCs: client operations (`client`), the worker hub and work-item
//! streams (`workers`), and the single error type the transport maps to status codes.
//! Depends on `engine`, `store`, `domain`; never names tonic types.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::Clock;
use crate::engine::{Engine, EngineConfig, WorkExecutor};
use crate::store::{Store, StoreError};

mod admission;
pub mod client;
pub mod entities;
mod error;
pub mod hubs;
mod metrics;
pub mod retention;
mod rewind;
mod terminations;
pub mod validate;
pub mod workers;

pub use error::ServiceError;
pub use hubs::{HubPolicy, TaskHubs};
pub use retention::RetentionPolicy;
pub use workers::WorkerHub;

/// `Result` with [`ServiceError`].
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// What the use cases need to know from the configuration.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Whether `CreateTaskHub`/`DeleteTaskHub` may wipe data.
    pub task_hub_admin: bool,
    /// Interval of keep-alive `HealthPing` work items on idle worker streams.
    pub health_ping_interval: Duration,
    /// Longest a `WaitForInstance*` call blocks when the client sent no deadline.
    pub max_wait: Duration,
    /// Most client writes waiting for the store at once; more are refused as overload
    /// (see `admission`).
    pub max_pending_writes: usize,
    /// A worker stream whose queued work items have not moved for this long is closed
    /// and its work redelivered to other streams; `None` = never.
    pub stalled_stream_timeout: Option<Duration>,
}

/// Default of [`ServiceOptions::max_pending_writes`]: several times what the benchmark's
/// 1000 concurrent clients keep in flight, small enough that the waiting requests stay a
/// few MiB.
pub const DEFAULT_MAX_PENDING_WRITES: usize = 4096;

/// Default of [`ServiceOptions::stalled_stream_timeout`].
pub const DEFAULT_STALLED_STREAM_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            task_hub_admin: true,
            health_ping_interval: Duration::from_secs(30),
            max_wait: Duration::from_secs(3600),
            max_pending_writes: DEFAULT_MAX_PENDING_WRITES,
            stalled_stream_timeout: Some(DEFAULT_STALLED_STREAM_TIMEOUT),
        }
    }
}

/// Cheap-to-clone handles shared by every RPC handler.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    hub: Arc<WorkerHub>,
    clock: Arc<dyn Clock>,
    options: ServiceOptions,
    admission: admission::Admission,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl AppState {
    /// Builds the state over a store and clock and recovers dispatch state from the store.
    pub async fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        options: &ServiceOptions,
        engine_config: EngineConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, StoreError> {
        let hub = Arc::new(WorkerHub::default());
        let executor: Arc<dyn WorkExecutor> = Arc::clone(&hub) as Arc<dyn WorkExecutor>;
        let engine = Engine::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            executor,
            engine_config,
        );
        engine.recover().await?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                engine,
                hub,
                clock,
                options: options.clone(),
                admission: admission::Admission::new(options.max_pending_writes),
                shutdown,
                tasks: TaskTracker::new(),
            }),
        })
    }

    /// The dispatcher.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        self.inner.clock.as_ref()
    }

    pub(crate) fn options(&self) -> &ServiceOptions {
        &self.inner.options
    }

    /// Admits one client write (see `admission`); hold the permit over the store call.
    pub(crate) fn admit(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.inner.admission.admit()
    }

    /// Fires when the server begins shutting down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Waits for background tasks (work-item streams) after shutdown was signalled.
    pub async fn close(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}
