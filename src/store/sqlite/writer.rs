//! The group-commit writer: one thread owns the only writing SQLite connection.
//!
//! Callers send a request (a closure over the connection) through a bounded channel and
//! wait on a oneshot. The thread takes every request already queued (up to `max_batch`),
//! runs them in ONE transaction with a SAVEPOINT each, commits once, and only then answers
//! every caller. With `synchronous=FULL` a caller therefore returns after its effects are
//! durable, while N concurrent callers share one fsync instead of paying N.
//!
//! A request that fails rolls back to its own savepoint and gets its own error; the others
//! in the batch still commit. If the transaction itself cannot be committed, every caller
//! in the batch gets an error and nothing of the batch is durable.
//!
//! Requests come in two kinds. Direct ones (the hot paths) are synchronous closures over a
//! rusqlite view of the connection's handle ([`Direct`]): each statement is a plain call
//! into SQLite. The others are async closures over the sqlx connection, where every
//! statement is a round trip to sqlx's worker thread for that connection. Both kinds mix
//! in one batch and one transaction.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sqlx::sqlite::LockedSqliteHandle;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::codec::{db_error, sq_error};
use crate::metrics::Backend;
use crate::store::{Result, StoreError};

/// Called when the writer rolls back (see [`Writer::start`]).
pub(super) type OnRollback = Box<dyn Fn() + Send + Sync>;

/// A boxed future borrowing the writer's connection.
pub(super) type BoxFut<'c, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'c>>;

/// One unit of work run against a connection inside a transaction, through sqlx.
pub(super) type Op<T> = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFut<'c, T> + Send>;

/// One unit of work run synchronously on the writer's direct connection (see [`Direct`]).
pub(super) type DirectOp<T> = Box<dyn FnOnce(&rusqlite::Connection) -> Result<T> + Send>;

/// Counters of the writer, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (one per batch).
    pub commits: u64,
    /// Requests run (committed or rolled back to their savepoint).
    pub requests: u64,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    requests: AtomicU64,
}

/// A request with its result slot, type-erased so one channel carries every kind.
trait Job: Send {
    /// Whether the request runs on the direct connection ([`Job::run_direct`]) rather
    /// than through sqlx ([`Job::run`]).
    fn is_direct(&self) -> bool;
    /// Runs a direct request; returns whether it succeeded (its savepoint is kept).
    fn run_direct(&mut self, conn: &rusqlite::Connection) -> bool;
    /// Runs an sqlx request; returns whether it succeeded (its savepoint is kept).
    fn run<'c>(
        &'c mut self,
        conn: &'c mut SqliteConnection,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'c>>;
    /// Whether the request failed because the disk is full.
    fn disk_full(&self) -> bool;
    /// Replaces the outcome with an error: the batch's transaction did not commit.
    fn fail(&mut self, err: StoreError);
    /// Sends the outcome to the caller.
    fn finish(self: Box<Self>);
}

enum Work<T> {
    Direct(DirectOp<T>),
    Async(Op<T>),
}

struct Request<T> {
    work: Option<Work<T>>,
    outcome: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T> Request<T> {
    fn ran_twice() -> Result<T> {
        Err(StoreError::Backend("store request ran twice".into()))
    }
}

impl<T: Send + 'static> Job for Request<T> {
    fn is_direct(&self) -> bool {
        matches!(self.work, Some(Work::Direct(_)))
    }

    fn run_direct(&mut self, conn: &rusqlite::Connection) -> bool {
        let outcome = match self.work.take() {
            Some(Work::Direct(op)) => op(conn),
            _ => Self::ran_twice(),
        };
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn run<'c>(
        &'c mut self,
        conn: &'c mut SqliteConnection,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'c>> {
        let work = self.work.take();
        Box::pin(async move {
            let outcome = match work {
                Some(Work::Async(op)) => op(conn).await,
                _ => Self::ran_twice(),
            };
            let ok = outcome.is_ok();
            self.outcome = Some(outcome);
            ok
        })
    }

    fn disk_full(&self) -> bool {
        matches!(self.outcome, Some(Err(StoreError::DiskFull)))
    }

    fn fail(&mut self, err: StoreError) {
        self.outcome = Some(Err(err));
    }

    fn finish(self: Box<Self>) {
        let outcome = self
            .outcome
            .unwrap_or_else(|| Err(StoreError::Backend("store request was not run".into())));
        // The caller may have given up (its RPC was cancelled); the effects are committed
        // regardless, exactly as if it had waited, so there is nothing to undo.
        let _ = self.reply.send(outcome);
    }
}

/// Handle to the writer thread.
#[derive(Debug)]
pub(super) struct Writer {
    /// `None` once closed; cloning a sender out under the lock is a refcount bump.
    tx: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    /// Answered (or dropped) when the thread has closed the connection.
    stopped: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Starts the writer thread; it owns `conn` until every handle is closed or dropped.
    /// `on_rollback` runs whenever a request or a whole batch is rolled back, so state
    /// mirrored in memory by the requests can be dropped.
    ///
    /// The thread runs its own single-threaded runtime: direct requests and the COMMIT's
    /// fsync block it, and must not block the workers of the caller's runtime.
    pub(super) fn start(
        conn: SqliteConnection,
        max_batch: usize,
        on_rollback: OnRollback,
    ) -> Result<Self> {
        let max_batch = max_batch.max(1);
        // Room for a few batches: beyond that callers wait, which is the backpressure.
        let (tx, rx) = mpsc::channel(max_batch.saturating_mul(4));
        let counters = Arc::new(Counters::default());
        let unavailable = |err: std::io::Error| {
            StoreError::Unavailable(format!("cannot start the store writer: {err}"))
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(unavailable)?;
        let (stopped_tx, stopped) = oneshot::channel();
        let thread_counters = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                runtime.block_on(run(conn, rx, max_batch, thread_counters, on_rollback));
                let _ = stopped_tx.send(());
            })
            .map_err(unavailable)?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            stopped: tokio::sync::Mutex::new(Some(stopped)),
            counters,
        })
    }

    /// Runs `op` through sqlx in the next batch and returns its outcome once the batch is
    /// durable.
    pub(super) async fn submit<T: Send + 'static>(&self, op: Op<T>) -> Result<T> {
        self.send(Work::Async(op)).await
    }

    /// Runs `op` on the direct connection in the next batch and returns its outcome once
    /// the batch is durable.
    pub(super) async fn submit_direct<T: Send + 'static>(&self, op: DirectOp<T>) -> Result<T> {
        self.send(Work::Direct(op)).await
    }

    async fn send<T: Send + 'static>(&self, work: Work<T>) -> Result<T> {
        let sender = self
            .tx
            .lock()
            .map_err(|_| StoreError::Unavailable("store writer lock poisoned".into()))?
            .clone()
            .ok_or_else(|| StoreError::Unavailable("store is closed".into()))?;
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Request {
            work: Some(work),
            outcome: None,
            reply,
        });
        sender
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("store writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("store writer stopped".into()))?
    }

    /// Counters so far.
    pub(super) fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting requests, lets the queued ones finish, and waits for the thread.
    pub(super) async fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(stopped) = self.stopped.lock().await.take() {
            if stopped.await.is_err() {
                tracing::error!("sqlite writer thread failed");
            }
        }
    }
}

/// rusqlite's view of the writer connection's `sqlite3` handle, kept for the writer's
/// life so that its prepared statements stay cached. It is only reachable through a
/// [`LockedSqliteHandle`] of that connection (see [`Direct::get`]): while sqlx's lock is
/// held, sqlx's worker thread cannot touch the handle, so the two never use it at once.
/// Transaction state lives in the handle, so statements from either side share one
/// transaction.
struct Direct(rusqlite::Connection);

/// Distinct statements the writer's requests use, with room to spare.
const DIRECT_STATEMENT_CACHE: usize = 128;

impl Direct {
    fn wrap(handle: &mut LockedSqliteHandle<'_>) -> Result<Self> {
        // SAFETY: the pointer is the live `sqlite3` handle of the sqlx connection that
        // `handle` locks; sqlx never replaces or frees it while that connection is open,
        // and the writer drops every `Direct` (finalizing its statements) before closing
        // the connection. `from_handle` does not take ownership: dropping the wrapper
        // leaves the handle open. It is used only while the lock is held (see `get`).
        let conn = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }
            .map_err(sq_error("writer connection"))?;
        conn.set_prepared_statement_cache_capacity(DIRECT_STATEMENT_CACHE);
        Ok(Self(conn))
    }

    /// The connection, for as long as the caller holds the lock.
    fn get<'a>(&'a self, _locked: &'a mut LockedSqliteHandle<'_>) -> &'a rusqlite::Connection {
        &self.0
    }

    /// Finalizes the cached statements (under the lock) and lets go of the handle.
    fn close(self, _locked: &mut LockedSqliteHandle<'_>) {
        drop(self.0);
    }
}

/// Runs `f` on a direct connection to `conn`'s handle: for the parts of sqlx requests
/// that share code with direct ones. The wrapper is made for this call (its statements
/// are not cached beyond it), so keep this off hot paths.
pub(super) async fn with_direct<T, F>(conn: &mut SqliteConnection, f: F) -> Result<T>
where
    F: FnOnce(&rusqlite::Connection) -> Result<T> + Send,
{
    let mut handle = conn.lock_handle().await.map_err(db_error("writer lock"))?;
    let direct = Direct::wrap(&mut handle)?;
    let result = f(direct.get(&mut handle));
    direct.close(&mut handle);
    result
}

async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    max_batch: usize,
    counters: Arc<Counters>,
    on_rollback: OnRollback,
) {
    let mut direct = None;
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    let mut closed = false;
    while !closed {
        // Batches of direct requests only (the hot ones) run while the writer keeps sqlx's
        // lock on the connection: taking it is a round trip to sqlx's worker thread and
        // wakes that thread twice, which at low load costs more than the batch's SQL.
        match conn.lock_handle().await {
            Ok(mut handle) => loop {
                if rx.recv_many(&mut batch, max_batch).await == 0 {
                    closed = true;
                    break;
                }
                if !batch.iter().all(|job| job.is_direct()) {
                    break;
                }
                let started = Instant::now();
                let committed = run_held(&mut handle, &mut direct, &mut batch, &on_rollback);
                finish(&counters, &mut batch, committed, started);
            },
            // The batch below meets the same error and fails with it.
            Err(err) => tracing::error!(error = %err, "sqlite writer lock"),
        }
        if batch.is_empty() && !closed && rx.recv_many(&mut batch, max_batch).await == 0 {
            closed = true;
        }
        if !batch.is_empty() {
            let started = Instant::now();
            let committed = run_batch(&mut conn, &mut direct, &mut batch, &on_rollback).await;
            finish(&counters, &mut batch, committed, started);
        }
    }
    // The wrapper's statements must be finalized before sqlx closes the handle.
    if let Some(direct) = direct {
        match conn.lock_handle().await {
            Ok(mut handle) => direct.close(&mut handle),
            Err(err) => {
                // sqlx's worker is gone and so, possibly, the handle: finalizing could
                // touch freed memory, so the wrapper is leaked instead.
                tracing::error!(error = %err, "sqlite writer connection lost");
                std::mem::forget(direct);
            }
        }
    }
    if let Err(err) = conn.close().await {
        tracing::error!(error = %err, "closing the sqlite writer connection failed");
    }
}

/// Counts a batch that ran and answers its callers.
fn finish(counters: &Counters, batch: &mut Vec<Box<dyn Job>>, committed: bool, started: Instant) {
    if committed {
        counters.commits.fetch_add(1, Ordering::Relaxed);
        crate::metrics::get()
            .commits
            .observe(Backend::Sqlite, batch.len(), started.elapsed());
    }
    counters
        .requests
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    for job in batch.drain(..) {
        job.finish();
    }
}

/// Runs a batch of direct requests only, in one transaction, under a lock the caller
/// holds. Returns whether it committed, as [`run_batch`].
fn run_held(
    handle: &mut LockedSqliteHandle<'_>,
    direct: &mut Option<Direct>,
    batch: &mut [Box<dyn Job>],
    on_rollback: &OnRollback,
) -> bool {
    let mut next = 0;
    let Err(err) = run_direct(handle, direct, batch, &mut next, on_rollback) else {
        return true;
    };
    on_rollback();
    // As in `abort`: the transaction may already be gone, and a failing ROLLBACK only
    // says so. Without a wrapper no statement ran, so there is nothing to roll back.
    if let Some(direct) = direct {
        if let Err(rollback) = direct.get(handle).execute_batch("ROLLBACK") {
            tracing::debug!(error = %rollback, "rollback after a failed batch");
        }
    }
    fail_all(batch, &err);
    false
}

/// Transaction control around requests: single statements on the direct connection,
/// one multi-statement call through sqlx (every sqlx call is a round trip to the
/// connection's worker thread).
struct Control {
    statements: &'static [&'static str],
    joined: &'static str,
}

const BEGIN: Control = Control {
    // IMMEDIATE takes the write lock up front, so no statement inside can hit
    // SQLITE_BUSY half-way through a batch (readers never block the WAL writer).
    statements: &["BEGIN IMMEDIATE", "SAVEPOINT request"],
    joined: "BEGIN IMMEDIATE; SAVEPOINT request",
};
const NEXT: Control = Control {
    statements: &["RELEASE request", "SAVEPOINT request"],
    joined: "RELEASE request; SAVEPOINT request",
};
const LAST: Control = Control {
    statements: &["RELEASE request", "COMMIT"],
    joined: "RELEASE request; COMMIT",
};
const ROLLBACK_TO: Control = Control {
    statements: &["ROLLBACK TO request"],
    joined: "ROLLBACK TO request",
};

/// Runs one batch in one transaction. Returns whether it committed; when it did not,
/// every job's outcome has been replaced by an error.
///
/// Runs of consecutive direct requests execute under one lock of the sqlx connection;
/// an sqlx request between them releases it for its own statements.
async fn run_batch(
    conn: &mut SqliteConnection,
    direct: &mut Option<Direct>,
    batch: &mut [Box<dyn Job>],
    on_rollback: &OnRollback,
) -> bool {
    let mut next = 0;
    while next < batch.len() {
        let step = if batch[next].is_direct() {
            match conn.lock_handle().await {
                Ok(mut handle) => run_direct(&mut handle, direct, batch, &mut next, on_rollback),
                Err(err) => Err(db_error("writer lock")(err)),
            }
        } else {
            run_async(conn, batch, &mut next, on_rollback).await
        };
        if let Err(err) = step {
            return abort(conn, batch, err, on_rollback).await;
        }
    }
    true
}

/// Runs the direct requests from `next` on, up to the next sqlx one, with the
/// transaction control around each; `next` ends past the last one run.
fn run_direct(
    handle: &mut LockedSqliteHandle<'_>,
    direct: &mut Option<Direct>,
    batch: &mut [Box<dyn Job>],
    next: &mut usize,
    on_rollback: &OnRollback,
) -> Result<()> {
    let direct = match direct {
        Some(direct) => direct,
        None => direct.insert(Direct::wrap(handle)?),
    };
    let conn = direct.get(handle);
    let exec = |control: &Control| -> Result<()> {
        for sql in control.statements {
            conn.prepare_cached(sql)
                .and_then(|mut s| s.execute([]))
                .map_err(sq_error("transaction control"))?;
        }
        Ok(())
    };
    let last = batch.len() - 1;
    while *next < batch.len() && batch[*next].is_direct() {
        let i = *next;
        if i == 0 {
            exec(&BEGIN)?;
        }
        let job = &mut batch[i];
        if !job.run_direct(conn) {
            on_rollback();
            exec(&ROLLBACK_TO).map_err(|err| rollback_error(&**job, err))?;
        }
        exec(if i == last { &LAST } else { &NEXT })?;
        *next += 1;
    }
    Ok(())
}

/// Runs the sqlx request at `next` with the transaction control around it.
async fn run_async(
    conn: &mut SqliteConnection,
    batch: &mut [Box<dyn Job>],
    next: &mut usize,
    on_rollback: &OnRollback,
) -> Result<()> {
    let i = *next;
    if i == 0 {
        exec(conn, &BEGIN).await?;
    }
    let last = batch.len() - 1;
    let job = &mut batch[i];
    if !job.run(conn).await {
        on_rollback();
        if let Err(err) = exec(conn, &ROLLBACK_TO).await {
            return Err(rollback_error(&**job, err));
        }
    }
    exec(conn, if i == last { &LAST } else { &NEXT }).await?;
    *next += 1;
    Ok(())
}

/// The batch's error when rolling back to a failed job's savepoint failed: SQLite may roll
/// back the whole transaction on a full disk, and then the savepoint is gone; the batch
/// failed for the job's reason, not this one.
fn rollback_error(job: &dyn Job, err: StoreError) -> StoreError {
    if job.disk_full() {
        StoreError::DiskFull
    } else {
        err
    }
}

async fn abort(
    conn: &mut SqliteConnection,
    batch: &mut [Box<dyn Job>],
    err: StoreError,
    on_rollback: &OnRollback,
) -> bool {
    on_rollback();
    // The transaction may already be gone (SQLite rolls back on some errors); a failing
    // ROLLBACK then only says so.
    if let Err(rollback) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
        tracing::debug!(error = %rollback, "rollback after a failed batch");
    }
    fail_all(batch, &err);
    false
}

fn fail_all(batch: &mut [Box<dyn Job>], err: &StoreError) {
    for job in batch.iter_mut() {
        job.fail(match err {
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            StoreError::DiskFull => StoreError::DiskFull,
            other => StoreError::Backend(format!("transaction failed: {other}")),
        });
    }
}

async fn exec(conn: &mut SqliteConnection, control: &Control) -> Result<()> {
    sqlx::query(control.joined)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(db_error("transaction control"))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use sqlx::ConnectOptions;

    use super::*;

    /// A writer over a private in-memory database with one table `t(v)`.
    async fn writer(rollbacks: Arc<AtomicUsize>) -> Writer {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (v TEXT NOT NULL)")
            .execute(&mut conn)
            .await
            .unwrap();
        let on_rollback: OnRollback = Box::new(move || {
            rollbacks.fetch_add(1, Ordering::Relaxed);
        });
        Writer::start(conn, 16, on_rollback).unwrap()
    }

    fn insert_direct(v: &'static str, fail: bool) -> DirectOp<()> {
        Box::new(move |conn: &rusqlite::Connection| {
            conn.execute("INSERT INTO t (v) VALUES (?)", [v])
                .map_err(sq_error("test"))?;
            if fail {
                return Err(StoreError::Backend(format!("{v} fails")));
            }
            Ok(())
        })
    }

    fn insert_async(v: &'static str, fail: bool) -> Op<()> {
        Box::new(move |conn: &mut SqliteConnection| -> BoxFut<'_, ()> {
            Box::pin(async move {
                sqlx::query("INSERT INTO t (v) VALUES (?)")
                    .bind(v)
                    .execute(&mut *conn)
                    .await
                    .map_err(db_error("test"))?;
                if fail {
                    return Err(StoreError::Backend(format!("{v} fails")));
                }
                Ok(())
            })
        })
    }

    fn values() -> Op<Vec<String>> {
        Box::new(|conn: &mut SqliteConnection| -> BoxFut<'_, Vec<String>> {
            Box::pin(async move {
                sqlx::query_scalar("SELECT v FROM t ORDER BY rowid")
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db_error("test"))
            })
        })
    }

    /// Direct and sqlx requests in one batch, a failing one of each kind in the middle:
    /// each failure rolls back alone, the rest commit together.
    #[tokio::test]
    async fn mixed_batch_rolls_back_failed_requests_alone() {
        within_deadline(mixed_batch()).await;
    }

    /// Fails the test instead of hanging it when the writer stops answering.
    async fn within_deadline(test: impl Future<Output = ()>) {
        tokio::time::timeout(std::time::Duration::from_secs(60), test)
            .await
            .expect("the writer did not answer in time");
    }

    async fn mixed_batch() {
        let rollbacks = Arc::new(AtomicUsize::new(0));
        let writer = Arc::new(writer(Arc::clone(&rollbacks)).await);

        // Hold the writer thread in a request of its own until the batch under test is
        // queued behind it, so that batch is taken whole.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (running, started) = oneshot::channel::<()>();
        let gated = {
            let writer = Arc::clone(&writer);
            tokio::spawn(async move {
                writer
                    .submit_direct(Box::new(move |_: &rusqlite::Connection| {
                        let _ = running.send(());
                        gate.recv().ok();
                        Ok(())
                    }))
                    .await
            })
        };
        started.await.unwrap();
        let capacity = || {
            let tx = writer.tx.lock().unwrap();
            tx.as_ref().unwrap().capacity()
        };
        let empty = capacity();

        let submit = |work: Work<()>| {
            let writer = Arc::clone(&writer);
            tokio::spawn(async move { writer.send(work).await })
        };
        let requests = [
            submit(Work::Direct(insert_direct("a", false))),
            submit(Work::Async(insert_async("b", true))),
            submit(Work::Direct(insert_direct("c", true))),
            submit(Work::Async(insert_async("d", false))),
            submit(Work::Direct(insert_direct("e", false))),
        ];
        while capacity() > empty - 5 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        gated.await.unwrap().unwrap();

        let mut outcomes = Vec::new();
        for request in requests {
            outcomes.push(request.await.unwrap().is_ok());
        }
        assert_eq!(outcomes, [true, false, false, true, true]);
        assert_eq!(rollbacks.load(Ordering::Relaxed), 2);
        assert_eq!(
            writer.stats(),
            WriterStats {
                commits: 2,
                requests: 6
            }
        );
        assert_eq!(writer.submit(values()).await.unwrap(), ["a", "d", "e"]);
        writer.close().await;
    }

    /// A failed COMMIT fails the batch: its requests get an error and nothing is kept.
    #[tokio::test]
    async fn failed_commit_fails_the_whole_batch() {
        within_deadline(failed_commit()).await;
    }

    async fn failed_commit() {
        let rollbacks = Arc::new(AtomicUsize::new(0));
        let writer = writer(Arc::clone(&rollbacks)).await;
        // A deferred foreign key that is still violated makes COMMIT fail.
        writer
            .submit(Box::new(|conn: &mut SqliteConnection| -> BoxFut<'_, ()> {
                Box::pin(async move {
                    sqlx::query(
                        "CREATE TABLE p (id INTEGER PRIMARY KEY); \
                         CREATE TABLE c (p INTEGER REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)",
                    )
                    .execute(&mut *conn)
                    .await
                    .map_err(db_error("test"))?;
                    Ok(())
                })
            }))
            .await
            .unwrap();
        let violate: DirectOp<()> = Box::new(|conn: &rusqlite::Connection| {
            conn.execute("INSERT INTO c (p) VALUES (1)", [])
                .map_err(sq_error("test"))?;
            Ok(())
        });
        let err = writer.submit_direct(violate).await.unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
        assert_eq!(rollbacks.load(Ordering::Relaxed), 1);
        assert_eq!(writer.stats().commits, 1);
        let kept = writer
            .submit(Box::new(|conn: &mut SqliteConnection| -> BoxFut<'_, i64> {
                Box::pin(async move {
                    sqlx::query_scalar("SELECT COUNT(*) FROM c")
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(db_error("test"))
                })
            }))
            .await
            .unwrap();
        assert_eq!(kept, 0);
        writer.close().await;
    }
}
