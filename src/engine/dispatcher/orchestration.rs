//! The orchestration work-item lifecycle: claim and read an instance (a fetch), build and
//! send its episode, take the worker's completion (chunks included), commit it, or put it
//! back (abandon, lost stream). One episode is out per instance at a time (a flight).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::tokens::{backoff, parse_token, ORCH_PREFIX};
use super::work_items::orchestrator_work_item;
use super::{CompletionError, DispatchState, Engine, Parked, RandomIds};
use crate::domain::events::orchestrator_started;
use crate::domain::{InstanceId, InstanceRecord};
use crate::engine::apply::{self, ApplyContext};
use crate::engine::executor::{Reservation, WorkKind, WorkTarget};
use crate::engine::plan::{plan_episode, Plan};
use crate::metrics::WorkKind as MetricKind;
use crate::proto as pb;
use crate::store::{Lease, StoreError};

pub(super) enum Phase {
    Fetching,
    Outstanding(Box<Episode>),
    Committing,
}

pub(super) struct Episode {
    pub(super) lease: Lease,
    pub(super) record: InstanceRecord,
    pub(super) past: Arc<Vec<pb::HistoryEvent>>,
    pub(super) new_events: Vec<pb::HistoryEvent>,
    pub(super) consumed: Vec<i64>,
    /// Actions of the `isPartial` chunks received so far (PROTOCOL.md §4.4.8).
    chunks: Vec<pb::OrchestratorAction>,
    /// The `chunkIndex` the next chunk must carry.
    next_chunk: i32,
}

pub(super) struct Flight {
    pub(super) reservation: Reservation,
    pub(super) token: u64,
    pub(super) phase: Phase,
    /// A message arrived while the episode was out: look again when it ends.
    pub(super) again: bool,
    /// A rewind rewrote the instance's parent link after this flight read its history:
    /// the episode must be built again, not completed (see `rewinding`).
    pub(super) superseded: bool,
}

impl Engine {
    /// Opens a flight for `id` on `reservation`; its fetch is spawned once the lock is
    /// released.
    pub(super) fn begin_fetch(
        &self,
        st: &mut DispatchState,
        id: InstanceId,
        reservation: Reservation,
        fetches: &mut Vec<(InstanceId, Reservation, u64)>,
    ) {
        let token = self.token();
        st.flights.insert(
            id.clone(),
            Flight {
                reservation,
                token,
                phase: Phase::Fetching,
                again: false,
                superseded: false,
            },
        );
        fetches.push((id, reservation, token));
    }

    /// Claims and reads the instance, then sends its episode (or ends the flight).
    pub(super) async fn fetch_and_send(
        self: Arc<Self>,
        id: InstanceId,
        reservation: Reservation,
        token: u64,
    ) {
        let now = self.clock.now();
        let cached = self.lock().histories.key(&id);
        let work = match self
            .store
            .orchestration_work(&id, now, self.config.max_batch_messages, cached)
            .await
        {
            Ok(w) => w,
            Err(err) => {
                tracing::warn!(instance_id = %id, error = %err, "could not load orchestration work; retrying in 1 s");
                self.end_flight(&id, reservation, Some(now + chrono::Duration::seconds(1)));
                return;
            }
        };
        // Unknown, ended, or claimed by another process (which commits it and sends the
        // notices): nothing to do here.
        let Some(work) = work else {
            self.end_flight(&id, reservation, None);
            return;
        };
        let lease = work.lease;
        let history = match work.history {
            Some(events) => {
                let events = Arc::new(events);
                self.lock()
                    .histories
                    .insert(&id, &work.record.execution_id, &events);
                events
            }
            None => match self.lock().histories.events(&id) {
                Some(events) => events,
                None => {
                    // Evicted between the two reads: look again right away.
                    self.release_claim(&id, lease);
                    self.end_flight(&id, reservation, Some(now));
                    return;
                }
            },
        };
        match plan_episode(&work.record, &history, work.messages) {
            Plan::Wait { stale } => {
                tracing::debug!(instance_id = %id, stale = stale.len(), "nothing to dispatch yet");
                if !stale.is_empty() {
                    if let Err(err) = self.store.discard_messages(&id, &stale).await {
                        tracing::warn!(instance_id = %id, error = %err, "could not discard stale messages");
                    }
                }
                self.release_claim(&id, lease);
                self.end_flight(&id, reservation, None);
            }
            Plan::Dispatch { deliver, stale } => {
                let Some(reservation) = self.stream_for(&id, &work.record, reservation) else {
                    self.release_claim(&id, lease);
                    return;
                };
                observe_timer_lateness(&deliver, now);
                let mut new_events = Vec::with_capacity(deliver.len() + 1);
                new_events.push(orchestrator_started(now));
                let mut consumed: Vec<i64> = deliver.iter().map(|m| m.seq).collect();
                consumed.extend(stale);
                new_events.extend(deliver.into_iter().map(|m| m.event));
                let item = orchestrator_work_item(&id, &work.record, &history, &new_events, token);
                let episode = Episode {
                    lease,
                    record: work.record,
                    past: history,
                    new_events,
                    consumed,
                    chunks: Vec::new(),
                    next_chunk: 0,
                };
                {
                    let mut st = self.lock();
                    let Some(f) = st.flights.get_mut(&id) else {
                        drop(st);
                        self.release_claim(&id, lease);
                        return;
                    };
                    if f.superseded {
                        drop(st);
                        self.release_claim(&id, lease);
                        self.end_flight(&id, reservation, Some(now));
                        return;
                    }
                    f.phase = Phase::Outstanding(Box::new(episode));
                    st.orch_tokens.insert(token, id.clone());
                }
                tracing::debug!(instance_id = %id, stream = reservation.stream, "orchestration work item sent");
                if self.executor.send(reservation, item) {
                    crate::metrics::get()
                        .work
                        .dispatched
                        .inc(MetricKind::Orchestration);
                } else {
                    let mut st = self.lock();
                    st.orch_tokens.remove(&token);
                    st.flights.remove(&id);
                    st.mark_ready(id.clone());
                    drop(st);
                    self.release_claim(&id, lease);
                    self.wake.notify_one();
                }
            }
        }
    }

    /// The reservation an episode goes out on: the one taken before the fetch when its
    /// stream's filters accept the orchestration, else one on a stream that does. With
    /// none, the flight ends and the instance is parked until capacity changes.
    pub(super) fn stream_for(
        &self,
        id: &InstanceId,
        record: &InstanceRecord,
        reservation: Reservation,
    ) -> Option<Reservation> {
        let target = WorkTarget {
            name: &record.name,
            version: record.version.as_deref(),
        };
        if self
            .executor
            .accepts(reservation.stream, WorkKind::Orchestration, target)
        {
            return Some(reservation);
        }
        let other = self.executor.reserve(WorkKind::Orchestration, Some(target));
        let mut st = self.lock();
        match other {
            Ok(r) => {
                if let Some(f) = st.flights.get_mut(id) {
                    f.reservation = r;
                }
                drop(st);
                self.release(reservation);
                Some(r)
            }
            Err(_) => {
                st.flights.remove(id);
                let known = st
                    .parked
                    .iter()
                    .any(|p| matches!(p, Parked::Orchestration(pid, ..) if pid == id));
                if !known {
                    st.parked.push(Parked::Orchestration(
                        id.clone(),
                        record.name.clone(),
                        record.version.clone(),
                    ));
                }
                drop(st);
                tracing::debug!(instance_id = %id, name = %record.name, "no worker stream accepts the orchestration; parked");
                self.release(reservation);
                self.wake.notify_one();
                None
            }
        }
    }

    /// Ends a flight without a commit, releasing its capacity; the instance is looked at
    /// again when `retry_at` comes or when a message arrived meanwhile.
    pub(super) fn end_flight(
        &self,
        id: &InstanceId,
        reservation: Reservation,
        retry_at: Option<DateTime<Utc>>,
    ) {
        self.release(reservation);
        let mut st = self.lock();
        if let Some(f) = st.flights.remove(id) {
            st.orch_tokens.remove(&f.token);
            if f.again {
                st.mark_ready(id.clone());
            }
        }
        if let Some(at) = retry_at {
            st.timers.push(at, id.clone());
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Applies a worker's `OrchestratorResponse` and commits it.
    pub async fn complete_orchestration(
        &self,
        response: pb::OrchestratorResponse,
    ) -> Result<(), CompletionError> {
        let token_text = response.completion_token.clone();
        let (id, flight_token, reservation, episode) = {
            let mut st = self.lock();
            let found = if token_text.is_empty() {
                // Old-proto workers (durabletask-go) send no token: the instance has at
                // most one outstanding episode.
                let id = InstanceId::new(response.instance_id.clone());
                st.flights
                    .get(&id)
                    .filter(|f| matches!(f.phase, Phase::Outstanding(_)))
                    .map(|f| (id.clone(), f.token))
            } else {
                parse_token(&token_text, ORCH_PREFIX)
                    .and_then(|t| st.orch_tokens.get(&t).map(|id| (id.clone(), t)))
            };
            let Some((id, token)) = found else {
                return if st.recent.finished(&token_text, ORCH_PREFIX) {
                    Ok(())
                } else {
                    Err(CompletionError::Stale(token_text))
                };
            };
            if !response.instance_id.is_empty() && response.instance_id != id.as_str() {
                return Err(CompletionError::Invalid(format!(
                    "completion token belongs to instance '{id}', not '{}'",
                    response.instance_id
                )));
            }
            let Some(f) = st.flights.get_mut(&id) else {
                return Err(CompletionError::Stale(token_text));
            };
            if f.superseded {
                if let Phase::Outstanding(episode) = &f.phase {
                    let (reservation, lease) = (f.reservation, episode.lease);
                    st.flights.remove(&id);
                    st.orch_tokens.remove(&token);
                    st.mark_ready(id.clone());
                    drop(st);
                    self.release(reservation);
                    self.release_claim(&id, lease);
                    self.wake.notify_one();
                    return Err(CompletionError::Stale(token_text));
                }
            }
            let Phase::Outstanding(episode) = std::mem::replace(&mut f.phase, Phase::Committing)
            else {
                return Err(CompletionError::Stale(token_text));
            };
            let reservation = f.reservation;
            st.orch_tokens.remove(&token);
            (id, token, reservation, episode)
        };
        self.release(reservation);
        if let Some(history) = crate::engine::rewind::requested_history(&response) {
            return self
                .complete_with_rewind(id, flight_token, episode, history.to_vec(), token_text)
                .await;
        }
        let mut episode = episode;
        let mut response = response;
        if !episode.chunks.is_empty() {
            let mut actions = std::mem::take(&mut episode.chunks);
            actions.append(&mut response.actions);
            response.actions = actions;
        }

        let now = self.clock.now();
        let ctx = ApplyContext {
            instance_id: &id,
            execution_id: &episode.record.execution_id,
            past: &episode.past,
            new_events: &episode.new_events,
            consumed: &episode.consumed,
            now,
        };
        let (transition, rejected) = match apply::apply(&ctx, &response, &mut RandomIds) {
            Ok(t) => (t, None),
            Err(err) => {
                tracing::warn!(instance_id = %id, error = %err, "worker response cannot be applied; failing the orchestration");
                let failure = pb::TaskFailureDetails {
                    error_type: "InvalidOrchestratorResponse".into(),
                    error_message: err.to_string(),
                    ..Default::default()
                };
                match apply::fail(&ctx, failure) {
                    Ok(t) => (t, Some(err)),
                    Err(corrupt) => {
                        self.release_claim(&id, episode.lease);
                        self.finish_flight(&id, flight_token, None, now);
                        return Err(CompletionError::Rejected(corrupt));
                    }
                }
            }
        };
        let lease = episode.lease;
        let trace = crate::otel::enabled().then(|| {
            crate::otel::EpisodeTrace::capture(&episode.record, &episode.past, &episode.new_events)
        });
        drop(episode);
        match self.store.commit_orchestration(&transition, lease).await {
            Ok(outcome) => {
                crate::metrics::get()
                    .work
                    .completed
                    .inc(MetricKind::Orchestration);
                if let Some(trace) = trace {
                    crate::otel::export(trace.spans(&transition, self.clock.now()));
                }
                let has_visible_inbox = outcome.has_visible_inbox;
                self.lock().committed(&transition, outcome, now);
                self.finish_flight(&id, flight_token, Some(has_visible_inbox), now);
                self.watchers.notify(&id);
                for child in &transition.children {
                    self.watchers.notify(&child.instance.instance_id);
                }
                match rejected {
                    Some(err) => Err(CompletionError::Rejected(err)),
                    None => Ok(()),
                }
            }
            Err(StoreError::LeaseLost(_)) => {
                self.lock().histories.remove(&id);
                tracing::info!(instance_id = %id, "instance changed while its episode was out; completion dropped");
                self.finish_flight(&id, flight_token, Some(true), now);
                // The sidecar itself moved the instance on (terminated before its first
                // episode, purged, replaced): the worker did nothing wrong, and an error
                // here makes the Java worker abandon its stream. Its result is moot.
                Ok(())
            }
            Err(err) => {
                self.lock().histories.remove(&id);
                tracing::warn!(instance_id = %id, error = %err, "commit failed; the episode will be redelivered");
                crate::metrics::get()
                    .work
                    .redelivered
                    .inc(MetricKind::Orchestration);
                self.finish_flight(&id, flight_token, None, now + chrono::Duration::seconds(1));
                Err(err.into())
            }
        }
    }

    /// Removes a committing flight; `ready` = look at the instance again now (`Some(true)`),
    /// not unless something arrived (`Some(false)`), or retry at `retry_at` (`None`).
    pub(super) fn finish_flight(
        &self,
        id: &InstanceId,
        token: u64,
        ready: Option<bool>,
        retry_at: DateTime<Utc>,
    ) {
        let mut st = self.lock();
        let again = st.flights.remove(id).is_some_and(|f| f.again);
        st.recent.insert(token);
        match ready {
            Some(now_ready) => {
                if now_ready || again {
                    st.mark_ready(id.clone());
                }
            }
            None => st.timers.push(retry_at, id.clone()),
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Holds the actions of one `isPartial` chunk until the final chunk commits them all
    /// (PROTOCOL.md §4.4.8). Chunks must arrive in `chunkIndex` order; nothing is
    /// committed before the last one, and a lost or abandoned work item drops them.
    #[allow(deprecated)] // chunkIndex: still sent by .NET and Java
    pub fn append_chunk(&self, response: pb::OrchestratorResponse) -> Result<(), CompletionError> {
        let token_text = response.completion_token;
        let mut st = self.lock();
        let id = parse_token(&token_text, ORCH_PREFIX)
            .and_then(|t| st.orch_tokens.get(&t).cloned())
            .ok_or_else(|| CompletionError::Stale(token_text.clone()))?;
        let Some(Flight {
            phase: Phase::Outstanding(episode),
            ..
        }) = st.flights.get_mut(&id)
        else {
            return Err(CompletionError::Stale(token_text));
        };
        let index = response.chunk_index.unwrap_or(episode.next_chunk);
        if index != episode.next_chunk {
            return Err(CompletionError::Invalid(format!(
                "chunk {index} of work item '{token_text}' arrived out of order (expected chunk {})",
                episode.next_chunk
            )));
        }
        episode.next_chunk += 1;
        episode.chunks.extend(response.actions);
        Ok(())
    }

    /// Puts an orchestration work item back (explicit abandon): first retry at once,
    /// then with doubling backoff up to the configured cap.
    pub fn abandon_orchestration(&self, token_text: &str) {
        let Some(token) = parse_token(token_text, ORCH_PREFIX) else {
            return;
        };
        let mut st = self.lock();
        let Some(id) = st.orch_tokens.remove(&token) else {
            return;
        };
        let Some(f) = st.flights.remove(&id) else {
            return;
        };
        let id_for_claim = id.clone();
        crate::metrics::get()
            .work
            .abandoned
            .inc(MetricKind::Orchestration);
        let n = st.abandons.entry(id.clone()).or_default();
        *n += 1;
        let delay = backoff(*n, self.config.max_abandon_backoff);
        if delay.is_zero() {
            st.mark_ready(id);
        } else {
            let at = self.clock.now() + chrono::Duration::from_std(delay).unwrap_or_default();
            st.timers.push(at, id);
        }
        drop(st);
        self.release(f.reservation);
        if let Phase::Outstanding(episode) = &f.phase {
            self.release_claim(&id_for_claim, episode.lease);
        }
        self.wake.notify_one();
    }
}

/// Records how late each timer among the delivered messages is: now (the episode that
/// carries its `TimerFired` is being built) minus its `fireAt`.
fn observe_timer_lateness(deliver: &[crate::store::InboxMessage], now: DateTime<Utc>) {
    for m in deliver {
        if let Some(pb::history_event::EventType::TimerFired(fired)) = &m.event.event_type {
            let Some(due) = fired.fire_at.as_ref().and_then(|t| {
                DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
            }) else {
                continue;
            };
            let late = (now - due).to_std().unwrap_or_default();
            crate::metrics::get()
                .timer_lateness
                .observe(late.as_secs_f64());
        }
    }
}
