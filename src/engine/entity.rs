//! Durable entities, the pure part (PROTOCOL.md §5.3–§5.4): which queued messages an
//! entity step handles itself (locks), which it hands to a worker as one batch, and what a
//! worker's `EntityBatchResult` commits. PURE: time and new ids come in as arguments.
//!
//! Locks are acquired along the sorted `lockSet`, one entity after the other (the
//! DurableTask.Core scheme): the entity at `position` locks itself when the request
//! reaches the head of its queue, then forwards the request to the next entity; the last
//! one sends `EntityLockGranted` to the orchestration. Every entity serves its queue in
//! order and the set is sorted, so requests never deadlock and never overtake each other.
//! While an entity is locked, only calls from the lock owner run; everything else waits
//! in order until the owner's `EntityUnlockSent` arrives.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use pb::history_event::EventType;
use pb::operation_action::OperationActionType as OpAction;
use pb::operation_result::ResultType;

use crate::domain::events::{event, from_timestamp};
use crate::domain::{
    Change, EntityLock, EntityRecord, EntityTransition, ExecutionId, InstanceId, NewExecution,
    NewInstance, OutboundMessage,
};
use crate::proto as pb;
use crate::store::InboxMessage;

/// Source of fresh ids for entity actions.
pub trait EntityIds {
    /// A request id for a signal an entity sends.
    fn request_id(&mut self) -> String;
    /// An instance id for an orchestration started without one.
    fn instance_id(&mut self) -> InstanceId;
    /// An execution id for a started orchestration.
    fn execution_id(&mut self) -> ExecutionId;
}

/// The outcome of planning one entity step.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityPlan {
    /// Lock bookkeeping to commit before the batch runs (may be empty).
    pub control: EntityTransition,
    /// Operations to send to a worker, in queue order (may be empty).
    pub batch: Vec<InboxMessage>,
}

/// Plans a step for `record` with its visible queue (`messages`, in order). `live` says
/// whether an orchestration instance is still running (lock owners and requesters);
/// `max_batch` caps the operations handed to a worker at once.
pub fn plan_entity(
    record: &EntityRecord,
    messages: Vec<InboxMessage>,
    live: &HashSet<InstanceId>,
    max_batch: usize,
    now: DateTime<Utc>,
) -> EntityPlan {
    let mut t = EntityTransition::new(record.instance_id.clone(), record.version, now);
    let mut lock = record.lock.clone();
    // Safety net (§5.4 rule 5): a lock whose owner ended is released here, whatever
    // released it or failed to.
    if lock.as_ref().is_some_and(|l| !live.contains(&l.owner)) {
        lock = None;
        t.lock = Change::Set(None);
    }
    let mut pending = messages;
    let mut batch: Vec<InboxMessage> = Vec::new();
    'scan: loop {
        let mut i = 0;
        while i < pending.len() {
            let kind = pending[i].event.event_type.clone();
            match kind {
                Some(EventType::EntityOperationSignaled(_))
                | Some(EventType::EntityOperationCalled(_)) => {
                    let runs = match &lock {
                        None => true,
                        Some(l) => caller(&pending[i].event).as_ref() == Some(&l.owner),
                    };
                    if !runs {
                        i += 1;
                        continue;
                    }
                    if batch.len() >= max_batch {
                        break 'scan;
                    }
                    batch.push(pending.remove(i));
                }
                Some(EventType::EntityLockRequested(req)) => {
                    if lock.is_some() {
                        i += 1;
                        continue;
                    }
                    if !batch.is_empty() {
                        // Operations queued before the request run first.
                        break 'scan;
                    }
                    let m = pending.remove(i);
                    t.consumed.push(m.seq);
                    let owner = InstanceId::new(req.parent_instance_id.clone().unwrap_or_default());
                    let position = usize::try_from(req.position).unwrap_or(0);
                    if !live.contains(&owner) {
                        // §5.4 rule 6: drop the request and give back what it already took.
                        release_earlier(&mut t, &req, position, now);
                        continue;
                    }
                    lock = Some(EntityLock {
                        owner: owner.clone(),
                        critical_section: req.critical_section_id.clone(),
                    });
                    t.lock = Change::Set(lock.clone());
                    t.messages.push(next_lock_step(&req, position, owner, now));
                }
                Some(EventType::EntityUnlockSent(unlock)) => {
                    let matches = lock.as_ref().is_some_and(|l| {
                        l.critical_section == unlock.critical_section_id
                            && unlock
                                .parent_instance_id
                                .as_deref()
                                .is_none_or(|p| p == l.owner.as_str())
                    });
                    if matches && !batch.is_empty() {
                        // The owner's calls before the unlock finish first.
                        break 'scan;
                    }
                    let m = pending.remove(i);
                    t.consumed.push(m.seq);
                    if matches {
                        lock = None;
                        t.lock = Change::Set(None);
                        // Messages the lock held back are eligible again, in order.
                        continue 'scan;
                    }
                    // A duplicate or stale release is harmless (§5.4 rule 4).
                }
                _ => {
                    // Not an entity message: nothing can ever use it.
                    let m = pending.remove(i);
                    t.consumed.push(m.seq);
                }
            }
        }
        break;
    }
    EntityPlan { control: t, batch }
}

/// The orchestration that sent a call (its response goes there); `None` for signals.
fn caller(e: &pb::HistoryEvent) -> Option<InstanceId> {
    match &e.event_type {
        Some(EventType::EntityOperationCalled(c)) => {
            c.parent_instance_id.clone().map(InstanceId::new)
        }
        _ => None,
    }
}

/// After locking the entity at `position`: forward the request to the next entity of the
/// set, or grant the whole set to the owner.
fn next_lock_step(
    req: &pb::EntityLockRequestedEvent,
    position: usize,
    owner: InstanceId,
    now: DateTime<Utc>,
) -> OutboundMessage {
    match req.lock_set.get(position + 1) {
        Some(next) => OutboundMessage {
            target: InstanceId::new(next.clone()),
            target_execution: None,
            event: event(
                -1,
                now,
                EventType::EntityLockRequested(pb::EntityLockRequestedEvent {
                    position: req.position + 1,
                    ..req.clone()
                }),
            ),
            visible_at: now,
        },
        None => OutboundMessage {
            target: owner,
            target_execution: None,
            event: event(
                -1,
                now,
                EventType::EntityLockGranted(pb::EntityLockGrantedEvent {
                    critical_section_id: req.critical_section_id.clone(),
                }),
            ),
            visible_at: now,
        },
    }
}

/// Unlocks the entities before `position` that a dropped lock request had locked.
fn release_earlier(
    t: &mut EntityTransition,
    req: &pb::EntityLockRequestedEvent,
    position: usize,
    now: DateTime<Utc>,
) {
    for target in req.lock_set.iter().take(position) {
        t.messages.push(unlock_message(
            target,
            &req.critical_section_id,
            req.parent_instance_id.clone(),
            now,
        ));
    }
}

/// An `EntityUnlockSent` for `target`.
pub fn unlock_message(
    target: &str,
    critical_section: &str,
    owner: Option<String>,
    now: DateTime<Utc>,
) -> OutboundMessage {
    OutboundMessage {
        target: InstanceId::new(target),
        target_execution: None,
        event: event(
            -1,
            now,
            EventType::EntityUnlockSent(pb::EntityUnlockSentEvent {
                critical_section_id: critical_section.to_string(),
                parent_instance_id: owner,
                target_instance_id: Some(target.to_string()),
            }),
        ),
        visible_at: now,
    }
}

/// The V2 work item body for a batch.
pub fn entity_request(record: &EntityRecord, batch: &[InboxMessage]) -> pb::EntityRequest {
    pb::EntityRequest {
        instance_id: record.instance_id.to_string(),
        execution_id: String::new(),
        entity_state: record.state.clone(),
        operation_requests: batch.iter().map(|m| m.event.clone()).collect(),
    }
}

/// Turns a worker's result for `batch` into the transition to commit. Results pair with
/// the dispatched operations in order; operations without a result stay queued.
/// `Err` = the result is a framework failure (`failureDetails`): nothing is committed.
pub fn apply_entity_result(
    record: &EntityRecord,
    batch: &[InboxMessage],
    result: &pb::EntityBatchResult,
    now: DateTime<Utc>,
    ids: &mut dyn EntityIds,
) -> Result<EntityTransition, String> {
    if let Some(f) = &result.failure_details {
        return Err(format!(
            "the worker failed the whole batch: {}: {}",
            f.error_type, f.error_message
        ));
    }
    let mut t = EntityTransition::new(record.instance_id.clone(), record.version, now);
    let done = result.results.len().min(batch.len());
    t.consumed = batch[..done].iter().map(|m| m.seq).collect();
    t.state = Change::Set(result.entity_state.clone());
    t.touch = true;
    for (m, r) in batch[..done].iter().zip(&result.results) {
        let Some(EventType::EntityOperationCalled(call)) = &m.event.event_type else {
            continue;
        };
        let Some(parent) = call.parent_instance_id.clone().filter(|p| !p.is_empty()) else {
            continue;
        };
        let kind = match &r.result_type {
            Some(ResultType::Failure(f)) => {
                EventType::EntityOperationFailed(pb::EntityOperationFailedEvent {
                    request_id: call.request_id.clone(),
                    failure_details: f.failure_details.clone(),
                })
            }
            Some(ResultType::Success(s)) => {
                EventType::EntityOperationCompleted(pb::EntityOperationCompletedEvent {
                    request_id: call.request_id.clone(),
                    output: s.result.clone(),
                })
            }
            None => EventType::EntityOperationCompleted(pb::EntityOperationCompletedEvent {
                request_id: call.request_id.clone(),
                output: None,
            }),
        };
        t.messages.push(OutboundMessage {
            target: InstanceId::new(parent),
            target_execution: call
                .parent_execution_id
                .clone()
                .filter(|e| !e.is_empty())
                .map(ExecutionId::new),
            event: event(-1, now, kind),
            visible_at: now,
        });
    }
    for action in &result.actions {
        match &action.operation_action_type {
            Some(OpAction::SendSignal(s)) => {
                let at = s.scheduled_time.as_ref().map(from_timestamp);
                t.messages.push(OutboundMessage {
                    target: InstanceId::new(s.instance_id.clone()),
                    target_execution: None,
                    event: event(
                        -1,
                        now,
                        EventType::EntityOperationSignaled(pb::EntityOperationSignaledEvent {
                            request_id: ids.request_id(),
                            operation: s.name.clone(),
                            scheduled_time: s.scheduled_time,
                            input: s.input.clone(),
                            target_instance_id: Some(s.instance_id.clone()),
                        }),
                    ),
                    visible_at: at.filter(|at| *at > now).unwrap_or(now),
                });
            }
            Some(OpAction::StartNewOrchestration(o)) => {
                let id = if o.instance_id.is_empty() {
                    ids.instance_id()
                } else {
                    InstanceId::new(o.instance_id.clone())
                };
                t.starts.push(NewInstance::from(NewExecution {
                    id,
                    execution_id: ids.execution_id(),
                    name: o.name.clone(),
                    version: o.version.clone(),
                    input: o.input.clone(),
                    tags: Default::default(),
                    scheduled: o
                        .scheduled_time
                        .as_ref()
                        .map(from_timestamp)
                        .filter(|at| *at > now),
                    parent_trace_context: o.parent_trace_context.clone(),
                    now,
                }));
            }
            None => {}
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::to_timestamp;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn record(lock: Option<(&str, &str)>) -> EntityRecord {
        EntityRecord {
            instance_id: InstanceId::new("@counter@a"),
            state: None,
            lock: lock.map(|(o, cs)| EntityLock {
                owner: InstanceId::new(o),
                critical_section: cs.into(),
            }),
            last_modified: now(),
            backlog: 0,
            version: 7,
        }
    }

    fn msg(seq: i64, kind: EventType) -> InboxMessage {
        InboxMessage {
            seq,
            target_execution: None,
            event: event(-1, now(), kind),
            visible_at: now(),
        }
    }

    fn signal(seq: i64) -> InboxMessage {
        msg(
            seq,
            EventType::EntityOperationSignaled(pb::EntityOperationSignaledEvent {
                request_id: format!("r{seq}"),
                operation: "add".into(),
                ..Default::default()
            }),
        )
    }

    fn call(seq: i64, from: &str) -> InboxMessage {
        msg(
            seq,
            EventType::EntityOperationCalled(pb::EntityOperationCalledEvent {
                request_id: format!("r{seq}"),
                operation: "get".into(),
                parent_instance_id: Some(from.into()),
                parent_execution_id: Some("e1".into()),
                ..Default::default()
            }),
        )
    }

    fn lock_req(seq: i64, from: &str, set: &[&str], position: i32) -> InboxMessage {
        msg(
            seq,
            EventType::EntityLockRequested(pb::EntityLockRequestedEvent {
                critical_section_id: "cs1".into(),
                lock_set: set.iter().map(|s| s.to_string()).collect(),
                position,
                parent_instance_id: Some(from.into()),
            }),
        )
    }

    fn unlock(seq: i64, from: &str) -> InboxMessage {
        let mut m = unlock_message("@counter@a", "cs1", Some(from.into()), now());
        m.event.event_id = -1;
        InboxMessage {
            seq,
            target_execution: None,
            event: m.event,
            visible_at: now(),
        }
    }

    fn live(ids: &[&str]) -> HashSet<InstanceId> {
        ids.iter().map(|s| InstanceId::new(*s)).collect()
    }

    fn seqs(ms: &[InboxMessage]) -> Vec<i64> {
        ms.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn unlocked_entity_batches_operations_in_order_up_to_the_cap() {
        let p = plan_entity(
            &record(None),
            vec![signal(1), call(2, "o"), signal(3)],
            &live(&[]),
            2,
            now(),
        );
        assert_eq!(seqs(&p.batch), vec![1, 2]);
        assert!(p.control.is_empty());
    }

    #[test]
    fn lock_request_waits_for_earlier_operations_then_locks_and_forwards() {
        let set = ["@counter@a", "@counter@b"];
        let p = plan_entity(
            &record(None),
            vec![signal(1), lock_req(2, "o", &set, 0)],
            &live(&["o"]),
            10,
            now(),
        );
        assert_eq!(seqs(&p.batch), vec![1]);
        assert!(p.control.is_empty());

        let p = plan_entity(
            &record(None),
            vec![lock_req(2, "o", &set, 0), call(3, "o"), signal(4)],
            &live(&["o"]),
            10,
            now(),
        );
        assert_eq!(p.control.consumed, vec![2]);
        assert!(matches!(&p.control.lock, Change::Set(Some(l)) if l.owner.as_str() == "o"));
        let fwd = &p.control.messages[0];
        assert_eq!(fwd.target.as_str(), "@counter@b");
        assert!(
            matches!(&fwd.event.event_type, Some(EventType::EntityLockRequested(r)) if r.position == 1)
        );
        // Inside the critical section only the owner's call runs; the signal waits.
        assert_eq!(seqs(&p.batch), vec![3]);
    }

    #[test]
    fn last_entity_of_the_set_grants_the_lock_to_the_owner() {
        let p = plan_entity(
            &record(None),
            vec![lock_req(5, "o", &["@counter@a"], 0)],
            &live(&["o"]),
            10,
            now(),
        );
        let grant = &p.control.messages[0];
        assert_eq!(grant.target.as_str(), "o");
        assert!(matches!(
            &grant.event.event_type,
            Some(EventType::EntityLockGranted(g)) if g.critical_section_id == "cs1"
        ));
    }

    #[test]
    fn unlock_releases_held_messages_in_order() {
        let p = plan_entity(
            &record(Some(("o", "cs1"))),
            vec![signal(1), call(2, "x"), unlock(3, "o"), signal(4)],
            &live(&["o", "x"]),
            10,
            now(),
        );
        assert_eq!(p.control.consumed, vec![3]);
        assert_eq!(p.control.lock, Change::Set(None));
        assert_eq!(seqs(&p.batch), vec![1, 2, 4]);
    }

    #[test]
    fn owner_calls_finish_before_its_unlock_applies() {
        let p = plan_entity(
            &record(Some(("o", "cs1"))),
            vec![signal(1), call(2, "o"), unlock(3, "o")],
            &live(&["o"]),
            10,
            now(),
        );
        assert_eq!(seqs(&p.batch), vec![2]);
        assert!(p.control.is_empty());
    }

    #[test]
    fn duplicate_unlock_is_consumed_and_ignored() {
        let p = plan_entity(
            &record(None),
            vec![unlock(1, "o"), signal(2)],
            &live(&["o"]),
            10,
            now(),
        );
        assert_eq!(p.control.consumed, vec![1]);
        assert_eq!(p.control.lock, Change::Keep);
        assert_eq!(seqs(&p.batch), vec![2]);
    }

    #[test]
    fn lock_of_an_ended_owner_is_released_and_its_requests_dropped() {
        let p = plan_entity(
            &record(Some(("gone", "cs1"))),
            vec![signal(1)],
            &live(&[]),
            10,
            now(),
        );
        assert_eq!(p.control.lock, Change::Set(None));
        assert_eq!(seqs(&p.batch), vec![1]);

        let set = ["@counter@0", "@counter@a"];
        let p = plan_entity(
            &record(None),
            vec![lock_req(4, "gone", &set, 1)],
            &live(&[]),
            10,
            now(),
        );
        assert_eq!(p.control.consumed, vec![4]);
        assert_eq!(p.control.lock, Change::Keep);
        let back = &p.control.messages[0];
        assert_eq!(back.target.as_str(), "@counter@0");
        assert!(matches!(
            &back.event.event_type,
            Some(EventType::EntityUnlockSent(_))
        ));
    }

    struct SeqIds(u32);
    impl EntityIds for SeqIds {
        fn request_id(&mut self) -> String {
            self.0 += 1;
            format!("req{}", self.0)
        }
        fn instance_id(&mut self) -> InstanceId {
            self.0 += 1;
            InstanceId::new(format!("inst{}", self.0))
        }
        fn execution_id(&mut self) -> ExecutionId {
            self.0 += 1;
            ExecutionId::new(format!("exec{}", self.0))
        }
    }

    #[test]
    fn result_answers_calls_stores_state_and_runs_actions() {
        let batch = vec![signal(1), call(2, "o"), call(3, "o")];
        let later = now() + chrono::Duration::seconds(30);
        let result = pb::EntityBatchResult {
            results: vec![
                pb::OperationResult {
                    result_type: Some(ResultType::Success(pb::OperationResultSuccess {
                        result: None,
                        ..Default::default()
                    })),
                },
                pb::OperationResult {
                    result_type: Some(ResultType::Success(pb::OperationResultSuccess {
                        result: Some("0".into()),
                        ..Default::default()
                    })),
                },
            ],
            actions: vec![
                pb::OperationAction {
                    id: 0,
                    operation_action_type: Some(OpAction::SendSignal(pb::SendSignalAction {
                        instance_id: "@other@k".into(),
                        name: "ping".into(),
                        scheduled_time: Some(to_timestamp(later)),
                        ..Default::default()
                    })),
                },
                pb::OperationAction {
                    id: 1,
                    operation_action_type: Some(OpAction::StartNewOrchestration(
                        pb::StartNewOrchestrationAction {
                            name: "wf".into(),
                            ..Default::default()
                        },
                    )),
                },
            ],
            entity_state: Some("0".into()),
            ..Default::default()
        };
        let t = apply_entity_result(&record(None), &batch, &result, now(), &mut SeqIds(0)).unwrap();
        // Two results for three operations: the third stays queued.
        assert_eq!(t.consumed, vec![1, 2]);
        assert_eq!(t.state, Change::Set(Some("0".into())));
        assert_eq!(t.messages.len(), 2);
        assert_eq!(t.messages[0].target.as_str(), "o");
        assert_eq!(t.messages[0].target_execution, Some(ExecutionId::new("e1")));
        assert!(matches!(
            &t.messages[0].event.event_type,
            Some(EventType::EntityOperationCompleted(c)) if c.request_id == "r2" && c.output.as_deref() == Some("0")
        ));
        assert_eq!(t.messages[1].visible_at, later);
        assert_eq!(t.starts[0].instance_id.as_str(), "inst2");

        let failed = pb::EntityBatchResult {
            failure_details: Some(pb::TaskFailureDetails::default()),
            ..Default::default()
        };
        assert!(
            apply_entity_result(&record(None), &batch, &failed, now(), &mut SeqIds(0)).is_err()
        );
    }
}
