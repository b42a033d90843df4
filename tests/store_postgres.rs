//! The store conformance suite (`tests/conformance`) on PostgreSQL: each test gets a fresh
//! database on the server `DURABLETASK_TEST_POSTGRES` names (see `tests/common/postgres.rs`;
//! without it the tests skip, except in CI).

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the factory below.
#![allow(clippy::unwrap_used)]

mod common;
mod conformance;

use async_trait::async_trait;
use durabletask_sidecar::store::postgres::{PostgresOptions, PostgresStore};
use durabletask_sidecar::store::Store;

use common::postgres::{redact, with_database, TestDatabase};
use conformance::StoreFactory;

/// One database per fresh store, each dropped when the factory is.
struct PostgresDatabases {
    admin_url: String,
    databases: Vec<TestDatabase>,
}

impl PostgresDatabases {
    async fn open_last(&self) -> Box<dyn Store> {
        let db = self.databases.last().expect("reopen before fresh");
        match PostgresStore::open_with(&db.url, PostgresOptions::default()).await {
            Ok(store) => Box::new(store),
            Err(err) => panic!("PostgresStore::open_with({}): {err}", redact(&db.url)),
        }
    }
}

#[async_trait]
impl StoreFactory for PostgresDatabases {
    async fn fresh(&mut self) -> Box<dyn Store> {
        let db = TestDatabase::create(&self.admin_url).await;
        self.databases.push(db);
        self.open_last().await
    }

    async fn reopen(&mut self) -> Box<dyn Store> {
        self.open_last().await
    }
}

async fn postgres_databases() -> Option<PostgresDatabases> {
    let admin_url = common::postgres::admin_url()?;
    Some(PostgresDatabases {
        admin_url,
        databases: Vec::new(),
    })
}

store_conformance_tests!(postgres_databases);

/// The harness itself: a database of its own, reachable at the URL it hands out, gone
/// after the handle is dropped.
#[tokio::test]
async fn harness_creates_and_drops_a_database() {
    use sqlx::{Connection, PgConnection};
    use std::future::Future;

    async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(30), fut)
            .await
            .unwrap_or_else(|_| panic!("timed out: {what}"))
    }

    let Some(admin_url) = common::postgres::admin_url() else {
        return;
    };
    let db = TestDatabase::create(&admin_url).await;
    let name = db.name().to_string();
    let mut conn = within("connect", PgConnection::connect(&db.url))
        .await
        .unwrap();
    let (current,): (String,) = within(
        "current_database()",
        sqlx::query_as("SELECT current_database()").fetch_one(&mut conn),
    )
    .await
    .unwrap();
    assert_eq!(current, name);
    // Dropped while a connection is still open on it, as a test's store may be.
    drop(db);
    let mut admin = within("admin connect", PgConnection::connect(&admin_url))
        .await
        .unwrap();
    let (left,): (i64,) = within(
        "count databases",
        sqlx::query_as("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut admin),
    )
    .await
    .unwrap();
    assert_eq!(left, 0, "{name} was not dropped");
}

#[test]
fn urls_keep_everything_but_the_database() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "dt_x"),
        "postgres://postgres@127.0.0.1:5432/dt_x"
    );
    assert_eq!(
        with_database("postgresql://u:p@h/db?sslmode=disable", "dt_x"),
        "postgresql://u:p@h/dt_x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:1", "dt_x"),
        "postgres://h:1/dt_x"
    );
    assert_eq!(
        with_database("postgres://h?host=/tmp", "dt_x"),
        "postgres://h/dt_x?host=/tmp"
    );
    assert_eq!(
        redact("postgres://u:secret@h:1/db"),
        "postgres://u:***@h:1/db"
    );
    assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
}
