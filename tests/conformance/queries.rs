//! Reading many instances at once and deleting them: `query_instances`, `list_completed`,
//! `purge_instance`, `purge_where`.

use durabletask_sidecar::domain::{InstanceRecord, NewInstance, ReusePolicy, RuntimeStatus};
use durabletask_sidecar::store::{CompletedFilter, InstanceFilter, PurgeFilter, Store};

use super::{at, complete, id, new_instance, start_running, terminated, StoreFactory};

/// Creates `instances` and one entity (which no query may return), then completes
/// `completed` at time 10.
async fn seed(store: &dyn Store, instances: Vec<NewInstance>, completed: &str) {
    let entity = new_instance("@ent@key", at(0));
    for new in instances.into_iter().chain([entity]) {
        store
            .create_instance(new, ReusePolicy::ReplaceTerminal)
            .await
            .unwrap();
    }
    complete(store, completed, at(10)).await;
}

fn ids(page: &[InstanceRecord]) -> Vec<&str> {
    page.iter().map(|r| r.instance_id.as_str()).collect()
}

pub async fn query_instances_pages_by_keyset(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    let instances = ["q3", "q1", "q2", "x1", "Q4"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            // q1 and q2 share a creation time: the id breaks the tie.
            new_instance(name, at(if *name == "q2" { 1 } else { i as i64 }))
        });
    seed(&*store, instances.collect(), "q3").await;

    let mut filter = InstanceFilter {
        id_prefix: Some("q".into()),
        limit: 2,
        ..Default::default()
    };
    let page = store.query_instances(&filter).await.unwrap();
    assert_eq!(ids(&page), ["q3", "q1"]);
    let last = page.last().unwrap();
    filter.after = Some((last.created_at, last.instance_id.as_str().to_string()));
    let page = store.query_instances(&filter).await.unwrap();
    assert_eq!(
        ids(&page),
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

pub async fn query_newest_first_by_name_and_count_per_status(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    let instances = ["n1", "n2", "n3", "other"]
        .iter()
        .enumerate()
        .map(|(i, id_text)| {
            let mut new = new_instance(id_text, at(i as i64));
            if *id_text == "other" {
                new.name = "another".into();
            }
            new
        });
    seed(&*store, instances.collect(), "n2").await;

    let mut filter = InstanceFilter {
        name: Some("orch".into()),
        newest_first: true,
        limit: 2,
        ..Default::default()
    };
    let page = store.query_instances(&filter).await.unwrap();
    assert_eq!(
        ids(&page),
        ["n3", "n2"],
        "newest first, other names left out"
    );
    let last = page.last().unwrap();
    filter.after = Some((last.created_at, last.instance_id.as_str().to_string()));
    let page = store.query_instances(&filter).await.unwrap();
    assert_eq!(ids(&page), ["n1"], "the cursor continues downwards");

    let count = |filter: InstanceFilter| {
        let store = &store;
        async move {
            let counts = store.count_instances(&filter).await.unwrap();
            let statuses: Vec<_> = counts.iter().map(|(s, _)| *s).collect();
            assert_eq!(statuses, RuntimeStatus::ALL, "every status, in order");
            counts
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        count(InstanceFilter::default()).await,
        [(RuntimeStatus::Completed, 1), (RuntimeStatus::Pending, 3)],
        "entities are not counted"
    );
    let narrowed = InstanceFilter {
        name: Some("orch".into()),
        statuses: vec![RuntimeStatus::Pending],
        created_from: Some(at(1)),
        id_prefix: Some("n".into()),
        ..Default::default()
    };
    assert_eq!(count(narrowed).await, [(RuntimeStatus::Pending, 1)]);
}

pub async fn list_completed_pages_terminal_instances(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    for (i, name) in ["l1", "l2", "l3", "live"].iter().enumerate() {
        start_running(&*store, name, at(0)).await;
        if *name != "live" {
            complete(&*store, name, at(10 + i as i64)).await;
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

pub async fn purge_by_id_recursive_and_filter(mut f: impl StoreFactory) {
    let store = f.fresh().await;
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
            complete(&*store, name, at(1)).await;
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

    let store = f.fresh().await;
    for i in 0..5 {
        let name = format!("p{i}");
        store
            .create_instance(new_instance(&name, at(i)), ReusePolicy::ReplaceTerminal)
            .await
            .unwrap();
        if i < 4 {
            complete(&*store, &name, at(10)).await;
        }
    }
    let mut child = new_instance("p0-child", at(0));
    child.parent_instance_id = Some(id("p0"));
    store
        .create_instance(child, ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    complete(&*store, "p0-child", at(10)).await;
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

/// Retention's purge: by completion time (not creation), whole trees taken from their
/// root, a child never before its root, orphans as roots, one status at a time.
pub async fn purge_by_completion_time_takes_whole_trees(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    let create = |name: &str, created: i64, parent: Option<&str>| {
        let mut new = new_instance(name, at(created));
        new.parent_instance_id = parent.map(id);
        new
    };
    for new in [
        create("old", 0, None),
        create("old-child", 1, Some("old")),
        create("ended-late", 0, None),
        create("kid-of-late", 1, Some("ended-late")),
        create("created-late", 15, None),
        create("orphan", 0, Some("gone")),
        create("term", 0, None),
        create("@ent@key", 0, None),
    ] {
        store
            .create_instance(new, ReusePolicy::ReplaceTerminal)
            .await
            .unwrap();
    }
    complete(&*store, "old", at(10)).await;
    // Ended after the cut-off although its root ended before: it goes with the root.
    complete(&*store, "old-child", at(40)).await;
    // Created before the cut-off but ended after it: kept, and its old child with it.
    complete(&*store, "ended-late", at(30)).await;
    complete(&*store, "kid-of-late", at(5)).await;
    complete(&*store, "created-late", at(18)).await;
    complete(&*store, "orphan", at(5)).await;
    store
        .terminate_instance(&id("term"), terminated(at(5)), Some("r".into()), at(5))
        .await
        .unwrap();
    start_running(&*store, "running", at(0)).await;

    let retention = |status| PurgeFilter {
        statuses: vec![status],
        completed_before: Some(at(20)),
        roots_only: true,
        ..Default::default()
    };
    assert_eq!(
        store
            .purge_where(&retention(RuntimeStatus::Completed), true, None)
            .await
            .unwrap(),
        (4, true),
        "old with old-child, created-late, orphan"
    );
    assert_eq!(
        left(&*store).await,
        ["ended-late", "kid-of-late", "running", "term"]
    );
    assert!(
        store.instance(&id("@ent@key")).await.unwrap().is_some(),
        "entity rows are never purged as instances"
    );
    assert_eq!(
        store
            .purge_where(&retention(RuntimeStatus::Terminated), true, None)
            .await
            .unwrap(),
        (1, true)
    );
    // A later cut-off takes the tree whose root ended late, child included.
    let later = PurgeFilter {
        completed_before: Some(at(31)),
        ..retention(RuntimeStatus::Completed)
    };
    assert_eq!(
        store.purge_where(&later, true, None).await.unwrap(),
        (2, true)
    );
    assert_eq!(left(&*store).await, ["running"]);
}

/// Every instance id left, sorted.
async fn left(store: &dyn Store) -> Vec<String> {
    let mut ids: Vec<String> = store
        .query_instances(&InstanceFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.instance_id.as_str().to_string())
        .collect();
    ids.sort();
    ids
}
