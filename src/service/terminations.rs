//! `SkipGracefulOrchestrationTerminations` (PROTOCOL.md §3.14): validates the batch, then
//! has the engine end each orchestration without its worker
//! (`Engine::terminate_without_worker`).

use std::collections::HashSet;

use super::client::instance_batch;
use super::{AppState, Result};

impl AppState {
    /// Terminates every id of the batch that can be; returns the ids that were not (unknown,
    /// entities, already terminal, holding entity locks), in request order. The batch is
    /// checked whole first, so a malformed id terminates nothing.
    pub async fn skip_graceful_terminations(
        &self,
        ids: &[String],
        reason: Option<String>,
    ) -> Result<Vec<String>> {
        let batch = instance_batch(ids)?;
        let mut seen = HashSet::with_capacity(batch.len());
        let mut unterminated = Vec::new();
        for id in batch {
            // A repeated id is answered like its first occurrence.
            if !seen.insert(id.clone()) {
                continue;
            }
            let outcome = self
                .engine()
                .terminate_without_worker(&id, reason.as_deref())
                .await?;
            tracing::debug!(instance_id = %id, ?outcome, "skip-graceful termination");
            if !outcome.terminated() {
                unterminated.push(id.into_string());
            }
        }
        Ok(unterminated)
    }
}
