//! The one mapping from service errors to HTTP statuses, and the JSON error body every
//! failed request gets: `{"error": "<code>", "message": "<what was wrong>"}`. The match
//! has no `_` arm: a new variant does not compile until someone picks its status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::engine::EngineError;
use crate::service::ServiceError;
use crate::store::StoreError;

/// `Retry-After` of an overload refusal: the pending writes drain within milliseconds,
/// so the smallest value the header can say.
const RETRY_AFTER_SECONDS: &str = "1";

/// A failed request: the service's error, answered with its status and a JSON body.
#[derive(Debug)]
pub(super) struct ApiError(pub(super) ServiceError);

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        Self(err)
    }
}

/// Shorthand for a malformed request (bad JSON body, bad query value).
pub(super) fn invalid(message: impl Into<String>) -> ApiError {
    ApiError(ServiceError::InvalidArgument(message.into()))
}

/// Shorthand for an unknown instance or entity.
pub(super) fn not_found(message: impl Into<String>) -> ApiError {
    ApiError(ServiceError::NotFound(message.into()))
}

/// `Result` of a handler.
pub(super) type ApiResult<T = Response> = Result<T, ApiError>;

/// A JSON error response.
pub(super) fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

/// 410 Gone: the instance has already ended, so the request means nothing (Durable
/// Functions answers so for raise event, terminate, suspend and resume).
pub(super) fn gone(instance_id: &str) -> Response {
    error_body(
        StatusCode::GONE,
        "Gone",
        &format!("instance '{instance_id}' has already completed, failed or been terminated"),
    )
}

/// The answer for paths no route serves.
pub(super) async fn no_route(uri: axum::http::Uri) -> Response {
    error_body(
        StatusCode::NOT_FOUND,
        "NoRoute",
        &format!(
            "no route for '{}'; the API lives under {} (GET /openapi.json lists it)",
            uri.path(),
            super::BASE_PATH
        ),
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self.0 {
            ServiceError::InvalidArgument(m) => (StatusCode::BAD_REQUEST, "BadRequest", m),
            ServiceError::NotFound(m) => (StatusCode::NOT_FOUND, "NotFound", m),
            ServiceError::AlreadyExists(m) => (StatusCode::CONFLICT, "Conflict", m),
            ServiceError::FailedPrecondition(m) => {
                (StatusCode::PRECONDITION_FAILED, "PreconditionFailed", m)
            }
            ServiceError::DeadlineExceeded(m) => (StatusCode::GATEWAY_TIMEOUT, "Timeout", m),
            ServiceError::ResourceExhausted(m) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", m)
            }
            ServiceError::LimitReached(m) => (StatusCode::TOO_MANY_REQUESTS, "LimitReached", m),
            ServiceError::Unimplemented(m) => (StatusCode::NOT_IMPLEMENTED, "NotImplemented", m),
            ServiceError::Overloaded(m) => {
                let mut response =
                    error_body(StatusCode::SERVICE_UNAVAILABLE, "Overloaded", &m);
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static(RETRY_AFTER_SECONDS),
                );
                return response;
            }
            ServiceError::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "the sidecar is shutting down".to_string(),
            ),
            ServiceError::Engine(e) => match e {
                EngineError::InvalidAction { .. } => {
                    (StatusCode::BAD_REQUEST, "BadRequest", e.to_string())
                }
                EngineError::CorruptHistory(_) => {
                    tracing::error!(error = %e, "corrupt history");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Internal",
                        "stored history is inconsistent; see the sidecar log".to_string(),
                    )
                }
            },
            ServiceError::Store(e) => match e {
                StoreError::NotFound(id) => (
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("no orchestration instance with id '{id}'"),
                ),
                StoreError::AlreadyExists {
                    instance_id,
                    status,
                } => (
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!(
                        "an orchestration instance with id '{instance_id}' already exists with status {status}"
                    ),
                ),
                StoreError::LeaseLost(id) => (
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!("instance '{id}' changed while the request was in progress; retry"),
                ),
                StoreError::Unavailable(_) => {
                    tracing::error!(error = %e, "store unavailable");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Unavailable",
                        "the database is unavailable".to_string(),
                    )
                }
                StoreError::DiskFull => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable",
                    crate::store::DISK_FULL_MESSAGE.to_string(),
                ),
                StoreError::Corrupt(_) | StoreError::Backend(_) => {
                    tracing::error!(error = %e, "store failure");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Internal",
                        "database error; see the sidecar log".to_string(),
                    )
                }
            },
        };
        let mut response = error_body(status, code, &message);
        // Every 503 is worth retrying (full disk, database down, draining): say when.
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        response
    }
}
