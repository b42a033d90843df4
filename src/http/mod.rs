//! The HTTP door: the Durable Functions HTTP management API (same routes, fields and
//! status codes, under `/runtime/webhooks/durabletask/`) and its OpenAPI document at
//! `/openapi.json`. Handlers only convert: JSON and query strings ⇄ domain types
//! (`json.rs`), the use cases are `service`'s, and `error.rs` maps every `ServiceError`
//! to a status in one match. axum types never leave this module; it depends on
//! `service` and `domain` only.

use std::net::SocketAddr;

use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::DEFAULT_TASK_HUB;
use crate::service::{AppState, TaskHubs};

mod admin;
mod entities;
mod error;
pub mod fuzzing;
mod instances;
mod json;
mod scrape;
mod secure;
mod ui;

/// Where every Durable Functions route lives.
pub const BASE_PATH: &str = "/runtime/webhooks/durabletask";

/// What the HTTP door needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Largest request body accepted (orchestration input, event data, entity input).
    pub max_body_bytes: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The router's state: the task hubs and where the door listens (the fallback for
/// management URLs when a request carries no `Host` header).
#[derive(Debug, Clone)]
struct Server {
    hubs: TaskHubs,
    local_addr: Option<SocketAddr>,
}

/// What a handler works on: the task hub the request names (`taskHub` query parameter,
/// as in Durable Functions; absent: the default hub) and where the door listens.
#[derive(Debug, Clone)]
struct Door {
    state: AppState,
    /// The hub as the request named it, repeated in the management URLs it returns;
    /// `None` for the default hub.
    task_hub: Option<String>,
    local_addr: Option<SocketAddr>,
}

/// The query parameter naming the task hub.
const TASK_HUB_PARAM: &str = "taskHub";

impl FromRequestParts<Server> for Door {
    type Rejection = error::ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        server: &Server,
    ) -> Result<Self, Self::Rejection> {
        let task_hub = requested_task_hub(&parts.uri).map_err(error::invalid)?;
        let state = server.hubs.get(task_hub.as_deref()).await?;
        Ok(Self {
            state,
            task_hub: task_hub.filter(|hub| !hub.eq_ignore_ascii_case(DEFAULT_TASK_HUB)),
            local_addr: server.local_addr,
        })
    }
}

/// The task hub a request names: the first `taskHub` query parameter (name in any case,
/// percent-decoded, trimmed); `None` when absent or empty. The door and the auth layer both
/// read it here, so the hub a token is checked against is always the hub that is served.
/// A malformed query string is an error naming the problem.
pub(crate) fn requested_task_hub(uri: &axum::http::Uri) -> Result<Option<String>, String> {
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| format!("malformed query string: {e}"))?;
    Ok(json::Params::new(pairs)
        .get(TASK_HUB_PARAM)
        .map(str::trim)
        .filter(|hub| !hub.is_empty())
        .map(str::to_owned))
}

/// Serves the HTTP API on `listener` until `shutdown` fires; requests in flight finish.
pub async fn serve(
    hubs: TaskHubs,
    options: &HttpOptions,
    listener: TcpListener,
    security: &crate::security::Security,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local_addr = listener.local_addr().ok();
    tracing::info!(addr = ?local_addr, tls = security.tls.is_some(), "HTTP API listening");
    let app = router(hubs, options, local_addr, security.auth.clone());
    let stop = shutdown.clone();
    let stopped = async move { stop.cancelled().await };
    match &security.tls {
        Some(tls) => {
            let incoming =
                crate::tls::incoming(listener, tls.clone(), crate::tls::Door::Http, shutdown);
            axum::serve(secure::TlsListener(incoming), app)
                .with_graceful_shutdown(stopped)
                .await
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
        }
    }
}

/// Every route of the door, method and path as the OpenAPI document spells them
/// (`{param}`), so a test can check the document covers the router.
pub const ROUTES: &[(&str, &str)] = &[
    (
        "POST",
        "/runtime/webhooks/durabletask/orchestrators/{functionName}",
    ),
    (
        "POST",
        "/runtime/webhooks/durabletask/orchestrators/{functionName}/{instanceId}",
    ),
    ("GET", "/runtime/webhooks/durabletask/instances"),
    ("GET", "/runtime/webhooks/durabletask/instanceCounts"),
    ("DELETE", "/runtime/webhooks/durabletask/instances"),
    (
        "GET",
        "/runtime/webhooks/durabletask/instances/{instanceId}",
    ),
    (
        "DELETE",
        "/runtime/webhooks/durabletask/instances/{instanceId}",
    ),
    (
        "POST",
        "/runtime/webhooks/durabletask/instances/{instanceId}/raiseEvent/{eventName}",
    ),
    (
        "POST",
        "/runtime/webhooks/durabletask/instances/{instanceId}/terminate",
    ),
    (
        "POST",
        "/runtime/webhooks/durabletask/instances/{instanceId}/suspend",
    ),
    (
        "POST",
        "/runtime/webhooks/durabletask/instances/{instanceId}/resume",
    ),
    (
        "POST",
        "/runtime/webhooks/durabletask/instances/{instanceId}/rewind",
    ),
    (
        "POST",
        "/runtime/webhooks/durabletask/instances/{instanceId}/restart",
    ),
    ("GET", "/runtime/webhooks/durabletask/entities"),
    ("GET", "/runtime/webhooks/durabletask/entities/{entityName}"),
    (
        "GET",
        "/runtime/webhooks/durabletask/entities/{entityName}/{entityKey}",
    ),
    (
        "POST",
        "/runtime/webhooks/durabletask/entities/{entityName}/{entityKey}",
    ),
    (
        "DELETE",
        "/runtime/webhooks/durabletask/entities/{entityName}/{entityKey}",
    ),
    ("DELETE", "/runtime/webhooks/durabletask/taskhub"),
    ("GET", "/runtime/webhooks/durabletask/taskHubs"),
    ("GET", "/openapi.json"),
];

fn router(
    hubs: TaskHubs,
    options: &HttpOptions,
    local_addr: Option<SocketAddr>,
    auth: Option<crate::auth::Authenticator>,
) -> Router {
    let base = Router::new()
        .route("/orchestrators/{function_name}", post(instances::start))
        .route(
            "/orchestrators/{function_name}/{instance_id}",
            post(instances::start_with_id),
        )
        .route(
            "/instances",
            get(instances::list).delete(instances::purge_where),
        )
        .route("/instanceCounts", get(instances::counts))
        .route(
            "/instances/{instance_id}",
            get(instances::status).delete(instances::purge),
        )
        .route(
            "/instances/{instance_id}/raiseEvent/{event_name}",
            post(instances::raise_event),
        )
        .route(
            "/instances/{instance_id}/terminate",
            post(instances::terminate),
        )
        .route("/instances/{instance_id}/suspend", post(instances::suspend))
        .route("/instances/{instance_id}/resume", post(instances::resume))
        .route("/instances/{instance_id}/rewind", post(instances::rewind))
        .route("/instances/{instance_id}/restart", post(instances::restart))
        .route("/entities", get(entities::list_all))
        .route("/entities/{entity_name}", get(entities::list_named))
        .route(
            "/entities/{entity_name}/{entity_key}",
            get(entities::get)
                .post(entities::signal)
                .delete(entities::delete),
        )
        .route("/taskhub", delete(admin::delete_task_hub))
        .route("/taskHubs", get(admin::task_hubs));
    Router::new()
        .nest(BASE_PATH, base)
        .route("/openapi.json", get(admin::openapi))
        // Neither the metrics nor the dashboard are Durable Functions routes, so neither
        // is in ROUTES or the OpenAPI document.
        .route_service(scrape::PATH, scrape::service(hubs.clone()))
        .route("/", get(ui::index))
        .route("/ui/{*path}", get(ui::asset))
        .fallback(error::no_route)
        // Inside `trace`, so refusals are logged and counted like other answers.
        .layer(crate::auth::layer::AuthLayer::new(
            auth,
            crate::auth::layer::Door::Http,
            secure::refuse,
        ))
        .layer(axum::middleware::from_fn(trace))
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .with_state(Server { hubs, local_addr })
}

/// One span per request (the HTTP twin of the gRPC `rpc` span), and its status at debug.
async fn trace(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument as _;
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let span = tracing::debug_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path()
    );
    async move {
        let response = next.run(request).await;
        scrape::observe(
            &method,
            route.as_ref(),
            response.status(),
            started.elapsed(),
        );
        tracing::debug!(status = response.status().as_u16(), "answered");
        response
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI document names every route of the router (and no other), with its
    /// method: the document is hand-written, this keeps it true.
    #[test]
    fn openapi_document_lists_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(admin::OPENAPI).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let paths = doc["paths"].as_object().expect("paths");
        let mut documented = Vec::new();
        for (path, item) in paths {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "post", "delete", "put", "patch"].contains(&method.as_str()) {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut served: Vec<_> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_string(), (*p).to_string()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }
}
