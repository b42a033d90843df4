//! The HTTP door's side of `auth` and `tls`: the JSON 401/403 of a refused request, and
//! TLS connections as an axum listener.

use std::net::SocketAddr;

use axum::http::{header, HeaderValue};
use axum::response::Response;

use crate::auth::{self, Denied};
use crate::tls::TlsIncoming;

/// 401 (with `WWW-Authenticate: Bearer`) or 403, with the usual JSON error body.
pub(super) fn refuse(denied: &Denied) -> Response {
    let status = auth::http::status(denied);
    let code = match denied {
        Denied::Missing | Denied::Unknown => "Unauthorized",
        Denied::Forbidden { .. } | Denied::OtherHub { .. } => "Forbidden",
    };
    let mut response = super::error::error_body(status, code, &denied.message());
    if status == axum::http::StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(auth::http::WWW_AUTHENTICATE),
        );
    }
    response
}

/// Finished handshakes, as axum's `serve` takes connections.
pub(super) struct TlsListener(pub(super) TlsIncoming);

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.0.next().await {
            Some(accepted) => accepted,
            // The accept loop stops only at shutdown, which ends `serve` by itself.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}
