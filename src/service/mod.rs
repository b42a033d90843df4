//! Use cases behind the RPCs: client operations (`client`), the worker hub and work-item
//! streams (`workers`), and the single error type the transport maps to status codes.
//! Depends on `engine`, `store`, `domain`; never names tonic types.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{Clock, SystemClock};
use crate::engine::{Engine, EngineConfig, WorkExecutor};
use crate::server::ServerOptions;
use crate::store::{SqliteStore, Store, StoreError};

pub mod client;
pub mod entities;
mod error;
mod rewind;
mod terminations;
pub mod workers;

pub use error::ServiceError;
pub use workers::WorkerHub;

/// `Result` with [`ServiceError`].
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

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
    options: ServerOptions,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl AppState {
    /// Opens the SQLite store named by the options and recovers dispatch state.
    pub async fn open(
        options: &ServerOptions,
        shutdown: CancellationToken,
    ) -> Result<Self, StoreError> {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&options.db).await?);
        Self::with_store(store, Arc::new(SystemClock), options, shutdown).await
    }

    /// Builds the state over any store and clock (tests use this).
    pub async fn with_store(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        options: &ServerOptions,
        shutdown: CancellationToken,
    ) -> Result<Self, StoreError> {
        let hub = Arc::new(WorkerHub::default());
        let executor: Arc<dyn WorkExecutor> = Arc::clone(&hub) as Arc<dyn WorkExecutor>;
        let engine = Engine::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            executor,
            EngineConfig::default(),
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

    pub(crate) fn options(&self) -> &ServerOptions {
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
