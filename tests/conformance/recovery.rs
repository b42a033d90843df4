//! What survives a restart: the recovery a new store handle reads from the same database,
//! a closed handle refusing calls, and `wipe`.

use durabletask_sidecar::domain::{NewActivity, ReusePolicy, StatusChange};
use durabletask_sidecar::store::StoreError;

use super::{
    at, episode, id, message, new_instance, raised, start_running, task_scheduled, StoreFactory,
};

/// Everything `recover` reports is read from the database, so a new handle (a restarted
/// process) sees it all.
pub async fn recover_after_reopening_the_same_database(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    let work = start_running(&*store, "timer", at(0)).await;
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
    store.commit_orchestration(&t, work.lease).await.unwrap();
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

    let store = f.reopen().await;
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
