//! Fuzzing entry point (the `fuzz/` crate, `http_requests` target): the HTTP door's real
//! router driven in-process, so query strings, path segments and JSON bodies go through
//! the same extractors and parsers as on the socket. Not used by the server itself;
//! public only so an out-of-tree fuzz target can reach the door. axum types stay inside.

use axum::body::Body;
use axum::Router;
use tower::ServiceExt as _;

use crate::service::AppState;

/// The door's router over one state, built once and called many times.
#[derive(Debug, Clone)]
pub struct FuzzDoor {
    router: Router,
}

impl FuzzDoor {
    /// The router `serve` would run, with default options.
    pub fn new(state: AppState) -> Self {
        Self {
            router: super::router(state, &super::HttpOptions::default(), None, None),
        }
    }

    /// Sends one request; `None` when `method`, `uri` or a header cannot form an HTTP request at
    /// all (hyper would refuse it before the router). Returns the status and the body.
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &[u8])],
        body: Vec<u8>,
    ) -> Option<(u16, Vec<u8>)> {
        let mut request = http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::from(body)).ok()?;
        let response = self.router.clone().oneshot(request).await.ok()?;
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .ok()?;
        Some((status, bytes.to_vec()))
    }
}
