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
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            task_hub_admin: true,
            health_ping_interval: Duration::from_secs(30),
            max_wait: Duration::from_secs(3600),
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
