//! The task hub admin route and the OpenAPI document.

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use axum::extract::State;
use axum::Json;

use super::error::ApiResult;
use super::{Door, Server};

/// The OpenAPI 3 document of every route (hand-written; `mod.rs` tests that it lists
/// exactly the router's routes, `tests/http_api.rs` that responses match it).
pub(super) const OPENAPI: &str = include_str!("openapi.json");

/// `GET /openapi.json`.
pub(super) async fn openapi() -> Response {
    ([(CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `DELETE taskhub`: deletes every instance, entity and queued message (the task hub is
/// then empty and ready for use again). 412 when the sidecar runs with
/// `--disable-task-hub-admin`.
pub(super) async fn delete_task_hub(door: Door) -> ApiResult {
    door.state.reset_task_hub(true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET taskHubs`: the hubs served now (not a Durable Functions route; the dashboard's
/// hub selector).
pub(super) async fn task_hubs(State(server): State<Server>) -> Response {
    let names: Vec<String> = server
        .hubs
        .names()
        .iter()
        .map(ToString::to_string)
        .collect();
    Json(serde_json::json!({ "taskHubs": names })).into_response()
}
