//! The tower layer that records every gRPC request in `crate::metrics`: a unary request
//! when its status is known (its latency from request to final status), a streaming
//! request when its stream opens and again when it closes (a worker stream's lifetime is
//! not a latency).
//!
//! tonic answers an error before any message as "trailers-only" (`grpc-status` in the
//! headers); otherwise the status comes in the trailers at the end of the body, so the
//! body is wrapped to see them. A body dropped before its trailers is a request the client
//! cancelled (a worker that went away): it counts as `Canceled`.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tower::{Layer, Service};

use crate::metrics::{self, GrpcMethod};

/// `Server::builder().layer(MeteredLayer)`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct MeteredLayer;

impl<S> Layer<S> for MeteredLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered { inner }
    }
}

/// The service [`MeteredLayer`] wraps around the tonic router.
#[derive(Debug, Clone)]
pub(super) struct Metered<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Metered<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let call = Call {
            method: GrpcMethod::from_path(req.uri().path()),
            start: Instant::now(),
        };
        MeteredFuture {
            inner: self.inner.call(req),
            call: Some(call),
        }
    }
}

/// What the request's metrics need once its status is known.
#[derive(Debug, Clone, Copy)]
struct Call {
    method: GrpcMethod,
    start: Instant,
}

impl Call {
    fn finished(self, code: i32) {
        let took = (!self.method.is_streaming()).then(|| self.start.elapsed());
        metrics::get().grpc.finished(self.method, code, took);
    }
}

pin_project_lite::pin_project! {
    /// The response future: wraps the body once the headers are there.
    pub(super) struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(call) = this.call.take() else {
            return Poll::Ready(result);
        };
        Poll::Ready(match result {
            Ok(response) => {
                if let Some(code) = grpc_status(response.headers()) {
                    call.finished(code);
                    Ok(response)
                } else {
                    if call.method.is_streaming() {
                        metrics::get().grpc.stream_opened(call.method);
                    }
                    Ok(response.map(|inner| {
                        Body::new(MeteredBody {
                            inner,
                            call: Some(call),
                        })
                    }))
                }
            }
            Err(err) => {
                // The transport failed before any response: nothing reached the client.
                call.finished(UNKNOWN);
                Err(err)
            }
        })
    }
}

/// The `grpc-status` number tonic's absent or unreadable status stands for.
const UNKNOWN: i32 = 2;

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(UNKNOWN),
    )
}

/// A response body that records the request when its trailers pass (or when it is
/// dropped before them).
struct MeteredBody {
    inner: Body,
    call: Option<Call>,
}

impl http_body::Body for MeteredBody {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        let code = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|t| grpc_status(t).unwrap_or(UNKNOWN)),
            Some(Err(status)) => Some(status.code() as i32),
            None => Some(UNKNOWN),
        };
        if let Some(code) = code {
            if let Some(call) = self.call.take() {
                call.finished(code);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finished(metrics::CANCELLED);
        }
    }
}
