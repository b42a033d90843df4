//! `GET /metrics`: every metric in the Prometheus text format, and the request metrics
//! of this door (recorded by the `trace` middleware through [`observe`]).

use std::time::Duration;

use axum::extract::{MatchedPath, State};
use axum::http::{header, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};

use crate::metrics;
use crate::service::AppState;

/// The path Prometheus scrapes.
pub(super) const PATH: &str = "/metrics";

/// The `/metrics` endpoint, with its own state so the rest of the router is untouched.
pub(super) fn service(state: AppState) -> MethodRouter {
    get(scrape).with_state(state)
}

async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    let snapshot = state.metrics_snapshot();
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&snapshot),
    )
}

/// Records one answered request: by route template (never the raw path, which carries
/// instance ids), `unmatched` for the fallback.
pub(super) fn observe(
    method: &Method,
    route: Option<&MatchedPath>,
    status: StatusCode,
    took: Duration,
) {
    // Only standard methods become label values: a client cannot grow the label set.
    let method = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let route = route.map_or("unmatched", MatchedPath::as_str);
    metrics::get()
        .http
        .observe(method, route, status.as_str(), took);
}
