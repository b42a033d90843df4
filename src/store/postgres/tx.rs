//! Transactions of the PostgreSQL store: one pooled connection per call, BEGIN, the
//! call's statements, COMMIT, then its changes handed to the notifier; the whole call
//! retried on serialization failures, deadlocks and racing inserts.

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres};

use super::notify::Changes;
use crate::store::StoreError;

/// A boxed call body (see `retried!`).
pub(super) type BoxFut<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = R<T>> + Send + 'a>>;

/// Attempts of one call before a retryable failure is returned.
pub(super) const ATTEMPTS: u32 = 5;

/// A failure inside a call: a decided outcome, or a database error still to classify
/// (retry, `Unavailable` or `Backend`).
#[derive(Debug)]
pub(super) enum Fail {
    /// Return this.
    Store(StoreError),
    /// A database error of the named operation.
    Sql(&'static str, sqlx::Error),
}

impl From<StoreError> for Fail {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

/// `Result` with [`Fail`].
pub(super) type R<T> = std::result::Result<T, Fail>;

/// Tags a sqlx error with the operation it failed.
pub(super) fn sql(op: &'static str) -> impl FnOnce(sqlx::Error) -> Fail {
    move |err| Fail::Sql(op, err)
}

impl Fail {
    /// Whether running the call again may succeed: a serialization failure or deadlock
    /// (the database rolled the transaction back), or an insert that lost a race for a
    /// key another transaction created meanwhile (the retry sees the row).
    pub(super) fn retryable(&self) -> bool {
        match self {
            Self::Sql(_, sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("40001" | "40P01" | "23505"))
            }
            _ => false,
        }
    }

    /// The error callers see, logged in full. Messages carry no SQL (STYLE.md §4).
    pub(super) fn into_store(self) -> StoreError {
        let (op, err) = match self {
            Self::Store(err) => return err,
            Self::Sql(op, err) => (op, err),
        };
        tracing::error!(error = %err, op, "postgres store operation failed");
        match err {
            sqlx::Error::PoolTimedOut => {
                StoreError::Unavailable("database busy: no connection available".into())
            }
            sqlx::Error::PoolClosed => StoreError::Unavailable("store is closed".into()),
            sqlx::Error::WorkerCrashed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                StoreError::Unavailable("database connection failed".into())
            }
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                // Class 08 (connection exception), 57P0x (shutdown), 53 (resources).
                if code == "53100" {
                    crate::metrics::get()
                        .commits
                        .disk_full(crate::metrics::Backend::Postgres);
                    StoreError::DiskFull
                } else if code.starts_with("08")
                    || code.starts_with("57P")
                    || code.starts_with("53")
                {
                    StoreError::Unavailable(format!("database unavailable: {}", db.message()))
                } else {
                    StoreError::Backend(format!("{op}: {}", db.message()))
                }
            }
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(format!("{op}: undecodable column"))
            }
            _ => StoreError::Backend(format!("{op} failed")),
        }
    }
}

/// A pooled connection inside a transaction this call opened.
#[derive(Debug)]
pub(super) struct Pooled {
    conn: PoolConnection<Postgres>,
    open: bool,
    /// When BEGIN was sent, for the commit-latency metric.
    started: std::time::Instant,
}

impl Pooled {
    /// Begins a transaction on `conn`.
    pub(super) async fn begin(mut conn: PoolConnection<Postgres>) -> R<Self> {
        let started = std::time::Instant::now();
        exec(&mut conn, "BEGIN").await.map_err(sql("begin"))?;
        Ok(Self {
            conn,
            open: true,
            started,
        })
    }

    /// The transaction's connection.
    pub(super) fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Commits.
    pub(super) async fn commit(&mut self) -> R<()> {
        let result = exec(&mut self.conn, "COMMIT").await.map_err(sql("commit"));
        // After a failure the state of the transaction is unknown: Drop then closes the
        // connection instead of pooling it.
        self.open = result.is_err();
        if result.is_ok() {
            crate::metrics::get().commits.observe(
                crate::metrics::Backend::Postgres,
                1,
                self.started.elapsed(),
            );
        }
        result
    }

    /// Rolls back; a connection that cannot is closed rather than pooled.
    pub(super) async fn rollback(&mut self) {
        if exec(&mut self.conn, "ROLLBACK").await.is_ok() {
            self.open = false;
        }
    }
}

/// Runs a script of statements without parameters: a bare string goes over the simple
/// query protocol, which takes several statements in one round trip. (`raw_sql` would
/// too, but its generic async `execute` trips the compiler's `Send` check.)
async fn exec(conn: &mut PgConnection, script: &str) -> Result<(), sqlx::Error> {
    sqlx::Executor::execute(conn, script).await.map(|_| ())
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // Dropped mid-transaction (the call's future was cancelled, or ROLLBACK failed):
        // never hand a connection with an open transaction back to the pool.
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

/// What a call changed (sent as notifications at COMMIT), with the identity it
/// writes under. Passed beside the connection rather than holding it: an async fn taking
/// a struct that borrows the connection trips the compiler's `Send` check of the
/// async-trait futures.
#[derive(Debug)]
pub(super) struct Cx {
    /// Task hub of every row touched.
    pub(super) hub: String,
    /// This process's lease owner id.
    pub(super) owner: String,
    /// How long a claim lasts, in milliseconds.
    pub(super) lease_ms: i64,
    /// What to notify once committed.
    pub(super) changes: Changes,
    /// The store clock's now, for deciding between Ready and Wakeup when the call has
    /// no time of its own.
    pub(super) clock_now: DateTime<Utc>,
}

impl Cx {
    /// A call's state.
    pub(super) fn new(hub: &str, owner: &str, lease_ms: i64, clock_now: DateTime<Utc>) -> Self {
        Self {
            hub: hub.to_owned(),
            owner: owner.to_owned(),
            lease_ms,
            changes: Changes::default(),
            clock_now,
        }
    }
}

/// Runs `$body` (an expression using `$conn: &mut PgConnection` and `$cx: &mut Cx`, evaluating to `R<T>`) in a
/// transaction of `$store`, committing on `Ok` and retrying the whole call on retryable
/// failures. Evaluates to `crate::store::Result<T>`.
macro_rules! in_tx {
    ($store:expr, |$conn:ident, $cx:ident| $body:expr) => {{
        let store = &$store;
        let mut attempt = 1u32;
        loop {
            // Boxed as `dyn Send` here, where every lifetime is concrete: left inline,
            // sqlx's futures trip the compiler's higher-ranked `Send` check of the
            // async-trait future.
            let attempt_fut: $crate::store::postgres::tx::BoxFut<'_, _> = Box::pin(async {
                let mut tx = store.begin().await?;
                let mut cx = $crate::store::postgres::tx::Cx::new(
                    &store.hub,
                    &store.owner,
                    store.lease_ms,
                    store.clock.now(),
                );
                let value = {
                    let $conn = tx.conn();
                    let $cx = &mut cx;
                    $body
                };
                match value {
                    Ok(v) => {
                        tx.commit().await?;
                        store.notifier.publish(std::mem::take(&mut cx.changes));
                        Ok(v)
                    }
                    Err(e) => {
                        tx.rollback().await;
                        Err(e)
                    }
                }
            });
            match attempt_fut.await {
                Err(e) if e.retryable() && attempt < $crate::store::postgres::tx::ATTEMPTS => {
                    tracing::debug!(attempt, "postgres store call retried");
                    attempt += 1;
                    $crate::store::postgres::tx::pause(attempt).await;
                }
                other => break other.map_err($crate::store::postgres::tx::Fail::into_store),
            }
        }
    }};
}
pub(super) use in_tx;

/// Runs `$body` (an expression evaluating to `R<T>`, typically one statement) again on
/// retryable failures. Evaluates to `crate::store::Result<T>`.
macro_rules! retried {
    ($body:expr) => {{
        let mut attempt = 1u32;
        loop {
            // Boxed as `dyn Send` here, where every lifetime is concrete: sqlx's executor
            // futures otherwise trip the compiler's higher-ranked `Send` check.
            let fut: $crate::store::postgres::tx::BoxFut<'_, _> = Box::pin(async { $body });
            let result = fut.await;
            match result {
                Err(e) if e.retryable() && attempt < $crate::store::postgres::tx::ATTEMPTS => {
                    attempt += 1;
                    $crate::store::postgres::tx::pause(attempt).await;
                }
                other => break other.map_err($crate::store::postgres::tx::Fail::into_store),
            }
        }
    }};
}
pub(super) use retried;

/// A short, growing pause before attempt `attempt`, so two retrying calls that deadlocked
/// do not collide again at once.
pub(super) async fn pause(attempt: u32) {
    let jitter = u64::from(std::process::id() % 7);
    tokio::time::sleep(std::time::Duration::from_millis(
        (5u64 << attempt.min(6)) + jitter,
    ))
    .await;
}
