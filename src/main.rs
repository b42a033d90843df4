//! `durabletask-sidecar` binary: parse the configuration; with a client command, run it
//! (`cli`); otherwise set up logging, bind the port and run the server until
//! SIGINT/SIGTERM. No logic lives here beyond wiring.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use durabletask_sidecar::config::Config;
use durabletask_sidecar::{cli, otel, server, telemetry};

// Every work item and commit allocates many small, short-lived buffers on several
// threads; mimalloc's thread-local free lists cost less per allocation than glibc's
// arenas (measured in the README's performance section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let mut config = Config::parse();
    if let Some(command) = config.command.take() {
        return cli::run(command).await;
    }
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line.
            eprintln!("durabletask-sidecar: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    telemetry::init(config.log_level.as_deref(), config.log_format)?;
    if let Some(url) = otel::install(config.otlp_endpoint.as_deref())? {
        tracing::info!(%url, "exporting traces over OTLP/HTTP");
    }
    let addr = config.socket_addr()?;
    let http_addr = config.http_socket_addr()?;
    let options = config.server_options()?;
    tracing::debug!(?config, "configuration");

    let grpc = bind(addr, "--port").await?;
    let http = match http_addr {
        Some(addr) => Some(bind(addr, "--http-port (or `--http-port off`)").await?),
        None => None,
    };

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let result = server::run(options, server::Listeners { grpc, http }, shutdown)
        .await
        .context("server failed");
    // The exporter's last batch: flushing blocks, so not on a runtime thread.
    if let Err(err) = tokio::task::spawn_blocking(otel::shutdown).await {
        tracing::warn!(error = %err, "span export shutdown ended abnormally");
    }
    result
}

async fn bind(addr: std::net::SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|err| {
        if err.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("cannot listen on {addr}: the port is already in use (another sidecar running? choose one with {flag})")
        } else {
            anyhow::Error::new(err).context(format!("cannot listen on {addr}"))
        }
    })
}

/// Cancels `token` on the first SIGINT/SIGTERM so the server drains; a second signal
/// exits at once, for when draining hangs.
async fn cancel_on_signal(token: CancellationToken) {
    if let Err(err) = wait_for_signal().await {
        tracing::error!(error = %err, "cannot install signal handlers; stop the process with SIGKILL");
        return;
    }
    tracing::info!("shutdown signal received, draining (signal again to exit immediately)");
    token.cancel();
    if wait_for_signal().await.is_ok() {
        eprintln!("durabletask-sidecar: second signal received, exiting without draining");
        std::process::exit(130);
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
