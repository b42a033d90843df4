//! `apply`: one episode's `OrchestratorResponse` → the `Transition` to commit
//! (PROTOCOL.md §4.4). PURE: time and new ids come in through the context.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use pb::history_event::EventType;
use pb::orchestrator_action::OrchestratorActionType as Action;

use super::entity::unlock_message;
use super::state::OrchestrationState;
use super::EngineError;
use crate::domain::events::{event, from_timestamp};
use crate::domain::{
    ChildCreation, ExecutionId, InstanceId, NewActivity, NewInstance, OutboundMessage,
    RuntimeStatus, StatusChange, Transition,
};
use crate::proto as pb;

/// Source of fresh execution ids (kept out of the pure core so tests are deterministic).
pub trait IdSource {
    /// A new, unique execution id.
    fn execution_id(&mut self) -> ExecutionId;
}

/// The episode being completed.
#[derive(Debug)]
pub struct ApplyContext<'a> {
    /// The instance.
    pub instance_id: &'a InstanceId,
    /// Its current execution (the one the episode ran against).
    pub execution_id: &'a ExecutionId,
    /// Committed history the worker replayed.
    pub past: &'a [pb::HistoryEvent],
    /// The episode's `newEvents` (`OrchestratorStarted` first).
    pub new_events: &'a [pb::HistoryEvent],
    /// Inbox rows the episode consumed.
    pub consumed: &'a [i64],
    /// Commit time.
    pub now: DateTime<Utc>,
}

/// Turns a worker's response into the transition to commit.
pub fn apply(
    ctx: &ApplyContext<'_>,
    response: &pb::OrchestratorResponse,
    ids: &mut dyn IdSource,
) -> Result<Transition, EngineError> {
    let state = OrchestrationState::from_events(ctx.past.iter().chain(ctx.new_events))?;
    let started = state.started.clone().ok_or_else(|| {
        EngineError::CorruptHistory("episode has no ExecutionStarted event".into())
    })?;
    let mut actions: Vec<&pb::OrchestratorAction> = response.actions.iter().collect();
    // The Go SDK emits actions in map order; ascending id with the completion last is the
    // order every other SDK uses (PROTOCOL.md §4.4.3).
    actions.sort_by_key(|a| (is_completion(a), a.id));

    let mut t = Transition {
        instance_id: ctx.instance_id.clone(),
        expected_execution_id: ctx.execution_id.clone(),
        expected_history_len: u32::try_from(ctx.past.len()).unwrap_or(u32::MAX),
        consumed: ctx.consumed.to_vec(),
        history_append: ctx.new_events.to_vec(),
        status: StatusChange::Progress,
        custom_status: response.custom_status.clone(),
        trace_context: response.orchestration_trace_context.clone(),
        activities: Vec::new(),
        messages: Vec::new(),
        children: Vec::new(),
        now: ctx.now,
    };
    let ending = actions.last().and_then(|a| completion_status(a)).is_some();
    if let Some(second) = actions.iter().rev().skip(1).find(|a| is_completion(a)) {
        return Err(EngineError::InvalidAction {
            id: second.id,
            reason: "more than one completeOrchestration action in one response".into(),
        });
    }
    let mut opened_now = std::collections::HashSet::new();

    for action in actions {
        let id = action.id;
        let Some(kind) = &action.orchestrator_action_type else {
            return Err(EngineError::InvalidAction {
                id,
                reason: "action has no type".into(),
            });
        };
        // Results come back by task id: two open tasks under one id would make one answer
        // match both.
        let starts_task = matches!(
            kind,
            Action::ScheduleTask(_) | Action::CreateTimer(_) | Action::CreateSubOrchestration(_)
        );
        if starts_task && (state.open_tasks.contains_key(&id) || !opened_now.insert(id)) {
            return Err(EngineError::InvalidAction {
                id,
                reason: format!("task id {id} is already used by an open task of this execution"),
            });
        }
        match kind {
            Action::ScheduleTask(task) => {
                let scheduled = event(
                    id,
                    ctx.now,
                    EventType::TaskScheduled(pb::TaskScheduledEvent {
                        name: task.name.clone(),
                        version: task.version.clone(),
                        input: task.input.clone(),
                        parent_trace_context: task.parent_trace_context.clone(),
                        tags: task.tags.clone(),
                    }),
                );
                // Results of work scheduled by an ending execution (terminal or
                // continued-as-new) could never be consumed.
                if !ending {
                    t.activities.push(NewActivity {
                        scheduled: scheduled.clone(),
                    });
                }
                t.history_append.push(scheduled);
            }
            Action::CreateTimer(timer) => {
                let fire_at = timer.fire_at.ok_or_else(|| EngineError::InvalidAction {
                    id,
                    reason: "createTimer without fireAt".into(),
                })?;
                t.history_append.push(event(
                    id,
                    ctx.now,
                    EventType::TimerCreated(pb::TimerCreatedEvent {
                        fire_at: Some(fire_at),
                    }),
                ));
                if !ending {
                    t.messages.push(OutboundMessage {
                        target: ctx.instance_id.clone(),
                        target_execution: Some(ctx.execution_id.clone()),
                        event: event(
                            -1,
                            from_timestamp(&fire_at),
                            EventType::TimerFired(pb::TimerFiredEvent {
                                fire_at: Some(fire_at),
                                timer_id: id,
                            }),
                        ),
                        visible_at: timer_visible_at(from_timestamp(&fire_at)),
                    });
                }
            }
            Action::CreateSubOrchestration(sub) => {
                let child_id = if sub.instance_id.is_empty() {
                    // durabletask-go backend/runtimestate.go: "<parent>:<action id as %04x>".
                    format!("{}:{:04x}", ctx.instance_id, id)
                } else {
                    sub.instance_id.clone()
                };
                if child_id.starts_with('@') {
                    return Err(EngineError::InvalidAction {
                        id,
                        reason: format!("sub-orchestration id '{child_id}' is an entity id"),
                    });
                }
                t.history_append.push(event(
                    id,
                    ctx.now,
                    EventType::SubOrchestrationInstanceCreated(
                        pb::SubOrchestrationInstanceCreatedEvent {
                            instance_id: child_id.clone(),
                            name: sub.name.clone(),
                            version: sub.version.clone(),
                            input: sub.input.clone(),
                            parent_trace_context: sub.parent_trace_context.clone(),
                            tags: sub.tags.clone(),
                        },
                    ),
                ));
                if !ending {
                    t.children
                        .push(child_creation(ctx, &started, id, child_id, sub, ids));
                }
            }
            Action::SendEvent(send) => {
                let target = send
                    .instance
                    .as_ref()
                    .map(|i| i.instance_id.clone())
                    .unwrap_or_default();
                if target.is_empty() {
                    return Err(EngineError::InvalidAction {
                        id,
                        reason: "sendEvent without a target instance".into(),
                    });
                }
                t.history_append.push(event(
                    id,
                    ctx.now,
                    EventType::EventSent(pb::EventSentEvent {
                        instance_id: target.clone(),
                        name: send.name.clone(),
                        input: send.data.clone(),
                    }),
                ));
                t.messages.push(OutboundMessage {
                    target: InstanceId::new(target),
                    target_execution: None,
                    event: event(
                        -1,
                        ctx.now,
                        EventType::EventRaised(pb::EventRaisedEvent {
                            name: send.name.clone(),
                            input: send.data.clone(),
                        }),
                    ),
                    visible_at: ctx.now,
                });
            }
            Action::TerminateOrchestration(term) => {
                t.messages.push(OutboundMessage {
                    target: InstanceId::new(term.instance_id.clone()),
                    target_execution: None,
                    event: event(
                        -1,
                        ctx.now,
                        EventType::ExecutionTerminated(pb::ExecutionTerminatedEvent {
                            input: term.reason.clone(),
                            recurse: term.recurse,
                        }),
                    ),
                    visible_at: ctx.now,
                });
            }
            Action::CompleteOrchestration(done) => {
                complete(ctx, &state, &started, id, done, &mut t, ids)?
            }
            Action::SendEntityMessage(send) => entity_message(ctx, id, send, &mut t)?,
            // A valid one is committed by the dispatcher before `apply` is reached
            // (`rewind::requested_history`, PROTOCOL.md §4.10 Flow A).
            Action::RewindOrchestration(_) => {
                return Err(EngineError::InvalidAction {
                    id,
                    reason: "rewindOrchestration needs a newHistory whose ExecutionStarted \
                             carries the new execution id"
                        .into(),
                });
            }
        }
    }
    Ok(t)
}

/// When a timer may fire: the first whole millisecond strictly after `fire_at`. The Java
/// SDK truncates `OrchestratorStarted` to milliseconds and treats a timer as due only when
/// that time is *after* `fireAt`; firing in the same millisecond makes it schedule an
/// extra zero-length timer (shifting task ids). Still never early for anyone.
fn timer_visible_at(fire_at: DateTime<Utc>) -> DateTime<Utc> {
    let ms = fire_at.timestamp_millis();
    DateTime::<Utc>::from_timestamp_millis(ms.saturating_add(1)).unwrap_or(fire_at)
}

/// A transition that fails the execution with `failure`, used when a worker's response
/// cannot be applied: the instance must not hang on a response we will never accept.
pub fn fail(
    ctx: &ApplyContext<'_>,
    failure: pb::TaskFailureDetails,
) -> Result<Transition, EngineError> {
    complete_without_worker(
        ctx,
        pb::CompleteOrchestrationAction {
            orchestration_status: pb::OrchestrationStatus::Failed as i32,
            failure_details: Some(failure),
            ..Default::default()
        },
    )
}

/// The transition that ends the episode's execution as TERMINATED with `reason` as its
/// output, as if the worker had answered with that completion (`SkipGraceful…`,
/// PROTOCOL.md §3.14): the parent is told, open entity locks are released.
pub fn terminate(ctx: &ApplyContext<'_>, reason: Option<&str>) -> Result<Transition, EngineError> {
    complete_without_worker(
        ctx,
        pb::CompleteOrchestrationAction {
            orchestration_status: pb::OrchestrationStatus::Terminated as i32,
            result: reason.map(str::to_owned),
            ..Default::default()
        },
    )
}

/// Applies a lone completion the sidecar decided on; a terminal completion needs no ids.
fn complete_without_worker(
    ctx: &ApplyContext<'_>,
    done: pb::CompleteOrchestrationAction,
) -> Result<Transition, EngineError> {
    let response = pb::OrchestratorResponse {
        instance_id: ctx.instance_id.to_string(),
        actions: vec![pb::OrchestratorAction {
            id: -1,
            orchestrator_action_type: Some(Action::CompleteOrchestration(done)),
        }],
        ..Default::default()
    };
    struct NoIds;
    impl IdSource for NoIds {
        fn execution_id(&mut self) -> ExecutionId {
            ExecutionId::new("")
        }
    }
    apply(ctx, &response, &mut NoIds)
}

fn is_completion(a: &pb::OrchestratorAction) -> bool {
    matches!(
        a.orchestrator_action_type,
        Some(Action::CompleteOrchestration(_))
    )
}

fn completion_status(a: &pb::OrchestratorAction) -> Option<i32> {
    match &a.orchestrator_action_type {
        Some(Action::CompleteOrchestration(c)) => Some(c.orchestration_status),
        _ => None,
    }
}

/// The child a `createSubOrchestration` starts (also used to recreate a purged child on
/// rewind), and the notice the parent gets instead when the id is taken.
pub(super) fn child_creation(
    ctx: &ApplyContext<'_>,
    parent: &pb::ExecutionStartedEvent,
    action_id: i32,
    child_id: String,
    sub: &pb::CreateSubOrchestrationAction,
    ids: &mut dyn IdSource,
) -> ChildCreation {
    let execution_id = ids.execution_id();
    let start = pb::ExecutionStartedEvent {
        name: sub.name.clone(),
        version: sub.version.clone(),
        input: sub.input.clone(),
        orchestration_instance: Some(pb::OrchestrationInstance {
            instance_id: child_id.clone(),
            execution_id: Some(execution_id.to_string()),
        }),
        parent_instance: Some(pb::ParentInstanceInfo {
            task_scheduled_id: action_id,
            name: Some(parent.name.clone()),
            version: parent.version.clone(),
            orchestration_instance: Some(pb::OrchestrationInstance {
                instance_id: ctx.instance_id.to_string(),
                execution_id: Some(ctx.execution_id.to_string()),
            }),
        }),
        scheduled_start_timestamp: None,
        parent_trace_context: sub.parent_trace_context.clone(),
        orchestration_span_id: None,
        tags: sub.tags.clone(),
    };
    let conflict = pb::SubOrchestrationInstanceFailedEvent {
        task_scheduled_id: action_id,
        failure_details: Some(pb::TaskFailureDetails {
            error_type: "OrchestrationAlreadyExistsException".into(),
            error_message: format!(
                "an orchestration instance with id '{child_id}' already exists and is not finished"
            ),
            ..Default::default()
        }),
    };
    ChildCreation {
        instance: NewInstance {
            instance_id: InstanceId::new(child_id),
            execution_id,
            name: sub.name.clone(),
            version: sub.version.clone(),
            input: sub.input.clone(),
            tags: sub
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
            scheduled_start_at: None,
            parent_instance_id: Some(ctx.instance_id.clone()),
            start_event: event(-1, ctx.now, EventType::ExecutionStarted(start)),
            created_at: ctx.now,
        },
        on_conflict: OutboundMessage {
            target: ctx.instance_id.clone(),
            target_execution: Some(ctx.execution_id.clone()),
            event: event(
                -1,
                ctx.now,
                EventType::SubOrchestrationInstanceFailed(conflict),
            ),
            visible_at: ctx.now,
        },
    }
}

fn complete(
    ctx: &ApplyContext<'_>,
    state: &OrchestrationState,
    started: &pb::ExecutionStartedEvent,
    id: i32,
    done: &pb::CompleteOrchestrationAction,
    t: &mut Transition,
    ids: &mut dyn IdSource,
) -> Result<(), EngineError> {
    let status = RuntimeStatus::from_i32(done.orchestration_status).ok_or_else(|| {
        EngineError::InvalidAction {
            id,
            reason: format!("unknown orchestration status {}", done.orchestration_status),
        }
    })?;
    if status.is_terminal() || status == RuntimeStatus::ContinuedAsNew {
        release_open_locks(ctx, state, t);
    }
    match status {
        RuntimeStatus::ContinuedAsNew => {
            let execution_id = ids.execution_id();
            let version = done.new_version.clone().or_else(|| started.version.clone());
            let start = pb::ExecutionStartedEvent {
                version: version.clone(),
                input: done.result.clone(),
                orchestration_instance: Some(pb::OrchestrationInstance {
                    instance_id: ctx.instance_id.to_string(),
                    execution_id: Some(execution_id.to_string()),
                }),
                scheduled_start_timestamp: None,
                ..started.clone()
            };
            let mut inbox_head = vec![event(-1, ctx.now, EventType::ExecutionStarted(start))];
            inbox_head.extend(done.carryover_events.iter().cloned());
            t.status = StatusChange::ContinuedAsNew {
                execution_id,
                input: done.result.clone(),
                version,
                inbox_head,
            };
            // Only fire-and-forget effects survive into the new execution (§4.4.6 step 4):
            // `ending` already kept activities, timers and children out of `t`.
        }
        RuntimeStatus::Completed
        | RuntimeStatus::Failed
        | RuntimeStatus::Terminated
        | RuntimeStatus::Canceled => {
            let failure = if status == RuntimeStatus::Failed {
                done.failure_details.clone()
            } else {
                None
            };
            t.history_append.push(event(
                id,
                ctx.now,
                EventType::ExecutionCompleted(pb::ExecutionCompletedEvent {
                    orchestration_status: done.orchestration_status,
                    result: done.result.clone(),
                    failure_details: failure.clone(),
                }),
            ));
            if let Some(parent) = &started.parent_instance {
                t.messages.push(parent_notice(ctx, parent, status, done));
            }
            if status == RuntimeStatus::Terminated {
                if let Some(term) = state.terminated.as_ref().filter(|term| term.recurse) {
                    for child in &state.children {
                        t.messages.push(OutboundMessage {
                            target: InstanceId::new(child.clone()),
                            target_execution: None,
                            event: event(-1, ctx.now, EventType::ExecutionTerminated(term.clone())),
                            visible_at: ctx.now,
                        });
                    }
                }
            }
            t.status = StatusChange::Terminal {
                status,
                output: done.result.clone(),
                failure,
            };
        }
        RuntimeStatus::Running | RuntimeStatus::Pending | RuntimeStatus::Suspended => {
            return Err(EngineError::InvalidAction {
                id,
                reason: format!("completeOrchestration with non-final status {status}"),
            });
        }
    }
    Ok(())
}

/// `sendEntityMessage` (PROTOCOL.md §5.5): the contained event goes into the history
/// with the action's id and, as a message, to the entity that must handle it.
fn entity_message(
    ctx: &ApplyContext<'_>,
    id: i32,
    send: &pb::SendEntityMessageAction,
    t: &mut Transition,
) -> Result<(), EngineError> {
    use pb::send_entity_message_action::EntityMessageType as M;
    let invalid = |reason: &str| EngineError::InvalidAction {
        id,
        reason: reason.to_string(),
    };
    let (kind, target, visible_at) = match &send.entity_message_type {
        Some(M::EntityOperationSignaled(s)) => {
            let at = s.scheduled_time.as_ref().map(from_timestamp);
            (
                EventType::EntityOperationSignaled(s.clone()),
                s.target_instance_id.clone(),
                at.filter(|at| *at > ctx.now).unwrap_or(ctx.now),
            )
        }
        Some(M::EntityOperationCalled(c)) => {
            let mut c = c.clone();
            // The response is routed by these; fill what an SDK left out (§5.5).
            c.parent_instance_id
                .get_or_insert_with(|| ctx.instance_id.to_string());
            c.parent_execution_id
                .get_or_insert_with(|| ctx.execution_id.to_string());
            let target = c.target_instance_id.clone();
            (EventType::EntityOperationCalled(c), target, ctx.now)
        }
        Some(M::EntityLockRequested(r)) => {
            let mut r = r.clone();
            r.parent_instance_id
                .get_or_insert_with(|| ctx.instance_id.to_string());
            let first = r
                .lock_set
                .get(usize::try_from(r.position).unwrap_or(0))
                .cloned();
            (EventType::EntityLockRequested(r), first, ctx.now)
        }
        Some(M::EntityUnlockSent(u)) => (
            EventType::EntityUnlockSent(u.clone()),
            u.target_instance_id.clone(),
            ctx.now,
        ),
        None => return Err(invalid("sendEntityMessage without a message")),
    };
    let target = target
        .filter(|t| t.starts_with('@'))
        .ok_or_else(|| invalid("sendEntityMessage without a target entity id ('@name@key')"))?;
    t.history_append.push(event(id, ctx.now, kind.clone()));
    t.messages.push(OutboundMessage {
        target: InstanceId::new(target),
        target_execution: None,
        event: event(-1, ctx.now, kind),
        visible_at,
    });
    Ok(())
}

/// An execution that ends inside a critical section releases its entity locks
/// (PROTOCOL.md §5.4 rule 5), unless its last actions already did.
fn release_open_locks(ctx: &ApplyContext<'_>, state: &OrchestrationState, t: &mut Transition) {
    let mut open = OrchestrationState {
        open_locks: state.open_locks.clone(),
        ..OrchestrationState::default()
    };
    for e in &t.history_append {
        match &e.event_type {
            Some(EventType::EntityUnlockSent(u)) => open.unlock_sent(u),
            Some(EventType::EntityLockRequested(r)) => {
                open.open_locks
                    .insert(r.critical_section_id.clone(), r.lock_set.clone());
            }
            _ => {}
        }
    }
    for (section, entities) in &open.open_locks {
        for entity in entities {
            t.messages.push(unlock_message(
                entity,
                section,
                Some(ctx.instance_id.to_string()),
                ctx.now,
            ));
        }
    }
}

/// The `SubOrchestrationInstanceCompleted/Failed` a child ending with `status` sends to
/// its parent (also re-sent on rewind for a child that ended while the parent was failed).
pub(super) fn parent_notice(
    ctx: &ApplyContext<'_>,
    parent: &pb::ParentInstanceInfo,
    status: RuntimeStatus,
    done: &pb::CompleteOrchestrationAction,
) -> OutboundMessage {
    let task_scheduled_id = parent.task_scheduled_id;
    let kind = match status {
        RuntimeStatus::Completed => EventType::SubOrchestrationInstanceCompleted(
            pb::SubOrchestrationInstanceCompletedEvent {
                task_scheduled_id,
                result: done.result.clone(),
            },
        ),
        _ => {
            let failure_details = match (status, &done.failure_details) {
                (RuntimeStatus::Failed, Some(f)) => f.clone(),
                _ => pb::TaskFailureDetails {
                    error_type: format!("Orchestration{}", title_case(status.name())),
                    error_message: format!(
                        "sub-orchestration '{}' ended with status {status}{}",
                        ctx.instance_id,
                        done.result
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ),
                    ..Default::default()
                },
            };
            EventType::SubOrchestrationInstanceFailed(pb::SubOrchestrationInstanceFailedEvent {
                task_scheduled_id,
                failure_details: Some(failure_details),
            })
        }
    };
    let instance = parent.orchestration_instance.clone().unwrap_or_default();
    OutboundMessage {
        target: InstanceId::new(instance.instance_id),
        target_execution: instance
            .execution_id
            .filter(|e| !e.is_empty())
            .map(ExecutionId::new),
        event: event(-1, ctx.now, kind),
        visible_at: ctx.now,
    }
}

fn title_case(upper: &str) -> String {
    let lower = upper.to_ascii_lowercase();
    let mut chars = lower.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{at, HistoryBuilder, SeqIds};
    use pb::orchestrator_action::OrchestratorActionType as A;

    fn action(id: i32, kind: A) -> pb::OrchestratorAction {
        pb::OrchestratorAction {
            id,
            orchestrator_action_type: Some(kind),
        }
    }

    fn complete(status: pb::OrchestrationStatus, result: Option<&str>) -> A {
        A::CompleteOrchestration(pb::CompleteOrchestrationAction {
            orchestration_status: status as i32,
            result: result.map(Into::into),
            ..Default::default()
        })
    }

    fn run(
        past: &[pb::HistoryEvent],
        new: &[pb::HistoryEvent],
        actions: Vec<pb::OrchestratorAction>,
    ) -> Result<Transition, EngineError> {
        let id = InstanceId::new("i1");
        let exec = ExecutionId::new("e1");
        let ctx = ApplyContext {
            instance_id: &id,
            execution_id: &exec,
            past,
            new_events: new,
            consumed: &[7],
            now: at(10),
        };
        let response = pb::OrchestratorResponse {
            instance_id: "i1".into(),
            actions,
            custom_status: Some("cs".into()),
            ..Default::default()
        };
        apply(&ctx, &response, &mut SeqIds(0))
    }

    fn kinds(events: &[pb::HistoryEvent]) -> Vec<&'static str> {
        events
            .iter()
            .map(crate::domain::events::kind_name)
            .collect()
    }

    /// First episode: 1 OrchestratorStarted, 2 ExecutionStarted; the worker schedules
    /// activities 1 and 0 (out of order) and a timer 2.
    #[test]
    fn first_episode_schedules_tasks_in_id_order_and_a_timer_for_this_execution() {
        let new = HistoryBuilder::new("i1", "o").build();
        let t = run(
            &[],
            &new,
            vec![
                action(
                    1,
                    A::ScheduleTask(pb::ScheduleTaskAction {
                        name: "b".into(),
                        ..Default::default()
                    }),
                ),
                action(
                    0,
                    A::ScheduleTask(pb::ScheduleTaskAction {
                        name: "a".into(),
                        ..Default::default()
                    }),
                ),
                action(
                    2,
                    A::CreateTimer(pb::CreateTimerAction {
                        fire_at: Some(to_ts(at(70))),
                    }),
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            kinds(&t.history_append),
            vec![
                "OrchestratorStarted",
                "ExecutionStarted",
                "TaskScheduled",
                "TaskScheduled",
                "TimerCreated"
            ]
        );
        assert_eq!(t.history_append[2].event_id, 0);
        assert_eq!(t.activities.len(), 2);
        assert_eq!(t.status, StatusChange::Progress);
        assert_eq!(t.custom_status.as_deref(), Some("cs"));
        assert_eq!(t.consumed, vec![7]);
        assert_eq!(t.expected_history_len, 0);
        let timer = &t.messages[0];
        assert_eq!(timer.target_execution, Some(ExecutionId::new("e1")));
        // The first whole millisecond after fireAt (Java compares at millisecond precision).
        assert_eq!(timer.visible_at, at(70) + chrono::Duration::milliseconds(1));
        assert!(
            matches!(timer.event.event_type, Some(EventType::TimerFired(ref f)) if f.timer_id == 2)
        );
    }

    fn to_ts(t: DateTime<Utc>) -> prost_types::Timestamp {
        crate::domain::events::to_timestamp(t)
    }

    /// Past: started, TaskScheduled(0). New: OrchestratorStarted, TaskCompleted(0).
    /// The worker completes; the parent link gets a SubOrchestrationInstanceCompleted.
    #[test]
    fn completion_of_a_child_notifies_the_parent_execution() {
        let parent = pb::ParentInstanceInfo {
            task_scheduled_id: 5,
            name: Some("p".into()),
            version: None,
            orchestration_instance: Some(pb::OrchestrationInstance {
                instance_id: "p1".into(),
                execution_id: Some("pe".into()),
            }),
        };
        let mut past = vec![HistoryBuilder::started("i1", "child", Some(parent))];
        past.push(event(
            0,
            at(1),
            EventType::TaskScheduled(pb::TaskScheduledEvent::default()),
        ));
        let new = vec![crate::domain::events::orchestrator_started(at(10))];
        let t = run(
            &past,
            &new,
            vec![action(
                1,
                complete(pb::OrchestrationStatus::Completed, Some("42")),
            )],
        )
        .unwrap();
        assert_eq!(
            t.status,
            StatusChange::Terminal {
                status: RuntimeStatus::Completed,
                output: Some("42".into()),
                failure: None
            }
        );
        assert_eq!(
            kinds(&t.history_append),
            vec!["OrchestratorStarted", "ExecutionCompleted"]
        );
        let notice = &t.messages[0];
        assert_eq!(notice.target, InstanceId::new("p1"));
        assert_eq!(notice.target_execution, Some(ExecutionId::new("pe")));
        assert!(
            matches!(&notice.event.event_type, Some(EventType::SubOrchestrationInstanceCompleted(c)) if c.task_scheduled_id == 5 && c.result.as_deref() == Some("42"))
        );
    }

    /// Continue-as-new with a carry-over event and a sendEvent: the new execution's inbox
    /// head is ExecutionStarted(new input, new version) + the carry-over; the timer and the
    /// activity issued alongside are dropped; the sendEvent survives.
    #[test]
    fn continue_as_new_builds_the_new_inbox_head_and_keeps_fire_and_forget_sends() {
        let new = HistoryBuilder::new("i1", "o").build();
        let carry = HistoryBuilder::raised("e", Some("1"));
        let t = run(
            &[],
            &new,
            vec![
                action(
                    0,
                    A::ScheduleTask(pb::ScheduleTaskAction {
                        name: "a".into(),
                        ..Default::default()
                    }),
                ),
                action(
                    1,
                    A::SendEvent(pb::SendEventAction {
                        instance: Some(pb::OrchestrationInstance {
                            instance_id: "other".into(),
                            execution_id: None,
                        }),
                        name: "n".into(),
                        data: None,
                    }),
                ),
                action(
                    2,
                    A::CompleteOrchestration(pb::CompleteOrchestrationAction {
                        orchestration_status: pb::OrchestrationStatus::ContinuedAsNew as i32,
                        result: Some("7".into()),
                        new_version: Some("v2".into()),
                        carryover_events: vec![carry.clone()],
                        ..Default::default()
                    }),
                ),
            ],
        )
        .unwrap();
        let StatusChange::ContinuedAsNew {
            execution_id,
            input,
            version,
            inbox_head,
        } = &t.status
        else {
            panic!("{:?}", t.status)
        };
        assert_eq!(execution_id, &ExecutionId::new("x1"));
        assert_eq!(input.as_deref(), Some("7"));
        assert_eq!(version.as_deref(), Some("v2"));
        assert_eq!(kinds(inbox_head), vec!["ExecutionStarted", "EventRaised"]);
        let Some(EventType::ExecutionStarted(s)) = &inbox_head[0].event_type else {
            panic!()
        };
        assert_eq!(
            s.orchestration_instance
                .as_ref()
                .unwrap()
                .execution_id
                .as_deref(),
            Some("x1")
        );
        assert!(t.activities.is_empty());
        assert_eq!(t.messages.len(), 1);
        assert_eq!(t.messages[0].target, InstanceId::new("other"));
    }

    /// Past holds ExecutionTerminated(recurse) and two children; the worker answers
    /// TERMINATED: both children get ExecutionTerminated.
    #[test]
    fn recursive_termination_reaches_every_child() {
        let past = HistoryBuilder::new("i1", "o")
            .child_created(0, "c0", "k")
            .child_created(1, "c1", "k")
            .build();
        let new = vec![
            crate::domain::events::orchestrator_started(at(10)),
            HistoryBuilder::terminated("\"bye\"", true),
        ];
        let t = run(
            &past,
            &new,
            vec![action(
                -1,
                complete(pb::OrchestrationStatus::Terminated, Some("\"bye\"")),
            )],
        )
        .unwrap();
        let targets: Vec<_> = t.messages.iter().map(|m| m.target.to_string()).collect();
        assert_eq!(targets, vec!["c0", "c1"]);
        assert!(matches!(
            t.status,
            StatusChange::Terminal {
                status: RuntimeStatus::Terminated,
                ..
            }
        ));
    }

    #[test]
    fn sub_orchestration_without_id_gets_the_go_fallback_id_and_a_conflict_notice() {
        let new = HistoryBuilder::new("i1", "o").build();
        let t = run(
            &[],
            &new,
            vec![action(
                10,
                A::CreateSubOrchestration(pb::CreateSubOrchestrationAction {
                    name: "k".into(),
                    ..Default::default()
                }),
            )],
        )
        .unwrap();
        let child = &t.children[0];
        assert_eq!(child.instance.instance_id, InstanceId::new("i1:000a"));
        assert_eq!(
            child.instance.parent_instance_id,
            Some(InstanceId::new("i1"))
        );
        assert!(
            matches!(&child.on_conflict.event.event_type, Some(EventType::SubOrchestrationInstanceFailed(f)) if f.task_scheduled_id == 10)
        );
    }

    #[test]
    fn empty_action_and_non_final_completion_are_invalid() {
        let new = HistoryBuilder::new("i1", "o").build();
        let empty = pb::OrchestratorAction {
            id: 3,
            orchestrator_action_type: None,
        };
        assert!(matches!(
            run(&[], &new, vec![empty]),
            Err(EngineError::InvalidAction { id: 3, .. })
        ));
        let running = action(4, complete(pb::OrchestrationStatus::Running, None));
        assert!(matches!(
            run(&[], &new, vec![running]),
            Err(EngineError::InvalidAction { id: 4, .. })
        ));
    }

    #[test]
    fn fail_builds_a_failed_terminal_transition() {
        let new = HistoryBuilder::new("i1", "o").build();
        let id = InstanceId::new("i1");
        let exec = ExecutionId::new("e1");
        let ctx = ApplyContext {
            instance_id: &id,
            execution_id: &exec,
            past: &[],
            new_events: &new,
            consumed: &[],
            now: at(1),
        };
        let t = fail(
            &ctx,
            pb::TaskFailureDetails {
                error_message: "bad".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            matches!(t.status, StatusChange::Terminal { status: RuntimeStatus::Failed, failure: Some(ref f), .. } if f.error_message == "bad")
        );
    }

    /// Found by tests/engine_properties.rs: the id of an open task reused, or two
    /// completions, used to be committed, leaving a history where one answer matches two
    /// tasks. An answered id may be reused (the Python SDK retries under the first id).
    #[test]
    fn reused_task_ids_and_second_completions_are_refused() {
        let past = HistoryBuilder::new("i1", "o")
            .task_scheduled(0, "a")
            .build();
        let new = vec![crate::domain::events::orchestrator_started(at(10))];
        let timer = || {
            A::CreateTimer(pb::CreateTimerAction {
                fire_at: Some(crate::domain::events::to_timestamp(at(20))),
            })
        };
        let reused_from_history = run(&past, &new, vec![action(0, timer())]);
        assert!(
            matches!(
                reused_from_history,
                Err(EngineError::InvalidAction { id: 0, .. })
            ),
            "{reused_from_history:?}"
        );
        let reused_in_response = run(&past, &new, vec![action(1, timer()), action(1, timer())]);
        assert!(matches!(
            reused_in_response,
            Err(EngineError::InvalidAction { id: 1, .. })
        ));
        let done = || complete(pb::OrchestrationStatus::Completed, None);
        let two = run(&past, &new, vec![action(1, done()), action(2, done())]);
        assert!(
            matches!(two, Err(EngineError::InvalidAction { .. })),
            "{two:?}"
        );
        assert!(run(&past, &new, vec![action(1, timer()), action(2, done())]).is_ok());

        let answered = HistoryBuilder::new("i1", "o")
            .task_scheduled(0, "a")
            .task_completed(0, "1")
            .build();
        let retry = vec![action(
            0,
            A::ScheduleTask(pb::ScheduleTaskAction {
                name: "a".into(),
                ..Default::default()
            }),
        )];
        assert!(run(&answered, &new, retry).is_ok());
    }
}
