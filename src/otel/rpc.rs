//! One SERVER span per gRPC call (OpenTelemetry RPC conventions: named
//! `{rpc.service}/{rpc.method}`, with `rpc.system`, `rpc.service`, `rpc.method` and
//! `rpc.grpc.status_code`), a child of the caller's `traceparent` metadata when it sent
//! one. A tower layer around the whole tonic server, so every service is covered and the
//! handlers stay as they are. Streaming calls end their span when the response starts.

use std::task::{Context as TaskContext, Poll};

use futures::future::{BoxFuture, Either};
use futures::FutureExt as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
use opentelemetry::KeyValue;
use tower::{Layer, Service};

use super::export;

/// The layer for `Server::builder().layer(..)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcSpanLayer;

impl<S> Layer<S> for RpcSpanLayer {
    type Service = RpcSpan<S>;
    fn layer(&self, inner: S) -> RpcSpan<S> {
        RpcSpan { inner }
    }
}

/// The service [`RpcSpanLayer`] wraps around the server.
#[derive(Debug, Clone)]
pub struct RpcSpan<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for RpcSpan<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // Without an exporter this is a plain pass-through.
        let Some(tracer) = export::tracer() else {
            return Either::Left(self.inner.call(req));
        };
        let path = req.uri().path().trim_start_matches('/');
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        let parent = export::context_from_headers(req.headers());
        let mut span = tracer
            .span_builder(path.to_owned())
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service.to_owned()),
                KeyValue::new("rpc.method", method.to_owned()),
            ])
            .start_with_context(tracer, &parent);
        let call = self.inner.call(req);
        Either::Right(
            async move {
                let result = call.await;
                match &result {
                    Ok(res) => {
                        // A failing call answers trailers-only: the status is in the
                        // headers. Otherwise it comes in the trailers, and it is OK.
                        let code = res
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i64>().ok())
                            .unwrap_or(0);
                        span.set_attribute(KeyValue::new("rpc.grpc.status_code", code));
                        if code != 0 {
                            let message = res
                                .headers()
                                .get("grpc-message")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default();
                            span.set_status(Status::error(format!(
                                "gRPC status {code}: {message}"
                            )));
                        }
                    }
                    Err(_) => span.set_status(Status::error("transport error")),
                }
                span.end();
                result
            }
            .boxed(),
        )
    }
}
