//! Wiring: opens the task hubs of the database the URL names (each with its store, engine
//! and worker streams), serves gRPC
//! and (when it has a listener) the HTTP API until the shutdown token fires, then drains. Used by `main.rs` and by the integration
//! tests. The only module that knows every layer's options; no layer imports it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::SystemClock;
use crate::engine::EngineConfig;
use crate::grpc::{GrpcOptions, ServeError};
use crate::http::HttpOptions;
use crate::security::{Security, SecurityError, SecurityOptions};
use crate::service::{HubPolicy, RetentionPolicy, ServiceOptions, TaskHubs};
use crate::store::postgres::{PostgresOptions, PostgresStore};
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{HubStores, Store, StoreError, StoreUrl};

/// Everything the server needs, already validated (built from `config::Config`), one
/// part per layer.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Where the state lives.
    pub store: StoreUrl,
    /// PostgreSQL tuning (ignored for SQLite).
    pub postgres: PostgresOptions,
    /// Use-case options.
    pub service: ServiceOptions,
    /// Which task hubs are served.
    pub hubs: HubPolicy,
    /// Dispatcher tuning.
    pub engine: EngineConfig,
    /// gRPC door options.
    pub grpc: GrpcOptions,
    /// HTTP door options.
    pub http: HttpOptions,
    /// TLS and bearer tokens for both doors.
    pub security: SecurityOptions,
    /// How long ended instances are kept (`--retention`); empty: forever.
    pub retention: RetentionPolicy,
}

/// The bound sockets the doors serve on.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC (`--port`).
    pub grpc: TcpListener,
    /// The HTTP API (`--http-port`); `None` when turned off.
    pub http: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    /// gRPC only.
    fn from(grpc: TcpListener) -> Self {
        Self { grpc, http: None }
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            store: StoreUrl::SqliteFile("durabletask.sqlite".into()),
            postgres: PostgresOptions::default(),
            service: ServiceOptions::default(),
            hubs: HubPolicy::default(),
            engine: EngineConfig::default(),
            grpc: GrpcOptions::default(),
            http: HttpOptions::default(),
            security: SecurityOptions::default(),
            retention: RetentionPolicy::default(),
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened or recovered.
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    /// The gRPC door failed.
    #[error(transparent)]
    Grpc(#[from] ServeError),
    /// A TLS or tokens file is unusable (the message names it).
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// The HTTP door failed.
    #[error("HTTP server error: {0}")]
    Http(#[from] std::io::Error),
}

/// Opens the backend `url` names (migrations included).
pub async fn open_store(
    url: &StoreUrl,
    options: &ServerOptions,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match url {
        StoreUrl::SqliteFile(path) => {
            let path = path.to_string_lossy();
            Arc::new(SqliteStore::open_with(&path, SqliteOptions::default()).await?)
        }
        StoreUrl::SqliteMemory => {
            Arc::new(SqliteStore::open_with(":memory:", SqliteOptions::default()).await?)
        }
        StoreUrl::Postgres(url) => {
            Arc::new(PostgresStore::open_with(url, options.postgres.clone()).await?)
        }
    })
}

/// Serves on `listeners` until `shutdown` is cancelled. Either door failing stops both.
pub async fn run(
    options: ServerOptions,
    listeners: impl Into<Listeners>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let Listeners {
        grpc: listener,
        http,
    } = listeners.into();
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    // Before the store: a bad certificate or tokens file fails fast and touches nothing.
    let security = Security::load(&options.security)?;
    let stores = HubStores::connect(&options.store, options.postgres.clone()).await?;
    let hubs = TaskHubs::open(
        stores,
        options.hubs.clone(),
        Arc::new(SystemClock),
        options.service.clone(),
        options.engine.clone(),
        shutdown.child_token(),
    )
    .await?;
    security.spawn_watcher(options.security.poll, shutdown.clone());
    let served: Vec<String> = hubs
        .list()
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    tracing::info!(
        addr = ?addr,
        db = %options.store,
        task_hubs = %served.join(","),
        tls = security.tls.is_some(),
        tokens = security.auth.is_some(),
        "durabletask-sidecar listening"
    );
    let retention = (!options.retention.is_empty()).then(|| {
        tokio::spawn(crate::service::retention::run(
            hubs.clone(),
            Arc::new(options.retention.clone()),
            shutdown.clone(),
        ))
    });
    let http_task = http.map(|http| {
        let (hubs, options, stop) = (hubs.clone(), options.http.clone(), shutdown.clone());
        let security = security.clone();
        tokio::spawn(async move {
            let result = crate::http::serve(hubs, &options, http, &security, stop.clone()).await;
            // A failed HTTP door takes the server down, as a failed gRPC door does.
            stop.cancel();
            result
        })
    });
    let mut result = crate::grpc::serve(
        hubs.clone(),
        &options.grpc,
        listener,
        &security,
        shutdown.clone(),
    )
    .await
    .map_err(ServerError::from);
    shutdown.cancel();
    if let Some(task) = http_task {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(error = %err, "HTTP door failed");
                result = result.and(Err(ServerError::Http(err)));
            }
            Err(err) => tracing::error!(error = %err, "HTTP door task ended abnormally"),
        }
    }
    if let Some(task) = retention {
        // It stops at the shutdown signal; wait so no purge outlives the stores.
        if let Err(err) = task.await {
            tracing::error!(error = %err, "retention task ended abnormally");
        }
    }
    hubs.close().await;
    tracing::info!("durabletask-sidecar stopped");
    result
}
