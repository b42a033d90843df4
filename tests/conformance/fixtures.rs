//! Builders and steps the store tests share: instances, events, episodes and messages,
//! and the common ways of driving a store through them. Used by the conformance suite
//! and, directly (`#[path]`), by the backend-specific store tests.

// `allow-unwrap-in-tests` covers `#[test]` bodies only; a test file that includes this
// module directly may use only some of it.
#![allow(clippy::unwrap_used, unreachable_pub, dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use durabletask_sidecar::domain::events::{event, orchestrator_started};
use durabletask_sidecar::domain::{
    ExecutionId, InstanceId, NewActivity, NewInstance, OutboundMessage, ReusePolicy, RuntimeStatus,
    StatusChange, Transition,
};
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::store::{InstanceFilter, OrchestrationWork, Store, StoreError};
use pb::history_event::EventType;

/// A fixed base time plus `secs` seconds (whole seconds keep comparisons exact).
pub fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

pub fn id(s: &str) -> InstanceId {
    InstanceId::new(s)
}

pub fn new_instance(instance: &str, created: DateTime<Utc>) -> NewInstance {
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

pub fn raised(name: &str, when: DateTime<Utc>) -> pb::HistoryEvent {
    event(
        -1,
        when,
        EventType::EventRaised(pb::EventRaisedEvent {
            name: name.into(),
            input: None,
        }),
    )
}

pub fn terminated(when: DateTime<Utc>) -> pb::HistoryEvent {
    event(
        -1,
        when,
        EventType::ExecutionTerminated(pb::ExecutionTerminatedEvent {
            input: Some("\"bye\"".into()),
            recurse: false,
        }),
    )
}

pub fn task_scheduled(task_id: i32, when: DateTime<Utc>) -> pb::HistoryEvent {
    event(
        task_id,
        when,
        EventType::TaskScheduled(pb::TaskScheduledEvent {
            name: "act".into(),
            ..Default::default()
        }),
    )
}

pub fn task_completed(task_id: i32, when: DateTime<Utc>) -> pb::HistoryEvent {
    event(
        -1,
        when,
        EventType::TaskCompleted(pb::TaskCompletedEvent {
            task_scheduled_id: task_id,
            result: Some("1".into()),
        }),
    )
}

pub fn raised_name(e: &pb::HistoryEvent) -> Option<&str> {
    match &e.event_type {
        Some(EventType::EventRaised(r)) => Some(r.name.as_str()),
        _ => None,
    }
}

pub fn is_started(e: &pb::HistoryEvent) -> bool {
    matches!(e.event_type, Some(EventType::ExecutionStarted(_)))
}

/// Claims the instance and reads its episode (it must exist and be live).
pub async fn next_work(store: &dyn Store, instance: &str, now: DateTime<Utc>) -> OrchestrationWork {
    store
        .orchestration_work(&id(instance), now, 100, None)
        .await
        .unwrap()
        .unwrap()
}

/// Creates an instance and commits its first episode (history: OrchestratorStarted,
/// ExecutionStarted), leaving it RUNNING; returns the claimed work of its next episode.
pub async fn start_running(
    store: &dyn Store,
    instance: &str,
    now: DateTime<Utc>,
) -> OrchestrationWork {
    store
        .create_instance(new_instance(instance, now), ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    let first = next_work(store, instance, now).await;
    let t = episode(&first, now, StatusChange::Progress);
    store.commit_orchestration(&t, first.lease).await.unwrap();
    next_work(store, instance, now).await
}

/// A transition consuming every delivered message of `work`, appending
/// OrchestratorStarted + those messages.
pub fn episode(work: &OrchestrationWork, now: DateTime<Utc>, status: StatusChange) -> Transition {
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

/// Starts `instance` at `started` (see [`start_running`]) and commits an episode at `now`
/// that schedules activity task 1; returns the activity's row id.
pub async fn start_with_activity(
    store: &dyn Store,
    instance: &str,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> i64 {
    let work = start_running(store, instance, started).await;
    let mut t = episode(&work, now, StatusChange::Progress);
    t.activities.push(NewActivity {
        scheduled: task_scheduled(1, now),
    });
    store
        .commit_orchestration(&t, work.lease)
        .await
        .unwrap()
        .activities[0]
        .id
}

pub fn completed() -> StatusChange {
    StatusChange::Terminal {
        status: RuntimeStatus::Completed,
        output: Some("\"done\"".into()),
        failure: None,
    }
}

/// Runs one episode of a live instance that completes it.
pub async fn complete(store: &dyn Store, instance: &str, now: DateTime<Utc>) {
    let work = next_work(store, instance, now).await;
    store
        .commit_orchestration(&episode(&work, now, completed()), work.lease)
        .await
        .unwrap();
}

pub fn message(
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

/// Creates 200 instances and, in the same burst, a duplicate of the existing "dup":
/// every create commits or fails on its own, so only the duplicate fails
/// (`AlreadyExists`) and all 201 instances are there afterwards.
pub async fn burst_of_creates_with_a_duplicate<S: Store + ?Sized>(store: &Arc<S>) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let store = Arc::clone(store);
        tasks.spawn(async move {
            store
                .create_instance(
                    new_instance(&format!("c{i}"), at(i)),
                    ReusePolicy::ReplaceTerminal,
                )
                .await
        });
    }
    let dup = {
        let store = Arc::clone(store);
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
}
