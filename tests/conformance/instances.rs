//! Instances from the outside: create and its reuse policies, client events, terminate,
//! suspend and resume.

use std::sync::Arc;

use durabletask_sidecar::domain::events::event;
use durabletask_sidecar::domain::{ReusePolicy, RuntimeStatus, StatusChange};
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::store::{
    ActivityOutcome, EnqueueOutcome, Store, StoreError, SuspendOutcome, TerminateOutcome,
};
use pb::history_event::EventType;

use super::{
    at, burst_of_creates_with_a_duplicate, complete, episode, id, is_started, new_instance,
    next_work, raised, raised_name, start_running, start_with_activity, task_completed, terminated,
    StoreFactory,
};

pub async fn create_reads_back_and_reuse_policy_matrix(mut f: impl StoreFactory) {
    let store = f.fresh().await;
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
    complete(&*store, "a", at(3)).await;
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

pub async fn replacement_clears_history_inbox_and_activities(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    let activity = start_with_activity(&*store, "r", at(0), at(1)).await;
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
    let work = next_work(&*store, "r", at(2)).await;
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

pub async fn enqueue_event_rules(mut f: impl StoreFactory) {
    let store = f.fresh().await;
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
    let work = next_work(&*store, "p", at(1)).await;
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
    assert_eq!(next_work(&*store, "p", at(0)).await.messages.len(), 1);

    complete(&*store, "p", at(2)).await;
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

pub async fn terminate_variants(mut f: impl StoreFactory) {
    let store = f.fresh().await;
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
    start_running(&*store, "run", at(0)).await;
    let outcome = store
        .terminate_instance(&id("run"), terminated(at(1)), None, at(1))
        .await;
    assert_eq!(outcome.unwrap(), TerminateOutcome::Enqueued);
    let work = next_work(&*store, "run", at(1)).await;
    assert!(matches!(
        work.messages[0].event.event_type,
        Some(EventType::ExecutionTerminated(_))
    ));
}

pub async fn suspend_and_resume_flip_status_once(mut f: impl StoreFactory) {
    let store = f.fresh().await;
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
    start_running(&*store, "s", at(0)).await;
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
    let work = next_work(&*store, "s", at(2)).await;
    assert_eq!(work.messages.len(), 1, "only one marker was enqueued");
    store
        .commit_orchestration(&episode(&work, at(2), StatusChange::Progress), work.lease)
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
    complete(&*store, "s", at(4)).await;
    assert_eq!(
        store
            .set_suspended(&s, true, suspended(at(5)), at(5))
            .await
            .unwrap(),
        SuspendOutcome::Unchanged
    );
}

/// Concurrent creates each commit or fail on their own: a duplicate in the same burst
/// fails alone and takes none of the others with it.
pub async fn concurrent_creates_succeed_or_fail_alone(mut f: impl StoreFactory) {
    let store: Arc<dyn Store> = Arc::from(f.fresh().await);
    store
        .create_instance(new_instance("dup", at(0)), ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    burst_of_creates_with_a_duplicate(&store).await;
}
