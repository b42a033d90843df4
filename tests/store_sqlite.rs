//! Integration tests of `SqliteStore` through the `Store` trait, against a real SQLite
//! file in a temporary directory.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the shared helpers below.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use durabletask_sidecar::domain::events::{event, orchestrator_started};
use durabletask_sidecar::domain::{
    ChildCreation, ExecutionId, InstanceId, NewActivity, NewInstance, OutboundMessage, ReusePolicy,
    RuntimeStatus, StatusChange, Transition,
};
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::store::sqlite::{SqliteOptions, SqliteStore};
use durabletask_sidecar::store::{
    ActivityOutcome, CompletedFilter, EnqueueOutcome, InstanceFilter, Lease, OrchestrationWork,
    PurgeFilter, Store, StoreError, SuspendOutcome, TerminateOutcome,
};
use pb::history_event::EventType;
use tempfile::TempDir;

/// A fixed base time plus `secs` seconds (whole seconds keep comparisons exact).
fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn id(s: &str) -> InstanceId {
    InstanceId::new(s)
}

async fn open(dir: &TempDir) -> SqliteStore {
    let path = dir.path().join("store.sqlite");
    SqliteStore::open(path.to_str().unwrap()).await.unwrap()
}

async fn fresh() -> (TempDir, SqliteStore) {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    (dir, store)
}

fn new_instance(instance: &str, created: DateTime<Utc>) -> NewInstance {
    let execution_id = ExecutionId::generate();
    let start = event(
        -1,
        created,
        EventType::ExecutionStarted(pb::ExecutionStartedEvent {
            name: "orch".into(),
            input: Some("\"in\"".into()),
            orchestration_instance: Some(pb::OrchestrationInstance {
                instance_id: instance.into(),
                execution_id: Some(execution_id.as_str().into()),
            }),
            ..Default::default()
        }),
    );
    NewInstance {
        instance_id: id(instance),
        execution_id,
        name: "orch".into(),
        version: None,
        input: Some("\"in\"".into()),
        tags: BTreeMap::from([("k".to_string(), "v".to_string())]),
        scheduled_start_at: None,
        parent_instance_id: None,
        start_event: start,
        created_at: created,
    }
}

fn raised(name: &str, when: DateTime<Utc>) -> pb::HistoryEvent {
    event(
        -1,
        when,
        EventType::EventRaised(pb::EventRaisedEvent {
            name: name.into(),
            input: None,
        }),
    )
}

fn terminated(when: DateTime<Utc>) -> pb::HistoryEvent {
    event(
        -1,
        when,
        EventType::ExecutionTerminated(pb::ExecutionTerminatedEvent {
            input: Some("\"bye\"".into()),
            recurse: false,
        }),
    )
}

fn task_scheduled(task_id: i32, when: DateTime<Utc>) -> pb::HistoryEvent {
    event(
        task_id,
        when,
        EventType::TaskScheduled(pb::TaskScheduledEvent {
            name: "act".into(),
            ..Default::default()
        }),
    )
}

fn task_completed(task_id: i32, when: DateTime<Utc>) -> pb::HistoryEvent {
    event(
        -1,
        when,
        EventType::TaskCompleted(pb::TaskCompletedEvent {
            task_scheduled_id: task_id,
            result: Some("1".into()),
        }),
    )
}

fn raised_name(e: &pb::HistoryEvent) -> Option<&str> {
    match &e.event_type {
        Some(EventType::EventRaised(r)) => Some(r.name.as_str()),
        _ => None,
    }
}

fn is_started(e: &pb::HistoryEvent) -> bool {
    matches!(e.event_type, Some(EventType::ExecutionStarted(_)))
}

/// Creates an instance and commits its first episode (history: OrchestratorStarted,
/// ExecutionStarted), leaving it RUNNING.
async fn start_running(
    store: &SqliteStore,
    instance: &str,
    now: DateTime<Utc>,
) -> OrchestrationWork {
    store
        .create_instance(new_instance(instance, now), ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    let work = store
        .orchestration_work(&id(instance), now, 100, None)
        .await
        .unwrap()
        .unwrap();
    let t = episode(&work, now, StatusChange::Progress);
    store
        .commit_orchestration(&t, Lease::default())
        .await
        .unwrap();
    store
        .orchestration_work(&id(instance), now, 100, None)
        .await
        .unwrap()
        .unwrap()
}

/// A transition consuming every delivered message of `work`, appending
/// OrchestratorStarted + those messages.
fn episode(work: &OrchestrationWork, now: DateTime<Utc>, status: StatusChange) -> Transition {
    let mut history_append = vec![orchestrator_started(now)];
    history_append.extend(work.messages.iter().map(|m| m.event.clone()));
    Transition {
        instance_id: work.record.instance_id.clone(),
        expected_execution_id: work.record.execution_id.clone(),
        expected_history_len: work.record.history_len,
        consumed: work.messages.iter().map(|m| m.seq).collect(),
        history_append,
        status,
        custom_status: None,
        trace_context: None,
        activities: vec![],
        messages: vec![],
        children: vec![],
        now,
    }
}

fn completed() -> StatusChange {
    StatusChange::Terminal {
        status: RuntimeStatus::Completed,
        output: Some("\"done\"".into()),
        failure: None,
    }
}

async fn complete(store: &SqliteStore, instance: &str, now: DateTime<Utc>) {
    let work = store
        .orchestration_work(&id(instance), now, 100, None)
        .await
        .unwrap()
        .unwrap();
    store
        .commit_orchestration(&episode(&work, now, completed()), Lease::default())
        .await
        .unwrap();
}

fn message(
    target: &str,
    execution: Option<&ExecutionId>,
    e: pb::HistoryEvent,
    visible: DateTime<Utc>,
) -> OutboundMessage {
    OutboundMessage {
        target: id(target),
        target_execution: execution.cloned(),
        event: e,
        visible_at: visible,
    }
}

#[tokio::test]
async fn create_reads_back_and_reuse_policy_matrix() {
    let (_dir, store) = fresh().await;
    store
        .create_instance(new_instance("a", at(0)), ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    let rec = store.instance(&id("a")).await.unwrap().unwrap();
    assert_eq!(rec.status, RuntimeStatus::Pending);
    assert_eq!((rec.created_at, rec.last_updated_at), (at(0), at(0)));
    assert_eq!(rec.tags.get("k").map(String::as_str), Some("v"));
    assert_eq!(rec.history_len, 0);
    assert!(store.instance(&id("nope")).await.unwrap().is_none());

    // Live instance: no policy → AlreadyExists naming the status; a policy listing it replaces.
    let err = store
        .create_instance(new_instance("a", at(1)), ReusePolicy::ReplaceTerminal)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::AlreadyExists {
                status: RuntimeStatus::Pending,
                ..
            }
        ),
        "{err:?}"
    );
    let err = store
        .create_instance(
            new_instance("a", at(1)),
            ReusePolicy::Replaceable(vec![RuntimeStatus::Completed]),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }));
    store
        .create_instance(
            new_instance("a", at(2)),
            ReusePolicy::Replaceable(vec![RuntimeStatus::Pending]),
        )
        .await
        .unwrap();
    assert_eq!(
        store.instance(&id("a")).await.unwrap().unwrap().created_at,
        at(2)
    );

    // Terminal instance: no policy replaces; an empty list rejects.
    complete(&store, "a", at(3)).await;
    let err = store
        .create_instance(new_instance("a", at(4)), ReusePolicy::Replaceable(vec![]))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::AlreadyExists {
            status: RuntimeStatus::Completed,
            ..
        }
    ));
    store
        .create_instance(new_instance("a", at(5)), ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    let rec = store.instance(&id("a")).await.unwrap().unwrap();
    assert_eq!(rec.status, RuntimeStatus::Pending);
    assert_eq!((rec.output, rec.completed_at), (None, None));
}

#[tokio::test]
async fn replacement_clears_history_inbox_and_activities() {
    let (_dir, store) = fresh().await;
    let work = start_running(&store, "r", at(0)).await;
    let mut t = episode(&work, at(1), StatusChange::Progress);
    t.activities.push(NewActivity {
        scheduled: task_scheduled(1, at(1)),
    });
    let activity = store
        .commit_orchestration(&t, Lease::default())
        .await
        .unwrap()
        .activities[0]
        .id;
    store
        .enqueue_event(&id("r"), raised("x", at(1)))
        .await
        .unwrap();

    let replacement = new_instance("r", at(2));
    let policy = ReusePolicy::Replaceable(vec![RuntimeStatus::Running]);
    store
        .create_instance(replacement.clone(), policy)
        .await
        .unwrap();
    let work = store
        .orchestration_work(&id("r"), at(2), 100, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(work.record.execution_id, replacement.execution_id);
    assert!(work.history.unwrap().is_empty());
    assert_eq!(work.messages.len(), 1);
    assert!(is_started(&work.messages[0].event));
    assert_eq!(work.messages[0].target_execution, None);
    assert_eq!(
        store
            .complete_activity(activity, task_completed(1, at(3)))
            .await
            .unwrap(),
        ActivityOutcome::Unknown
    );
}

#[tokio::test]
async fn enqueue_event_rules() {
    let (_dir, store) = fresh().await;
    let err = store
        .enqueue_event(&id("ghost"), raised("e", at(0)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)));
    store
        .create_instance(new_instance("p", at(0)), ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    assert_eq!(
        store
            .enqueue_event(&id("p"), raised("e", at(1)))
            .await
            .unwrap(),
        EnqueueOutcome::Enqueued
    );
    let work = store
        .orchestration_work(&id("p"), at(1), 100, None)
        .await
        .unwrap()
        .unwrap();
    assert!(is_started(&work.messages[0].event), "the start stays first");
    assert_eq!(raised_name(&work.messages[1].event), Some("e"));
    // The batch cap and visibility apply.
    assert_eq!(
        store
            .orchestration_work(&id("p"), at(1), 1, None)
            .await
            .unwrap()
            .unwrap()
            .messages
            .len(),
        1
    );
    assert_eq!(
        store
            .orchestration_work(&id("p"), at(0), 100, None)
            .await
            .unwrap()
            .unwrap()
            .messages
            .len(),
        1
    );

    complete(&store, "p", at(2)).await;
    assert_eq!(
        store
            .enqueue_event(&id("p"), raised("late", at(3)))
            .await
            .unwrap(),
        EnqueueOutcome::Dropped
    );
    assert!(store
        .orchestration_work(&id("p"), at(3), 100, None)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn terminate_variants() {
    let (_dir, store) = fresh().await;
    let err = store
        .terminate_instance(&id("ghost"), terminated(at(0)), None, at(0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)));

    // Scheduled in the future: terminated in place, inbox dropped.
    let mut later = new_instance("later", at(0));
    later.scheduled_start_at = Some(at(100));
    store
        .create_instance(later, ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    let outcome = store
        .terminate_instance(
            &id("later"),
            terminated(at(1)),
            Some("\"bye\"".into()),
            at(1),
        )
        .await
        .unwrap();
    assert_eq!(outcome, TerminateOutcome::TerminatedDirectly);
    let rec = store.instance(&id("later")).await.unwrap().unwrap();
    assert_eq!(rec.status, RuntimeStatus::Terminated);
    assert_eq!(rec.output.as_deref(), Some("\"bye\""));
    assert_eq!(rec.completed_at, Some(at(1)));
    assert!(store.recover(at(1)).await.unwrap().wakeups.is_empty());
    let again = store
        .terminate_instance(&id("later"), terminated(at(2)), None, at(2))
        .await;
    assert_eq!(again.unwrap(), TerminateOutcome::AlreadyTerminal);

    // Start visible but nothing committed yet (no worker took it): terminated in place.
    store
        .create_instance(new_instance("now", at(0)), ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    let outcome = store
        .terminate_instance(&id("now"), terminated(at(1)), None, at(1))
        .await;
    assert_eq!(outcome.unwrap(), TerminateOutcome::TerminatedDirectly);
    // Running: enqueued for the worker.
    start_running(&store, "run", at(0)).await;
    let outcome = store
        .terminate_instance(&id("run"), terminated(at(1)), None, at(1))
        .await;
    assert_eq!(outcome.unwrap(), TerminateOutcome::Enqueued);
    let work = store
        .orchestration_work(&id("run"), at(1), 100, None)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        work.messages[0].event.event_type,
        Some(EventType::ExecutionTerminated(_))
    ));
}

#[tokio::test]
async fn suspend_and_resume_flip_status_once() {
    let (_dir, store) = fresh().await;
    let suspended = |t| {
        event(
            -1,
            t,
            EventType::ExecutionSuspended(pb::ExecutionSuspendedEvent { input: None }),
        )
    };
    let resumed = |t| {
        event(
            -1,
            t,
            EventType::ExecutionResumed(pb::ExecutionResumedEvent { input: None }),
        )
    };
    let err = store
        .set_suspended(&id("ghost"), true, suspended(at(0)), at(0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)));
    start_running(&store, "s", at(0)).await;
    let s = id("s");
    assert_eq!(
        store
            .set_suspended(&s, false, resumed(at(1)), at(1))
            .await
            .unwrap(),
        SuspendOutcome::Unchanged
    );
    assert_eq!(
        store
            .set_suspended(&s, true, suspended(at(1)), at(1))
            .await
            .unwrap(),
        SuspendOutcome::Changed
    );
    assert_eq!(
        store
            .set_suspended(&s, true, suspended(at(2)), at(2))
            .await
            .unwrap(),
        SuspendOutcome::Unchanged
    );
    let rec = store.instance(&s).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.last_updated_at),
        (RuntimeStatus::Suspended, at(1))
    );

    // A Progress commit leaves SUSPENDED alone.
    let work = store
        .orchestration_work(&s, at(2), 100, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(work.messages.len(), 1, "only one marker was enqueued");
    store
        .commit_orchestration(
            &episode(&work, at(2), StatusChange::Progress),
            Lease::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.instance(&s).await.unwrap().unwrap().status,
        RuntimeStatus::Suspended
    );

    assert_eq!(
        store
            .set_suspended(&s, false, resumed(at(3)), at(3))
            .await
            .unwrap(),
        SuspendOutcome::Changed
    );
    assert_eq!(
        store.instance(&s).await.unwrap().unwrap().status,
        RuntimeStatus::Running
    );
    complete(&store, "s", at(4)).await;
    assert_eq!(
        store
            .set_suspended(&s, true, suspended(at(5)), at(5))
            .await
            .unwrap(),
        SuspendOutcome::Unchanged
    );
}

#[tokio::test]
async fn progress_commit_appends_history_and_updates_record() {
    let (_dir, store) = fresh().await;
    store
        .create_instance(new_instance("w", at(0)), ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    let work = store
        .orchestration_work(&id("w"), at(1), 100, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(work.record.status, RuntimeStatus::Pending);
    // A message that arrives while the episode runs stays in the inbox.
    store
        .enqueue_event(&id("w"), raised("during", at(1)))
        .await
        .unwrap();
    let mut t = episode(&work, at(1), StatusChange::Progress);
    t.custom_status = Some("cs".into());
    t.trace_context = Some(pb::OrchestrationTraceContext {
        span_id: Some("span".into()),
        span_start_time: None,
    });
    t.activities = vec![
        NewActivity {
            scheduled: task_scheduled(1, at(1)),
        },
        NewActivity {
            scheduled: task_scheduled(2, at(1)),
        },
    ];
    let outcome = store
        .commit_orchestration(&t, Lease::default())
        .await
        .unwrap();
    assert!(outcome.has_visible_inbox);
    assert_eq!(outcome.activities.len(), 2);
    assert!(outcome.activities[0].id < outcome.activities[1].id);
    assert_eq!(outcome.activities[0].execution_id, work.record.execution_id);

    let rec = store.instance(&id("w")).await.unwrap().unwrap();
    assert_eq!(rec.status, RuntimeStatus::Running);
    assert_eq!(rec.history_len, 2);
    assert_eq!(rec.custom_status.as_deref(), Some("cs"));
    assert_eq!(rec.trace_context, t.trace_context);
    assert_eq!(rec.last_updated_at, at(1));
    let (execution, history) = store.history(&id("w")).await.unwrap().unwrap();
    assert_eq!(execution, work.record.execution_id);
    assert_eq!(
        history, t.history_append,
        "history round-trips byte for byte"
    );
    let work = store
        .orchestration_work(&id("w"), at(1), 100, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(work.messages.len(), 1);
    assert_eq!(raised_name(&work.messages[0].event), Some("during"));
    assert_eq!(work.history.as_ref().map(Vec::len), Some(2));
}

#[tokio::test]
async fn stale_guard_is_lease_lost_and_writes_nothing() {
    let (_dir, store) = fresh().await;
    let work = start_running(&store, "g", at(0)).await;
    store
        .enqueue_event(&id("g"), raised("e", at(1)))
        .await
        .unwrap();
    let work_now = store
        .orchestration_work(&id("g"), at(1), 100, None)
        .await
        .unwrap()
        .unwrap();

    let mut stale_len = episode(&work_now, at(1), StatusChange::Progress);
    stale_len.expected_history_len += 1;
    stale_len
        .messages
        .push(message("g", None, raised("x", at(1)), at(1)));
    let err = store
        .commit_orchestration(&stale_len, Lease::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost(_)), "{err:?}");
    let mut stale_exec = episode(&work_now, at(1), StatusChange::Progress);
    stale_exec.expected_execution_id = ExecutionId::new("other");
    assert!(matches!(
        store
            .commit_orchestration(&stale_exec, Lease::default())
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    let mut unknown = episode(&work_now, at(1), StatusChange::Progress);
    unknown.instance_id = id("ghost");
    assert!(matches!(
        store.commit_orchestration(&unknown, Lease::default()).await,
        Err(StoreError::LeaseLost(_))
    ));

    let after = store
        .orchestration_work(&id("g"), at(1), 100, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.record, work.record);
    assert_eq!(after.messages, work_now.messages);
}

#[tokio::test]
async fn a_failing_commit_rolls_back_its_partial_writes() {
    let (_dir, store) = fresh().await;
    start_running(&store, "x", at(0)).await;
    store
        .enqueue_event(&id("x"), raised("keep", at(1)))
        .await
        .unwrap();
    let work = store
        .orchestration_work(&id("x"), at(1), 100, None)
        .await
        .unwrap()
        .unwrap();
    // Fails after the guard and the inbox delete have run: the savepoint must undo them.
    let bogus = StatusChange::Terminal {
        status: RuntimeStatus::Running,
        output: None,
        failure: None,
    };
    let err = store
        .commit_orchestration(&episode(&work, at(1), bogus), Lease::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    let after = store
        .orchestration_work(&id("x"), at(1), 100, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.messages, work.messages);
    assert_eq!(after.record, work.record);
}

#[tokio::test]
async fn terminal_commit_clears_inbox_and_drops_messages_to_self() {
    let (_dir, store) = fresh().await;
    let work = start_running(&store, "t", at(0)).await;
    start_running(&store, "other", at(0)).await;
    store
        .enqueue_event(&id("t"), raised("late", at(1)))
        .await
        .unwrap();
    let mut t = episode(&work, at(2), completed());
    t.messages = vec![
        message("t", None, raised("self", at(2)), at(2)),
        message("other", None, raised("hi", at(2)), at(2)),
    ];
    let outcome = store
        .commit_orchestration(&t, Lease::default())
        .await
        .unwrap();
    assert!(!outcome.has_visible_inbox);
    assert_eq!(outcome.touched, vec![id("other")]);
    let rec = store.instance(&id("t")).await.unwrap().unwrap();
    assert_eq!(rec.status, RuntimeStatus::Completed);
    assert_eq!(rec.output.as_deref(), Some("\"done\""));
    assert_eq!(rec.completed_at, Some(at(2)));
    assert_eq!(rec.history_len, 3);
    let ready = store.recover(at(10)).await.unwrap().ready;
    assert_eq!(ready, vec![id("other")]);
}

#[tokio::test]
async fn failed_commit_stores_failure_details() {
    let (_dir, store) = fresh().await;
    let work = start_running(&store, "f", at(0)).await;
    let failure = pb::TaskFailureDetails {
        error_type: "Boom".into(),
        error_message: "it broke".into(),
        ..Default::default()
    };
    let status = StatusChange::Terminal {
        status: RuntimeStatus::Failed,
        output: None,
        failure: Some(failure.clone()),
    };
    store
        .commit_orchestration(&episode(&work, at(1), status), Lease::default())
        .await
        .unwrap();
    let rec = store.instance(&id("f")).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.failure),
        (RuntimeStatus::Failed, Some(failure))
    );
}

#[tokio::test]
async fn continue_as_new_puts_the_new_head_before_waiting_messages() {
    let (_dir, store) = fresh().await;
    let work = start_running(&store, "c", at(0)).await;
    let old_execution = work.record.execution_id.clone();
    // Pending before the episode is built: a timer of the old execution, and an event.
    let mut t0 = episode(&work, at(1), StatusChange::Progress);
    t0.messages.push(message(
        "c",
        Some(&old_execution),
        raised("old-timer", at(1)),
        at(50),
    ));
    store
        .commit_orchestration(&t0, Lease::default())
        .await
        .unwrap();
    store
        .enqueue_event(&id("c"), raised("before", at(2)))
        .await
        .unwrap();
    let work = store
        .orchestration_work(&id("c"), at(2), 100, None)
        .await
        .unwrap()
        .unwrap();
    // Arrives while the episode runs.
    store
        .enqueue_event(&id("c"), raised("during", at(3)))
        .await
        .unwrap();

    let new_execution = ExecutionId::generate();
    let head = vec![
        new_instance("c", at(3)).start_event,
        raised("carried", at(3)),
    ];
    let mut t = episode(
        &work,
        at(3),
        StatusChange::ContinuedAsNew {
            execution_id: new_execution.clone(),
            input: Some("\"next\"".into()),
            version: Some("2".into()),
            inbox_head: head,
        },
    );
    t.custom_status = Some("kept".into());
    t.messages = vec![
        message("c", None, raised("self", at(3)), at(3)),
        message(
            "c",
            Some(&old_execution),
            raised("stale-timer", at(3)),
            at(3),
        ),
    ];
    let outcome = store
        .commit_orchestration(&t, Lease::default())
        .await
        .unwrap();
    assert!(outcome.has_visible_inbox);
    assert!(outcome.touched.is_empty());

    let work = store
        .orchestration_work(&id("c"), at(60), 100, None)
        .await
        .unwrap()
        .unwrap();
    let rec = &work.record;
    assert_eq!(rec.execution_id, new_execution);
    assert_eq!(
        (rec.status, rec.history_len, rec.created_at),
        (RuntimeStatus::Running, 0, at(0))
    );
    assert_eq!(
        (rec.input.as_deref(), rec.version.as_deref()),
        (Some("\"next\""), Some("2"))
    );
    assert_eq!(
        (rec.output.as_deref(), rec.custom_status.as_deref()),
        (None, Some("kept"))
    );
    assert!(work.history.unwrap().is_empty());
    assert!(is_started(&work.messages[0].event));
    let names: Vec<_> = work.messages[1..]
        .iter()
        .map(|m| raised_name(&m.event).unwrap())
        .collect();
    assert_eq!(
        names,
        ["carried", "during", "self"],
        "old-execution messages are dropped"
    );
    assert!(work.messages.iter().all(|m| m.target_execution.is_none()));
}

#[tokio::test]
async fn message_drop_rules_and_touched() {
    let (_dir, store) = fresh().await;
    let work = start_running(&store, "src", at(0)).await;
    let live = start_running(&store, "live", at(0)).await;
    start_running(&store, "done", at(0)).await;
    complete(&store, "done", at(1)).await;
    let mut t = episode(&work, at(2), StatusChange::Progress);
    t.messages = vec![
        message("ghost", None, raised("a", at(2)), at(2)),
        message("done", None, raised("b", at(2)), at(2)),
        message(
            "live",
            Some(&ExecutionId::new("old")),
            raised("c", at(2)),
            at(2),
        ),
        message(
            "live",
            Some(&live.record.execution_id),
            raised("d", at(2)),
            at(2),
        ),
        message("live", None, raised("e", at(2)), at(2)),
        message(
            "src",
            Some(&work.record.execution_id),
            raised("timer", at(2)),
            at(30),
        ),
    ];
    let outcome = store
        .commit_orchestration(&t, Lease::default())
        .await
        .unwrap();
    assert_eq!(outcome.touched, vec![id("live")]);
    assert!(!outcome.has_visible_inbox, "the timer is in the future");
    let got = store
        .orchestration_work(&id("live"), at(2), 100, None)
        .await
        .unwrap()
        .unwrap();
    let names: Vec<_> = got
        .messages
        .iter()
        .map(|m| raised_name(&m.event).unwrap())
        .collect();
    assert_eq!(names, ["d", "e"]);
    assert!(store.instance(&id("ghost")).await.unwrap().is_none());
    let recovery = store.recover(at(2)).await.unwrap();
    assert_eq!(recovery.wakeups, vec![(at(30), id("src"))]);
    let timer = store
        .orchestration_work(&id("src"), at(30), 100, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(timer.messages[0].visible_at, at(30));
}

#[tokio::test]
async fn children_are_created_replaced_or_conflict() {
    let (_dir, store) = fresh().await;
    let parent = start_running(&store, "parent", at(0)).await;
    start_running(&store, "busy", at(0)).await;
    start_running(&store, "old", at(0)).await;
    complete(&store, "old", at(1)).await;
    let child = |name: &str| {
        let mut c = new_instance(name, at(2));
        c.parent_instance_id = Some(id("parent"));
        ChildCreation {
            instance: c,
            on_conflict: message(
                "parent",
                Some(&parent.record.execution_id),
                raised(&format!("conflict-{name}"), at(2)),
                at(2),
            ),
        }
    };
    let mut t = episode(&parent, at(2), StatusChange::Progress);
    t.children = vec![child("new"), child("old"), child("busy")];
    t.messages = vec![message("new", None, raised("hello-child", at(2)), at(2))];
    let outcome = store
        .commit_orchestration(&t, Lease::default())
        .await
        .unwrap();
    assert_eq!(outcome.touched, vec![id("new"), id("old")]);
    assert!(outcome.has_visible_inbox);

    let new = store
        .orchestration_work(&id("new"), at(2), 100, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new.record.parent_instance_id, Some(id("parent")));
    assert!(is_started(&new.messages[0].event));
    assert_eq!(raised_name(&new.messages[1].event), Some("hello-child"));
    let old = store.instance(&id("old")).await.unwrap().unwrap();
    assert_eq!((old.status, old.history_len), (RuntimeStatus::Pending, 0));
    assert_eq!(
        store.instance(&id("busy")).await.unwrap().unwrap().status,
        RuntimeStatus::Running
    );
    let inbox = store
        .orchestration_work(&id("parent"), at(2), 100, None)
        .await
        .unwrap()
        .unwrap()
        .messages;
    assert_eq!(raised_name(&inbox[0].event), Some("conflict-busy"));
}

#[tokio::test]
async fn activity_completes_exactly_once_and_stale_results_drop() {
    let (_dir, store) = fresh().await;
    let work = start_running(&store, "a", at(0)).await;
    let mut t = episode(&work, at(1), StatusChange::Progress);
    t.activities = vec![
        NewActivity {
            scheduled: task_scheduled(1, at(1)),
        },
        NewActivity {
            scheduled: task_scheduled(2, at(1)),
        },
    ];
    let items = store
        .commit_orchestration(&t, Lease::default())
        .await
        .unwrap()
        .activities;
    assert_eq!(store.recover(at(1)).await.unwrap().activities, items);

    let first = store
        .complete_activity(items[0].id, task_completed(1, at(2)))
        .await
        .unwrap();
    assert_eq!(first, ActivityOutcome::Delivered(id("a")));
    let second = store
        .complete_activity(items[0].id, task_completed(1, at(2)))
        .await
        .unwrap();
    assert_eq!(second, ActivityOutcome::Unknown);
    let work = store
        .orchestration_work(&id("a"), at(2), 100, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        work.messages[0].target_execution,
        Some(work.record.execution_id.clone())
    );

    complete(&store, "a", at(3)).await;
    let late = store
        .complete_activity(items[1].id, task_completed(2, at(4)))
        .await
        .unwrap();
    assert_eq!(late, ActivityOutcome::Dropped);
    assert!(store.recover(at(4)).await.unwrap().activities.is_empty());
}

#[tokio::test]
async fn discard_messages_only_touches_the_given_rows() {
    let (_dir, store) = fresh().await;
    start_running(&store, "d", at(0)).await;
    store
        .enqueue_event(&id("d"), raised("x", at(1)))
        .await
        .unwrap();
    store
        .enqueue_event(&id("d"), raised("y", at(1)))
        .await
        .unwrap();
    let work = store
        .orchestration_work(&id("d"), at(1), 100, None)
        .await
        .unwrap()
        .unwrap();
    store
        .discard_messages(&id("d"), &[work.messages[0].seq])
        .await
        .unwrap();
    store
        .discard_messages(&id("other"), &[work.messages[1].seq])
        .await
        .unwrap();
    let work = store
        .orchestration_work(&id("d"), at(1), 100, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(work.messages.len(), 1);
    assert_eq!(raised_name(&work.messages[0].event), Some("y"));
}

#[tokio::test]
async fn query_instances_pages_by_keyset() {
    let (_dir, store) = fresh().await;
    for (i, name) in ["q3", "q1", "q2", "x1", "Q4"].iter().enumerate() {
        // q1 and q2 share a creation time: the id breaks the tie.
        let created = at(if *name == "q2" { 1 } else { i as i64 });
        store
            .create_instance(new_instance(name, created), ReusePolicy::ReplaceTerminal)
            .await
            .unwrap();
    }
    store
        .create_instance(
            new_instance("@ent@key", at(0)),
            ReusePolicy::ReplaceTerminal,
        )
        .await
        .unwrap();
    complete(&store, "q3", at(10)).await;

    let mut filter = InstanceFilter {
        id_prefix: Some("q".into()),
        limit: 2,
        ..Default::default()
    };
    let page = store.query_instances(&filter).await.unwrap();
    let ids: Vec<_> = page.iter().map(|r| r.instance_id.as_str()).collect();
    assert_eq!(ids, ["q3", "q1"]);
    let last = page.last().unwrap();
    filter.after = Some((last.created_at, last.instance_id.as_str().to_string()));
    let page = store.query_instances(&filter).await.unwrap();
    let ids: Vec<_> = page.iter().map(|r| r.instance_id.as_str()).collect();
    assert_eq!(
        ids,
        ["q2"],
        "case-sensitive prefix; keyset skips what was seen"
    );

    let all = store
        .query_instances(&InstanceFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 5, "entities are never returned");
    let filter = InstanceFilter {
        statuses: vec![RuntimeStatus::Pending],
        created_from: Some(at(1)),
        created_to: Some(at(4)),
        limit: 100,
        ..Default::default()
    };
    let ids: Vec<_> = store
        .query_instances(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.instance_id)
        .collect();
    assert_eq!(ids, [id("q1"), id("q2"), id("x1")]);
}

#[tokio::test]
async fn list_completed_pages_terminal_instances() {
    let (_dir, store) = fresh().await;
    for (i, name) in ["l1", "l2", "l3", "live"].iter().enumerate() {
        start_running(&store, name, at(0)).await;
        if *name != "live" {
            complete(&store, name, at(10 + i as i64)).await;
        }
    }
    let mut filter = CompletedFilter {
        limit: 2,
        ..Default::default()
    };
    let page = store.list_completed(&filter).await.unwrap();
    assert_eq!(page, vec![(id("l1"), at(10)), (id("l2"), at(11))]);
    filter.after = Some((at(11), "l2".into()));
    assert_eq!(
        store.list_completed(&filter).await.unwrap(),
        vec![(id("l3"), at(12))]
    );
    let window = CompletedFilter {
        completed_from: Some(at(11)),
        completed_to: Some(at(12)),
        statuses: vec![RuntimeStatus::Completed],
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        store.list_completed(&window).await.unwrap(),
        vec![(id("l2"), at(11))]
    );
    let failed_only = CompletedFilter {
        statuses: vec![RuntimeStatus::Failed],
        limit: 10,
        ..Default::default()
    };
    assert!(store.list_completed(&failed_only).await.unwrap().is_empty());
}

#[tokio::test]
async fn purge_by_id_recursive_and_filter() {
    let (_dir, store) = fresh().await;
    // root → kid → grandkid, plus a live kid2 whose own child is terminal.
    for (name, parent) in [
        ("root", None),
        ("kid", Some("root")),
        ("grandkid", Some("kid")),
        ("kid2", Some("root")),
        ("kid2kid", Some("kid2")),
    ] {
        let mut n = new_instance(name, at(0));
        n.parent_instance_id = parent.map(id);
        store
            .create_instance(n, ReusePolicy::ReplaceTerminal)
            .await
            .unwrap();
        if name != "kid2" {
            complete(&store, name, at(1)).await;
        }
    }
    assert_eq!(store.purge_instance(&id("ghost"), true).await.unwrap(), 0);
    assert_eq!(
        store.purge_instance(&id("kid2"), true).await.unwrap(),
        0,
        "live instances are kept"
    );
    assert_eq!(store.purge_instance(&id("root"), true).await.unwrap(), 4);
    assert!(store.instance(&id("kid2kid")).await.unwrap().is_none());
    assert!(store.instance(&id("kid2")).await.unwrap().is_some());
    assert!(store.history(&id("grandkid")).await.unwrap().is_none());

    let (_dir, store) = fresh().await;
    for i in 0..5 {
        let name = format!("p{i}");
        store
            .create_instance(new_instance(&name, at(i)), ReusePolicy::ReplaceTerminal)
            .await
            .unwrap();
        if i < 4 {
            complete(&store, &name, at(10)).await;
        }
    }
    let mut child = new_instance("p0-child", at(0));
    child.parent_instance_id = Some(id("p0"));
    store
        .create_instance(child, ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    complete(&store, "p0-child", at(10)).await;
    assert_eq!(store.purge_instance(&id("p1"), false).await.unwrap(), 1);

    let past_deadline = store
        .purge_where(&PurgeFilter::default(), false, Some(at(0)))
        .await
        .unwrap();
    assert_eq!(
        past_deadline,
        (0, false),
        "the deadline has passed before the first batch"
    );
    let running_only = PurgeFilter {
        statuses: vec![RuntimeStatus::Running],
        ..Default::default()
    };
    assert_eq!(
        store.purge_where(&running_only, false, None).await.unwrap(),
        (0, true)
    );
    let window = PurgeFilter {
        created_from: Some(at(2)),
        created_to: Some(at(4)),
        ..Default::default()
    };
    assert_eq!(
        store.purge_where(&window, false, None).await.unwrap(),
        (2, true)
    );
    let everything = PurgeFilter {
        created_to: Some(at(1)),
        ..Default::default()
    };
    assert_eq!(
        store.purge_where(&everything, true, None).await.unwrap(),
        (2, true)
    );
    let left: Vec<_> = store
        .query_instances(&InstanceFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        left.into_iter().map(|r| r.instance_id).collect::<Vec<_>>(),
        [id("p4")]
    );
}

#[tokio::test]
async fn recover_after_reopening_the_same_file() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let work = start_running(&store, "timer", at(0)).await;
    let mut t = episode(&work, at(1), StatusChange::Progress);
    t.messages.push(message(
        "timer",
        Some(&work.record.execution_id),
        raised("fire", at(1)),
        at(100),
    ));
    t.activities.push(NewActivity {
        scheduled: task_scheduled(7, at(1)),
    });
    store
        .commit_orchestration(&t, Lease::default())
        .await
        .unwrap();
    store
        .create_instance(new_instance("ready", at(2)), ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    let mut scheduled = new_instance("scheduled", at(2));
    scheduled.scheduled_start_at = Some(at(50));
    store
        .create_instance(scheduled, ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    store.close().await;
    assert!(matches!(
        store.wipe().await,
        Err(StoreError::Unavailable(_))
    ));
    drop(store);

    let store = open(&dir).await;
    let recovery = store.recover(at(3)).await.unwrap();
    assert_eq!(recovery.ready, vec![id("ready")]);
    assert_eq!(
        recovery.wakeups,
        vec![(at(50), id("scheduled")), (at(100), id("timer"))]
    );
    assert_eq!(recovery.activities.len(), 1);
    assert_eq!(recovery.activities[0].scheduled, task_scheduled(7, at(1)));
    assert_eq!(
        store.recover(at(60)).await.unwrap().ready,
        vec![id("ready"), id("scheduled")]
    );

    store.wipe().await.unwrap();
    let empty = store.recover(at(1000)).await.unwrap();
    assert!(empty.ready.is_empty() && empty.wakeups.is_empty() && empty.activities.is_empty());
}

#[tokio::test]
async fn in_memory_database_works() {
    let store = SqliteStore::open(":memory:").await.unwrap();
    start_running(&store, "m", at(0)).await;
    complete(&store, "m", at(1)).await;
    assert_eq!(
        store.instance(&id("m")).await.unwrap().unwrap().status,
        RuntimeStatus::Completed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_are_group_committed() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("store.sqlite");
    let store = Arc::new(
        SqliteStore::open_with(path.to_str().unwrap(), SqliteOptions::default())
            .await
            .unwrap(),
    );
    store
        .create_instance(new_instance("dup", at(0)), ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    let before = store.stats();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            store
                .create_instance(
                    new_instance(&format!("c{i}"), at(i)),
                    ReusePolicy::ReplaceTerminal,
                )
                .await
        });
    }
    // A duplicate in the same burst fails alone: its savepoint rolls back, not the batch.
    let dup = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .create_instance(new_instance("dup", at(0)), ReusePolicy::ReplaceTerminal)
                .await
        })
    };
    let results = tokio::time::timeout(Duration::from_secs(60), tasks.join_all())
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let dup = dup.await.unwrap();
    assert!(
        matches!(dup, Err(StoreError::AlreadyExists { .. })),
        "{dup:?}"
    );

    let all = store
        .query_instances(&InstanceFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 201);
    let stats = store.stats();
    let commits = stats.commits - before.commits;
    let requests = stats.requests - before.requests;
    assert_eq!(requests, 201);
    eprintln!("group commit: {commits} commits for {requests} requests");
    assert!(
        commits < requests,
        "expected batching: {commits} commits for {requests} requests"
    );
    assert_eq!(store.commit_count(), stats.commits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput probe; run with --ignored --nocapture"]
async fn throughput_probe() {
    let dir = TempDir::new().unwrap();
    let store = Arc::new(open(&dir).await);
    let started = std::time::Instant::now();
    let n = 2000;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let name = format!("o{i}");
            let work = start_running(&store, &name, at(0)).await;
            let mut t = episode(&work, at(1), StatusChange::Progress);
            t.activities.push(NewActivity {
                scheduled: task_scheduled(1, at(1)),
            });
            let act = store
                .commit_orchestration(&t, Lease::default())
                .await
                .unwrap()
                .activities[0]
                .id;
            store
                .complete_activity(act, task_completed(1, at(2)))
                .await
                .unwrap();
            complete(&store, &name, at(3)).await;
        });
    }
    tasks.join_all().await;
    let secs = started.elapsed().as_secs_f64();
    let stats = store.stats();
    eprintln!(
        "{n} orchestrations in {secs:.2}s = {:.0}/s; {stats:?}",
        f64::from(n) / secs
    );
}

#[tokio::test]
async fn orchestration_work_skips_history_the_caller_already_holds() {
    let (_dir, store) = fresh().await;
    start_running(&store, "c", at(0)).await;
    store
        .enqueue_event(&id("c"), raised("e", at(1)))
        .await
        .unwrap();
    let record = store.instance(&id("c")).await.unwrap().unwrap();
    assert!(record.history_len > 0);
    let current = Some((record.execution_id.clone(), record.history_len));
    let work = store
        .orchestration_work(&id("c"), at(2), 100, current)
        .await
        .unwrap()
        .unwrap();
    assert!(
        work.history.is_none(),
        "a current cached copy must not be re-read"
    );
    assert_eq!(work.messages.len(), 1);
    let stale = Some((record.execution_id.clone(), record.history_len - 1));
    let work = store
        .orchestration_work(&id("c"), at(2), 100, stale)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        work.history.map(|h| h.len() as u32),
        Some(record.history_len)
    );
    let other = Some((ExecutionId::new("old"), record.history_len));
    let work = store
        .orchestration_work(&id("c"), at(2), 100, other)
        .await
        .unwrap()
        .unwrap();
    assert!(
        work.history.is_some(),
        "another execution's copy is not current"
    );
}

#[tokio::test]
async fn a_timer_to_self_becomes_visible_at_its_time_and_not_before() {
    let (_dir, store) = fresh().await;
    store
        .create_instance(new_instance("t", at(0)), ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    let work = store
        .orchestration_work(&id("t"), at(0), 100, None)
        .await
        .unwrap()
        .unwrap();
    let mut t = episode(&work, at(0), StatusChange::Progress);
    let exec = work.record.execution_id.clone();
    t.messages
        .push(message("t", Some(&exec), raised("timer", at(5)), at(5)));
    let outcome = store
        .commit_orchestration(&t, Lease::default())
        .await
        .unwrap();
    assert!(!outcome.has_visible_inbox);
    let early = store
        .orchestration_work(&id("t"), at(4), 100, None)
        .await
        .unwrap()
        .unwrap();
    assert!(early.messages.is_empty());
    let due = store
        .orchestration_work(&id("t"), at(5), 100, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(due.messages.len(), 1, "the timer is visible at its time");
    assert_eq!(due.messages[0].target_execution.as_ref(), Some(&exec));
}

#[tokio::test]
async fn messages_for_an_execution_a_rewind_replaced_reach_the_new_one_until_continue_as_new() {
    use durabletask_sidecar::domain::{RewindPlan, RewoundExecution};
    let (_dir, store) = fresh().await;
    let parent = start_running(&store, "parent", at(0)).await;
    let old = parent.record.execution_id.clone();
    let failed = StatusChange::Terminal {
        status: RuntimeStatus::Failed,
        output: None,
        failure: Some(pb::TaskFailureDetails {
            error_type: "Boom".into(),
            ..Default::default()
        }),
    };
    store
        .commit_orchestration(&episode(&parent, at(1), failed), Lease::default())
        .await
        .unwrap();
    let history = store.history(&id("parent")).await.unwrap().unwrap().1;
    let new = ExecutionId::new("rewound");
    let plan = RewindPlan {
        executions: vec![RewoundExecution {
            instance_id: id("parent"),
            expected_execution_id: old.clone(),
            expected_history_len: history.len() as u32,
            expected_status: RuntimeStatus::Failed,
            consumed: vec![],
            execution_id: new.clone(),
            history: history[..2].to_vec(),
            pending_tasks: vec![],
            messages: vec![],
        }],
        recreated: vec![],
        relinked: vec![],
        now: at(2),
    };
    store.rewind(&plan).await.unwrap();

    // A child that read its parent link before the rewind reports to the old execution.
    let child = start_running(&store, "child", at(0)).await;
    let mut t = episode(&child, at(3), completed());
    t.messages = vec![
        message("parent", Some(&old), raised("to-old", at(3)), at(3)),
        message(
            "parent",
            Some(&ExecutionId::new("never")),
            raised("to-unknown", at(3)),
            at(3),
        ),
    ];
    let outcome = store
        .commit_orchestration(&t, Lease::default())
        .await
        .unwrap();
    assert_eq!(outcome.touched, vec![id("parent")]);
    let work = store
        .orchestration_work(&id("parent"), at(3), 100, None)
        .await
        .unwrap()
        .unwrap();
    let got: Vec<_> = work
        .messages
        .iter()
        .map(|m| (raised_name(&m.event).unwrap(), m.target_execution.clone()))
        .collect();
    assert_eq!(got, [("to-old", Some(new.clone()))]);

    // Continue-as-new starts an execution that continues nothing: old addresses drop.
    let work = store
        .orchestration_work(&id("parent"), at(4), 100, None)
        .await
        .unwrap()
        .unwrap();
    let next = ExecutionId::new("next");
    let can = StatusChange::ContinuedAsNew {
        execution_id: next.clone(),
        input: None,
        version: None,
        inbox_head: vec![],
    };
    store
        .commit_orchestration(&episode(&work, at(4), can), Lease::default())
        .await
        .unwrap();
    let sender = start_running(&store, "sender", at(0)).await;
    let mut t = episode(&sender, at(5), StatusChange::Progress);
    t.messages = vec![
        message("parent", Some(&old), raised("old-again", at(5)), at(5)),
        message("parent", Some(&new), raised("rewound-again", at(5)), at(5)),
        message("parent", Some(&next), raised("current", at(5)), at(5)),
    ];
    store
        .commit_orchestration(&t, Lease::default())
        .await
        .unwrap();
    let work = store
        .orchestration_work(&id("parent"), at(5), 100, None)
        .await
        .unwrap()
        .unwrap();
    let names: Vec<_> = work
        .messages
        .iter()
        .map(|m| raised_name(&m.event).unwrap())
        .collect();
    assert_eq!(names, ["current"]);
}
