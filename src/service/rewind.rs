//! `RewindInstance` (PROTOCOL.md §3.7): request validation and the error mapping; the
//! rewind itself is the engine's (`Engine::rewind_instance`, §4.10 Flow B).

use super::client::instance_id;
use super::{AppState, Result, ServiceError};
use crate::engine::RewindError;

impl AppState {
    /// `RewindInstance`: only FAILED instances; RUNNING when this returns.
    pub async fn rewind_instance(&self, id: &str, reason: Option<String>) -> Result<()> {
        let id = instance_id(id)?;
        if id.is_entity() {
            return Err(ServiceError::NotFound(format!(
                "no orchestration instance with id '{id}' ('@' ids name entities)"
            )));
        }
        self.engine()
            .rewind_instance(&id, reason.as_deref())
            .await?;
        Ok(())
    }
}

impl From<RewindError> for ServiceError {
    fn from(err: RewindError) -> Self {
        match err {
            RewindError::NotFound(_) => Self::NotFound(err.to_string()),
            // The JS client shows this text; a DTS e2e test matches it against
            // /not allow|precondition|running/i (PROTOCOL.md §3.7).
            RewindError::NotFailed { .. } | RewindError::Contended(_) => {
                Self::FailedPrecondition(err.to_string())
            }
            RewindError::Engine(e) => Self::Engine(e),
            RewindError::Store(e) => Self::from(e),
        }
    }
}
