//! `SqliteStore`: the [`Store`] on SQLite (sqlx).
//!
//! Layout (PROTOCOL.md §6.4): every write goes through one writer thread that owns the only
//! writing connection and group-commits queued requests (see `writer`); reads use
//! separate read-only connections, which WAL lets run beside the writer: a sqlx pool, and
//! a few rusqlite connections for the small hot reads run inline (see `reader`). An
//! in-memory database (`:memory:`) exists only inside one connection, so there every call,
//! reads included, goes through the writer.
//!
//! Commits are durable before a call returns (`synchronous=FULL`). SQL lives in the
//! submodules by concern; `codec` holds the column encodings. Must not depend on
//! `engine`, `service` or `grpc`; no sqlx type leaves this module.

mod codec;
mod commit;
mod entities;
mod hot;
mod inbox;
mod instances;
mod lock;
mod preflight;
mod purge;
mod queries;
mod reader;
mod rewind;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::ConnectOptions;

use self::codec::db_error;
use self::hot::Hot;
use self::reader::Reader;
pub use self::writer::WriterStats;
use self::writer::{BoxFut, DirectOp, Op, Writer};
use super::{
    ActivityOutcome, CleanOutcome, CommitOutcome, CompletedFilter, EnqueueOutcome, EntityWork,
    InstanceFilter, Lease, OrchestrationWork, PurgeFilter, Recovery, Result, RewindOutcome, Store,
    StoreChange, SuspendOutcome, TerminateOutcome,
};
use crate::domain::{
    Clock, EntityFilter, EntityRecord, EntityTransition, ExecutionId, InstanceId, InstanceRecord,
    NewInstance, ReusePolicy, RewindPlan, RuntimeStatus, SystemClock, Transition,
};
use crate::proto as pb;
use crate::store::rows::history_is_current;

/// The embedded schema migrations. `run_direct` (not `run`) keeps `open` a `Send`
/// future: `run`'s generic `Acquire` bound is not general enough for `tokio::spawn`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Root instances purged per writer request by `purge_where`.
const PURGE_BATCH: u32 = 100;

/// Tuning of [`SqliteStore::open`]. `Default` suits production.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Do not run the embedded migrations at open (the schema is managed elsewhere).
    pub skip_migrations: bool,
    /// Most requests one group commit takes (≥ 1).
    pub max_batch: usize,
    /// Connections of the read pool (file databases only).
    pub read_connections: u32,
    /// How long SQLite waits on a lock before giving up.
    pub busy_timeout: Duration,
    /// How long a read waits for a pool connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// Time source for deadlines (`purge_where`); every stored time comes from arguments.
    pub clock: Arc<dyn Clock>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            skip_migrations: false,
            max_batch: 256,
            read_connections: 4,
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(10),
            clock: Arc::new(SystemClock),
        }
    }
}

/// The SQLite store. Cheap to share behind an `Arc`; see the module docs for its layout.
#[derive(Debug)]
pub struct SqliteStore {
    writer: Writer,
    /// Routing state mirrored for the writer (see `hot`).
    hot: Arc<Hot>,
    /// `None` for `:memory:`, where reads go through the writer.
    reads: Option<SqlitePool>,
    /// The small hot reads, run inline (see `reader`); `None` for `:memory:`.
    reader: Option<Reader>,
    clock: Arc<dyn Clock>,
    /// Held while the store is open: one sidecar process per database file.
    file_lock: lock::FileLock,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path`, or a private in-memory one for
    /// `:memory:`, with default [`SqliteOptions`]. See [`SqliteStore::open_with`].
    pub async fn open(path: &str) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens (creating if missing) the database at `path`, or a private in-memory one for
    /// `:memory:`. `sqlite:` URLs are accepted too. Applies WAL, `synchronous=FULL`, the
    /// busy timeout and foreign keys, then runs the migrations unless told not to.
    pub async fn open_with(path: &str, options: SqliteOptions) -> Result<Self> {
        let memory = matches!(path, ":memory:" | "sqlite::memory:" | "sqlite://:memory:");
        // Before anything touches the file: a second process must not even run migrations.
        let file_lock = if memory {
            lock::FileLock::none()
        } else {
            let file = path
                .strip_prefix("sqlite://")
                .or_else(|| path.strip_prefix("sqlite:"))
                .unwrap_or(path);
            preflight::check(file)?;
            lock::FileLock::acquire(file)?
        };
        let base = if memory {
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(db_error("open"))?
        } else if path.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(path).map_err(db_error("open"))?
        } else {
            SqliteConnectOptions::new().filename(path)
        };
        let base = base
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout)
            .synchronous(SqliteSynchronous::Full)
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .statement_cache_capacity(256);
        let mut conn = base.connect().await.map_err(db_error("open"))?;
        if !options.skip_migrations {
            crate::store::schema::check_sqlite(&mut conn, &MIGRATOR).await?;
            MIGRATOR
                .run_direct(&mut conn)
                .await
                .map_err(|err| crate::store::schema::migration_error(err, &MIGRATOR))?;
        }
        let reader = (!memory).then(|| {
            Reader::new(
                base.get_filename().to_path_buf(),
                options.busy_timeout,
                options.read_connections as usize,
            )
        });
        let reads = if memory {
            None
        } else {
            // Opened after the writer: WAL is set and the -shm file exists, which a
            // read-only connection needs.
            let pool = SqlitePoolOptions::new()
                .max_connections(options.read_connections.max(1))
                .min_connections(0)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(base.read_only(true).create_if_missing(false))
                .await
                .map_err(db_error("open"))?;
            Some(pool)
        };
        let hot = Arc::new(Hot::default());
        let on_rollback = {
            let hot = Arc::clone(&hot);
            Box::new(move || hot.clear())
        };
        Ok(Self {
            writer: Writer::start(conn, options.max_batch, on_rollback)?,
            hot,
            reads,
            reader,
            clock: options.clock,
            file_lock,
        })
    }

    /// Group-commit counters: `commits < requests` means batching happened.
    pub fn stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// Transactions committed so far (one per batch).
    pub fn commit_count(&self) -> u64 {
        self.writer.stats().commits
    }

    /// Runs a read on a pooled connection without an explicit transaction (each statement
    /// is its own snapshot), saving the BEGIN/COMMIT round trips; for reads that are one
    /// statement or tolerate a change between statements.
    async fn read_unwrapped<T: Send + 'static>(&self, op: Op<T>) -> Result<T> {
        let Some(pool) = &self.reads else {
            return self.writer.submit(op).await;
        };
        let mut conn = pool.acquire().await.map_err(db_error("read"))?;
        op(&mut conn).await
    }

    /// Runs a small read inline on a reader connection (see `reader`), or through the
    /// writer for in-memory databases.
    async fn read_inline<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        match &self.reader {
            Some(reader) => reader.with(read),
            None => self.writer.submit_direct(Box::new(read)).await,
        }
    }

    /// Runs a read in one snapshot: a read transaction on a pooled connection, or the
    /// writer for in-memory databases.
    async fn read<T: Send + 'static>(&self, op: Op<T>) -> Result<T> {
        let Some(pool) = &self.reads else {
            return self.writer.submit(op).await;
        };
        let mut tx = pool.begin().await.map_err(db_error("read"))?;
        let value = op(&mut tx).await?;
        // Ending a read transaction writes nothing; a failure here only means the
        // connection is unusable, and the pool discards it.
        tx.commit().await.map_err(db_error("read"))?;
        Ok(value)
    }
}

/// Boxes an async block over the connection as an [`Op`].
macro_rules! op {
    (|$conn:ident| $body:expr) => {
        Box::new(move |$conn: &mut sqlx::SqliteConnection| -> BoxFut<'_, _> {
            Box::pin(async move { $body })
        })
    };
}

/// Boxes a closure over the writer's direct connection as a [`DirectOp`].
macro_rules! direct {
    (|$conn:ident| $body:expr) => {{
        let op: DirectOp<_> = Box::new(move |$conn: &rusqlite::Connection| $body);
        op
    }};
}

#[async_trait]
impl Store for SqliteStore {
    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %new.instance_id))]
    async fn create_instance(&self, new: NewInstance, policy: ReusePolicy) -> Result<()> {
        let hot = Arc::clone(&self.hot);
        self.writer
            .submit_direct(direct!(|conn| instances::create(conn, &hot, &new, &policy)))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id))]
    async fn instance(&self, id: &InstanceId) -> Result<Option<InstanceRecord>> {
        let id = id.clone();
        self.read_inline(move |conn| queries::instance(conn, &id))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id))]
    async fn history(
        &self,
        id: &InstanceId,
    ) -> Result<Option<(ExecutionId, Vec<pb::HistoryEvent>)>> {
        let id = id.clone();
        self.read(op!(|conn| queries::history(conn, &id).await))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id))]
    async fn enqueue_event(
        &self,
        id: &InstanceId,
        event: pb::HistoryEvent,
    ) -> Result<EnqueueOutcome> {
        let (id, hot) = (id.clone(), Arc::clone(&self.hot));
        self.writer
            .submit_direct(direct!(|conn| instances::enqueue_event(
                conn, &hot, &id, &event
            )))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id))]
    async fn terminate_instance(
        &self,
        id: &InstanceId,
        event: pb::HistoryEvent,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<TerminateOutcome> {
        let (id, hot) = (id.clone(), Arc::clone(&self.hot));
        self.writer
            .submit_direct(direct!(|conn| instances::terminate(
                conn,
                &hot,
                &id,
                &event,
                reason.as_deref(),
                now
            )))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id, suspend))]
    async fn set_suspended(
        &self,
        id: &InstanceId,
        suspend: bool,
        event: pb::HistoryEvent,
        now: DateTime<Utc>,
    ) -> Result<SuspendOutcome> {
        let (id, hot) = (id.clone(), Arc::clone(&self.hot));
        self.writer
            .submit_direct(direct!(|conn| instances::set_suspended(
                conn, &hot, &id, suspend, &event, now
            )))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id))]
    async fn orchestration_work(
        &self,
        id: &InstanceId,
        now: DateTime<Utc>,
        max_messages: u32,
        cached: Option<(ExecutionId, u32)>,
    ) -> Result<Option<OrchestrationWork>> {
        let id = id.clone();
        let read = id.clone();
        let episode = self
            .read_inline(move |conn| queries::episode(conn, &read, now, max_messages))
            .await?;
        let Some((record, messages)) = episode else {
            return Ok(None);
        };
        if record.status.is_terminal() {
            return Ok(None);
        }
        let history = if history_is_current(cached.as_ref(), &record) {
            None
        } else {
            Some(
                self.read_unwrapped(op!(|conn| queries::events(conn, &id).await))
                    .await?,
            )
        };
        Ok(Some(OrchestrationWork {
            // The file lock makes this process the owner of everything.
            lease: Lease::default(),
            record,
            history,
            messages,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %transition.instance_id))]
    async fn commit_orchestration(
        &self,
        transition: &Transition,
        _lease: Lease,
    ) -> Result<CommitOutcome> {
        let (transition, hot) = (transition.clone(), Arc::clone(&self.hot));
        self.writer
            .submit_direct(direct!(|conn| commit::commit(conn, &hot, &transition)))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = plan.executions.first().map_or("", |x| x.instance_id.as_str())))]
    async fn rewind(&self, plan: &RewindPlan) -> Result<RewindOutcome> {
        let (plan, hot) = (plan.clone(), Arc::clone(&self.hot));
        self.writer
            .submit(op!(|conn| rewind::rewind(conn, &hot, &plan).await))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id))]
    async fn discard_messages(&self, id: &InstanceId, seqs: &[i64]) -> Result<()> {
        let id = id.clone();
        let seqs = seqs.to_vec();
        self.writer
            .submit_direct(direct!(|conn| inbox::delete_seqs(conn, &id, &seqs)))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(activity_id))]
    async fn complete_activity(
        &self,
        activity_id: i64,
        result: pb::HistoryEvent,
    ) -> Result<ActivityOutcome> {
        let hot = Arc::clone(&self.hot);
        self.writer
            .submit_direct(direct!(|conn| instances::complete_activity(
                conn,
                &hot,
                activity_id,
                &result
            )))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn query_instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>> {
        let filter = filter.clone();
        self.read(op!(|conn| queries::query_instances(conn, &filter).await))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn count_instances(&self, filter: &InstanceFilter) -> Result<Vec<(RuntimeStatus, u64)>> {
        let filter = filter.clone();
        self.read(op!(|conn| queries::count_instances(conn, &filter).await))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_completed(
        &self,
        filter: &CompletedFilter,
    ) -> Result<Vec<(InstanceId, DateTime<Utc>)>> {
        let filter = filter.clone();
        self.read(op!(|conn| queries::list_completed(conn, &filter).await))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id, recursive))]
    async fn purge_instance(&self, id: &InstanceId, recursive: bool) -> Result<u32> {
        let (id, hot) = (id.clone(), Arc::clone(&self.hot));
        self.writer
            .submit(op!(|conn| {
                if id.is_entity() {
                    return entities::purge(conn, &id).await;
                }
                let deleted = purge::purge_instance(conn, &hot, &id, recursive).await;
                // Deleted rows may be cached (terminal entries stay after a commit).
                hot.clear();
                deleted
            }))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(recursive))]
    async fn purge_where(
        &self,
        filter: &PurgeFilter,
        recursive: bool,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<(u32, bool)> {
        super::codec::purge_in_batches(&*self.clock, deadline, || {
            let (filter, hot) = (filter.clone(), Arc::clone(&self.hot));
            self.writer.submit(op!(|conn| {
                let result = purge::purge_batch(conn, &hot, &filter, recursive, PURGE_BATCH).await;
                hot.clear();
                result
            }))
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn wipe(&self) -> Result<()> {
        let hot = Arc::clone(&self.hot);
        self.writer
            .submit(op!(|conn| {
                let result = purge::wipe(conn).await;
                hot.clear();
                result
            }))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn recover(&self, now: DateTime<Utc>) -> Result<Recovery> {
        self.read(op!(|conn| {
            let mut recovery = queries::recover(conn, now).await?;
            let (ready, wakeups) = entities::recover(conn, codec::micros(now)).await?;
            recovery.ready.extend(ready);
            recovery.wakeups.extend(wakeups);
            Ok(recovery)
        }))
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(entity = %id))]
    async fn signal_entity(
        &self,
        id: &InstanceId,
        event: pb::HistoryEvent,
        visible_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let id = id.clone();
        self.writer
            .submit_direct(direct!(|conn| entities::enqueue(
                conn,
                &id,
                codec::visible_micros(visible_at),
                &event,
                codec::micros(now)
            )))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(entity = %id))]
    async fn entity(&self, id: &InstanceId) -> Result<Option<EntityRecord>> {
        let id = id.clone();
        self.read(op!(|conn| entities::record(conn, &id).await))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(entity = %id))]
    async fn entity_work(
        &self,
        id: &InstanceId,
        now: DateTime<Utc>,
        max_messages: u32,
    ) -> Result<Option<EntityWork>> {
        let id = id.clone();
        self.read(op!(
            |conn| entities::work(conn, &id, now, max_messages).await
        ))
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(entity = %transition.entity))]
    async fn commit_entity(
        &self,
        transition: &EntityTransition,
        _lease: Lease,
    ) -> Result<CommitOutcome> {
        let (transition, hot) = (transition.clone(), Arc::clone(&self.hot));
        self.writer
            .submit_direct(direct!(|conn| entities::commit(conn, &hot, &transition)))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn query_entities(&self, filter: &EntityFilter) -> Result<Vec<EntityRecord>> {
        let filter = filter.clone();
        self.read(op!(|conn| entities::query(conn, &filter).await))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn clean_entities(
        &self,
        after: Option<String>,
        limit: u32,
        remove_empty: bool,
        release_orphans: bool,
    ) -> Result<CleanOutcome> {
        self.writer
            .submit(op!(|conn| {
                let (removed, released, next, unblocked) =
                    entities::clean(conn, after.as_deref(), limit, remove_empty, release_orphans)
                        .await?;
                Ok(CleanOutcome {
                    removed,
                    released,
                    next,
                    unblocked,
                })
            }))
            .await
    }

    // One process owns the file (see `lock`), so it owns every instance, entity and
    // activity: claims always succeed and there is nothing to release, renew or sweep.
    async fn release_orchestration(&self, _id: &InstanceId, _lease: Lease) -> Result<()> {
        Ok(())
    }

    async fn release_entity(&self, _id: &InstanceId, _lease: Lease) -> Result<()> {
        Ok(())
    }

    async fn claim_activities(&self, ids: &[i64]) -> Result<Vec<i64>> {
        Ok(ids.to_vec())
    }

    async fn release_activities(&self, _ids: &[i64]) -> Result<()> {
        Ok(())
    }

    async fn release_unsent_activities(&self, _ids: &[i64]) -> Result<()> {
        Ok(())
    }

    async fn renew_leases(&self) -> Result<()> {
        Ok(())
    }

    async fn due_work(
        &self,
        _now: DateTime<Utc>,
        _horizon: DateTime<Utc>,
        _limit: u32,
    ) -> Result<Recovery> {
        Ok(Recovery::default())
    }

    fn subscribe(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<StoreChange>> {
        None
    }

    async fn close(&self) {
        self.writer.close().await;
        if let Some(pool) = &self.reads {
            pool.close().await;
        }
        if let Some(reader) = &self.reader {
            reader.close();
        }
        self.file_lock.release();
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // How well group commit worked over the process's life: requests per commit.
        let stats = self.writer.stats();
        tracing::info!(
            commits = stats.commits,
            requests = stats.requests,
            "sqlite writer totals"
        );
    }
}
