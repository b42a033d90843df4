//! OpenTelemetry traces (STYLE.md §6, README "Tracing"): spans per gRPC call and per
//! orchestration episode, activity and timer, exported over OTLP/HTTP when an endpoint is
//! configured, and joined to the SDKs' spans through the W3C trace context the protocol
//! carries.
//!
//! `spans` describes the Durable Task spans as data (always built, no OpenTelemetry
//! types); the dispatcher calls the hooks here after it commits, only when [`enabled`].
//! The exporter and the RPC layer need the `otlp` cargo feature (on by default); without
//! it the hooks are empty and the OpenTelemetry crates are not compiled in.

pub mod spans;

#[cfg(feature = "otlp")]
mod export;
#[cfg(feature = "otlp")]
mod rpc;

pub use spans::{EpisodeTrace, SpanRecord};

/// Why trace export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// `--otlp-endpoint` is not a usable URL.
    #[error("invalid --otlp-endpoint {value:?}: {reason}")]
    Endpoint {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The OTLP exporter rejected its configuration (e.g. an `OTEL_EXPORTER_OTLP_*` variable).
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(String),
    /// An exporter was installed already.
    #[error("the OTLP exporter is already installed")]
    Installed,
    /// An endpoint was given to a build without the `otlp` feature.
    #[error("--otlp-endpoint was given, but this build has no OTLP support (built without the `otlp` cargo feature)")]
    NotBuilt,
}

/// Whether spans are exported (an exporter is installed).
pub fn enabled() -> bool {
    #[cfg(feature = "otlp")]
    {
        export::enabled()
    }
    #[cfg(not(feature = "otlp"))]
    {
        false
    }
}

/// Sets up export from `--otlp-endpoint`, else `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`;
/// returns the traces URL when export is on, `None` when nothing is configured.
pub fn install(endpoint: Option<&str>) -> Result<Option<String>, OtlpError> {
    #[cfg(feature = "otlp")]
    {
        export::install(endpoint)
    }
    #[cfg(not(feature = "otlp"))]
    {
        if endpoint.is_some_and(|e| !e.trim().is_empty()) {
            return Err(OtlpError::NotBuilt);
        }
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
            tracing::warn!("OTEL_EXPORTER_OTLP_ENDPOINT is set, but this build has no OTLP support; no spans are exported");
        }
        Ok(None)
    }
}

/// Flushes buffered spans and stops export (at exit; blocks briefly).
pub fn shutdown() {
    #[cfg(feature = "otlp")]
    export::shutdown();
}

/// Exports finished Durable Task spans (no-op when export is off).
pub fn export(records: Vec<SpanRecord>) {
    #[cfg(feature = "otlp")]
    export::export(records);
    #[cfg(not(feature = "otlp"))]
    drop(records);
}

/// The tower layer that gives every gRPC call a span.
#[cfg(feature = "otlp")]
pub fn rpc_layer() -> rpc::RpcSpanLayer {
    rpc::RpcSpanLayer
}

/// The tower layer that gives every gRPC call a span (none in this build).
#[cfg(not(feature = "otlp"))]
pub fn rpc_layer() -> tower::layer::util::Identity {
    tower::layer::util::Identity::new()
}
