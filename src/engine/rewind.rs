//! Rewind (PROTOCOL.md §4.10), the pure part: the history rewrite the Python and JS SDKs
//! do, and the plan of everything one rewind writes. PURE: no async, no I/O, no clock;
//! time and new execution ids come in from the caller.
//!
//! Planning walks the rewound instance's children, and the children of failed children,
//! so it needs their records. The caller loads what [`plan_rewind`] asks for
//! ([`Planned::Need`]) and calls it again; the store applies the finished plan in one
//! transaction whose guards catch anything that changed since the snapshot.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use pb::history_event::EventType;
use pb::orchestrator_action::OrchestratorActionType as Action;

use super::apply::{self, ApplyContext, IdSource};
use super::EngineError;
use crate::domain::events::{event, from_timestamp};
use crate::domain::{
    ExecutionId, InstanceId, InstanceRecord, OutboundMessage, ParentRelink, RewindPlan,
    RewoundExecution, RuntimeStatus,
};
use crate::proto as pb;
use crate::store::StoreError;

/// Why a rewind was refused or did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RewindError {
    /// No such instance.
    #[error("no orchestration instance with id '{0}'")]
    NotFound(InstanceId),
    /// Only FAILED instances can be rewound (PROTOCOL.md §3.7).
    #[error("instance '{instance_id}' has status {status}, which does not allow rewinding; only FAILED instances can be rewound")]
    NotFailed {
        /// The instance.
        instance_id: InstanceId,
        /// Its current status.
        status: RuntimeStatus,
    },
    /// The instance (or a child) kept changing while the rewind was planned.
    #[error("instance '{0}' changed repeatedly while it was being rewound; try again")]
    Contended(InstanceId),
    /// A history cannot be rewound.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the planner knows about one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The stored record.
    pub record: InstanceRecord,
    /// The committed history; loaded only for FAILED instances (the ones rewound).
    pub history: Vec<pb::HistoryEvent>,
}

/// Snapshots of children by id; `None` = the child does not exist (purged).
pub type Snapshots = HashMap<InstanceId, Option<Snapshot>>;

/// The instance a rewind starts from.
#[derive(Debug, Clone, Copy)]
pub enum Root<'a> {
    /// A FAILED instance whose history the server rewrites (`RewindInstance`, Flow B).
    Failed(&'a Snapshot),
    /// A worker's `rewindOrchestration{newHistory}` for an outstanding episode (Flow A).
    Replacement {
        /// The record the episode was built from.
        record: &'a InstanceRecord,
        /// The history length the episode saw.
        expected_history_len: u32,
        /// Inbox rows the episode delivered.
        consumed: &'a [i64],
        /// The worker's replacement history.
        history: &'a [pb::HistoryEvent],
    },
}

/// The outcome of one planning pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// Everything to commit.
    Ready(RewindPlan),
    /// Load these children's snapshots and plan again.
    Need(Vec<InstanceId>),
}

/// The history rewrite of PROTOCOL.md §4.10, exactly as the SDKs do it (Python
/// `worker.py` `_build_rewind_result`): drop every `TaskFailed` and the `TaskScheduled`
/// it answers, every `SubOrchestrationInstanceFailed` and `ExecutionCompleted`; give
/// `ExecutionStarted` the new execution id and, for a rewound child, its parent's new
/// execution id. Everything else stays, in order.
pub fn rewrite_history(
    history: &[pb::HistoryEvent],
    execution_id: &ExecutionId,
    parent_execution_id: Option<&ExecutionId>,
) -> Vec<pb::HistoryEvent> {
    let failed: HashSet<i32> = history
        .iter()
        .filter_map(|e| match &e.event_type {
            Some(EventType::TaskFailed(f)) => Some(f.task_scheduled_id),
            _ => None,
        })
        .collect();
    history
        .iter()
        .filter(|e| match &e.event_type {
            Some(
                EventType::TaskFailed(_)
                | EventType::SubOrchestrationInstanceFailed(_)
                | EventType::ExecutionCompleted(_),
            ) => false,
            Some(EventType::TaskScheduled(_)) => !failed.contains(&e.event_id),
            _ => true,
        })
        .map(|e| {
            let mut e = e.clone();
            if let Some(EventType::ExecutionStarted(started)) = &mut e.event_type {
                started
                    .orchestration_instance
                    .get_or_insert_with(Default::default)
                    .execution_id = Some(execution_id.to_string());
                if let (Some(parent_execution), Some(parent)) =
                    (parent_execution_id, started.parent_instance.as_mut())
                {
                    parent
                        .orchestration_instance
                        .get_or_insert_with(Default::default)
                        .execution_id = Some(parent_execution.to_string());
                }
            }
            e
        })
        .collect()
}

/// Work an execution still waits for: what it scheduled and has no result for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenWork {
    /// `TaskScheduled` events without `TaskCompleted`/`TaskFailed`.
    pub tasks: Vec<pb::HistoryEvent>,
    /// `(timerId, fireAt)` of `TimerCreated` events without `TimerFired`.
    pub timers: Vec<(i32, prost_types::Timestamp)>,
    /// Children created without a `SubOrchestrationInstanceCompleted`, one per child id
    /// (the latest creation wins: retries reuse child ids).
    pub children: Vec<OpenChild>,
}

/// A child the execution still waits for.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenChild {
    /// The creating event's id (the parent link's `taskScheduledId`).
    pub task_scheduled_id: i32,
    /// The creation.
    pub created: pb::SubOrchestrationInstanceCreatedEvent,
}

/// The open work of a history (results are matched by id, each answering one request).
pub fn open_work(history: &[pb::HistoryEvent]) -> OpenWork {
    let mut task_results: HashMap<i32, usize> = HashMap::new();
    let mut timer_results: HashMap<i32, usize> = HashMap::new();
    let mut child_results: HashSet<i32> = HashSet::new();
    for e in history {
        match &e.event_type {
            Some(EventType::TaskCompleted(c)) => {
                *task_results.entry(c.task_scheduled_id).or_default() += 1
            }
            Some(EventType::TaskFailed(f)) => {
                *task_results.entry(f.task_scheduled_id).or_default() += 1
            }
            Some(EventType::TimerFired(f)) => *timer_results.entry(f.timer_id).or_default() += 1,
            Some(EventType::SubOrchestrationInstanceCompleted(c)) => {
                child_results.insert(c.task_scheduled_id);
            }
            _ => {}
        }
    }
    let mut open = OpenWork::default();
    let answered = |results: &mut HashMap<i32, usize>, id: i32| match results.get_mut(&id) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    };
    for e in history {
        match &e.event_type {
            Some(EventType::TaskScheduled(_)) if !answered(&mut task_results, e.event_id) => {
                open.tasks.push(e.clone());
            }
            Some(EventType::TimerCreated(t)) if !answered(&mut timer_results, e.event_id) => {
                if let Some(fire_at) = t.fire_at {
                    open.timers.push((e.event_id, fire_at));
                }
            }
            Some(EventType::SubOrchestrationInstanceCreated(c))
                if !child_results.contains(&e.event_id) =>
            {
                open.children
                    .retain(|o| o.created.instance_id != c.instance_id);
                open.children.push(OpenChild {
                    task_scheduled_id: e.event_id,
                    created: c.clone(),
                });
            }
            _ => {}
        }
    }
    open
}

/// The replacement history of a worker's `rewindOrchestration` action, if the response
/// carries one whose `ExecutionStarted` names the new execution (PROTOCOL.md §4.10 Flow A
/// step 3); anything else is left to `apply`, which rejects it.
pub fn requested_history(response: &pb::OrchestratorResponse) -> Option<&[pb::HistoryEvent]> {
    let history = response
        .actions
        .iter()
        .find_map(|a| match &a.orchestrator_action_type {
            Some(Action::RewindOrchestration(r)) => Some(r.new_history.as_slice()),
            _ => None,
        })?;
    execution_of(history).map(|_| history)
}

/// The execution id recorded in a history's `ExecutionStarted`, if any.
fn execution_of(history: &[pb::HistoryEvent]) -> Option<ExecutionId> {
    started_of(history)?
        .orchestration_instance
        .as_ref()?
        .execution_id
        .as_deref()
        .filter(|e| !e.is_empty())
        .map(ExecutionId::new)
}

fn started_of(history: &[pb::HistoryEvent]) -> Option<&pb::ExecutionStartedEvent> {
    history.iter().find_map(|e| match &e.event_type {
        Some(EventType::ExecutionStarted(s)) => Some(s),
        _ => None,
    })
}

/// Plans a rewind from `root`, or names the child snapshots it still needs.
pub fn plan_rewind(
    root: Root<'_>,
    children: &Snapshots,
    reason: Option<&str>,
    now: DateTime<Utc>,
    ids: &mut dyn IdSource,
) -> Result<Planned, EngineError> {
    let mut planner = Planner {
        children,
        now,
        ids,
        plan: RewindPlan {
            executions: Vec::new(),
            recreated: Vec::new(),
            relinked: Vec::new(),
            now,
        },
        need: Vec::new(),
        seen: HashSet::new(),
    };
    match root {
        Root::Failed(s) => {
            planner.seen.insert(s.record.instance_id.clone());
            planner.rewind_failed(s, None, reason)?;
        }
        Root::Replacement {
            record,
            expected_history_len,
            consumed,
            history,
        } => {
            planner.seen.insert(record.instance_id.clone());
            let execution_id = execution_of(history).ok_or_else(|| {
                EngineError::CorruptHistory(
                    "rewindOrchestration history has no ExecutionStarted with an execution id"
                        .into(),
                )
            })?;
            // The worker's history carries the trigger event with the reason.
            let reason = history.iter().rev().find_map(|e| match &e.event_type {
                Some(EventType::ExecutionRewound(r)) => Some(r.reason.clone()),
                _ => None,
            });
            let target = Target {
                record,
                expected_history_len,
                consumed: consumed.to_vec(),
                parent_execution: None,
                lost_work: false,
            };
            planner.finish(
                target,
                execution_id,
                history.to_vec(),
                reason.flatten().as_deref(),
            )?;
        }
    }
    if planner.need.is_empty() {
        Ok(Planned::Ready(planner.plan))
    } else {
        Ok(Planned::Need(planner.need))
    }
}

struct Planner<'a> {
    children: &'a Snapshots,
    now: DateTime<Utc>,
    ids: &'a mut dyn IdSource,
    plan: RewindPlan,
    need: Vec<InstanceId>,
    /// Instances already rewound in this plan (guards against id cycles).
    seen: HashSet<InstanceId>,
}

/// One execution being rewound.
struct Target<'a> {
    record: &'a InstanceRecord,
    expected_history_len: u32,
    consumed: Vec<i64>,
    /// For a rewound child: its parent's new execution.
    parent_execution: Option<ExecutionId>,
    /// Whether results may have been dropped while the instance was terminal (so pending
    /// timers are re-armed and missing activity rows re-created). Not so for a worker's
    /// rewind of a live episode: its messages are still in the inbox.
    lost_work: bool,
}

impl Planner<'_> {
    /// Flow B: the server rewrites a FAILED instance's stored history.
    fn rewind_failed(
        &mut self,
        s: &Snapshot,
        parent_execution: Option<ExecutionId>,
        reason: Option<&str>,
    ) -> Result<(), EngineError> {
        if started_of(&s.history).is_none() {
            return Err(EngineError::CorruptHistory(format!(
                "failed instance '{}' has no ExecutionStarted to rewind",
                s.record.instance_id
            )));
        }
        let execution_id = self.ids.execution_id();
        let history = rewrite_history(&s.history, &execution_id, parent_execution.as_ref());
        let target = Target {
            record: &s.record,
            expected_history_len: u32::try_from(s.history.len()).unwrap_or(u32::MAX),
            consumed: Vec::new(),
            parent_execution,
            lost_work: true,
        };
        self.finish(target, execution_id, history, reason)
    }

    /// Adds the execution to the plan and decides what happens to each open child.
    fn finish(
        &mut self,
        target: Target<'_>,
        execution_id: ExecutionId,
        history: Vec<pb::HistoryEvent>,
        reason: Option<&str>,
    ) -> Result<(), EngineError> {
        let id = &target.record.instance_id;
        let open = open_work(&history);
        let started = started_of(&history).cloned().ok_or_else(|| {
            EngineError::CorruptHistory("rewound history has no ExecutionStarted".into())
        })?;
        let message = |kind: EventType, at: DateTime<Utc>| OutboundMessage {
            target: id.clone(),
            target_execution: Some(execution_id.clone()),
            event: event(-1, at, kind),
            visible_at: at,
        };
        // The wake-up: consumed by the next episode without being delivered, so that
        // episode's newEvents are just [OrchestratorStarted] (`plan::plan_episode`). The
        // reason stays with it, server-side; Java and Go workers cannot replay the event.
        let mut messages = vec![message(
            EventType::ExecutionRewound(pb::ExecutionRewoundEvent {
                reason: reason.map(Into::into),
                parent_execution_id: target.parent_execution.as_ref().map(ToString::to_string),
                instance_id: Some(id.to_string()),
                ..Default::default()
            }),
            self.now,
        )];
        if target.lost_work {
            // Timer messages were deleted when the instance ended; fire them again at their
            // original time for the new execution.
            for (timer_id, fire_at) in &open.timers {
                messages.push(message(
                    EventType::TimerFired(pb::TimerFiredEvent {
                        fire_at: Some(*fire_at),
                        timer_id: *timer_id,
                    }),
                    from_timestamp(fire_at),
                ));
            }
        }
        let parent_ctx = ApplyContext {
            instance_id: id,
            execution_id: &execution_id,
            past: &[],
            new_events: &[],
            consumed: &[],
            now: self.now,
        };
        let mut rewind_children = Vec::new();
        for child in &open.children {
            let child_id = InstanceId::new(child.created.instance_id.clone());
            if self.seen.contains(&child_id) {
                continue;
            }
            let snapshot = match self.children.get(&child_id) {
                None => {
                    self.need.push(child_id);
                    continue;
                }
                Some(s) => s,
            };
            let Some(s) = snapshot else {
                // Purged: create it again from its creation event, linked to the new
                // execution (same creation as the original `createSubOrchestration`).
                let sub = pb::CreateSubOrchestrationAction {
                    instance_id: child.created.instance_id.clone(),
                    name: child.created.name.clone(),
                    version: child.created.version.clone(),
                    input: child.created.input.clone(),
                    parent_trace_context: child.created.parent_trace_context.clone(),
                    tags: child.created.tags.clone(),
                };
                let creation = apply::child_creation(
                    &parent_ctx,
                    &started,
                    child.task_scheduled_id,
                    child.created.instance_id.clone(),
                    &sub,
                    self.ids,
                );
                self.seen.insert(child_id);
                self.plan.recreated.push(creation.instance);
                continue;
            };
            if s.record.parent_instance_id.as_ref() != Some(id) {
                // The id now belongs to an unrelated instance: not ours to touch.
                continue;
            }
            self.seen.insert(child_id.clone());
            match s.record.status {
                RuntimeStatus::Failed => rewind_children.push(s),
                RuntimeStatus::Completed | RuntimeStatus::Terminated | RuntimeStatus::Canceled => {
                    // It ended while the parent was terminal, so its notice was dropped
                    // (§4.5); deliver it again or the parent would wait forever.
                    let parent = pb::ParentInstanceInfo {
                        task_scheduled_id: child.task_scheduled_id,
                        name: Some(started.name.clone()),
                        version: started.version.clone(),
                        orchestration_instance: Some(pb::OrchestrationInstance {
                            instance_id: id.to_string(),
                            execution_id: Some(execution_id.to_string()),
                        }),
                    };
                    let done = pb::CompleteOrchestrationAction {
                        orchestration_status: s.record.status.as_i32(),
                        result: s.record.output.clone(),
                        failure_details: s.record.failure.clone(),
                        ..Default::default()
                    };
                    let child_ctx = ApplyContext {
                        instance_id: &s.record.instance_id,
                        execution_id: &s.record.execution_id,
                        past: &[],
                        new_events: &[],
                        consumed: &[],
                        now: self.now,
                    };
                    messages.push(apply::parent_notice(
                        &child_ctx,
                        &parent,
                        s.record.status,
                        &done,
                    ));
                }
                RuntimeStatus::Running
                | RuntimeStatus::Pending
                | RuntimeStatus::Suspended
                | RuntimeStatus::ContinuedAsNew => self.plan.relinked.push(ParentRelink {
                    instance_id: child_id,
                    parent_instance_id: id.clone(),
                    parent_execution_id: execution_id.clone(),
                }),
            }
        }
        self.plan.executions.push(RewoundExecution {
            instance_id: id.clone(),
            expected_execution_id: target.record.execution_id.clone(),
            expected_history_len: target.expected_history_len,
            expected_status: target.record.status,
            consumed: target.consumed,
            execution_id: execution_id.clone(),
            pending_tasks: if target.lost_work {
                open.tasks
            } else {
                Vec::new()
            },
            history,
            messages,
        });
        for s in rewind_children {
            self.rewind_failed(s, Some(execution_id.clone()), reason)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{at, record, HistoryBuilder, SeqIds};

    fn kinds(events: &[pb::HistoryEvent]) -> Vec<&'static str> {
        events
            .iter()
            .map(crate::domain::events::kind_name)
            .collect()
    }

    fn task_failed(id: i32) -> pb::HistoryEvent {
        event(
            -1,
            at(2),
            EventType::TaskFailed(pb::TaskFailedEvent {
                task_scheduled_id: id,
                failure_details: Some(pb::TaskFailureDetails {
                    error_message: "boom".into(),
                    ..Default::default()
                }),
            }),
        )
    }

    fn child_failed(id: i32) -> pb::HistoryEvent {
        event(
            -1,
            at(2),
            EventType::SubOrchestrationInstanceFailed(pb::SubOrchestrationInstanceFailedEvent {
                task_scheduled_id: id,
                failure_details: None,
            }),
        )
    }

    fn completed_failed() -> pb::HistoryEvent {
        event(
            -1,
            at(3),
            EventType::ExecutionCompleted(pb::ExecutionCompletedEvent {
                orchestration_status: pb::OrchestrationStatus::Failed as i32,
                ..Default::default()
            }),
        )
    }

    fn orchestrator_completed() -> pb::HistoryEvent {
        event(
            -1,
            at(3),
            EventType::OrchestratorCompleted(pb::OrchestratorCompletedEvent {}),
        )
    }

    fn timer_created(id: i32, secs: i64) -> pb::HistoryEvent {
        event(
            id,
            at(1),
            EventType::TimerCreated(pb::TimerCreatedEvent {
                fire_at: Some(crate::domain::events::to_timestamp(at(secs))),
            }),
        )
    }

    fn started(h: &[pb::HistoryEvent]) -> pb::ExecutionStartedEvent {
        started_of(h).cloned().unwrap()
    }

    fn failed(id: &str, history: Vec<pb::HistoryEvent>) -> Snapshot {
        let mut r = record(id, RuntimeStatus::Failed);
        r.history_len = history.len() as u32;
        Snapshot { record: r, history }
    }

    fn child_of(id: &str, parent: &str, status: RuntimeStatus) -> Snapshot {
        let mut r = record(id, status);
        r.parent_instance_id = Some(InstanceId::new(parent));
        r.execution_id = ExecutionId::new(format!("{id}-e"));
        Snapshot {
            record: r,
            history: Vec::new(),
        }
    }

    fn ready(p: Result<Planned, EngineError>) -> RewindPlan {
        match p.unwrap() {
            Planned::Ready(plan) => plan,
            Planned::Need(ids) => panic!("needs {ids:?}"),
        }
    }

    /// 1 OrchestratorStarted, 2 ExecutionStarted, 3 TaskScheduled(0), 4 TaskCompleted(0),
    /// 5 TaskScheduled(1), 6 OrchestratorCompleted, 7 OrchestratorStarted, 8 TaskFailed(1),
    /// 9 ExecutionCompleted(FAILED), 10 OrchestratorCompleted.
    fn failed_second_activity() -> Vec<pb::HistoryEvent> {
        HistoryBuilder::new("i1", "o")
            .task_scheduled(0, "ok")
            .task_completed(0, "\"r\"")
            .task_scheduled(1, "bad")
            .push(orchestrator_completed())
            .push(crate::domain::events::orchestrator_started(at(2)))
            .push(task_failed(1))
            .push(completed_failed())
            .push(orchestrator_completed())
            .build()
    }

    #[test]
    fn rewrite_drops_failed_tasks_with_their_schedules_and_the_completion_only() {
        let h = failed_second_activity();
        let out = rewrite_history(&h, &ExecutionId::new("new"), None);
        assert_eq!(
            kinds(&out),
            vec![
                "OrchestratorStarted",
                "ExecutionStarted",
                "TaskScheduled",
                "TaskCompleted",
                "OrchestratorCompleted",
                "OrchestratorStarted",
                "OrchestratorCompleted"
            ]
        );
        assert_eq!(out[2].event_id, 0);
        let s = started(&out);
        assert_eq!(
            s.orchestration_instance.unwrap().execution_id.as_deref(),
            Some("new")
        );
        assert!(s.parent_instance.is_none(), "no parent link is invented");
        // Untouched events are byte-identical.
        assert_eq!(out[3], h[3]);
    }

    #[test]
    fn rewrite_drops_failed_children_and_moves_the_parent_link() {
        let parent = pb::ParentInstanceInfo {
            task_scheduled_id: 4,
            name: Some("p".into()),
            version: None,
            orchestration_instance: Some(pb::OrchestrationInstance {
                instance_id: "p1".into(),
                execution_id: Some("old-parent".into()),
            }),
        };
        let h = vec![
            HistoryBuilder::started("c1", "child", Some(parent)),
            event(
                2,
                at(1),
                EventType::SubOrchestrationInstanceCreated(Default::default()),
            ),
            child_failed(2),
            completed_failed(),
        ];
        let out = rewrite_history(
            &h,
            &ExecutionId::new("new"),
            Some(&ExecutionId::new("new-parent")),
        );
        assert_eq!(
            kinds(&out),
            vec!["ExecutionStarted", "SubOrchestrationInstanceCreated"]
        );
        let link = started(&out).parent_instance.unwrap();
        assert_eq!(link.task_scheduled_id, 4);
        assert_eq!(
            link.orchestration_instance.unwrap().execution_id.as_deref(),
            Some("new-parent")
        );
    }

    #[test]
    fn open_work_lists_unanswered_tasks_timers_and_children() {
        let h = HistoryBuilder::new("i1", "o")
            .task_scheduled(0, "done")
            .task_completed(0, "1")
            .task_scheduled(1, "open")
            .push(timer_created(2, 60))
            .push(timer_created(3, 5))
            .push(HistoryBuilder::timer_fired(3))
            .child_created(4, "c", "k")
            .child_created(5, "c", "k")
            .child_created(6, "d", "k")
            .push(event(
                -1,
                at(4),
                EventType::SubOrchestrationInstanceCompleted(
                    pb::SubOrchestrationInstanceCompletedEvent {
                        task_scheduled_id: 6,
                        result: None,
                    },
                ),
            ))
            .build();
        let open = open_work(&h);
        assert_eq!(
            open.tasks.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(open.timers.iter().map(|t| t.0).collect::<Vec<_>>(), vec![2]);
        assert_eq!(open.children.len(), 1, "one entry per child id");
        assert_eq!(open.children[0].task_scheduled_id, 5, "the latest creation");
    }

    #[test]
    fn a_failed_activity_plan_rewinds_with_a_trigger_and_nothing_else_to_redo() {
        let s = failed("i1", failed_second_activity());
        let plan = ready(plan_rewind(
            Root::Failed(&s),
            &Snapshots::new(),
            Some("why"),
            at(10),
            &mut SeqIds(0),
        ));
        assert!(plan.recreated.is_empty() && plan.relinked.is_empty());
        let [x] = plan.executions.as_slice() else {
            panic!("{plan:?}")
        };
        assert_eq!(x.execution_id, ExecutionId::new("x1"));
        assert_eq!(x.expected_execution_id, ExecutionId::new("e1"));
        assert_eq!(x.expected_history_len, 10);
        assert_eq!(x.expected_status, RuntimeStatus::Failed);
        assert_eq!(x.history.len(), 7);
        assert!(x.pending_tasks.is_empty());
        let [trigger] = x.messages.as_slice() else {
            panic!("{:?}", x.messages)
        };
        assert_eq!(trigger.target_execution, Some(ExecutionId::new("x1")));
        assert_eq!(trigger.visible_at, at(10));
        assert!(
            matches!(&trigger.event.event_type, Some(EventType::ExecutionRewound(r)) if r.reason.as_deref() == Some("why"))
        );
    }

    #[test]
    fn unanswered_tasks_and_timers_of_a_failed_execution_are_redone() {
        let h = HistoryBuilder::new("i1", "o")
            .task_scheduled(0, "slow")
            .task_scheduled(1, "bad")
            .push(timer_created(2, 60))
            .push(task_failed(1))
            .push(completed_failed())
            .build();
        let plan = ready(plan_rewind(
            Root::Failed(&failed("i1", h)),
            &Snapshots::new(),
            None,
            at(10),
            &mut SeqIds(0),
        ));
        let x = &plan.executions[0];
        assert_eq!(
            x.pending_tasks
                .iter()
                .map(|e| e.event_id)
                .collect::<Vec<_>>(),
            vec![0],
            "the failed task is rescheduled by the replay, not here"
        );
        assert_eq!(
            kinds(
                &x.messages
                    .iter()
                    .map(|m| m.event.clone())
                    .collect::<Vec<_>>()
            ),
            vec!["ExecutionRewound", "TimerFired"]
        );
        assert_eq!(x.messages[1].visible_at, at(60));
    }

    /// Parent p1 (FAILED) created four children: c-failed (FAILED), c-gone (purged),
    /// c-done (COMPLETED after the parent failed), c-live (RUNNING).
    #[test]
    fn children_are_rewound_recreated_notified_or_relinked_by_status() {
        let h = HistoryBuilder::new("p1", "parent")
            .child_created(0, "c-failed", "k")
            .child_created(1, "c-gone", "k")
            .child_created(2, "c-done", "k")
            .child_created(3, "c-live", "k")
            .push(child_failed(0))
            .push(completed_failed())
            .build();
        let root = failed("p1", h);
        let mut snaps = Snapshots::new();
        let first = plan_rewind(
            Root::Failed(&root),
            &snaps,
            Some("r"),
            at(10),
            &mut SeqIds(0),
        );
        let Ok(Planned::Need(mut need)) = first else {
            panic!("{first:?}")
        };
        need.sort();
        assert_eq!(need.len(), 4);

        let parent_link = pb::ParentInstanceInfo {
            task_scheduled_id: 0,
            name: Some("parent".into()),
            version: None,
            orchestration_instance: Some(pb::OrchestrationInstance {
                instance_id: "p1".into(),
                execution_id: Some("e1".into()),
            }),
        };
        let mut c_failed = child_of("c-failed", "p1", RuntimeStatus::Failed);
        c_failed.history = vec![
            HistoryBuilder::started("c-failed", "k", Some(parent_link)),
            completed_failed(),
        ];
        let mut c_done = child_of("c-done", "p1", RuntimeStatus::Completed);
        c_done.record.output = Some("42".into());
        snaps.insert(InstanceId::new("c-failed"), Some(c_failed));
        snaps.insert(InstanceId::new("c-gone"), None);
        snaps.insert(InstanceId::new("c-done"), Some(c_done));
        snaps.insert(
            InstanceId::new("c-live"),
            Some(child_of("c-live", "p1", RuntimeStatus::Running)),
        );
        let plan = ready(plan_rewind(
            Root::Failed(&root),
            &snaps,
            Some("r"),
            at(10),
            &mut SeqIds(0),
        ));

        // Parent first, then the failed child with its link moved to the parent's new run.
        let ids: Vec<_> = plan
            .executions
            .iter()
            .map(|x| x.instance_id.to_string())
            .collect();
        assert_eq!(ids, vec!["p1", "c-failed"]);
        let parent_exec = plan.executions[0].execution_id.clone();
        let child = &plan.executions[1];
        let link = started(&child.history).parent_instance.unwrap();
        assert_eq!(
            link.orchestration_instance.unwrap().execution_id,
            Some(parent_exec.to_string())
        );
        assert!(
            matches!(&child.messages[0].event.event_type, Some(EventType::ExecutionRewound(r)) if r.reason.as_deref() == Some("r") && r.parent_execution_id == Some(parent_exec.to_string()))
        );

        // The purged child comes back linked to the parent's new execution.
        let [gone] = plan.recreated.as_slice() else {
            panic!("{:?}", plan.recreated)
        };
        assert_eq!(gone.instance_id, InstanceId::new("c-gone"));
        assert_eq!(gone.parent_instance_id, Some(InstanceId::new("p1")));
        let Some(EventType::ExecutionStarted(s)) = &gone.start_event.event_type else {
            panic!()
        };
        let link = s.parent_instance.clone().unwrap();
        assert_eq!(link.task_scheduled_id, 1);
        assert_eq!(
            link.orchestration_instance.unwrap().execution_id,
            Some(parent_exec.to_string())
        );

        // The finished child's result is delivered again; the live child is relinked.
        let notice = &plan.executions[0].messages[1];
        assert_eq!(notice.target_execution, Some(parent_exec.clone()));
        assert!(
            matches!(&notice.event.event_type, Some(EventType::SubOrchestrationInstanceCompleted(c)) if c.task_scheduled_id == 2 && c.result.as_deref() == Some("42"))
        );
        assert_eq!(
            plan.relinked,
            vec![ParentRelink {
                instance_id: InstanceId::new("c-live"),
                parent_instance_id: InstanceId::new("p1"),
                parent_execution_id: parent_exec,
            }]
        );
    }

    #[test]
    fn a_child_id_taken_by_an_unrelated_instance_is_left_alone() {
        let h = HistoryBuilder::new("p1", "parent")
            .child_created(0, "c", "k")
            .push(completed_failed())
            .build();
        let root = failed("p1", h);
        let mut snaps = Snapshots::new();
        snaps.insert(
            InstanceId::new("c"),
            Some(child_of("c", "someone-else", RuntimeStatus::Failed)),
        );
        let plan = ready(plan_rewind(
            Root::Failed(&root),
            &snaps,
            None,
            at(10),
            &mut SeqIds(0),
        ));
        assert_eq!(plan.executions.len(), 1);
        assert!(plan.relinked.is_empty() && plan.recreated.is_empty());
    }

    #[test]
    fn a_worker_history_is_used_as_is_and_keeps_its_execution_id_and_reason() {
        let mut h = rewrite_history(&failed_second_activity(), &ExecutionId::new("w1"), None);
        h.push(event(
            -1,
            at(5),
            EventType::ExecutionRewound(pb::ExecutionRewoundEvent {
                reason: Some("from worker".into()),
                ..Default::default()
            }),
        ));
        let r = record("i1", RuntimeStatus::Running);
        let plan = ready(plan_rewind(
            Root::Replacement {
                record: &r,
                expected_history_len: 10,
                consumed: &[7, 8],
                history: &h,
            },
            &Snapshots::new(),
            None,
            at(10),
            &mut SeqIds(0),
        ));
        let x = &plan.executions[0];
        assert_eq!(x.execution_id, ExecutionId::new("w1"));
        assert_eq!(x.history, h);
        assert_eq!(x.consumed, vec![7, 8]);
        assert_eq!(x.expected_status, RuntimeStatus::Running);
        assert!(
            matches!(&x.messages[0].event.event_type, Some(EventType::ExecutionRewound(r)) if r.reason.as_deref() == Some("from worker"))
        );
    }

    #[test]
    fn requested_history_needs_an_execution_id_in_execution_started() {
        let response = |history: Vec<pb::HistoryEvent>| pb::OrchestratorResponse {
            actions: vec![pb::OrchestratorAction {
                id: -1,
                orchestrator_action_type: Some(Action::RewindOrchestration(
                    pb::RewindOrchestrationAction {
                        new_history: history,
                    },
                )),
            }],
            ..Default::default()
        };
        let good = response(HistoryBuilder::new("i1", "o").build());
        assert_eq!(requested_history(&good).map(<[_]>::len), Some(2));
        let bad = response(vec![crate::domain::events::orchestrator_started(at(1))]);
        assert_eq!(requested_history(&bad), None);
        assert_eq!(
            requested_history(&pb::OrchestratorResponse::default()),
            None
        );
    }
}
