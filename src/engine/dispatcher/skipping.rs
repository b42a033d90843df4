//! `SkipGracefulOrchestrationTerminations` (PROTOCOL.md §3.14): the sidecar ends an
//! orchestration as TERMINATED itself, without sending the termination to a worker.
//!
//! The termination is committed as the episode a worker would have answered with a
//! TERMINATED completion: the history gets `[OrchestratorStarted, ExecutionTerminated,
//! ExecutionCompleted]`, the parent is told, and the inbox goes. An episode already out
//! with a worker fails its commit guard afterwards (the instance is terminal), so its
//! answer is moot; a commit that lands first makes this one re-read and try again.

use super::Engine;
use crate::domain::events::{event, orchestrator_started};
use crate::domain::InstanceId;
use crate::engine::apply::{self, ApplyContext};
use crate::engine::state::OrchestrationState;
use crate::engine::EngineError;
use crate::proto as pb;
use crate::store::{Lease, StoreError, TerminateOutcome};
use pb::history_event::EventType;

/// What became of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipOutcome {
    /// It is TERMINATED now.
    Terminated,
    /// No orchestration has that id (unknown, or an entity).
    NotAnOrchestration,
    /// It had already ended.
    AlreadyTerminal,
    /// It holds entity locks (a critical section is open).
    HoldsEntityLocks,
    /// Its stored history cannot be replayed into a termination.
    Unreplayable,
    /// Other commits kept overtaking this one.
    Contended,
}

impl SkipOutcome {
    /// Whether the instance ended as asked.
    pub fn terminated(self) -> bool {
        self == Self::Terminated
    }
}

/// Tries before an instance whose commits keep overtaking this one is reported as not
/// terminated.
const MAX_ATTEMPTS: usize = 5;

impl Engine {
    /// Terminates `id` without its worker; see the module docs. Instances that are
    /// unknown, entities, terminal, or hold entity locks are left as they are.
    pub async fn terminate_without_worker(
        &self,
        id: &InstanceId,
        reason: Option<&str>,
    ) -> Result<SkipOutcome, StoreError> {
        if id.is_entity() {
            return Ok(SkipOutcome::NotAnOrchestration);
        }
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now();
            let work = self
                .store
                .orchestration_work(id, now, self.config.max_batch_messages, None)
                .await?;
            let Some(work) = work else {
                // Unknown or terminal: which one only changes the log line. A live one
                // is claimed by another process (shared store): its episode ends soon.
                match self.store.instance(id).await? {
                    Some(r) if !r.status.is_terminal() => {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                    Some(_) => return Ok(SkipOutcome::AlreadyTerminal),
                    None => return Ok(SkipOutcome::NotAnOrchestration),
                }
            };
            // Every exit below that does not commit gives the claim back.
            let claim = ClaimGuard {
                engine: self,
                id,
                lease: work.lease,
                armed: true,
            };
            let work_lease = work.lease;
            let history = work.history.unwrap_or_default();
            let terminated = event(
                -1,
                now,
                EventType::ExecutionTerminated(pb::ExecutionTerminatedEvent {
                    input: reason.map(str::to_owned),
                    recurse: false,
                }),
            );
            let mut new_events = vec![orchestrator_started(now)];
            let mut consumed = Vec::new();
            let state = match OrchestrationState::from_events(history.iter()) {
                Ok(state) => state,
                Err(err) => return Ok(self.unreplayable(id, &err)),
            };
            if state.started.is_none() {
                // Not started: its ExecutionStarted still waits in the inbox and becomes
                // part of this one episode; a scheduled start not yet visible means there
                // is nothing to replay at all, so the store ends it in place.
                let start = work
                    .messages
                    .into_iter()
                    .find(|m| matches!(m.event.event_type, Some(EventType::ExecutionStarted(_))));
                let Some(start) = start else {
                    drop(claim);
                    return self.terminate_unstarted(id, terminated, reason, now).await;
                };
                consumed.push(start.seq);
                new_events.push(start.event);
            } else if !state.open_locks.is_empty() {
                // Ending a critical section from outside is what §3.14 leaves out.
                return Ok(SkipOutcome::HoldsEntityLocks);
            }
            new_events.push(terminated);
            let record = work.record;
            let ctx = ApplyContext {
                instance_id: id,
                execution_id: &record.execution_id,
                past: &history,
                new_events: &new_events,
                consumed: &consumed,
                now,
            };
            let mut transition = match apply::terminate(&ctx, reason) {
                Ok(t) => t,
                Err(err) => return Ok(self.unreplayable(id, &err)),
            };
            // No worker reported a custom status; the last one stays.
            transition.custom_status = record.custom_status.clone();
            let committed = self
                .store
                .commit_orchestration(&transition, work_lease)
                .await;
            // A landed commit gave the claim back; a refused one may not have.
            claim.disarm_if(committed.is_ok());
            match committed {
                Ok(outcome) => {
                    self.lock().committed(&transition, outcome, now);
                    self.wake.notify_one();
                    self.watchers.notify(id);
                    tracing::info!(instance_id = %id, "terminated without its worker");
                    return Ok(SkipOutcome::Terminated);
                }
                Err(StoreError::LeaseLost(_)) => {
                    tracing::debug!(instance_id = %id, "instance changed while being terminated; reading it again");
                }
                Err(err) => return Err(err),
            }
        }
        Ok(SkipOutcome::Contended)
    }

    fn unreplayable(&self, id: &InstanceId, err: &EngineError) -> SkipOutcome {
        tracing::warn!(instance_id = %id, error = %err, "cannot terminate without the worker");
        SkipOutcome::Unreplayable
    }

    async fn terminate_unstarted(
        &self,
        id: &InstanceId,
        terminated: pb::HistoryEvent,
        reason: Option<&str>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<SkipOutcome, StoreError> {
        let outcome = self
            .store
            .terminate_instance(id, terminated, reason.map(str::to_owned), now)
            .await?;
        Ok(match outcome {
            TerminateOutcome::TerminatedDirectly => {
                self.watchers.notify(id);
                SkipOutcome::Terminated
            }
            // Only a child can be told to wait for its first episode, and its start is
            // visible at once; kept for the race with its creation.
            TerminateOutcome::Enqueued => {
                self.instance_ready(id);
                SkipOutcome::Terminated
            }
            TerminateOutcome::AlreadyTerminal => SkipOutcome::AlreadyTerminal,
        })
    }
}

/// Releases an instance claim when dropped, unless a commit consumed it.
struct ClaimGuard<'a> {
    engine: &'a Engine,
    id: &'a InstanceId,
    lease: Lease,
    armed: bool,
}

impl ClaimGuard<'_> {
    fn disarm_if(mut self, committed: bool) {
        self.armed = !committed;
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.engine.release_claim(self.id, self.lease);
        }
    }
}
