//! Orchestration instance routes: start (with wait-or-check-status), status, list,
//! purge, raise event, terminate, suspend, resume, rewind, restart.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::header::{CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::{gone, invalid, not_found, ApiError, ApiResult};
use super::json::{self, Params, Segments, CONTINUATION_HEADER};
use super::{Door, BASE_PATH};
use crate::domain::{InstanceRecord, RuntimeStatus};
use crate::service::client::{Delivery, InstanceQuery, PurgeCriteria, StartRequest, WaitFor};
use crate::service::ServiceError;

/// Seconds a client should wait before polling a started instance (Durable Functions'
/// check-status response says 10).
const RETRY_AFTER_STARTED: &str = "10";
/// Seconds a client should wait before polling a running instance again (Durable
/// Functions' status response says 5).
const RETRY_AFTER_RUNNING: &str = "5";

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
                .map_err(|e| invalid(format!("malformed query string: {e}")))?;
        Ok(Params::new(pairs))
    }
}

/// `http://host` from the request's `Host` header (the listening address without one).
pub(super) fn origin(door: &Door, headers: &HeaderMap) -> String {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.parse::<Authority>().is_ok())
        .map(str::to_string)
        .or_else(|| door.local_addr.map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".into());
    format!("http://{host}")
}

/// Instance routes name orchestrations; `@…` ids are entities (see `entities/`).
fn orchestration(id: &str) -> Result<(), ApiError> {
    if id.starts_with('@') {
        return Err(not_found(format!(
            "'{id}' is an entity id, not an orchestration instance (use the entities routes)"
        )));
    }
    Ok(())
}

fn unknown(id: &str) -> ApiError {
    not_found(format!("no orchestration instance with id '{id}'"))
}

/// `POST orchestrators/{functionName}`.
pub(super) async fn start(
    door: Door,
    Segments(function_name): Segments<String>,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    start_instance(door, function_name, String::new(), params, headers, body).await
}

/// `POST orchestrators/{functionName}/{instanceId}`.
pub(super) async fn start_with_id(
    door: Door,
    Segments((function_name, instance_id)): Segments<(String, String)>,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    start_instance(door, function_name, instance_id, params, headers, body).await
}

async fn start_instance(
    door: Door,
    name: String,
    instance_id: String,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let input = json::json_body(&body, "the request body (the orchestration input)")?;
    let wait = wait_params(&params)?;
    let id = door
        .state
        .start_instance(StartRequest {
            instance_id,
            name,
            version: params
                .get("version")
                .filter(|v| !v.is_empty())
                .map(Into::into),
            input,
            ..StartRequest::default()
        })
        .await?;
    check_status_or_wait(&door, &headers, id.as_str(), wait).await
}

/// How a start or restart waits: `timeout` (seconds) turns it into wait-or-check-status,
/// answered like a status request when the instance ends badly (so the status options
/// are read, and checked, up front). `pollingInterval` is accepted and checked but
/// unused: waits here are woken by commits, as Durable Functions does for providers that
/// support poll-free waits.
#[derive(Debug)]
struct Wait {
    timeout: Option<Duration>,
    show: Show,
}

fn wait_params(params: &Params) -> Result<Wait, ApiError> {
    let timeout = params.seconds("timeout")?;
    let _interval = params.seconds("pollingInterval")?;
    Ok(Wait {
        timeout,
        show: Show::from_params(params)?,
    })
}

/// The status response's options.
#[derive(Debug, Clone, Copy)]
struct Show {
    history: bool,
    history_output: bool,
    input: bool,
    failure_as_500: bool,
}

impl Show {
    fn from_params(params: &Params) -> Result<Self, ApiError> {
        Ok(Self {
            history: params.flag("showHistory", false)?,
            history_output: params.flag("showHistoryOutput", false)?,
            input: params.flag("showInput", true)?,
            failure_as_500: params.flag("returnInternalServerErrorOnFailure", false)?,
        })
    }
}

/// 202 with the management payload, or, with a `timeout`, the outcome if the instance
/// ends in time: 200 + output when Completed, the status response when it failed or was
/// terminated.
async fn check_status_or_wait(door: &Door, headers: &HeaderMap, id: &str, wait: Wait) -> ApiResult {
    if let Some(timeout) = wait.timeout {
        let limit = timeout.min(door.state.options().max_wait);
        match door
            .state
            .wait_for_instance(id, WaitFor::Completion, Some(limit))
            .await
        {
            Ok(Some(r)) if r.status == RuntimeStatus::Completed => {
                return Ok(
                    (StatusCode::OK, Json(json::payload(r.output.as_deref()))).into_response()
                )
            }
            Ok(Some(r)) if r.status.is_terminal() => {
                let location = json::management_urls(
                    &format!("{}{BASE_PATH}", origin(door, headers)),
                    id,
                    door.task_hub.as_deref(),
                )
                .status;
                return status_response(door, wait.show, r, location).await;
            }
            Ok(_) | Err(ServiceError::DeadlineExceeded(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(check_status(door, headers, id))
}

fn check_status(door: &Door, headers: &HeaderMap, id: &str) -> Response {
    let urls = json::management_urls(
        &format!("{}{BASE_PATH}", origin(door, headers)),
        id,
        door.task_hub.as_deref(),
    );
    let mut response = (StatusCode::ACCEPTED, Json(urls.payload)).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&urls.status) {
        h.insert(LOCATION, v);
    }
    h.insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_STARTED));
    response
}

/// The status object with Durable Functions' codes: 202 + `Location` + `Retry-After`
/// while live, 200 when ended, 500 for Failed with `returnInternalServerErrorOnFailure`.
async fn status_response(
    door: &Door,
    show: Show,
    record: InstanceRecord,
    location: String,
) -> ApiResult {
    let history = if show.history {
        let events = door
            .state
            .instance_history(record.instance_id.as_str(), None)
            .await?;
        Some(json::history_events(
            &events,
            show.input,
            show.history_output,
        ))
    } else {
        None
    };
    let body = json::status_object(&record, show.input, history);
    let code = match record.status {
        RuntimeStatus::Running
        | RuntimeStatus::Pending
        | RuntimeStatus::ContinuedAsNew
        | RuntimeStatus::Suspended => StatusCode::ACCEPTED,
        RuntimeStatus::Failed if show.failure_as_500 => StatusCode::INTERNAL_SERVER_ERROR,
        RuntimeStatus::Failed
        | RuntimeStatus::Completed
        | RuntimeStatus::Canceled
        | RuntimeStatus::Terminated => StatusCode::OK,
    };
    let mut response = (code, Json(body)).into_response();
    if code == StatusCode::ACCEPTED {
        let h = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&location) {
            h.insert(LOCATION, v);
        }
        h.insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_RUNNING));
    }
    Ok(response)
}

/// `GET instances/{instanceId}`.
pub(super) async fn status(
    door: Door,
    Segments(id): Segments<String>,
    params: Params,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> ApiResult {
    orchestration(&id)?;
    let show = Show::from_params(&params)?;
    let Some(record) = door.state.get_instance(&id).await? else {
        return Err(unknown(&id));
    };
    let location = format!(
        "{}{}",
        origin(&door, &headers),
        uri.path_and_query().map_or(uri.path(), |p| p.as_str())
    );
    status_response(&door, show, record, location).await
}

/// `GET instances`: filters, `top`, and paging through `x-ms-continuation-token`.
pub(super) async fn list(door: Door, params: Params, headers: HeaderMap) -> ApiResult {
    let query = InstanceQuery {
        page_size: params.count("top")?.unwrap_or(0),
        continuation_token: json::continuation(&headers)?,
        ..json::instance_query(&params)?
    };
    let show_input = params.flag("showInput", true)?;
    let page = door.state.query_instances(&query).await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|r| json::status_object(r, show_input, None))
        .collect();
    Ok(with_continuation(Json(items).into_response(), page.next))
}

/// `GET instanceCounts?…`: how many instances the list's filters match, per status (an
/// extension of this server; the dashboard's status counts and bulk-action previews).
pub(super) async fn counts(door: Door, params: Params) -> ApiResult {
    let counts = door
        .state
        .count_instances(&json::instance_query(&params)?)
        .await?;
    Ok(Json(json::status_counts(&counts)).into_response())
}

/// Adds `x-ms-continuation-token` when another page exists.
pub(super) fn with_continuation(mut response: Response, next: Option<String>) -> Response {
    if let Some(v) = next.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert(CONTINUATION_HEADER, v);
    }
    response
}

fn deleted(n: u32) -> Response {
    Json(json!({ "instancesDeleted": n })).into_response()
}

/// `DELETE instances/{instanceId}`: 200 `{"instancesDeleted": 1}`, 404 unknown, 412 live.
pub(super) async fn purge(door: Door, Segments(id): Segments<String>) -> ApiResult {
    Ok(deleted(door.state.purge_finished_instance(&id).await?))
}

/// `DELETE instances?createdTimeFrom=…[&createdTimeTo=…][&runtimeStatus=…]`: 404 when
/// nothing matched.
pub(super) async fn purge_where(door: Door, params: Params) -> ApiResult {
    let Some(created_from) = params.time("createdTimeFrom")? else {
        return Err(invalid(
            "query parameter 'createdTimeFrom' is required to purge by filter (Durable Functions requires it too)",
        ));
    };
    let criteria = PurgeCriteria {
        created_from: Some(created_from),
        created_to: params.time("createdTimeTo")?,
        statuses: params.statuses("runtimeStatus")?,
        timeout: None,
    };
    match door.state.purge_where(&criteria, false).await? {
        (0, _) => Err(not_found("no finished instance matches the filter")),
        (n, _) => Ok(deleted(n)),
    }
}

fn accepted_or_gone(delivery: Delivery, id: &str) -> Response {
    match delivery {
        Delivery::Accepted => StatusCode::ACCEPTED.into_response(),
        Delivery::InstanceEnded => gone(id),
    }
}

/// `POST instances/{instanceId}/raiseEvent/{eventName}`: body = event data (JSON).
pub(super) async fn raise_event(
    door: Door,
    Segments((id, event_name)): Segments<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    orchestration(&id)?;
    let data = json::json_body(&body, "the request body (the event data)")?;
    if data.is_some() {
        let json_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json_type {
            return Err(invalid(
                "event data must be sent with Content-Type: application/json",
            ));
        }
    }
    let delivery = door.state.raise_event(&id, &event_name, data).await?;
    Ok(accepted_or_gone(delivery, &id))
}

/// `POST instances/{instanceId}/terminate?reason=`: the reason becomes the output.
pub(super) async fn terminate(
    door: Door,
    Segments(id): Segments<String>,
    params: Params,
) -> ApiResult {
    orchestration(&id)?;
    let output = params.get("reason").map(json::json_string);
    let delivery = door.state.terminate_instance(&id, output, false).await?;
    Ok(accepted_or_gone(delivery, &id))
}

/// `POST instances/{instanceId}/suspend?reason=`.
pub(super) async fn suspend(
    door: Door,
    Segments(id): Segments<String>,
    params: Params,
) -> ApiResult {
    set_suspended(&door, &id, &params, true).await
}

/// `POST instances/{instanceId}/resume?reason=`.
pub(super) async fn resume(
    door: Door,
    Segments(id): Segments<String>,
    params: Params,
) -> ApiResult {
    set_suspended(&door, &id, &params, false).await
}

async fn set_suspended(door: &Door, id: &str, params: &Params, suspend: bool) -> ApiResult {
    orchestration(id)?;
    let reason = params.get("reason").map(Into::into);
    let delivery = door.state.set_suspended(id, suspend, reason).await?;
    Ok(accepted_or_gone(delivery, id))
}

/// `POST instances/{instanceId}/rewind?reason=`: 412 unless Failed.
pub(super) async fn rewind(
    door: Door,
    Segments(id): Segments<String>,
    params: Params,
) -> ApiResult {
    let reason = params.get("reason").map(Into::into);
    door.state.rewind_instance(&id, reason).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `POST instances/{instanceId}/restart[?restartWithNewInstanceId=false]`: the check-status
/// payload of the new execution (a new id unless told otherwise, as Durable Functions'
/// `RestartAsync` defaults), with wait-or-check-status like start.
pub(super) async fn restart(
    door: Door,
    Segments(id): Segments<String>,
    params: Params,
    headers: HeaderMap,
) -> ApiResult {
    orchestration(&id)?;
    let new_id = params.flag("restartWithNewInstanceId", true)?;
    let wait = wait_params(&params)?;
    let target = door.state.restart_instance(&id, new_id).await?;
    check_status_or_wait(&door, &headers, target.as_str(), wait).await
}
