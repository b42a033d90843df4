//! Entity routes: signal, get state, list (all or one entity name).

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::error::{invalid, not_found, ApiResult};
use super::instances::with_continuation;
use super::json::{self, Params, Segments};
use super::Door;
use crate::domain::InstanceId;
use crate::service::entities::{EntityQuery, EntitySignal};

/// `POST entities/{entityName}/{entityKey}?op=`: body = operation input. JSON content is
/// checked; other content is passed as a JSON string, as Durable Functions does.
pub(super) async fn signal(
    door: Door,
    Segments((name, key)): Segments<(String, String)>,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let operation = params.get("op").unwrap_or_default().to_string();
    send(&door, &name, &key, operation, &headers, &body).await
}

/// `DELETE entities/{entityName}/{entityKey}`: signals the `delete` operation (Durable
/// Functions' shorthand; class-based .NET entities delete their state on it).
pub(super) async fn delete(
    door: Door,
    Segments((name, key)): Segments<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    send(&door, &name, &key, "delete".into(), &headers, &body).await
}

async fn send(
    door: &Door,
    name: &str,
    key: &str,
    operation: String,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult {
    if operation.is_empty() {
        return Err(invalid(
            "query parameter 'op' (the operation name) is required",
        ));
    }
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_none_or(|v| v.trim().eq_ignore_ascii_case("application/json"));
    let input = if is_json {
        json::json_body(body, "the request body (the operation input)")?
    } else if body.is_empty() {
        None
    } else {
        let text = std::str::from_utf8(body)
            .map_err(|_| invalid("the request body (the operation input) is not UTF-8 text"))?;
        Some(json::json_string(text))
    };
    door.state
        .signal_entity(EntitySignal {
            entity_id: json::entity_id(name, key),
            operation,
            input,
            scheduled_time: None,
            request_id: InstanceId::generate().into_string(),
        })
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET entities/{entityName}/{entityKey}`: the entity's state as the body; 404 when it
/// has none.
pub(super) async fn get(
    door: Door,
    Segments((name, key)): Segments<(String, String)>,
) -> ApiResult {
    let id = json::entity_id(&name, &key);
    match door.state.get_entity(&id).await? {
        Some(r) if r.state.is_some() => Ok(Json(json::payload(r.state.as_deref())).into_response()),
        _ => Err(not_found(format!(
            "entity '{id}' does not exist (it has no state)"
        ))),
    }
}

/// `GET entities`.
pub(super) async fn list_all(door: Door, params: Params, headers: HeaderMap) -> ApiResult {
    list(&door, None, &params, &headers).await
}

/// `GET entities/{entityName}[?keyPrefix=]` (`keyPrefix` is a sidecar addition).
pub(super) async fn list_named(
    door: Door,
    Segments(name): Segments<String>,
    params: Params,
    headers: HeaderMap,
) -> ApiResult {
    list(&door, Some(&name), &params, &headers).await
}

async fn list(
    door: &Door,
    name: Option<&str>,
    params: &Params,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let token = json::continuation(headers)?;
    let fetch_state = params.flag("fetchState", false)?;
    let query = EntityQuery {
        // `@name@` selects one entity name (`@name@keyPrefix` the keys starting so);
        // `@` every entity.
        prefix: Some(match name {
            Some(n) => format!(
                "@{}@{}",
                n.to_lowercase(),
                params.get("keyPrefix").unwrap_or_default()
            ),
            None => "@".into(),
        }),
        modified_from: params.time("lastOperationTimeFrom")?,
        modified_to: params.time("lastOperationTimeTo")?,
        include_transient: false,
        page_size: params.count("top")?.unwrap_or(0),
        token,
    };
    let page = door.state.query_entities(query).await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|r| json::entity_entry(r, fetch_state))
        .collect();
    Ok(with_continuation(Json(items).into_response(), page.next))
}
