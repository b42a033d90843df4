//! The service error: what went wrong, in terms the transport maps to status codes
//! (PROTOCOL.md §3.0). Messages are for the client: no SQL, paths or secrets.

use crate::engine::{CompletionError, EngineError};
use crate::store::StoreError;

/// Failures of a use case.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Malformed request.
    #[error("{0}")]
    InvalidArgument(String),
    /// Named instance or work item does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Start rejected by the id-reuse policy.
    #[error("{0}")]
    AlreadyExists(String),
    /// The instance's state forbids the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A wait passed its deadline.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The request is larger than the configured limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A configured bound on what the server holds would be exceeded (e.g. task hubs).
    #[error("{0}")]
    LimitReached(String),
    /// Owned by a later release.
    #[error("{0}")]
    Unimplemented(String),
    /// Too many writes are waiting for the store; the client should retry later.
    #[error("{0}")]
    Overloaded(String),
    /// The server is draining.
    #[error("the sidecar is shutting down")]
    ShuttingDown,
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// The engine rejected something.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(id) => Self::NotFound(format!("no orchestration instance with id '{id}'")),
            StoreError::AlreadyExists { instance_id, status } => Self::AlreadyExists(format!(
                "an orchestration instance with id '{instance_id}' already exists with status {status}"
            )),
            other => Self::Store(other),
        }
    }
}

impl From<CompletionError> for ServiceError {
    fn from(err: CompletionError) -> Self {
        match err {
            CompletionError::Stale(token) => Self::NotFound(format!(
                "no outstanding work item matches completion token '{token}' (already completed, abandoned or superseded)"
            )),
            CompletionError::Invalid(msg) => Self::InvalidArgument(msg),
            CompletionError::Rejected(e) => {
                Self::InvalidArgument(format!("{e}; the orchestration was failed"))
            }
            CompletionError::Store(e) => Self::Store(e),
        }
    }
}
