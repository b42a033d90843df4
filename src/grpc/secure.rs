//! The gRPC door's side of `auth` and `tls`: how a refused call is answered.

use tonic::Status;

use crate::auth::Denied;

/// UNAUTHENTICATED for a missing or unknown token, PERMISSION_DENIED outside the role.
pub(super) fn refuse(denied: &Denied) -> http::Response<tonic::body::Body> {
    let status = match denied {
        Denied::Missing | Denied::Unknown => Status::unauthenticated(denied.message()),
        Denied::Forbidden { .. } | Denied::OtherHub { .. } => {
            Status::permission_denied(denied.message())
        }
    };
    status.into_http()
}
