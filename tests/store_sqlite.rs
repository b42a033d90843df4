//! The store conformance suite (`tests/conformance`) on SQLite files in temporary
//! directories, plus what is about SQLite itself: the in-memory database, group commit,
//! and a throughput probe.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the factory below.
#![allow(clippy::unwrap_used)]

mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use durabletask_sidecar::domain::{ReusePolicy, RuntimeStatus};
use durabletask_sidecar::store::sqlite::{SqliteOptions, SqliteStore};
use durabletask_sidecar::store::Store;
use tempfile::TempDir;

use conformance::{
    at, burst_of_creates_with_a_duplicate, complete, id, new_instance, start_running,
    start_with_activity, task_completed, StoreFactory,
};

/// One SQLite file per fresh store, each in a temporary directory that lives as long as
/// the factory.
#[derive(Default)]
struct SqliteFiles {
    dirs: Vec<TempDir>,
}

impl SqliteFiles {
    async fn open_last(&self) -> Box<dyn Store> {
        let dir = self.dirs.last().expect("reopen before fresh");
        let path = dir.path().join("store.sqlite");
        Box::new(SqliteStore::open(path.to_str().unwrap()).await.unwrap())
    }
}

#[async_trait]
impl StoreFactory for SqliteFiles {
    async fn fresh(&mut self) -> Box<dyn Store> {
        self.dirs.push(TempDir::new().unwrap());
        self.open_last().await
    }

    /// A SQLite file serves one open store per process (see `store::sqlite::lock`); the
    /// caller has closed the previous one.
    async fn reopen(&mut self) -> Box<dyn Store> {
        self.open_last().await
    }
}

async fn sqlite_files() -> Option<SqliteFiles> {
    Some(SqliteFiles::default())
}

store_conformance_tests!(sqlite_files);

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
    burst_of_creates_with_a_duplicate(&store).await;
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
    let path = dir.path().join("store.sqlite");
    let store = Arc::new(SqliteStore::open(path.to_str().unwrap()).await.unwrap());
    let started = std::time::Instant::now();
    let n = 2000;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let name = format!("o{i}");
            let act = start_with_activity(&*store, &name, at(0), at(1)).await;
            store
                .complete_activity(act, task_completed(1, at(2)))
                .await
                .unwrap();
            complete(&*store, &name, at(3)).await;
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
