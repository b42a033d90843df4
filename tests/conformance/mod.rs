//! The store conformance suite: every promise of the `Store` trait, stated once and run
//! against every backend. Each behaviour is a function taking a [`StoreFactory`]; a backend's
//! test file (`tests/store_sqlite.rs`, `tests/store_postgres.rs`) instantiates all of them
//! with [`store_conformance_tests!`], one `#[tokio::test]` per behaviour.
//!
//! Adding a behaviour: write it in the submodule of its area and list it in the macro
//! below. A function left out of the list is dead code, which clippy (`-D warnings`)
//! rejects, so no backend can silently skip it.
//!
//! The suite relies only on what the trait promises: claims are presented as the lease the
//! last `orchestration_work` call returned (SQLite hands out epoch 0, shared stores count),
//! and row ids and inbox seqs are compared with each other, never with literal values.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not these helpers; the items are
// `pub` for the test files that include this module.
#![allow(clippy::unwrap_used, unreachable_pub)]

pub mod episodes;
pub mod instances;
pub mod queries;
pub mod recovery;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use durabletask_sidecar::domain::events::{event, orchestrator_started};
use durabletask_sidecar::domain::{
    ExecutionId, InstanceId, NewInstance, OutboundMessage, ReusePolicy, RuntimeStatus,
    StatusChange, Transition,
};
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::store::{OrchestrationWork, Store};
use pb::history_event::EventType;

/// Makes the stores a conformance test runs against.
#[async_trait]
pub trait StoreFactory: Send {
    /// A store on a new, empty database of its own.
    async fn fresh(&mut self) -> Box<dyn Store>;

    /// A new store on the database of the last [`StoreFactory::fresh`] store, as a restarted
    /// process would open it. The caller has closed and dropped the previous handle.
    async fn reopen(&mut self) -> Box<dyn Store>;
}

/// How long one conformance test may take before it fails instead of hanging CI (a store
/// on a database server waits on the network).
pub const TEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Expands to one `#[tokio::test]` per conformance behaviour. `$factory` is the path of an
/// `async fn() -> Option<impl StoreFactory>`; `None` skips the test (the factory says why).
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:path) => {
        $crate::store_conformance_tests!(@tests $factory, ();
            instances::create_reads_back_and_reuse_policy_matrix,
            instances::replacement_clears_history_inbox_and_activities,
            instances::enqueue_event_rules,
            instances::terminate_variants,
            instances::suspend_and_resume_flip_status_once,
            episodes::progress_commit_appends_history_and_updates_record,
            episodes::stale_guard_is_lease_lost_and_writes_nothing,
            episodes::a_failing_commit_rolls_back_its_partial_writes,
            episodes::terminal_commit_clears_inbox_and_drops_messages_to_self,
            episodes::failed_commit_stores_failure_details,
            episodes::continue_as_new_puts_the_new_head_before_waiting_messages,
            episodes::message_drop_rules_and_touched,
            episodes::children_are_created_replaced_or_conflict,
            episodes::activity_completes_exactly_once_and_stale_results_drop,
            episodes::discard_messages_only_touches_the_given_rows,
            episodes::orchestration_work_skips_history_the_caller_already_holds,
            episodes::a_timer_to_self_becomes_visible_at_its_time_and_not_before,
            episodes::messages_for_an_execution_a_rewind_replaced_reach_the_new_one_until_continue_as_new,
            queries::query_instances_pages_by_keyset,
            queries::list_completed_pages_terminal_instances,
            queries::purge_by_id_recursive_and_filter,
            recovery::recover_after_reopening_the_same_database,
        );
        $crate::store_conformance_tests!(@tests $factory, (flavor = "multi_thread", worker_threads = 4);
            instances::concurrent_creates_succeed_or_fail_alone,
        );
    };
    (@tests $factory:path, $args:tt; $($area:ident :: $name:ident),* $(,)?) => {
        $(
            #[tokio::test $args]
            async fn $name() {
                let Some(factory) = $factory().await else {
                    return;
                };
                let behaviour = $crate::conformance::$area::$name(factory);
                if tokio::time::timeout($crate::conformance::TEST_DEADLINE, behaviour)
                    .await
                    .is_err()
                {
                    panic!(
                        "{} did not finish within {:?}",
                        stringify!($name),
                        $crate::conformance::TEST_DEADLINE
                    );
                }
            }
        )*
    };
}

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
