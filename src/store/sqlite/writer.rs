//! The group-commit writer: one task owns the only writing SQLite connection.
//!
//! Callers send a request (a closure over the connection) through a bounded channel and
//! wait on a oneshot. The task takes every request already queued (up to `max_batch`),
//! runs them in ONE transaction with a SAVEPOINT each, commits once, and only then answers
//! every caller. With `synchronous=FULL` a caller therefore returns after its effects are
//! durable, while N concurrent callers share one fsync instead of paying N.
//!
//! A request that fails rolls back to its own savepoint and gets its own error; the others
//! in the batch still commit. If the transaction itself cannot be committed, every caller
//! in the batch gets an error and nothing of the batch is durable.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::codec::db_error;
use crate::metrics::Backend;
use crate::store::{Result, StoreError};

/// Called when the writer rolls back (see [`Writer::start`]).
pub(super) type OnRollback = Box<dyn Fn() + Send + Sync>;

/// A boxed future borrowing the writer's connection.
pub(super) type BoxFut<'c, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'c>>;

/// One unit of work run against a connection inside a transaction.
pub(super) type Op<T> = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFut<'c, T> + Send>;

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
    /// Runs the request; returns whether it succeeded (its savepoint is kept).
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

struct Request<T> {
    op: Option<Op<T>>,
    outcome: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T: Send + 'static> Job for Request<T> {
    fn run<'c>(
        &'c mut self,
        conn: &'c mut SqliteConnection,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'c>> {
        let op = self.op.take();
        Box::pin(async move {
            let outcome = match op {
                Some(op) => op(conn).await,
                None => Err(StoreError::Backend("store request ran twice".into())),
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

/// Handle to the writer task.
#[derive(Debug)]
pub(super) struct Writer {
    /// `None` once closed; cloning a sender out under the lock is a refcount bump.
    tx: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Starts the task; it owns `conn` until every handle is closed or dropped.
    /// `on_rollback` runs whenever a request or a whole batch is rolled back, so state
    /// mirrored in memory by the requests can be dropped.
    pub(super) fn start(conn: SqliteConnection, max_batch: usize, on_rollback: OnRollback) -> Self {
        let max_batch = max_batch.max(1);
        // Room for a few batches: beyond that callers wait, which is the backpressure.
        let (tx, rx) = mpsc::channel(max_batch.saturating_mul(4));
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run(conn, rx, max_batch, Arc::clone(&counters), on_rollback));
        Self {
            tx: Mutex::new(Some(tx)),
            task: tokio::sync::Mutex::new(Some(task)),
            counters,
        }
    }

    /// Runs `op` in the next batch and returns its outcome once the batch is durable.
    pub(super) async fn submit<T: Send + 'static>(&self, op: Op<T>) -> Result<T> {
        let sender = self
            .tx
            .lock()
            .map_err(|_| StoreError::Unavailable("store writer lock poisoned".into()))?
            .clone()
            .ok_or_else(|| StoreError::Unavailable("store is closed".into()))?;
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Request {
            op: Some(op),
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

    /// Stops accepting requests, lets the queued ones finish, and waits for the task.
    pub(super) async fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(task) = self.task.lock().await.take() {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "sqlite writer task failed");
            }
        }
    }
}

async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    max_batch: usize,
    counters: Arc<Counters>,
    on_rollback: OnRollback,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let started = Instant::now();
        let committed = run_batch(&mut conn, &mut batch, &on_rollback).await;
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
    if let Err(err) = conn.close().await {
        tracing::error!(error = %err, "closing the sqlite writer connection failed");
    }
}

/// Runs one batch in one transaction. Returns whether it committed; when it did not,
/// every job's outcome has been replaced by an error.
///
/// Transaction control is merged into multi-statement calls ("RELEASE; SAVEPOINT" between
/// jobs, "RELEASE; COMMIT" at the end): every statement is a round trip to the
/// connection's worker thread, and these would otherwise be a third of a batch's trips.
async fn run_batch(
    conn: &mut SqliteConnection,
    batch: &mut [Box<dyn Job>],
    on_rollback: &OnRollback,
) -> bool {
    // IMMEDIATE takes the write lock up front, so no statement inside can hit SQLITE_BUSY
    // half-way through a batch (readers never block the WAL writer).
    if let Err(err) = exec(conn, "BEGIN IMMEDIATE; SAVEPOINT request").await {
        // BEGIN may have succeeded before SAVEPOINT failed.
        return abort(conn, batch, err, on_rollback).await;
    }
    let last = batch.len().saturating_sub(1);
    for (i, job) in batch.iter_mut().enumerate() {
        if !job.run(conn).await {
            on_rollback();
            if let Err(err) = exec(conn, "ROLLBACK TO request").await {
                // SQLite may roll back the whole transaction on a full disk, and then the
                // savepoint is gone: the batch failed for the job's reason, not this one.
                let err = if job.disk_full() {
                    StoreError::DiskFull
                } else {
                    err
                };
                return abort(conn, batch, err, on_rollback).await;
            }
        }
        let next = if i == last {
            "RELEASE request; COMMIT"
        } else {
            "RELEASE request; SAVEPOINT request"
        };
        if let Err(err) = exec(conn, next).await {
            return abort(conn, batch, err, on_rollback).await;
        }
    }
    true
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
    if let Err(rollback) = exec(conn, "ROLLBACK").await {
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

async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> Result<()> {
    sqlx::query(sql)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(db_error("transaction control"))
}
