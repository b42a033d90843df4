//! The one mapping from service errors to gRPC status codes (PROTOCOL.md §3.0). The match
//! has no `_` arm: a new variant does not compile until someone picks its code.

use tonic::Status;

use crate::engine::EngineError;
use crate::service::ServiceError;
use crate::store::StoreError;

impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::InvalidArgument(m) => Status::invalid_argument(m),
            ServiceError::NotFound(m) => Status::not_found(m),
            ServiceError::AlreadyExists(m) => Status::already_exists(m),
            ServiceError::FailedPrecondition(m) => Status::failed_precondition(m),
            ServiceError::DeadlineExceeded(m) => Status::deadline_exceeded(m),
            ServiceError::ResourceExhausted(m) | ServiceError::LimitReached(m) => {
                Status::resource_exhausted(m)
            }
            ServiceError::Unimplemented(m) => Status::unimplemented(m),
            // UNAVAILABLE: the code gRPC retry policies retry (the .NET SDK's default policy
            // retries only this one).
            ServiceError::Overloaded(m) => Status::unavailable(m),
            ServiceError::ShuttingDown => Status::unavailable("the sidecar is shutting down"),
            ServiceError::Engine(e) => match e {
                EngineError::InvalidAction { .. } => Status::invalid_argument(e.to_string()),
                EngineError::CorruptHistory(_) => {
                    tracing::error!(error = %e, "corrupt history");
                    Status::internal("stored history is inconsistent; see the sidecar log")
                }
            },
            ServiceError::Store(e) => match e {
                StoreError::NotFound(id) => Status::not_found(format!("no orchestration instance with id '{id}'")),
                StoreError::AlreadyExists { instance_id, status } => Status::already_exists(format!(
                    "an orchestration instance with id '{instance_id}' already exists with status {status}"
                )),
                StoreError::LeaseLost(id) => Status::not_found(format!(
                    "instance '{id}' changed while the work item was outstanding"
                )),
                StoreError::Unavailable(_) => {
                    tracing::error!(error = %e, "store unavailable");
                    Status::unavailable("the database is unavailable")
                }
                StoreError::DiskFull => Status::unavailable(crate::store::DISK_FULL_MESSAGE),
                StoreError::Corrupt(_) | StoreError::Backend(_) => {
                    tracing::error!(error = %e, "store failure");
                    Status::internal("database error; see the sidecar log")
                }
            },
        }
    }
}
