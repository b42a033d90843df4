//! Property tests of the pure engine (`state`, `plan`, `apply`): given arbitrary histories,
//! inbox messages and worker answers it never panics, and over a run of episodes built from
//! its own output it keeps the invariants a history must have: it only grows, it holds at
//! most one terminal event, no two open tasks share an id, every scheduled task is answered
//! at most once, the same inputs give the same transition, and folding the committed history again
//! gives the state the model expects.
//!
//! Bounded (`PROPTEST_CASES` overrides the case count) so CI stays quick; a failure prints
//! the shrunk input, which becomes a regression test.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use durabletask_sidecar::domain::events::event;
use durabletask_sidecar::domain::{
    ExecutionId, InstanceId, InstanceRecord, RuntimeStatus, StatusChange, Transition,
};
use durabletask_sidecar::engine::apply::{self, ApplyContext, IdSource};
use durabletask_sidecar::engine::plan::{plan_episode, Plan};
use durabletask_sidecar::engine::state::OrchestrationState;
use durabletask_sidecar::engine::EngineError;
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::store::InboxMessage;
use pb::history_event::EventType;
use pb::orchestrator_action::OrchestratorActionType as Action;
use proptest::prelude::*;

const INSTANCE: &str = "prop";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn ts(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// Execution ids numbered in order, so two runs of `apply` can be compared.
struct CountingIds(u32);

impl IdSource for CountingIds {
    fn execution_id(&mut self) -> ExecutionId {
        self.0 += 1;
        ExecutionId::new(format!("exec-{}", self.0))
    }
}

// ---- arbitrary inputs ----

/// What a worker may answer with, including what no well-behaved SDK sends: reused ids,
/// missing fields, unknown statuses, several completions.
#[derive(Debug, Clone)]
enum ActionSpec {
    Activity,
    Timer { fire_in_ms: i64, has_fire_at: bool },
    Child { named: bool },
    SendEvent { has_target: bool },
    Terminate,
    Complete { status: i32 },
    Untyped,
    EntitySignal,
}

fn action_spec() -> impl Strategy<Value = ActionSpec> {
    prop_oneof![
        4 => Just(ActionSpec::Activity),
        2 => (-5_000i64..60_000, prop::bool::weighted(0.95))
            .prop_map(|(fire_in_ms, has_fire_at)| ActionSpec::Timer { fire_in_ms, has_fire_at }),
        1 => any::<bool>().prop_map(|named| ActionSpec::Child { named }),
        1 => prop::bool::weighted(0.9).prop_map(|has_target| ActionSpec::SendEvent { has_target }),
        1 => Just(ActionSpec::Terminate),
        1 => (-1i32..10).prop_map(|status| ActionSpec::Complete { status }),
        1 => Just(ActionSpec::Untyped),
        1 => Just(ActionSpec::EntitySignal),
    ]
}

/// Where an action's id comes from: the next sequence number, as SDKs do, or a number
/// that may collide with an earlier one.
#[derive(Debug, Clone)]
enum IdSpec {
    Next,
    Any(i32),
}

fn id_spec() -> impl Strategy<Value = IdSpec> {
    prop_oneof![9 => Just(IdSpec::Next), 1 => (-2i32..8).prop_map(IdSpec::Any)]
}

/// One episode: which outstanding tasks get answered (by index, wrapping), whether an
/// external event arrives, and the worker's actions.
#[derive(Debug, Clone)]
struct EpisodeSpec {
    answers: Vec<(usize, bool)>,
    external_event: bool,
    actions: Vec<(IdSpec, ActionSpec)>,
}

fn episode_spec() -> impl Strategy<Value = EpisodeSpec> {
    (
        prop::collection::vec((any::<usize>(), any::<bool>()), 0..4),
        any::<bool>(),
        prop::collection::vec((id_spec(), action_spec()), 0..5),
    )
        .prop_map(|(answers, external_event, actions)| EpisodeSpec {
            answers,
            external_event,
            actions,
        })
}

// ---- the model ----

/// A task the orchestration waits on, and how its answer looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Waiting {
    Activity(i32),
    Timer(i32),
    Child(i32),
}

fn answer(task: Waiting, ok: bool, at: DateTime<Utc>) -> pb::HistoryEvent {
    let failure = || {
        Some(pb::TaskFailureDetails {
            error_type: "Boom".into(),
            error_message: "failed on purpose".into(),
            ..Default::default()
        })
    };
    let kind = match (task, ok) {
        (Waiting::Activity(id), true) => EventType::TaskCompleted(pb::TaskCompletedEvent {
            task_scheduled_id: id,
            result: Some("1".into()),
        }),
        (Waiting::Activity(id), false) => EventType::TaskFailed(pb::TaskFailedEvent {
            task_scheduled_id: id,
            failure_details: failure(),
        }),
        (Waiting::Timer(id), _) => EventType::TimerFired(pb::TimerFiredEvent {
            fire_at: Some(ts(at)),
            timer_id: id,
        }),
        (Waiting::Child(id), true) => EventType::SubOrchestrationInstanceCompleted(
            pb::SubOrchestrationInstanceCompletedEvent {
                task_scheduled_id: id,
                result: Some("2".into()),
            },
        ),
        (Waiting::Child(id), false) => {
            EventType::SubOrchestrationInstanceFailed(pb::SubOrchestrationInstanceFailedEvent {
                task_scheduled_id: id,
                failure_details: failure(),
            })
        }
    };
    event(-1, at, kind)
}

fn build_action(id: i32, spec: &ActionSpec, at: DateTime<Utc>) -> pb::OrchestratorAction {
    let kind = match spec {
        ActionSpec::Activity => Some(Action::ScheduleTask(pb::ScheduleTaskAction {
            name: "act".into(),
            input: Some(format!("{id}")),
            ..Default::default()
        })),
        ActionSpec::Timer {
            fire_in_ms,
            has_fire_at,
        } => Some(Action::CreateTimer(pb::CreateTimerAction {
            fire_at: has_fire_at.then(|| ts(at + Duration::milliseconds(*fire_in_ms))),
        })),
        ActionSpec::Child { named } => Some(Action::CreateSubOrchestration(
            pb::CreateSubOrchestrationAction {
                instance_id: if *named {
                    format!("child-{id}")
                } else {
                    String::new()
                },
                name: "child".into(),
                ..Default::default()
            },
        )),
        ActionSpec::SendEvent { has_target } => Some(Action::SendEvent(pb::SendEventAction {
            instance: has_target.then(|| pb::OrchestrationInstance {
                instance_id: "other".into(),
                execution_id: None,
            }),
            name: "ping".into(),
            data: None,
        })),
        ActionSpec::Terminate => Some(Action::TerminateOrchestration(
            pb::TerminateOrchestrationAction {
                instance_id: "other".into(),
                reason: None,
                recurse: false,
            },
        )),
        ActionSpec::Complete { status } => Some(Action::CompleteOrchestration(
            pb::CompleteOrchestrationAction {
                orchestration_status: *status,
                result: Some("\"done\"".into()),
                ..Default::default()
            },
        )),
        ActionSpec::Untyped => None,
        ActionSpec::EntitySignal => Some(Action::SendEntityMessage(pb::SendEntityMessageAction {
            entity_message_type: Some(
                pb::send_entity_message_action::EntityMessageType::EntityOperationSignaled(
                    pb::EntityOperationSignaledEvent {
                        request_id: format!("req-{id}"),
                        operation: "add".into(),
                        target_instance_id: Some("@counter@k".into()),
                        ..Default::default()
                    },
                ),
            ),
        })),
    };
    pb::OrchestratorAction {
        id,
        orchestrator_action_type: kind,
    }
}

/// The id an event answers, for the answer kinds the model sends.
fn answered_id(e: &pb::HistoryEvent) -> Option<i32> {
    match e.event_type.as_ref()? {
        EventType::TaskCompleted(c) => Some(c.task_scheduled_id),
        EventType::TaskFailed(f) => Some(f.task_scheduled_id),
        EventType::TimerFired(f) => Some(f.timer_id),
        EventType::SubOrchestrationInstanceCompleted(c) => Some(c.task_scheduled_id),
        EventType::SubOrchestrationInstanceFailed(f) => Some(f.task_scheduled_id),
        _ => None,
    }
}

/// The id of an event that starts something answerable (its `eventId`).
fn task_id(e: &pb::HistoryEvent) -> Option<i32> {
    match e.event_type.as_ref()? {
        EventType::TaskScheduled(_)
        | EventType::TimerCreated(_)
        | EventType::SubOrchestrationInstanceCreated(_) => Some(e.event_id),
        _ => None,
    }
}

fn is_terminal_event(e: &pb::HistoryEvent) -> bool {
    matches!(e.event_type, Some(EventType::ExecutionCompleted(_)))
}

/// Checks a transition against the history it extends and returns the tasks it starts.
fn check_transition(
    t: &Transition,
    past: &[pb::HistoryEvent],
    new_events: &[pb::HistoryEvent],
) -> Result<Vec<Waiting>, TestCaseError> {
    prop_assert_eq!(t.expected_history_len as usize, past.len());
    prop_assert!(
        t.history_append.starts_with(new_events),
        "the new events are committed first, unchanged"
    );
    let all: Vec<&pb::HistoryEvent> = past.iter().chain(&t.history_append).collect();

    let terminals = all.iter().filter(|e| is_terminal_event(e)).count();
    prop_assert!(terminals <= 1, "{terminals} terminal events");
    // Continue-as-new replaces the history rather than ending it.
    let ends = matches!(t.status, StatusChange::Terminal { .. });
    prop_assert_eq!(
        terminals == 1,
        ends,
        "a terminal event iff a terminal status"
    );

    // One open task per id; an answer only for an open task, once. (An answered id may be
    // reused: the Python SDK retries a task under its first id.)
    let mut open = BTreeSet::new();
    for e in &all {
        if let Some(id) = task_id(e) {
            prop_assert!(open.insert(id), "task id {} opened twice", id);
        }
        if let Some(id) = answered_id(e) {
            prop_assert!(open.remove(&id), "answer to task {} that is not open", id);
        }
    }

    let mut started = Vec::new();
    for e in &t.history_append[new_events.len()..] {
        match e.event_type {
            Some(EventType::TaskScheduled(_)) => started.push(Waiting::Activity(e.event_id)),
            Some(EventType::TimerCreated(_)) => started.push(Waiting::Timer(e.event_id)),
            Some(EventType::SubOrchestrationInstanceCreated(_)) => {
                started.push(Waiting::Child(e.event_id))
            }
            _ => {}
        }
    }
    // What leaves the commit matches what the history says was started (an ending
    // execution starts nothing).
    let live = matches!(t.status, StatusChange::Progress);
    let activities: Vec<i32> = t.activities.iter().map(|a| a.scheduled.event_id).collect();
    let scheduled: Vec<i32> = started
        .iter()
        .filter_map(|w| match w {
            Waiting::Activity(id) => Some(*id),
            _ => None,
        })
        .collect();
    prop_assert_eq!(activities, if live { scheduled } else { Vec::new() });
    let children = started
        .iter()
        .filter(|w| matches!(w, Waiting::Child(_)))
        .count();
    prop_assert_eq!(t.children.len(), if live { children } else { 0 });
    if let StatusChange::ContinuedAsNew { inbox_head, .. } = &t.status {
        let leads = matches!(
            inbox_head.first().and_then(|e| e.event_type.as_ref()),
            Some(EventType::ExecutionStarted(_))
        );
        prop_assert!(leads, "continue-as-new starts with ExecutionStarted");
    }
    Ok(started)
}

fn record(history_len: usize, status: RuntimeStatus) -> InstanceRecord {
    InstanceRecord {
        instance_id: InstanceId::new(INSTANCE),
        execution_id: ExecutionId::new("exec-0"),
        name: "orch".into(),
        version: None,
        status,
        created_at: t0(),
        last_updated_at: t0(),
        completed_at: None,
        scheduled_start_at: None,
        input: None,
        output: None,
        custom_status: None,
        failure: None,
        parent_instance_id: None,
        tags: BTreeMap::new(),
        trace_context: None,
        history_len: history_len as u32,
    }
}

fn execution_started() -> pb::HistoryEvent {
    event(
        -1,
        t0(),
        EventType::ExecutionStarted(pb::ExecutionStartedEvent {
            name: "orch".into(),
            orchestration_instance: Some(pb::OrchestrationInstance {
                instance_id: INSTANCE.into(),
                execution_id: Some("exec-0".into()),
            }),
            ..Default::default()
        }),
    )
}

/// Runs the episodes of one execution through `apply`, as the dispatcher would (a response
/// `apply` refuses fails the orchestration), and checks every commit.
fn run_episodes(episodes: Vec<EpisodeSpec>) -> Result<(), TestCaseError> {
    let instance = InstanceId::new(INSTANCE);
    let execution = ExecutionId::new("exec-0");
    let mut history: Vec<pb::HistoryEvent> = Vec::new();
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut next_id = 0i32;
    let mut consumed_seq = 0i64;

    for (n, spec) in episodes.iter().enumerate() {
        let at = t0() + Duration::seconds(n as i64);
        let mut new_events = vec![event(
            -1,
            at,
            EventType::OrchestratorStarted(Default::default()),
        )];
        if history.is_empty() {
            new_events.push(execution_started());
        }
        for (pick, ok) in &spec.answers {
            if waiting.is_empty() {
                break;
            }
            let task = waiting.remove(pick % waiting.len());
            new_events.push(answer(task, *ok, at));
        }
        if spec.external_event {
            new_events.push(event(
                -1,
                at,
                EventType::EventRaised(pb::EventRaisedEvent {
                    name: "go".into(),
                    input: None,
                }),
            ));
        }
        let actions: Vec<pb::OrchestratorAction> = spec
            .actions
            .iter()
            .map(|(id, action)| {
                let id = match id {
                    IdSpec::Next => {
                        next_id += 1;
                        next_id - 1
                    }
                    IdSpec::Any(n) => *n,
                };
                build_action(id, action, at)
            })
            .collect();
        let response = pb::OrchestratorResponse {
            instance_id: INSTANCE.into(),
            actions,
            ..Default::default()
        };
        consumed_seq += 1;
        let consumed = [consumed_seq];
        let ctx = ApplyContext {
            instance_id: &instance,
            execution_id: &execution,
            past: &history,
            new_events: &new_events,
            consumed: &consumed,
            now: at,
        };

        let first = apply::apply(&ctx, &response, &mut CountingIds(0));
        let again = apply::apply(&ctx, &response, &mut CountingIds(0));
        prop_assert_eq!(&first, &again, "apply is deterministic");
        let t = match first {
            Ok(t) => t,
            Err(EngineError::InvalidAction { .. }) => {
                let failure = pb::TaskFailureDetails {
                    error_type: "InvalidOrchestratorResponse".into(),
                    ..Default::default()
                };
                let t = match apply::fail(&ctx, failure) {
                    Ok(t) => t,
                    Err(err) => {
                        return Err(TestCaseError::fail(format!(
                            "cannot fail the execution: {err}"
                        )))
                    }
                };
                let failed = matches!(
                    t.status,
                    StatusChange::Terminal {
                        status: RuntimeStatus::Failed,
                        ..
                    }
                );
                prop_assert!(failed, "a refused response fails the execution");
                t
            }
            Err(EngineError::CorruptHistory(why)) => {
                return Err(TestCaseError::fail(format!(
                    "the engine's own history is corrupt: {why}"
                )))
            }
        };
        let started = check_transition(&t, &history, &new_events)?;
        let len_before = history.len();
        history.extend(t.history_append.iter().cloned());
        prop_assert!(history.len() > len_before, "history only grows");

        // Folding the committed history again gives the outstanding activities the model
        // holds (replay of the engine's own output).
        let state = match OrchestrationState::from_events(&history) {
            Ok(state) => state,
            Err(err) => return Err(TestCaseError::fail(format!("replay fails: {err}"))),
        };
        waiting.extend(started);
        match t.status {
            StatusChange::Progress => {}
            StatusChange::Terminal { .. } => {
                prop_assert!(state.completed);
                return Ok(());
            }
            StatusChange::ContinuedAsNew { .. } => return Ok(()),
        }
        let model: BTreeSet<i32> = waiting
            .iter()
            .filter_map(|w| match w {
                Waiting::Activity(id) => Some(*id),
                _ => None,
            })
            .collect();
        let folded: BTreeSet<i32> = state.pending_tasks.keys().copied().collect();
        prop_assert_eq!(folded, model);
        prop_assert!(!state.completed);
    }
    Ok(())
}

// ---- arbitrary histories and inboxes ----

fn arbitrary_event() -> impl Strategy<Value = pb::HistoryEvent> {
    let kind = prop_oneof![
        Just(None),
        Just(Some(EventType::OrchestratorStarted(Default::default()))),
        Just(Some(EventType::ExecutionStarted(
            pb::ExecutionStartedEvent {
                name: "orch".into(),
                ..Default::default()
            }
        ))),
        Just(Some(EventType::ExecutionCompleted(Default::default()))),
        any::<bool>().prop_map(|recurse| Some(EventType::ExecutionTerminated(
            pb::ExecutionTerminatedEvent {
                input: None,
                recurse
            }
        ))),
        Just(Some(EventType::TaskScheduled(Default::default()))),
        (-2i32..6).prop_map(|id| Some(EventType::TaskCompleted(pb::TaskCompletedEvent {
            task_scheduled_id: id,
            ..Default::default()
        }))),
        (-2i32..6).prop_map(|id| Some(EventType::TaskFailed(pb::TaskFailedEvent {
            task_scheduled_id: id,
            ..Default::default()
        }))),
        Just(Some(EventType::TimerCreated(Default::default()))),
        (-2i32..6).prop_map(|id| Some(EventType::TimerFired(pb::TimerFiredEvent {
            fire_at: None,
            timer_id: id
        }))),
        "[a-c]{0,2}".prop_map(|id| Some(EventType::SubOrchestrationInstanceCreated(
            pb::SubOrchestrationInstanceCreatedEvent {
                instance_id: id,
                ..Default::default()
            }
        ))),
        Just(Some(EventType::EventRaised(Default::default()))),
        Just(Some(EventType::ExecutionSuspended(Default::default()))),
        Just(Some(EventType::ExecutionResumed(Default::default()))),
        Just(Some(EventType::ExecutionRewound(Default::default()))),
        ("[a-b]{0,1}", prop::collection::vec("@e@[a-b]", 0..3)).prop_map(|(cs, set)| Some(
            EventType::EntityLockRequested(pb::EntityLockRequestedEvent {
                critical_section_id: cs,
                lock_set: set,
                ..Default::default()
            })
        )),
        ("[a-b]{0,1}", "@e@[a-b]").prop_map(|(cs, target)| Some(EventType::EntityUnlockSent(
            pb::EntityUnlockSentEvent {
                critical_section_id: cs,
                target_instance_id: Some(target),
                ..Default::default()
            }
        ))),
    ];
    (-3i32..8, kind).prop_map(|(event_id, event_type)| pb::HistoryEvent {
        event_id,
        timestamp: Some(ts(t0())),
        event_type,
    })
}

fn arbitrary_messages() -> impl Strategy<Value = Vec<InboxMessage>> {
    prop::collection::vec((arbitrary_event(), prop::option::of("exec-[0-1]")), 0..8).prop_map(
        |events| {
            events
                .into_iter()
                .enumerate()
                .map(|(i, (event, target))| InboxMessage {
                    seq: i as i64 + 1,
                    target_execution: target.map(ExecutionId::new),
                    event,
                    visible_at: t0(),
                })
                .collect()
        },
    )
}

fn status() -> impl Strategy<Value = RuntimeStatus> {
    prop::sample::select(RuntimeStatus::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Episodes built from the engine's own output keep every history invariant.
    #[test]
    fn episodes_keep_the_history_invariants(
        episodes in prop::collection::vec(episode_spec(), 1..12)
    ) {
        run_episodes(episodes)?;
    }

    /// Any history folds or is reported corrupt; any response to it applies or is refused.
    #[test]
    fn arbitrary_histories_and_answers_never_panic(
        past in prop::collection::vec(arbitrary_event(), 0..16),
        specs in prop::collection::vec((id_spec(), action_spec()), 0..6),
    ) {
        let _ = OrchestrationState::from_events(&past);
        let instance = InstanceId::new(INSTANCE);
        let execution = ExecutionId::new("exec-0");
        let new_events = [event(-1, t0(), EventType::OrchestratorStarted(Default::default()))];
        let ctx = ApplyContext {
            instance_id: &instance,
            execution_id: &execution,
            past: &past,
            new_events: &new_events,
            consumed: &[],
            now: t0(),
        };
        let response = pb::OrchestratorResponse {
            instance_id: INSTANCE.into(),
            actions: specs
                .iter()
                .map(|(id, a)| build_action(match id { IdSpec::Next => 0, IdSpec::Any(n) => *n }, a, t0()))
                .collect(),
            ..Default::default()
        };
        if let Ok(t) = apply::apply(&ctx, &response, &mut CountingIds(0)) {
            prop_assert!(t.history_append.starts_with(&new_events));
        }
        let _ = apply::fail(&ctx, Default::default());
        let _ = apply::terminate(&ctx, Some("stop"));
    }

    /// Every visible message is delivered, consumed as stale, or left waiting; none twice,
    /// and an episode never starts without its ExecutionStarted first.
    #[test]
    fn planning_accounts_for_every_message(
        past in prop::collection::vec(arbitrary_event(), 0..6),
        messages in arbitrary_messages(),
        status in status(),
    ) {
        let seqs: BTreeSet<i64> = messages.iter().map(|m| m.seq).collect();
        let rec = record(past.len(), status);
        let started = past
            .iter()
            .any(|e| matches!(e.event_type, Some(EventType::ExecutionStarted(_))));
        let (delivered, stale) = match plan_episode(&rec, &past, messages) {
            Plan::Dispatch { deliver, stale } => {
                let leads = matches!(
                    deliver.first().and_then(|m| m.event.event_type.as_ref()),
                    Some(EventType::ExecutionStarted(_))
                );
                prop_assert!(started || leads, "the first episode leads with ExecutionStarted");
                (deliver.iter().map(|m| m.seq).collect::<Vec<_>>(), stale)
            }
            Plan::Wait { stale } => (Vec::new(), stale),
        };
        let mut seen = BTreeSet::new();
        for seq in delivered.iter().chain(&stale) {
            prop_assert!(seqs.contains(seq), "unknown seq {}", seq);
            prop_assert!(seen.insert(*seq), "seq {} planned twice", seq);
        }
    }
}
