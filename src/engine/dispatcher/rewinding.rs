//! The async side of rewind (PROTOCOL.md §4.10): snapshot the instances involved, plan
//! with the pure `engine::rewind`, commit the plan with one store call, then bring the
//! in-memory dispatch state in line with it.
//!
//! In memory, a rewind touches three kinds of instance:
//! * rewound ones (the target and its failed descendants) get a new execution and
//!   history: their cached history is dropped and they are made ready, so the wake-up
//!   trigger the store enqueued dispatches them at once;
//! * recreated children are made ready like any new instance;
//! * relinked (live) children keep their execution and history length, so neither the
//!   history cache nor the commit guard can notice that their `ExecutionStarted` changed.
//!   Their cached history is dropped and any flight that may have read the old one is
//!   marked superseded: it is built again instead of being committed with the old link.
//!   An episode already handed to the writer when the rewind commits still reports to
//!   the parent's old execution; the store readdresses such a notice to the execution
//!   that replaced it (`instances.rewound_from`), so it is not lost either.

use super::{CompletionError, Engine, Episode, RandomIds};
use crate::domain::{InstanceId, RewindPlan, RuntimeStatus};
use crate::engine::rewind::{self, Planned, RewindError, Root, Snapshot, Snapshots};
use crate::proto as pb;
use crate::store::{RewindOutcome, StoreError};

/// Tries before a rewind whose guards keep failing gives up.
const MAX_ATTEMPTS: usize = 5;

impl Engine {
    /// `RewindInstance` (PROTOCOL.md §3.7, §4.10 Flow B): rewrites a FAILED instance's
    /// history server-side and restarts it. Returns once the rewind is durable, so the
    /// instance already reads RUNNING.
    pub async fn rewind_instance(
        &self,
        id: &InstanceId,
        reason: Option<&str>,
    ) -> Result<(), RewindError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(record) = self.store.instance(id).await? else {
                return Err(RewindError::NotFound(id.clone()));
            };
            if record.status != RuntimeStatus::Failed {
                return Err(RewindError::NotFailed {
                    instance_id: id.clone(),
                    status: record.status,
                });
            }
            let Some((execution, history)) = self.store.history(id).await? else {
                return Err(RewindError::NotFound(id.clone()));
            };
            if execution != record.execution_id {
                continue;
            }
            let root = Snapshot { record, history };
            let plan = self.plan_rewind(Root::Failed(&root), reason).await?;
            match self.store.rewind(&plan).await {
                Ok(outcome) => {
                    self.rewound(&plan, outcome);
                    tracing::info!(
                        instance_id = %id,
                        execution_id = %plan.executions[0].execution_id,
                        reason = reason.unwrap_or_default(),
                        children_rewound = plan.executions.len() - 1,
                        children_recreated = plan.recreated.len(),
                        children_relinked = plan.relinked.len(),
                        "instance rewound"
                    );
                    return Ok(());
                }
                Err(StoreError::LeaseLost(changed)) => {
                    tracing::debug!(instance_id = %id, changed = %changed, "instance changed while being rewound; planning again");
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(RewindError::Contended(id.clone()))
    }

    /// Plans from `root`, loading the children the planner asks for.
    async fn plan_rewind(
        &self,
        root: Root<'_>,
        reason: Option<&str>,
    ) -> Result<RewindPlan, RewindError> {
        let mut snapshots = Snapshots::new();
        loop {
            match rewind::plan_rewind(root, &snapshots, reason, self.clock.now(), &mut RandomIds)? {
                Planned::Ready(plan) => return Ok(plan),
                Planned::Need(ids) => {
                    for id in ids {
                        let snapshot = self.snapshot(&id).await?;
                        snapshots.insert(id, snapshot);
                    }
                }
            }
        }
    }

    /// A child as the planner needs it: the record, plus the history of a FAILED one.
    /// Reads are not one snapshot; the store's guards reject a plan built on a change.
    async fn snapshot(&self, id: &InstanceId) -> Result<Option<Snapshot>, StoreError> {
        let Some(record) = self.store.instance(id).await? else {
            return Ok(None);
        };
        if record.status != RuntimeStatus::Failed {
            return Ok(Some(Snapshot {
                record,
                history: Vec::new(),
            }));
        }
        Ok(self
            .store
            .history(id)
            .await?
            .map(|(_, history)| Snapshot { record, history }))
    }

    /// A worker answered its episode with `rewindOrchestration{newHistory}` (PROTOCOL.md
    /// §4.10 Flow A step 3): the history is replaced as given and the rest is as for
    /// `RewindInstance`.
    pub(super) async fn complete_with_rewind(
        &self,
        id: InstanceId,
        flight_token: u64,
        episode: Box<Episode>,
        history: Vec<pb::HistoryEvent>,
        token_text: String,
    ) -> Result<(), CompletionError> {
        let now = self.clock.now();
        // The rewind commit does not take the claim; give it back whatever happens.
        self.release_claim(&id, episode.lease);
        let root = Root::Replacement {
            record: &episode.record,
            expected_history_len: u32::try_from(episode.past.len()).unwrap_or(u32::MAX),
            consumed: &episode.consumed,
            history: &history,
        };
        let result = match self.plan_rewind(root, None).await {
            Ok(plan) => match self.store.rewind(&plan).await {
                Ok(outcome) => Ok((plan, outcome)),
                Err(err) => Err(RewindError::Store(err)),
            },
            Err(err) => Err(err),
        };
        match result {
            Ok((plan, outcome)) => {
                self.rewound(&plan, outcome);
                tracing::info!(
                    instance_id = %id,
                    execution_id = %plan.executions[0].execution_id,
                    children_rewound = plan.executions.len() - 1,
                    children_recreated = plan.recreated.len(),
                    children_relinked = plan.relinked.len(),
                    "instance rewound by its worker"
                );
                self.finish_flight(&id, flight_token, Some(true), now);
                Ok(())
            }
            Err(RewindError::Store(StoreError::LeaseLost(_))) => {
                self.lock().histories.remove(&id);
                tracing::info!(instance_id = %id, "instance changed while its episode was out; rewind dropped");
                self.finish_flight(&id, flight_token, Some(true), now);
                Err(CompletionError::Stale(token_text))
            }
            Err(RewindError::Store(err)) => {
                self.lock().histories.remove(&id);
                tracing::warn!(instance_id = %id, error = %err, "rewind commit failed; the episode will be redelivered");
                self.finish_flight(&id, flight_token, None, now + chrono::Duration::seconds(1));
                Err(err.into())
            }
            Err(err) => {
                tracing::warn!(instance_id = %id, error = %err, "worker's rewindOrchestration cannot be applied");
                self.finish_flight(&id, flight_token, Some(true), now);
                Err(CompletionError::Invalid(format!(
                    "rewindOrchestration cannot be applied: {err}"
                )))
            }
        }
    }

    /// Brings the dispatch state in line with a committed rewind (see the module docs).
    fn rewound(&self, plan: &RewindPlan, outcome: RewindOutcome) {
        let now = self.clock.now();
        let mut st = self.lock();
        for x in &plan.executions {
            st.histories.remove(&x.instance_id);
            st.abandons.remove(&x.instance_id);
            st.mark_ready(x.instance_id.clone());
            st.arm_timers(&x.messages, now);
        }
        for child in &plan.recreated {
            st.mark_ready(child.instance_id.clone());
        }
        for link in &plan.relinked {
            st.histories.remove(&link.instance_id);
            if let Some(f) = st.flights.get_mut(&link.instance_id) {
                f.superseded = true;
            }
        }
        for item in outcome.activities {
            st.activities.moved(item);
        }
        drop(st);
        self.wake.notify_one();
        let touched = plan
            .executions
            .iter()
            .map(|x| &x.instance_id)
            .chain(plan.recreated.iter().map(|c| &c.instance_id))
            .chain(plan.relinked.iter().map(|l| &l.instance_id));
        for id in touched {
            self.watchers.notify(id);
        }
    }
}
