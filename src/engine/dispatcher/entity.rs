//! The dispatcher's entity half (PROTOCOL.md §5.3): one step in flight per entity. A
//! step reads the record and visible queue, commits the lock bookkeeping the pure
//! planner decided, then hands the runnable operations to a worker as one V2 batch;
//! the worker's `EntityBatchResult` is committed with the same version guard. The step's
//! claim on the entity (shared stores) is held from the read until the step ends, across
//! both commits, and given back then.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::queue::ReadyQueue;
use super::tokens::{backoff, format_token, parse_token, ENTITY_PREFIX};
use super::{DispatchState, Engine, RandomIds};
use crate::domain::{Change, EntityRecord, EntityTransition, InstanceId};
use crate::engine::entity::{apply_entity_result, entity_request, plan_entity};
use crate::engine::executor::{Reservation, StreamId, Unavailable, WorkKind, WorkTarget};
use crate::engine::CompletionError;
use crate::metrics::WorkKind as MetricKind;
use crate::proto as pb;
use crate::store::{CommitOutcome, InboxMessage, Lease, StoreError};

/// Most operations in one batch (and queue messages read per step).
const MAX_ENTITY_BATCH: usize = 100;

enum EntityPhase {
    Stepping,
    Outstanding(Box<EntityEpisode>),
    Committing,
}

struct EntityEpisode {
    lease: Lease,
    record: EntityRecord,
    batch: Vec<InboxMessage>,
}

struct EntityFlight {
    reservation: Reservation,
    token: u64,
    phase: EntityPhase,
    again: bool,
    /// The claim on the entity, once the step has read it.
    lease: Option<Lease>,
}

/// In-memory entity dispatch state (part of `DispatchState`).
#[derive(Default)]
pub(super) struct EntityDispatch {
    ready: ReadyQueue<InstanceId>,
    flights: HashMap<InstanceId, EntityFlight>,
    tokens: HashMap<u64, InstanceId>,
    abandons: HashMap<InstanceId, u32>,
}

impl EntityDispatch {
    /// Entities queued for a worker and when the oldest was queued.
    pub(super) fn backlog(&self) -> (usize, Option<std::time::Instant>) {
        (self.ready.len(), self.ready.oldest())
    }

    pub(super) fn in_flight(&self, id: &InstanceId) -> bool {
        self.flights.contains_key(id)
    }

    pub(super) fn mark_ready(&mut self, id: InstanceId) {
        if let Some(f) = self.flights.get_mut(&id) {
            f.again = true;
        } else {
            self.ready.push_back(id);
        }
    }

    /// Batches out on a closed stream go back to their queues (no backoff); returns their
    /// claims, to give back.
    pub(super) fn stream_closed(&mut self, stream: StreamId) -> Vec<(InstanceId, Lease)> {
        let lost: Vec<InstanceId> = self
            .flights
            .iter()
            .filter(|(_, f)| {
                f.reservation.stream == stream && matches!(f.phase, EntityPhase::Outstanding(_))
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut claims = Vec::new();
        for id in lost {
            if let Some(f) = self.flights.remove(&id) {
                self.tokens.remove(&f.token);
                claims.extend(f.lease.map(|lease| (id.clone(), lease)));
            }
            self.mark_ready(id);
        }
        claims
    }

    /// Tokens and reservations of the batches out with workers (for the work-item
    /// timeout).
    pub(super) fn outstanding_tokens(&self) -> impl Iterator<Item = (u64, Reservation)> + '_ {
        self.flights
            .values()
            .filter(|f| matches!(f.phase, EntityPhase::Outstanding(_)))
            .map(|f| (f.token, f.reservation))
    }

    /// Capacity held by steps that are not committing (for `forget_all`).
    pub(super) fn outstanding_reservations(&self) -> Vec<Reservation> {
        self.flights
            .values()
            .filter(|f| !matches!(f.phase, EntityPhase::Committing))
            .map(|f| f.reservation)
            .collect()
    }
}

/// The entity name of `@name@key`, lower-cased as SDK filters are.
fn entity_name(id: &InstanceId) -> String {
    let rest = id.as_str().strip_prefix('@').unwrap_or(id.as_str());
    rest.split_once('@').map_or(rest, |(n, _)| n).to_lowercase()
}

/// Records how long each lock request the step consumed (granted, or dropped because its
/// owner ended) waited since it reached the entity's inbox.
fn observe_lock_waits(requests: &[(i64, DateTime<Utc>)], consumed: &[i64], now: DateTime<Utc>) {
    for (seq, since) in requests {
        if consumed.contains(seq) {
            let waited = (now - *since).to_std().unwrap_or_default();
            crate::metrics::get()
                .entity_lock_wait
                .observe(waited.as_secs_f64());
        }
    }
}

/// Where a step ends: look again now, at a time, or only when something arrives.
enum After {
    Ready,
    At(DateTime<Utc>),
    Idle,
}

impl Engine {
    /// Takes ready entities while entity capacity lasts (called by `pump`, lock held).
    pub(super) fn take_ready_entities(
        &self,
        st: &mut DispatchState,
    ) -> Vec<(InstanceId, Reservation, u64)> {
        let mut out = Vec::new();
        while let Some(id) = st.entities.ready.pop_front() {
            if let Some(f) = st.entities.flights.get_mut(&id) {
                f.again = true;
                continue;
            }
            let name = entity_name(&id);
            let target = WorkTarget {
                name: &name,
                version: None,
            };
            let reservation = match self.executor.reserve(WorkKind::Entity, Some(target)) {
                Ok(r) => r,
                Err(Unavailable::NoMatch) => {
                    st.parked.push(super::Parked::Entity(id));
                    continue;
                }
                Err(Unavailable::Busy) => {
                    st.entities.ready.put_back(id);
                    break;
                }
            };
            let token = self.token();
            st.entities.flights.insert(
                id.clone(),
                EntityFlight {
                    reservation,
                    token,
                    phase: EntityPhase::Stepping,
                    again: false,
                    lease: None,
                },
            );
            out.push((id, reservation, token));
        }
        out
    }

    /// Reads, plans, commits the lock bookkeeping, and sends the runnable batch.
    pub(super) async fn run_entity_step(
        self: Arc<Self>,
        id: InstanceId,
        reservation: Reservation,
        token: u64,
    ) {
        let now = self.clock.now();
        let cap = MAX_ENTITY_BATCH as u32;
        let work = match self.store.entity_work(&id, now, cap).await {
            Ok(Some(w)) => w,
            Ok(None) => return self.end_entity_step(&id, After::Idle),
            Err(err) => {
                tracing::warn!(entity = %id, error = %err, "could not load entity work; retrying in 1 s");
                return self.end_entity_step(&id, After::At(now + chrono::Duration::seconds(1)));
            }
        };
        if let Some(f) = self.lock().entities.flights.get_mut(&id) {
            f.lease = Some(work.lease);
        }
        let more_queued = work.messages.len() >= MAX_ENTITY_BATCH;
        // Lock requests among the messages, for the lock-wait metric (usually none, and
        // then nothing is allocated).
        let lock_requests: Vec<(i64, DateTime<Utc>)> = work
            .messages
            .iter()
            .filter(|m| {
                matches!(
                    m.event.event_type,
                    Some(pb::history_event::EventType::EntityLockRequested(_))
                )
            })
            .map(|m| (m.seq, m.visible_at))
            .collect();
        let plan = plan_entity(
            &work.record,
            work.messages,
            &work.live,
            MAX_ENTITY_BATCH,
            now,
        );
        tracing::debug!(
            entity = %id,
            batch = plan.batch.len(),
            handled = plan.control.consumed.len(),
            lock = ?plan.control.lock,
            "entity step planned"
        );
        let mut record = work.record;
        if !plan.control.is_empty() {
            match self.store.commit_entity(&plan.control, work.lease).await {
                Ok(outcome) => {
                    observe_lock_waits(&lock_requests, &plan.control.consumed, now);
                    self.after_entity_commit(&plan.control, outcome, now);
                    record.version += 1;
                    if let Change::Set(lock) = &plan.control.lock {
                        record.lock = lock.clone();
                    }
                }
                Err(StoreError::LeaseLost(_)) => return self.end_entity_step(&id, After::Ready),
                Err(err) => {
                    tracing::warn!(entity = %id, error = %err, "entity step commit failed; retrying in 1 s");
                    return self
                        .end_entity_step(&id, After::At(now + chrono::Duration::seconds(1)));
                }
            }
        }
        if plan.batch.is_empty() {
            return self.end_entity_step(
                &id,
                if more_queued {
                    After::Ready
                } else {
                    After::Idle
                },
            );
        }
        let item = pb::WorkItem {
            completion_token: format_token(ENTITY_PREFIX, token),
            request: Some(pb::work_item::Request::EntityRequestV2(entity_request(
                &record,
                &plan.batch,
            ))),
        };
        {
            let mut st = self.lock();
            let Some(f) = st.entities.flights.get_mut(&id) else {
                drop(st);
                self.release_claim(&id, work.lease);
                return;
            };
            f.phase = EntityPhase::Outstanding(Box::new(EntityEpisode {
                lease: work.lease,
                record,
                batch: plan.batch,
            }));
            st.entities.tokens.insert(token, id.clone());
        }
        tracing::debug!(entity = %id, stream = reservation.stream, "entity work item sent");
        if self.executor.send(reservation, item) {
            crate::metrics::get()
                .work
                .dispatched
                .inc(MetricKind::Entity);
        } else {
            let mut st = self.lock();
            st.entities.tokens.remove(&token);
            st.entities.flights.remove(&id);
            st.entities.mark_ready(id.clone());
            drop(st);
            self.release_claim(&id, work.lease);
            self.wake.notify_one();
        }
    }

    /// Ends a step that holds its reservation (not handed to a worker, or abandoned).
    fn end_entity_step(&self, id: &InstanceId, after: After) {
        let mut st = self.lock();
        let Some(f) = st.entities.flights.remove(id) else {
            return;
        };
        st.entities.tokens.remove(&f.token);
        self.finish_entity(&mut st, id, f.again, after);
        drop(st);
        self.release(f.reservation);
        if let Some(lease) = f.lease {
            self.release_claim(id, lease);
        }
        self.wake.notify_one();
    }

    fn finish_entity(&self, st: &mut DispatchState, id: &InstanceId, again: bool, after: After) {
        match after {
            After::Ready => st.entities.mark_ready(id.clone()),
            After::At(at) => st.timers.push(at, id.clone()),
            After::Idle if again => st.entities.mark_ready(id.clone()),
            After::Idle => {}
        }
    }

    /// Dispatch bookkeeping after any entity commit: wake the targets, arm timers for
    /// delayed messages, tell waiters about started orchestrations.
    fn after_entity_commit(
        &self,
        t: &EntityTransition,
        outcome: CommitOutcome,
        now: DateTime<Utc>,
    ) {
        {
            let mut st = self.lock();
            for target in outcome.touched {
                if target != t.entity {
                    st.mark_ready(target);
                }
            }
            st.arm_timers(&t.messages, now);
            for start in &t.starts {
                if let Some(at) = start.scheduled_start_at.filter(|at| *at > now) {
                    st.timers.push(at, start.instance_id.clone());
                }
            }
        }
        for start in &t.starts {
            self.watchers.notify(&start.instance_id);
        }
        self.wake.notify_one();
    }

    /// Applies a worker's `EntityBatchResult` (`CompleteEntityTask`).
    pub async fn complete_entity(
        &self,
        result: pb::EntityBatchResult,
    ) -> Result<(), CompletionError> {
        let token_text = result.completion_token.clone();
        let (id, reservation, episode) = {
            let mut st = self.lock();
            let Some(token) = parse_token(&token_text, ENTITY_PREFIX) else {
                return Err(CompletionError::Stale(token_text));
            };
            let Some(id) = st.entities.tokens.remove(&token) else {
                return if st.recent.finished(&token_text, ENTITY_PREFIX) {
                    Ok(())
                } else {
                    Err(CompletionError::Stale(token_text))
                };
            };
            st.recent.insert(token);
            let Some(f) = st.entities.flights.get_mut(&id) else {
                return Err(CompletionError::Stale(token_text));
            };
            let EntityPhase::Outstanding(episode) =
                std::mem::replace(&mut f.phase, EntityPhase::Committing)
            else {
                return Err(CompletionError::Stale(token_text));
            };
            (id, f.reservation, episode)
        };
        self.release(reservation);
        let now = self.clock.now();
        let transition = match apply_entity_result(
            &episode.record,
            &episode.batch,
            &result,
            now,
            &mut RandomIds,
        ) {
            Ok(t) => t,
            Err(reason) => {
                // Framework failure: the state stays, the operations are retried with
                // backoff (PROTOCOL.md §5.3).
                tracing::warn!(entity = %id, %reason, "entity batch failed; retrying");
                crate::metrics::get()
                    .work
                    .redelivered
                    .inc(MetricKind::Entity);
                let at = self.entity_backoff(&id, now);
                self.close_entity_flight(&id, at);
                return Ok(());
            }
        };
        match self.store.commit_entity(&transition, episode.lease).await {
            Ok(outcome) => {
                crate::metrics::get().work.completed.inc(MetricKind::Entity);
                let visible = outcome.has_visible_inbox;
                self.after_entity_commit(&transition, outcome, now);
                self.lock().entities.abandons.remove(&id);
                self.close_entity_flight(&id, if visible { After::Ready } else { After::Idle });
                Ok(())
            }
            Err(StoreError::LeaseLost(_)) => {
                // Purged or cleaned meanwhile: the result is moot, not the worker's fault.
                self.close_entity_flight(&id, After::Ready);
                Ok(())
            }
            Err(err) => {
                tracing::warn!(entity = %id, error = %err, "entity commit failed; the batch will be redelivered");
                crate::metrics::get()
                    .work
                    .redelivered
                    .inc(MetricKind::Entity);
                self.close_entity_flight(&id, After::At(now + chrono::Duration::seconds(1)));
                Err(err.into())
            }
        }
    }

    /// Removes a committing flight (its reservation is already released).
    fn close_entity_flight(&self, id: &InstanceId, after: After) {
        let mut st = self.lock();
        let flight = st.entities.flights.remove(id);
        let again = flight.as_ref().is_some_and(|f| f.again);
        self.finish_entity(&mut st, id, again, after);
        drop(st);
        if let Some(lease) = flight.and_then(|f| f.lease) {
            self.release_claim(id, lease);
        }
        self.wake.notify_one();
    }

    fn entity_backoff(&self, id: &InstanceId, now: DateTime<Utc>) -> After {
        let mut st = self.lock();
        let n = st.entities.abandons.entry(id.clone()).or_default();
        *n += 1;
        let delay = backoff(*n, self.config.max_abandon_backoff);
        if delay.is_zero() {
            After::Ready
        } else {
            After::At(now + chrono::Duration::from_std(delay).unwrap_or_default())
        }
    }

    /// Puts an entity batch back (`AbandonTaskEntityWorkItem`): operations stay queued,
    /// state unchanged, retried with the abandon backoff.
    pub fn abandon_entity(&self, token_text: &str) {
        let Some(token) = parse_token(token_text, ENTITY_PREFIX) else {
            return;
        };
        let id = {
            let mut st = self.lock();
            let Some(id) = st.entities.tokens.remove(&token) else {
                return;
            };
            id
        };
        crate::metrics::get().work.abandoned.inc(MetricKind::Entity);
        let after = self.entity_backoff(&id, self.clock.now());
        self.end_entity_step(&id, after);
    }
}
