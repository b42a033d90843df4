//! Nothing door-specific lives here: the HTTP door's refusal (a JSON 401 or 403) is
//! built in `crate::http`, the gRPC door's status in `crate::grpc`, so neither axum nor
//! tonic types enter this module. This file only names the HTTP statuses and header.

/// `WWW-Authenticate` value sent with every HTTP 401.
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"durabletask-sidecar\"";

/// HTTP status of a refusal: 401 when the token is missing or unknown, 403 when the
/// role does not cover the route.
pub fn status(denied: &super::Denied) -> http::StatusCode {
    match denied {
        super::Denied::Missing | super::Denied::Unknown => http::StatusCode::UNAUTHORIZED,
        super::Denied::Forbidden { .. } | super::Denied::OtherHub { .. } => {
            http::StatusCode::FORBIDDEN
        }
    }
}
