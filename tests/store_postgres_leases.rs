//! Ownership between processes on `PostgresStore`: two store handles with different
//! owners on one fresh database stand for two sidecars. Needs a PostgreSQL server: the
//! admin URL comes from `DURABLETASK_TEST_POSTGRES` (a database is created per test and
//! dropped after it, see `tests/common/postgres.rs`); unset, the tests say why and pass,
//! unless `CI` is set.

#![allow(clippy::unwrap_used)]

mod common;
// Only the builders: the conformance behaviours run in store_sqlite and store_postgres.
#[path = "conformance/fixtures.rs"]
mod fixtures;

use std::future::Future;
use std::time::Duration;

use durabletask_sidecar::domain::events::event;
use durabletask_sidecar::domain::{
    InstanceId, NewActivity, OutboundMessage, ReusePolicy, RuntimeStatus, StatusChange, Transition,
};
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::store::postgres::{PostgresOptions, PostgresStore};
use durabletask_sidecar::store::{
    ActivityOutcome, OrchestrationWork, Store, StoreChange, StoreError,
};
use pb::history_event::EventType;

use common::postgres::fresh_database;
use fixtures::{at, episode, new_instance};

const WAIT: Duration = Duration::from_secs(20);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

async fn open(url: &str, owner: &str, lease: Duration) -> PostgresStore {
    let options = PostgresOptions {
        owner: owner.into(),
        lease,
        ..PostgresOptions::default()
    };
    within(PostgresStore::open_with(url, options))
        .await
        .unwrap()
}

/// Polls `f` until it holds, failing after the deadline (no fixed sleeps as sync).
async fn eventually<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(async {
        while !f().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// A progress episode of `work` at `at(1)` that schedules activity task 0.
fn schedules_an_activity(work: &OrchestrationWork) -> Transition {
    let mut t = episode(work, at(1), StatusChange::Progress);
    let scheduled = event(
        0,
        at(1),
        EventType::TaskScheduled(pb::TaskScheduledEvent {
            name: "act".into(),
            ..Default::default()
        }),
    );
    t.history_append.push(scheduled.clone());
    t.activities.push(NewActivity { scheduled });
    t
}

#[tokio::test]
async fn a_claim_excludes_other_owners_until_released_or_expired() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let url = &db.url;
    let a = open(url, "node-a", Duration::from_secs(1)).await;
    let b = open(url, "node-b", Duration::from_secs(1)).await;
    let id = InstanceId::new("i1");
    within(a.create_instance(new_instance("i1", at(0)), ReusePolicy::ReplaceTerminal))
        .await
        .unwrap();

    let work = within(a.orchestration_work(&id, at(1), 100, None))
        .await
        .unwrap()
        .unwrap();
    assert!(within(b.orchestration_work(&id, at(1), 100, None))
        .await
        .unwrap()
        .is_none());
    within(a.release_orchestration(&id, work.lease))
        .await
        .unwrap();
    let by_b = within(b.orchestration_work(&id, at(1), 100, None))
        .await
        .unwrap()
        .unwrap();
    assert!(by_b.lease.epoch > work.lease.epoch);

    // b stops renewing; once its lease expires (database clock), a takes over, and b's
    // commit is fenced off and writes nothing.
    let taken = within(async {
        loop {
            if let Some(w) = a.orchestration_work(&id, at(2), 100, None).await.unwrap() {
                break w;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let stale =
        within(b.commit_orchestration(&episode(&by_b, at(2), StatusChange::Progress), by_b.lease))
            .await;
    assert!(matches!(stale, Err(StoreError::LeaseLost(_))), "{stale:?}");
    let record = within(a.instance(&id)).await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.history_len),
        (RuntimeStatus::Pending, 0)
    );
    within(a.commit_orchestration(&episode(&taken, at(3), StatusChange::Progress), taken.lease))
        .await
        .unwrap();
    assert_eq!(
        within(a.instance(&id)).await.unwrap().unwrap().status,
        RuntimeStatus::Running
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn closing_a_store_hands_its_claims_over_at_once() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let url = &db.url;
    // Leases far longer than the test: only the release can free the claims.
    let a = open(url, "node-a", Duration::from_secs(300)).await;
    let b = open(url, "node-b", Duration::from_secs(300)).await;
    let (held, running) = (InstanceId::new("held"), InstanceId::new("running"));
    for id in [&held, &running] {
        within(a.create_instance(
            new_instance(id.as_str(), at(0)),
            ReusePolicy::ReplaceTerminal,
        ))
        .await
        .unwrap();
    }
    within(a.orchestration_work(&held, at(1), 100, None))
        .await
        .unwrap()
        .unwrap();
    let work = within(a.orchestration_work(&running, at(1), 100, None))
        .await
        .unwrap()
        .unwrap();
    let t = schedules_an_activity(&work);
    let activity = within(a.commit_orchestration(&t, work.lease))
        .await
        .unwrap()
        .activities[0]
        .id;
    assert!(within(b.orchestration_work(&held, at(1), 100, None))
        .await
        .unwrap()
        .is_none());
    assert!(within(b.claim_activities(&[activity]))
        .await
        .unwrap()
        .is_empty());

    a.close().await;
    assert!(within(b.orchestration_work(&held, at(1), 100, None))
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        within(b.claim_activities(&[activity])).await.unwrap(),
        vec![activity]
    );
    b.close().await;
}

#[tokio::test]
async fn renewal_keeps_a_lease_and_due_work_skips_foreign_leases() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let url = &db.url;
    let a = open(url, "node-a", Duration::from_secs(1)).await;
    let b = open(url, "node-b", Duration::from_secs(1)).await;
    let id = InstanceId::new("i2");
    within(a.create_instance(new_instance("i2", at(0)), ReusePolicy::ReplaceTerminal))
        .await
        .unwrap();
    let due = within(b.due_work(at(1), at(100), 10)).await.unwrap();
    assert_eq!(due.ready, vec![id.clone()]);
    let _work = within(a.orchestration_work(&id, at(1), 100, None))
        .await
        .unwrap()
        .unwrap();
    assert!(within(b.due_work(at(1), at(100), 10))
        .await
        .unwrap()
        .ready
        .is_empty());
    // Renewed every 300 ms for 2.5 lease durations: b never gets it.
    let until = tokio::time::Instant::now() + Duration::from_millis(2_500);
    while tokio::time::Instant::now() < until {
        within(a.renew_leases()).await.unwrap();
        assert!(within(b.orchestration_work(&id, at(1), 100, None))
            .await
            .unwrap()
            .is_none());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn activity_claims_are_exclusive_and_expire_and_changes_reach_the_other_node() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let url = &db.url;
    let a = open(url, "node-a", Duration::from_secs(1)).await;
    let b = open(url, "node-b", Duration::from_secs(1)).await;
    let mut feed_b = b.subscribe().unwrap();
    let mut feed_a = a.subscribe().unwrap();
    // Both listeners are connected once they report their first resync.
    assert_eq!(within(feed_b.recv()).await, Some(StoreChange::Resync));
    assert_eq!(within(feed_a.recv()).await, Some(StoreChange::Resync));

    let id = InstanceId::new("i3");
    within(a.create_instance(new_instance("i3", at(0)), ReusePolicy::ReplaceTerminal))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !(seen.contains(&StoreChange::Ready(id.clone()))
        && seen.contains(&StoreChange::Status(id.clone())))
    {
        seen.push(within(feed_b.recv()).await.unwrap());
    }

    // The whole lifecycle: progress with an activity and a timer, the activity's
    // result, then a terminal commit.
    let work = within(a.orchestration_work(&id, at(1), 100, None))
        .await
        .unwrap()
        .unwrap();
    let mut t = schedules_an_activity(&work);
    let fire_at = at(1_000_000);
    t.messages.push(OutboundMessage {
        target: id.clone(),
        target_execution: Some(work.record.execution_id.clone()),
        event: event(
            -1,
            at(1),
            EventType::TimerFired(pb::TimerFiredEvent {
                fire_at: None,
                timer_id: 1,
            }),
        ),
        visible_at: fire_at,
    });
    let outcome = within(a.commit_orchestration(&t, work.lease))
        .await
        .unwrap();
    assert_eq!(outcome.activities.len(), 1);
    assert!(!outcome.has_visible_inbox);
    let activity = outcome.activities[0].id;
    // The committing node holds the new activity at once: another node hearing of it
    // does not race for it.
    assert!(outcome.activities_claimed);
    assert!(within(b.claim_activities(&[activity]))
        .await
        .unwrap()
        .is_empty());
    let mut seen = Vec::new();
    while !(seen.contains(&StoreChange::Activities)
        && seen.contains(&StoreChange::Wakeup(id.clone(), fire_at)))
    {
        seen.push(within(feed_b.recv()).await.unwrap());
    }

    // An unsent pre-claim is given back; once claimed again, a late "unsent" release
    // no longer frees it.
    within(a.release_unsent_activities(&[activity]))
        .await
        .unwrap();
    assert_eq!(
        within(a.claim_activities(&[activity])).await.unwrap(),
        vec![activity]
    );
    within(a.release_unsent_activities(&[activity]))
        .await
        .unwrap();
    assert!(within(b.claim_activities(&[activity]))
        .await
        .unwrap()
        .is_empty());
    assert!(within(b.due_work(at(2), at(2), 10))
        .await
        .unwrap()
        .activities
        .is_empty());
    eventually(|| {
        let b = &b;
        async move { b.claim_activities(&[activity]).await.unwrap() == vec![activity] }
    })
    .await;
    within(b.release_activities(&[activity])).await.unwrap();
    loop {
        if within(feed_a.recv()).await.unwrap() == StoreChange::Activities {
            break;
        }
    }

    let result = event(
        -1,
        at(3),
        EventType::TaskCompleted(pb::TaskCompletedEvent {
            task_scheduled_id: 0,
            ..Default::default()
        }),
    );
    assert_eq!(
        within(b.complete_activity(activity, result.clone()))
            .await
            .unwrap(),
        ActivityOutcome::Delivered(id.clone())
    );
    assert_eq!(
        within(a.complete_activity(activity, result)).await.unwrap(),
        ActivityOutcome::Unknown
    );
    let work = within(a.orchestration_work(&id, at(4), 100, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(work.messages.len(), 1);
    let t = episode(
        &work,
        at(4),
        StatusChange::Terminal {
            status: RuntimeStatus::Completed,
            output: Some("1".into()),
            failure: None,
        },
    );
    within(a.commit_orchestration(&t, work.lease))
        .await
        .unwrap();
    let record = within(b.instance(&id)).await.unwrap().unwrap();
    assert_eq!(record.status, RuntimeStatus::Completed);
    assert_eq!(within(b.history(&id)).await.unwrap().unwrap().1.len(), 5);
    loop {
        if within(feed_b.recv()).await.unwrap() == StoreChange::Status(id.clone()) {
            break;
        }
    }
    // a's own changes never come back to a.
    while let Ok(change) = feed_a.try_recv() {
        assert!(
            !matches!(change, StoreChange::Status(_)),
            "own change echoed: {change:?}"
        );
    }
    a.close().await;
    b.close().await;
}
