//! The dispatcher's activity half: rows waiting for a worker, the ones out with workers,
//! their completion and abandon. An activity row is claimed in the store before it is sent
//! (a no-op on a single-process store), so with several processes on one database each
//! row goes to one worker at a time. Rows this process's commit created come claimed
//! already; those that cannot go out at once are released for other processes.

use std::collections::HashMap;
use std::sync::Arc;

use pb::history_event::EventType;

use super::queue::{ReadyQueue, Timers};
use super::tokens::{activity_row, backoff, parse_token, ACT_PREFIX};
use super::work_items::activity_work_item;
use super::{CompletionError, DispatchState, Engine, Parked};
use crate::domain::events::event;
use crate::domain::InstanceId;
use crate::engine::executor::{Reservation, StreamId, Unavailable, WorkKind, WorkTarget};
use crate::metrics::WorkKind as MetricKind;
use crate::proto as pb;
use crate::store::{ActivityItem, ActivityOutcome};

struct ActivityState {
    item: ActivityItem,
    tokens: Vec<u64>,
    dispatched: Option<(u64, Reservation)>,
    abandons: u32,
    /// Claimed by the commit that created it and not yet sent (see `release_unsent`).
    preclaimed: bool,
}

/// An activity taken from the queue with capacity reserved for it, to be sent once the
/// dispatch lock is released.
pub(super) struct ActivitySend {
    id: i64,
    token: u64,
    reservation: Reservation,
    item: pb::WorkItem,
    /// Its row was claimed by the commit that created it: no claim needed.
    pub(super) claimed: bool,
}

/// In-memory activity dispatch state (part of `DispatchState`).
#[derive(Default)]
pub(super) struct ActivityDispatch {
    rows: HashMap<i64, ActivityState>,
    queue: ReadyQueue<i64>,
    /// Retries after an abandon with backoff.
    timers: Timers<i64>,
    /// The dispatched activity per (instance, task id). Token-less workers (the Go SDK)
    /// complete by that pair alone, so a second activity with the same pair (a newer
    /// execution after restart or continue-as-new) waits in `blocked` until the first
    /// one is done; otherwise its result could be taken for the other's.
    running: HashMap<(InstanceId, i32), i64>,
    blocked: HashMap<(InstanceId, i32), Vec<i64>>,
    tokens: HashMap<u64, i64>,
    /// Rows enqueued pre-claimed since the last `release_unsent`.
    preclaimed: Vec<i64>,
}

impl ActivityDispatch {
    /// Adds a row to the queue (a row already known is left as it is); `preclaimed` = the
    /// store claimed it for this process already.
    pub(super) fn enqueue(&mut self, item: ActivityItem, preclaimed: bool) {
        let id = item.id;
        if self.rows.contains_key(&id) {
            return;
        }
        self.rows.insert(
            id,
            ActivityState {
                item,
                tokens: Vec::new(),
                dispatched: None,
                abandons: 0,
                preclaimed,
            },
        );
        if preclaimed {
            self.preclaimed.push(id);
        }
        self.queue.push_back(id);
    }

    /// Pre-claimed rows that did not go out when they were first offered (no capacity,
    /// or no stream takes them): their claims are returned so that another process with
    /// a free worker may send them; here they are claimed again before they are sent.
    pub(super) fn release_unsent(&mut self) -> Vec<i64> {
        let mut unsent = Vec::new();
        for id in std::mem::take(&mut self.preclaimed) {
            if let Some(a) = self.rows.get_mut(&id) {
                if std::mem::take(&mut a.preclaimed) {
                    unsent.push(id);
                }
            }
        }
        unsent
    }

    /// A rewind moved the row to a new execution (or created it again): later dispatches
    /// name the new execution.
    pub(super) fn moved(&mut self, item: ActivityItem) {
        match self.rows.get_mut(&item.id) {
            Some(a) => a.item.execution_id = item.execution_id,
            None => self.enqueue(item, false),
        }
    }

    /// Queues a known row again (unparked, or its retry time came).
    pub(super) fn requeue(&mut self, id: i64) {
        self.queue.push_back(id);
    }

    /// Rows queued for a worker (stale entries, skipped when reached, included) and when
    /// the oldest was queued.
    pub(super) fn backlog(&self) -> (usize, Option<std::time::Instant>) {
        (self.queue.len(), self.queue.oldest())
    }

    /// Rows known (queued, parked or out with a worker).
    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Moves rows whose retry time came back to the queue.
    pub(super) fn fire_timers(&mut self, now: chrono::DateTime<chrono::Utc>) {
        while let Some(id) = self.timers.pop_due(now) {
            self.queue.push_back(id);
        }
    }

    /// The earliest retry time.
    pub(super) fn next_timer(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.timers.next()
    }

    /// An activity is no longer dispatched: activities waiting on its (instance, task
    /// id) pair go back to the front of the queue.
    fn idle(&mut self, key: (InstanceId, i32), id: i64) {
        if self.running.get(&key) == Some(&id) {
            self.running.remove(&key);
            for waiting in self
                .blocked
                .remove(&key)
                .unwrap_or_default()
                .into_iter()
                .rev()
            {
                self.queue.push_front(waiting);
            }
        }
    }

    /// Marks a dispatched activity as back in the queue's hands (stream lost, send failed,
    /// abandoned); its tokens stay valid for late completions.
    fn undispatch(&mut self, id: i64) {
        if let Some(a) = self.rows.get_mut(&id) {
            a.dispatched = None;
            let key = activity_key(&a.item);
            self.idle(key, id);
        }
    }

    /// Drops a row (completed, or taken by another process); its tokens become recent.
    fn forget(&mut self, id: i64) -> Option<ActivityState> {
        let state = self.rows.remove(&id)?;
        self.idle(activity_key(&state.item), id);
        for t in &state.tokens {
            self.tokens.remove(t);
        }
        Some(state)
    }

    /// Rows out on `stream` go back to the front of the queue, oldest first. Their tokens
    /// stay valid: Python completes late over the old channel.
    pub(super) fn stream_closed(&mut self, stream: StreamId) -> Vec<i64> {
        let mut requeue: Vec<i64> = self
            .rows
            .iter()
            .filter(|(_, a)| a.dispatched.is_some_and(|(_, r)| r.stream == stream))
            .map(|(id, _)| *id)
            .collect();
        for id in &requeue {
            self.undispatch(*id);
        }
        requeue.sort_unstable();
        for id in requeue.iter().rev() {
            self.queue.push_front(*id);
        }
        requeue
    }

    /// Token, row and reservation of the rows out with workers (for the activity
    /// timeout).
    pub(super) fn outstanding_tokens(&self) -> impl Iterator<Item = (u64, i64, Reservation)> + '_ {
        self.rows
            .iter()
            .filter_map(|(row, a)| a.dispatched.map(|(token, r)| (token, *row, r)))
    }

    /// Capacity held by dispatched rows (for `forget_all`).
    pub(super) fn outstanding_reservations(&self) -> Vec<Reservation> {
        self.rows
            .values()
            .filter_map(|a| a.dispatched.map(|(_, r)| r))
            .collect()
    }
}

impl Engine {
    /// Takes queued activities while activity capacity lasts (called by `pump`, lock held).
    pub(super) fn take_ready_activities(&self, st: &mut DispatchState) -> Vec<ActivitySend> {
        let mut sends = Vec::new();
        while let Some(&aid) = st.activities.queue.front() {
            let item = match st.activities.rows.get(&aid) {
                Some(a) if a.dispatched.is_none() => a.item.clone(),
                _ => {
                    st.activities.queue.pop_front();
                    continue;
                }
            };
            let key = activity_key(&item);
            if st
                .activities
                .running
                .get(&key)
                .is_some_and(|&other| other != aid)
            {
                st.activities.queue.pop_front();
                st.activities.blocked.entry(key).or_default().push(aid);
                continue;
            }
            let reservation = match self
                .executor
                .reserve(WorkKind::Activity, Some(activity_target(&item)))
            {
                Ok(r) => r,
                Err(Unavailable::NoMatch) => {
                    st.activities.queue.pop_front();
                    st.parked.push(Parked::Activity(aid));
                    continue;
                }
                Err(Unavailable::Busy) => break,
            };
            st.activities.queue.pop_front();
            st.activities.running.insert(key, aid);
            let token = self.token();
            let work_item = activity_work_item(&item, token);
            st.activities.tokens.insert(token, aid);
            let mut claimed = false;
            if let Some(a) = st.activities.rows.get_mut(&aid) {
                a.tokens.push(token);
                a.dispatched = Some((token, reservation));
                claimed = std::mem::take(&mut a.preclaimed);
            }
            sends.push(ActivitySend {
                id: aid,
                token,
                reservation,
                item: work_item,
                claimed,
            });
        }
        sends
    }

    /// Claims the rows of taken activities in the (shared) store, then sends those it got;
    /// a row another process claimed first is forgotten here (that process sends it).
    pub(super) async fn claim_and_send_activities(self: Arc<Self>, sends: Vec<ActivitySend>) {
        let ids: Vec<i64> = sends.iter().map(|s| s.id).collect();
        let (claimed, failed) = match self.store.claim_activities(&ids).await {
            Ok(claimed) => (claimed, false),
            Err(err) => {
                tracing::warn!(error = %err, "could not claim activities; retrying in 1 s");
                (Vec::new(), true)
            }
        };
        let (mine, theirs): (Vec<_>, Vec<_>) =
            sends.into_iter().partition(|s| claimed.contains(&s.id));
        if !theirs.is_empty() {
            self.drop_unclaimed(theirs, failed);
        }
        self.send_activities(mine);
    }

    /// Sends taken (and, on a shared store, claimed) activities to their streams.
    pub(super) fn send_activities(&self, sends: Vec<ActivitySend>) {
        for send in sends {
            if self.executor.send(send.reservation, send.item) {
                crate::metrics::get()
                    .work
                    .dispatched
                    .inc(MetricKind::Activity);
            } else {
                let mut st = self.lock();
                let ours = st
                    .activities
                    .rows
                    .get(&send.id)
                    .is_some_and(|a| a.dispatched.is_some_and(|(t, _)| t == send.token));
                if ours {
                    st.activities.undispatch(send.id);
                    st.activities.queue.push_front(send.id);
                }
                drop(st);
                self.release_activity_claims(vec![send.id], false);
                self.wake.notify_one();
            }
        }
    }

    /// Gives back the capacity of activities that could not be claimed. `retry` = the
    /// claim itself failed (the database was not reached): keep the rows and look again
    /// in a second; otherwise another process has them and they are forgotten.
    fn drop_unclaimed(&self, sends: Vec<ActivitySend>, retry: bool) {
        let retry_at = self.clock.now() + chrono::Duration::seconds(1);
        let mut st = self.lock();
        for send in &sends {
            if retry {
                st.activities.undispatch(send.id);
                st.activities.timers.push(retry_at, send.id);
            } else {
                st.activities.forget(send.id);
            }
        }
        drop(st);
        for send in sends {
            self.release(send.reservation);
        }
        self.wake.notify_one();
    }

    /// Applies a worker's `ActivityResponse`. Exactly one result per activity is ever
    /// enqueued; a late completion over an old token is accepted while the activity is
    /// still open (PROTOCOL.md §4.8).
    pub async fn complete_activity(
        &self,
        response: pb::ActivityResponse,
    ) -> Result<(), CompletionError> {
        let token_text = response.completion_token.clone();
        let aid = {
            let st = self.lock();
            let found = if token_text.is_empty() {
                st.activities
                    .rows
                    .iter()
                    .find(|(_, a)| {
                        a.dispatched.is_some()
                            && a.item.instance_id.as_str() == response.instance_id
                            && a.item.scheduled.event_id == response.task_id
                    })
                    .map(|(id, _)| *id)
            } else {
                parse_token(&token_text, ACT_PREFIX)
                    .and_then(|t| st.activities.tokens.get(&t).copied())
            };
            match found {
                Some(aid) => aid,
                None if st.recent.finished(&token_text, ACT_PREFIX) => return Ok(()),
                // Sent by another process sharing the store: the row decides.
                None if self.shared => match activity_row(&token_text) {
                    Some(row) => row,
                    None => return Err(CompletionError::Stale(token_text)),
                },
                None => return Err(CompletionError::Stale(token_text)),
            }
        };
        let now = self.clock.now();
        let traced_failure = crate::otel::enabled().then(|| response.failure_details.clone());
        let kind = match response.failure_details {
            Some(failure) => EventType::TaskFailed(pb::TaskFailedEvent {
                task_scheduled_id: response.task_id,
                failure_details: Some(failure),
            }),
            None => EventType::TaskCompleted(pb::TaskCompletedEvent {
                task_scheduled_id: response.task_id,
                result: response.result,
            }),
        };
        let outcome = match self
            .store
            .complete_activity(aid, event(-1, now, kind))
            .await
        {
            Ok(outcome) => outcome,
            Err(err) => {
                crate::metrics::get()
                    .work
                    .redelivered
                    .inc(MetricKind::Activity);
                self.redeliver_after_failure(aid, now);
                return Err(err.into());
            }
        };
        let (released, span) = {
            let mut st = self.lock();
            let state = st.activities.forget(aid);
            let span = match (&state, &traced_failure, &outcome) {
                (Some(s), Some(failure), ActivityOutcome::Delivered(_)) => {
                    crate::otel::spans::activity_span(
                        s.item.instance_id.as_str(),
                        &s.item.scheduled,
                        failure.as_ref(),
                        now,
                    )
                }
                _ => None,
            };
            if let Some(state) = &state {
                for t in &state.tokens {
                    st.recent.insert(*t);
                }
            }
            if let ActivityOutcome::Delivered(instance) = &outcome {
                st.mark_ready(instance.clone());
            }
            (state.and_then(|s| s.dispatched.map(|(_, r)| r)), span)
        };
        if let Some(span) = span {
            crate::otel::export(vec![span]);
        }
        if let Some(r) = released {
            self.release(r);
        }
        self.wake.notify_one();
        match outcome {
            ActivityOutcome::Delivered(_) | ActivityOutcome::Dropped => {
                crate::metrics::get()
                    .work
                    .completed
                    .inc(MetricKind::Activity);
                Ok(())
            }
            ActivityOutcome::Unknown => Err(CompletionError::Stale(token_text)),
        }
    }

    /// The store could not take an activity's result (the database was not reached, or
    /// ended the connection): nothing was applied, so the activity runs again in a second.
    /// Left dispatched, it would wait forever for a completion the worker will not repeat,
    /// its row claimed and renewed by this process so no other could send it either. Its
    /// tokens stay valid, so a retried completion is still applied, once.
    fn redeliver_after_failure(&self, aid: i64, now: chrono::DateTime<chrono::Utc>) {
        let mut st = self.lock();
        let Some((_, reservation)) = st.activities.rows.get(&aid).and_then(|a| a.dispatched) else {
            return;
        };
        st.activities.undispatch(aid);
        st.activities
            .timers
            .push(now + chrono::Duration::seconds(1), aid);
        drop(st);
        self.release(reservation);
        self.wake.notify_one();
    }

    /// Puts an activity back (explicit abandon), with the same backoff as orchestrations.
    pub fn abandon_activity(&self, token_text: &str) {
        let Some(token) = parse_token(token_text, ACT_PREFIX) else {
            return;
        };
        let now = self.clock.now();
        let mut st = self.lock();
        let Some(&aid) = st.activities.tokens.get(&token) else {
            return;
        };
        let Some(a) = st.activities.rows.get_mut(&aid) else {
            return;
        };
        let Some((t, reservation)) = a.dispatched else {
            return;
        };
        if t != token {
            return;
        }
        a.abandons += 1;
        crate::metrics::get()
            .work
            .abandoned
            .inc(MetricKind::Activity);
        let delay = backoff(a.abandons, self.config.max_abandon_backoff);
        st.activities.undispatch(aid);
        if delay.is_zero() {
            st.activities.queue.push_front(aid);
        } else {
            let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
            st.activities.timers.push(at, aid);
        }
        drop(st);
        self.release(reservation);
        self.release_activity_claims(vec![aid], false);
        self.wake.notify_one();
    }
}

fn activity_target(item: &ActivityItem) -> WorkTarget<'_> {
    match &item.scheduled.event_type {
        Some(EventType::TaskScheduled(t)) => WorkTarget {
            name: &t.name,
            version: t.version.as_deref(),
        },
        _ => WorkTarget {
            name: "",
            version: None,
        },
    }
}

fn activity_key(item: &ActivityItem) -> (InstanceId, i32) {
    (item.instance_id.clone(), item.scheduled.event_id)
}
