//! The tower layer both doors wrap their routes in: reads `authorization`, asks the
//! `Authenticator` whether the call's role requirement (`rpc`) is met, and either passes
//! the request on or answers with the door's refusal (a gRPC status or a JSON 401/403).
//! With no tokens file it passes everything through untouched.

use std::task::{Context, Poll};

use futures::future::{ready, Either, Ready};
use tower::{Layer, Service};

use super::{rpc, Authenticator, Denied, Need};

/// Which door a layer guards: decides how calls are classified and named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// `--port`: the path is `/Service/Method`.
    Grpc,
    /// `--http-port`: method and path.
    Http,
}

/// Builds the door's answer to a refused call.
pub type Refuse<B> = fn(&Denied) -> http::Response<B>;

/// Guards every request of a door (see the module docs).
pub struct AuthLayer<B> {
    auth: Option<Authenticator>,
    door: Door,
    refuse: Refuse<B>,
}

impl<B> Clone for AuthLayer<B> {
    fn clone(&self) -> Self {
        Self {
            auth: self.auth.clone(),
            door: self.door,
            refuse: self.refuse,
        }
    }
}

impl<B> std::fmt::Debug for AuthLayer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer")
            .field("auth", &self.auth)
            .field("door", &self.door)
            .finish()
    }
}

impl<B> AuthLayer<B> {
    /// A layer for `door`; `None` lets every call through.
    pub fn new(auth: Option<Authenticator>, door: Door, refuse: Refuse<B>) -> Self {
        Self { auth, door, refuse }
    }
}

impl<S, B> Layer<S> for AuthLayer<B> {
    type Service = Auth<S, B>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service `AuthLayer` makes.
pub struct Auth<S, B> {
    inner: S,
    layer: AuthLayer<B>,
}

impl<S: Clone, B> Clone for Auth<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: std::fmt::Debug, B> std::fmt::Debug for Auth<S, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, ReqB, B> Service<http::Request<ReqB>> for Auth<S, B>
where
    S: Service<http::Request<ReqB>, Response = http::Response<B>>,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = Either<Ready<Result<http::Response<B>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        let Some(auth) = &self.layer.auth else {
            return Either::Right(self.inner.call(req));
        };
        let path = req.uri().path();
        let need = match self.layer.door {
            Door::Grpc => rpc::grpc(path),
            Door::Http => rpc::http(req.method(), path),
        };
        if need == Need::Open {
            return Either::Right(self.inner.call(req));
        }
        let name = || match self.layer.door {
            Door::Grpc => path.rsplit('/').next().unwrap_or(path).to_owned(),
            Door::Http => format!("{} {path}", req.method()),
        };
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let http_hub = match self.layer.door {
            Door::Http => crate::http::requested_task_hub(req.uri()).ok().flatten(),
            Door::Grpc => None,
        };
        let hub = match self.layer.door {
            Door::Grpc => req
                .headers()
                .get(crate::grpc::TASK_HUB_METADATA)
                .and_then(|v| v.to_str().ok()),
            // A malformed query is refused by the door itself (400).
            Door::Http => http_hub.as_deref(),
        };
        match auth.check(header, need, hub, name) {
            Ok(_) => Either::Right(self.inner.call(req)),
            Err(denied) => {
                // The reason only: the token itself is never logged.
                tracing::debug!(path, reason = %denied.message(), "call refused");
                Either::Left(ready(Ok((self.layer.refuse)(&denied))))
            }
        }
    }
}
