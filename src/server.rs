//! Wiring: opens the store, builds the engine and the worker hub, serves gRPC until the
//! shutdown token fires, then drains. Used by `main.rs` and by the integration tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Everything the server needs, already validated (built from `config::Config`).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// SQLite file path, or `:memory:`.
    pub db: String,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Whether `CreateTaskHub`/`DeleteTaskHub` may wipe data.
    pub task_hub_admin: bool,
    /// Interval of keep-alive `HealthPing` work items on idle worker streams.
    pub health_ping_interval: Duration,
    /// Longest a `WaitForInstance*` call blocks when the client sent no deadline.
    pub max_wait: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            db: "durabletask.sqlite".into(),
            max_message_bytes: 64 * 1024 * 1024,
            task_hub_admin: true,
            health_ping_interval: Duration::from_secs(30),
            max_wait: Duration::from_secs(3600),
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened or recovered.
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The transport failed.
    #[error("gRPC transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection service could not be built.
    #[error("reflection setup failed: {0}")]
    Reflection(String),
}

/// Serves on `listener` until `shutdown` is cancelled.
pub async fn run(
    options: ServerOptions,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let state = crate::service::AppState::open(&options, shutdown.child_token()).await?;
    tracing::info!(addr = ?addr, db = %options.db, "durabletask-sidecar listening");
    let engine_task = tokio::spawn(Arc::clone(state.engine()).run(shutdown.child_token()));
    let result = crate::grpc::serve(state.clone(), &options, listener, shutdown.clone()).await;
    shutdown.cancel();
    if let Err(err) = engine_task.await {
        tracing::error!(error = %err, "dispatcher task ended abnormally");
    }
    state.close().await;
    tracing::info!("durabletask-sidecar stopped");
    result
}
