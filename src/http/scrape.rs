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
use crate::service::{AppState, TaskHubs};

/// The path Prometheus scrapes.
pub(super) const PATH: &str = "/metrics";

/// How long instance counts are reused before the store is asked again.
const COUNTS_TTL: Duration = Duration::from_secs(5);

/// Instance counts per status label, and when they were read, per task hub.
type Counts = std::collections::HashMap<String, (Instant, Vec<(&'static str, u64)>)>;

#[derive(Debug, Clone)]
struct Scrape {
    hubs: TaskHubs,
    /// A tokio mutex, held across the store queries on purpose: concurrent scrapes wait
    /// for the one query instead of each sending their own.
    counts: Arc<tokio::sync::Mutex<Counts>>,
}

/// The `/metrics` endpoint, with its own state so the rest of the router is untouched.
pub(super) fn service(hubs: TaskHubs) -> MethodRouter {
    get(scrape).with_state(Scrape {
        hubs,
        counts: Arc::default(),
    })
}

async fn scrape(State(scrape): State<Scrape>) -> impl IntoResponse {
    let mut snapshots = Vec::new();
    let mut cached = scrape.counts.lock().await;
    for (name, state) in scrape.hubs.list() {
        let mut snapshot = state.metrics_snapshot(name.as_str());
        snapshot.instances = instance_counts(&state, name.as_str(), &mut cached).await;
        snapshots.push(snapshot);
    }
    drop(cached);
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&snapshots),
    )
}

/// The cached counts of `hub`, read again from the store once they are older than the
/// TTL. On a store error the last counts stay (stale beats a gap in the graph), or none
/// are shown.
async fn instance_counts(
    state: &AppState,
    hub: &str,
    cached: &mut Counts,
) -> Option<Vec<(&'static str, u64)>> {
    if let Some((read_at, counts)) = cached.get(hub) {
        if read_at.elapsed() < COUNTS_TTL {
            return Some(counts.clone());
        }
    }
    match state.count_instances(&InstanceQuery::default()).await {
        Ok(counts) => {
            let counts: Vec<_> = counts
                .into_iter()
                .map(|(status, n)| (status_name(status), n))
                .collect();
            cached.insert(hub.to_owned(), (Instant::now(), counts.clone()));
            Some(counts)
        }
        Err(err) => {
            tracing::warn!(error = %err, task_hub = hub, "metrics: could not count instances");
            cached.get(hub).map(|(_, counts)| counts.clone())
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
