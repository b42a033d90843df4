//! The OTLP/HTTP (protobuf) span exporter: one global tracer provider with a batch
//! processor, installed once by `main` when an endpoint is configured. Until then
//! [`enabled`] is false and every hook returns at once.

use std::sync::OnceLock;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use super::spans::{Kind, SpanRecord};
use super::OtlpError;
use crate::proto as pb;

/// Instrumentation scope of every span the sidecar makes.
pub(super) const SCOPE: &str = "durabletask-sidecar";
/// `service.name` unless `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` say otherwise.
const DEFAULT_SERVICE_NAME: &str = "durabletask-sidecar";

struct Exporter {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Whether spans are exported.
pub(super) fn enabled() -> bool {
    EXPORTER.get().is_some()
}

pub(super) fn tracer() -> Option<&'static SdkTracer> {
    EXPORTER.get().map(|e| &e.tracer)
}

/// Installs the exporter: `endpoint` is `--otlp-endpoint` (a base URL, `/v1/traces` is
/// appended as for `OTEL_EXPORTER_OTLP_ENDPOINT`); without it, the standard variables
/// decide. Returns the traces URL when export is on.
pub(super) fn install(endpoint: Option<&str>) -> Result<Option<String>, OtlpError> {
    let flag = endpoint.map(str::trim).filter(|e| !e.is_empty());
    let url = match flag {
        Some(base) => Some(traces_url(base)?),
        None => env_endpoint(),
    };
    let Some(url) = url else {
        return Ok(None);
    };
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    if flag.is_some() {
        builder = builder.with_endpoint(url.clone());
    }
    let exporter = builder
        .build()
        .map_err(|err| OtlpError::Exporter(err.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build();
    let tracer = provider.tracer(SCOPE);
    EXPORTER
        .set(Exporter { provider, tracer })
        .map_err(|_| OtlpError::Installed)?;
    Ok(Some(url))
}

/// Exports what is still buffered and stops the exporter (at exit). Blocks.
pub(super) fn shutdown() {
    if let Some(e) = EXPORTER.get() {
        if let Err(err) = e.provider.shutdown() {
            tracing::warn!(error = %err, "could not flush the last spans to the OTLP endpoint");
        }
    }
}

/// `--otlp-endpoint` as the traces URL; only `http://` (this build has no TLS client).
fn traces_url(base: &str) -> Result<String, OtlpError> {
    let bad = |reason: &str| OtlpError::Endpoint {
        value: base.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: http::Uri = base
        .parse()
        .map_err(|err: http::uri::InvalidUri| bad(&err.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "https is not supported (the exporter has no TLS); send to a local collector over http://",
            ))
        }
        _ => return Err(bad("expected an http:// URL such as http://localhost:4318")),
    }
    if uri.host().is_none() {
        return Err(bad("the URL has no host"));
    }
    Ok(format!("{}/v1/traces", base.trim_end_matches('/')))
}

/// The standard variables: the traces URL they name, if any (for the log line).
fn env_endpoint() -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(traces) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Some(traces);
    }
    var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
}

fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder()
            .with_service_name(DEFAULT_SERVICE_NAME)
            .build()
    }
}

/// Exports finished spans.
pub(super) fn export(records: Vec<SpanRecord>) {
    let Some(tracer) = tracer() else { return };
    for r in records {
        let parent = r.parent.as_ref().map_or_else(Context::new, parent_context);
        let mut span = tracer
            .span_builder(r.name)
            .with_kind(match r.kind {
                Kind::Server => SpanKind::Server,
                Kind::Internal => SpanKind::Internal,
            })
            .with_start_time(system_time(r.start))
            .with_attributes(r.attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)))
            .start_with_context(tracer, &parent);
        if let Some(error) = r.error {
            span.set_status(Status::error(error));
        }
        span.end_with_timestamp(system_time(r.end));
    }
}

fn system_time(t: DateTime<Utc>) -> SystemTime {
    t.into()
}

/// The remote context a protocol `TraceContext` names; an empty context (a new trace)
/// when its `traceParent` is not valid W3C.
fn parent_context(tc: &pb::TraceContext) -> Context {
    let carrier = TraceCarrier {
        traceparent: &tc.trace_parent,
        tracestate: tc.trace_state.as_deref(),
    };
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        cx
    } else {
        Context::new()
    }
}

/// The parent a request's `traceparent` / `tracestate` metadata names.
pub(super) fn context_from_headers(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderCarrier(headers))
}

struct TraceCarrier<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for TraceCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" => self.tracestate,
            _ => None,
        }
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

struct HeaderCarrier<'a>(&'a http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_flag_is_a_base_url() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/").unwrap(),
            "http://collector:4318/v1/traces"
        );
        let err = traces_url("https://collector:4318")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--otlp-endpoint") && err.contains("https"),
            "{err}"
        );
        let err = traces_url("collector:4318").unwrap_err().to_string();
        assert!(err.contains("http://"), "{err}");
    }

    #[test]
    fn protocol_trace_context_becomes_the_parent() {
        let tc = pb::TraceContext {
            trace_parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            ..Default::default()
        };
        let cx = parent_context(&tc);
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
        assert!(sc.is_remote() && sc.is_sampled());
        let bad = pb::TraceContext {
            trace_parent: "nonsense".into(),
            ..tc
        };
        assert!(!parent_context(&bad).span().span_context().is_valid());
    }

    #[test]
    fn traceparent_metadata_becomes_the_parent() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
            ),
        );
        let cx = context_from_headers(&headers);
        assert_eq!(
            cx.span().span_context().span_id().to_string(),
            "00f067aa0ba902b7"
        );
    }
}
