//! Fresh PostgreSQL databases for tests. `DURABLETASK_TEST_POSTGRES` names the server by an
//! admin URL (`postgres://postgres@127.0.0.1:5432/postgres`; `tests/postgres/start.sh`
//! starts a throwaway one and prints it). Each test gets a database of its own,
//! `CREATE DATABASE dt_<random>`, dropped again (best effort) when its handle is dropped.
//!
//! Without the variable a PostgreSQL test prints that it skipped and passes, except in CI
//! (`CI` set), where it fails: there the PostgreSQL runs must never go missing silently.

use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

use durabletask_sidecar::domain::InstanceId;
use sqlx::{Connection, Executor, PgConnection};

/// The admin URL of the server tests create their databases on.
pub const ADMIN_URL_VAR: &str = "DURABLETASK_TEST_POSTGRES";

/// How to run the PostgreSQL tests, for skip and failure messages.
pub const HOW_TO_RUN: &str = "start a throwaway server with `tests/postgres/start.sh` (it prints \
    the admin URL; needs `apt-get install postgresql`) and run with \
    DURABLETASK_TEST_POSTGRES=postgres://postgres@127.0.0.1:<port>/postgres, or run ./test.sh, \
    which does both";

/// Bounds each admin call, so an unreachable server fails the test instead of hanging it.
const ADMIN_DEADLINE: Duration = Duration::from_secs(30);

/// A database created for one test (or one server and its restarts).
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// Connection URL of this database.
    pub url: String,
}

/// The admin URL, or `None` after saying (once per test binary) that the PostgreSQL tests
/// skip. Panics in CI, where a PostgreSQL run must not skip.
pub fn admin_url() -> Option<String> {
    match std::env::var(ADMIN_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_string()),
        _ if in_ci() => panic!(
            "{ADMIN_URL_VAR} is not set, and CI is: the PostgreSQL tests must run in CI. To run \
             them, {HOW_TO_RUN}."
        ),
        _ => {
            say_skipped();
            None
        }
    }
}

/// Says once per test binary that its PostgreSQL tests skip. Written to stderr directly:
/// the test harness captures `eprintln!` and shows it only for failed tests.
fn say_skipped() {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "skipped the PostgreSQL tests of this test binary: {ADMIN_URL_VAR} is not set. To \
             run them, {HOW_TO_RUN}."
        );
    });
}

/// Whether this runs in CI (`CI` set and not empty), where nothing may skip.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// A fresh database on the server of [`ADMIN_URL_VAR`], or `None` when the variable is
/// unset outside CI (see [`admin_url`]).
pub async fn fresh_database() -> Option<TestDatabase> {
    let admin_url = admin_url()?;
    Some(TestDatabase::create(&admin_url).await)
}

impl TestDatabase {
    /// Creates `dt_<random>` on the server `admin_url` points at.
    pub async fn create(admin_url: &str) -> Self {
        // 32 random lower-case hex digits, from the crate's sanctioned id source.
        let name = format!("dt_{}", InstanceId::generate());
        let url = with_database(admin_url, &name);
        let create = async {
            let mut admin = PgConnection::connect(admin_url).await?;
            admin
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await?;
            admin.close().await
        };
        match tokio::time::timeout(ADMIN_DEADLINE, create).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => panic!(
                "cannot create a test database on {} ({ADMIN_URL_VAR}): {err}",
                redact(admin_url)
            ),
            Err(_) => panic!(
                "creating a test database on {} ({ADMIN_URL_VAR}) took over {ADMIN_DEADLINE:?}",
                redact(admin_url)
            ),
        }
        Self {
            admin_url: admin_url.to_string(),
            name,
            url,
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    /// Drops the database, closing whatever connections are still open on it (a store the
    /// test did not close, a server task still shutting down). Best effort: a failure is
    /// only printed, and a throwaway server (`tests/postgres/start.sh`) goes away anyway.
    /// Runs on a thread of its own, since `Drop` cannot await and the test's runtime may be
    /// a current-thread one; waits at most 10 s for it.
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let (done_tx, done_rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("drop {name}"))
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|err| err.to_string())
                    .and_then(|runtime| {
                        runtime.block_on(async {
                            let drop = async {
                                let mut admin = PgConnection::connect(&admin_url).await?;
                                admin
                                    .execute(
                                        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                                            .as_str(),
                                    )
                                    .await?;
                                admin.close().await
                            };
                            match tokio::time::timeout(ADMIN_DEADLINE, drop).await {
                                Ok(result) => result.map_err(|err| err.to_string()),
                                Err(_) => Err("timed out".to_string()),
                            }
                        })
                    });
                let _ = done_tx.send(result);
            });
        if spawned.is_err() {
            return;
        }
        match done_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("could not drop test database {}: {err}", self.name),
            Err(_) => eprintln!("dropping test database {} is taking long; left", self.name),
        }
    }
}

/// `url` with its database replaced by `database` (user, host, port and query kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut out = format!("{}/{database}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[after_scheme..]
        .find(['/', '?'])
        .map_or(url.len(), |i| after_scheme + i);
    let authority = &url[after_scheme..authority_end];
    match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!(
                "{}{user}:***@{host}{}",
                &url[..after_scheme],
                &url[authority_end..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}
