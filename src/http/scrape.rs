//! `GET /metrics`: every metric in the Prometheus text format, and the request metrics
//! of this door (recorded by the `trace` middleware through [`observe`]).
//!
//! Instances by status come from one store query (`count_instances`), cached for
//! [`COUNTS_TTL`] so that frequent scrapes, or several Prometheus servers, never load the
//! store: a scrape within the TTL reuses the last counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, State};
use axum::http::{header, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};

use super::json::status_name;
use crate::metrics;
use crate::service::client::InstanceQuery;
use crate::service::AppState;

/// The path Prometheus scrapes.
pub(super) const PATH: &str = "/metrics";

/// How long instance counts are reused before the store is asked again.
const COUNTS_TTL: Duration = Duration::from_secs(5);

/// Instance counts per status label, and when they were read.
type Counts = Option<(Instant, Vec<(&'static str, u64)>)>;

#[derive(Debug, Clone)]
struct Scrape {
    state: AppState,
    /// A tokio mutex, held across the store query on purpose: concurrent scrapes wait
    /// for the one query instead of each sending their own.
    counts: Arc<tokio::sync::Mutex<Counts>>,
}

/// The `/metrics` endpoint, with its own state so the rest of the router is untouched.
pub(super) fn service(state: AppState) -> MethodRouter {
    get(scrape).with_state(Scrape {
        state,
        counts: Arc::default(),
    })
}

async fn scrape(State(scrape): State<Scrape>) -> impl IntoResponse {
    let mut snapshot = scrape.state.metrics_snapshot();
    snapshot.instances = instance_counts(&scrape).await;
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&snapshot),
    )
}

/// The cached counts, read again from the store once they are older than the TTL. On a
/// store error the last counts stay (stale beats a gap in the graph), or none are shown.
async fn instance_counts(scrape: &Scrape) -> Option<Vec<(&'static str, u64)>> {
    let mut cached = scrape.counts.lock().await;
    if let Some((read_at, counts)) = cached.as_ref() {
        if read_at.elapsed() < COUNTS_TTL {
            return Some(counts.clone());
        }
    }
    match scrape
        .state
        .count_instances(&InstanceQuery::default())
        .await
    {
        Ok(counts) => {
            let counts: Vec<_> = counts
                .into_iter()
                .map(|(status, n)| (status_name(status), n))
                .collect();
            *cached = Some((Instant::now(), counts.clone()));
            Some(counts)
        }
        Err(err) => {
            tracing::warn!(error = %err, "metrics: could not count instances");
            cached.as_ref().map(|(_, counts)| counts.clone())
        }
    }
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
