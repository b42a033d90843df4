//! `PostgresStore`: the [`Store`] on PostgreSQL (sqlx), shared by several sidecar
//! processes (STYLE.md §15).
//!
//! Every call is one transaction on a pooled connection (or one statement, which is
//! atomic by itself), retried as a whole on serialization failures and deadlocks. Writes
//! lock the rows whose facts the protocol rules judge (`SELECT ... FOR UPDATE`, several
//! rows always in id order so two calls never deadlock on each other) and decide with
//! `domain::rules`; nothing about routing is cached in memory, because another process
//! may have changed it. Work is owned through leases on the rows (owner, expiry on the
//! database clock, fencing epoch checked inside every commit), and each write transaction
//! NOTIFYs what it changed so other processes' dispatchers wake (`notify`).
//!
//! SQL lives in the submodules by concern; `rows` holds the column decodings. Must not
//! depend on `engine`, `service` or `grpc`; no sqlx type leaves this module.

mod commit;
mod entities;
mod instances;
mod leases;
mod notify;
mod purge;
mod queries;
mod rewind;
mod rows;
pub(crate) mod tx;
mod writes;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Postgres;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::tx::{in_tx, retried, sql, Pooled, R};
use super::{
    ActivityOutcome, CleanOutcome, CommitOutcome, CompletedFilter, EnqueueOutcome, EntityWork,
    InstanceFilter, Lease, OrchestrationWork, PurgeFilter, Recovery, Result, RewindOutcome, Store,
    StoreChange, StoreError, SuspendOutcome, TerminateOutcome,
};
use crate::domain::{
    Clock, EntityFilter, EntityRecord, EntityTransition, ExecutionId, InstanceId, InstanceRecord,
    NewInstance, ReusePolicy, RewindPlan, RuntimeStatus, SystemClock, Transition,
};
use crate::proto as pb;

/// The embedded schema migrations.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Root instances purged per transaction by `purge_where`.
const PURGE_BATCH: u32 = 100;

/// The task hub of [`PostgresStore::open_with`].
const DEFAULT_HUB: &str = crate::domain::DEFAULT_TASK_HUB;

/// Tuning of [`PostgresStore::open_with`]. `Default` suits production.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Do not run the embedded migrations at open (the schema is managed elsewhere).
    pub skip_migrations: bool,
    /// Most pooled connections for calls; claims, releases and renewals have half as
    /// many again, and the change feed's listener and notifier one each.
    pub max_connections: u32,
    /// How long a call waits for a pooled connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// Time source for deadlines; every stored time comes from arguments.
    pub clock: Arc<dyn Clock>,
    /// This process's owner id in leases; unique per process.
    pub owner: String,
    /// How long a claim lives unless renewed.
    pub lease: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            skip_migrations: false,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            clock: Arc::new(SystemClock),
            owner: default_owner(),
            lease: Duration::from_secs(10),
        }
    }
}

/// `<hostname>:<pid>:<8 random hex>`: unique, and readable in the lease columns.
fn default_owner() -> String {
    let random = ExecutionId::generate();
    format!(
        "{}:{}:{}",
        super::codec::hostname(),
        std::process::id(),
        &random.as_str()[..8]
    )
}

/// The change feed's task, started by the first `subscribe`.
#[derive(Debug, Default)]
struct Feed {
    taken: bool,
    task: Option<JoinHandle<()>>,
}

/// The PostgreSQL store. Cheap to share behind an `Arc`; see the module docs.
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// Claims, releases and renewals (see `PostgresPools`).
    lease_pool: PgPool,
    /// Owns `pool` and `lease_pool`, shared with the other hubs' stores.
    pools: Arc<PostgresPools>,
    /// One connection for LISTEN, so the feed never starves calls (or waits for them).
    listen_pool: PgPool,
    /// Sends what committed writes changed to other processes (`notify`).
    notifier: Arc<notify::Notifier>,
    notifier_task: Mutex<Option<JoinHandle<()>>>,
    hub: String,
    owner: String,
    lease_ms: i64,
    clock: Arc<dyn Clock>,
    feed: Mutex<Feed>,
    cancel: CancellationToken,
    /// Instances and entities this process claimed and has not committed or released:
    /// what `renew_leases` extends. The claims themselves live in the rows; a claim
    /// missing here (lost track of after an error) just expires, and others take over.
    held: Mutex<Held>,
}

/// See `PostgresStore::held`.
#[derive(Debug, Default)]
struct Held {
    instances: HashSet<InstanceId>,
    entities: HashSet<InstanceId>,
}

/// What the stores of one database's task hubs share: the call and lease pools (each hub
/// has its own LISTEN and NOTIFY connection). Closed when the last of its stores closes.
#[derive(Debug)]
pub struct PostgresPools {
    pool: PgPool,
    /// Claims, releases and renewals: committed without waiting for the WAL flush (see
    /// `connect`).
    lease_pool: PgPool,
    connect: PgConnectOptions,
    options: PostgresOptions,
    /// Stores opened on these pools and not yet closed.
    open: std::sync::atomic::AtomicUsize,
}

impl PostgresPools {
    /// Connects to `url` and applies the migrations unless told not to.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Arc<Self>> {
        // A sidecar frozen inside a transaction (SIGSTOP, a stalled VM) holds row locks
        // that every other sidecar's claims and renewals would queue behind; its
        // transactions are never idle for long on purpose, so the server ends any that
        // sits idle for the lease time, and the others carry on.
        let idle_limit = format!("{}ms", options.lease.as_millis().max(1000));
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid PostgreSQL URL: {e}")))?
            .application_name("durabletask-sidecar");
        let connect =
            connect.options([("idle_in_transaction_session_timeout", idle_limit.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(|e| tx::Fail::Sql("open", e).into_store())?;
        if !options.skip_migrations {
            crate::store::schema::check_postgres(&pool, &MIGRATOR).await?;
            MIGRATOR
                .run(&pool)
                .await
                .map_err(|err| crate::store::schema::migration_error(err, &MIGRATOR))?;
        }
        // Ownership changes need not survive a database crash, so their commits do not
        // wait for the WAL flush (a few ms each, most of a claim's time): a claim lost in
        // a crash only makes its holder's commit fail the fence, which redoes the
        // episode, and any later durable commit flushes the claims before it anyway.
        let lease_pool = PgPoolOptions::new()
            .max_connections(options.max_connections.div_ceil(2).max(1))
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect.clone().options([("synchronous_commit", "off")]));
        tracing::info!(owner = %options.owner, "postgres store open");
        Ok(Arc::new(Self {
            pool,
            lease_pool,
            connect,
            options,
            open: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    /// The store of task hub `hub` on these pools.
    pub fn hub(self: &Arc<Self>, hub: &str) -> PostgresStore {
        let options = &self.options;
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(self.connect.clone());
        // Its transactions only NOTIFY: not waiting for their flush costs at most a
        // notice, which the sweep makes up for (see `notify`).
        let notify_pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(
                self.connect
                    .clone()
                    .options([("synchronous_commit", "off")]),
            );
        let cancel = CancellationToken::new();
        let notifier = Arc::new(notify::Notifier::default());
        let notifier_task = tokio::spawn(Arc::clone(&notifier).run(
            notify_pool,
            hub.to_owned(),
            options.owner.clone(),
            cancel.clone(),
        ));
        self.open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        PostgresStore {
            pool: self.pool.clone(),
            lease_pool: self.lease_pool.clone(),
            pools: Arc::clone(self),
            listen_pool,
            notifier,
            notifier_task: Mutex::new(Some(notifier_task)),
            hub: hub.to_owned(),
            owner: options.owner.clone(),
            lease_ms: i64::try_from(options.lease.as_millis()).unwrap_or(i64::MAX),
            clock: Arc::clone(&options.clock),
            feed: Mutex::new(Feed::default()),
            cancel,
            held: Mutex::new(Held::default()),
        }
    }

    /// The task hubs that hold instances or entities, in name order.
    ///
    /// A skip scan over each primary key (next hub after the last one, repeatedly): one index
    /// probe per hub instead of reading every row, so start-up does not slow down as the
    /// tables grow.
    pub async fn hubs(&self) -> Result<Vec<String>> {
        retried!(sqlx::query_scalar::<_, String>(
            "WITH RECURSIVE \
               i(hub) AS ((SELECT hub FROM instances ORDER BY hub LIMIT 1) \
                 UNION ALL SELECT (SELECT n.hub FROM instances n WHERE n.hub > i.hub \
                   ORDER BY n.hub LIMIT 1) FROM i WHERE i.hub IS NOT NULL), \
               e(hub) AS ((SELECT hub FROM entities ORDER BY hub LIMIT 1) \
                 UNION ALL SELECT (SELECT n.hub FROM entities n WHERE n.hub > e.hub \
                   ORDER BY n.hub LIMIT 1) FROM e WHERE e.hub IS NOT NULL) \
             SELECT hub FROM i WHERE hub IS NOT NULL \
             UNION SELECT hub FROM e WHERE hub IS NOT NULL ORDER BY 1"
        )
        .fetch_all(&mut *self.pool.acquire().await.map_err(sql("acquire"))?)
        .await
        .map_err(sql("hubs")))
    }

    /// One store closed; the last one closes the pools.
    async fn release(&self) {
        if self.open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.lease_pool.close().await;
            self.pool.close().await;
        }
    }
}

impl PostgresStore {
    /// Connects to `url` with default [`PostgresOptions`]. See [`PostgresStore::open_with`].
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, PostgresOptions::default()).await
    }

    /// Connects to `url` and applies the migrations unless told not to: the default task
    /// hub's store, alone on its pools.
    pub async fn open_with(url: &str, options: PostgresOptions) -> Result<Self> {
        Ok(PostgresPools::connect(url, options).await?.hub(DEFAULT_HUB))
    }

    /// This store's owner id in leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    async fn conn(&self) -> R<PoolConnection<Postgres>> {
        self.pool.acquire().await.map_err(sql("acquire"))
    }

    /// Releases activity claims (`unsent`: only those still as the commit made them) and
    /// tells the other nodes.
    async fn give_back_activities(&self, ids: &[i64], unsent: bool) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let released = retried!(
            leases::release_activities(
                &mut *self.lease_conn().await?,
                &self.hub,
                &self.owner,
                ids,
                unsent
            )
            .await
        )?;
        if released {
            let mut changes = notify::Changes::default();
            changes.activities();
            self.notifier.publish(changes);
        }
        Ok(())
    }

    /// The names of the instances and entities this process holds claims on.
    fn held_names(&self) -> (Vec<String>, Vec<String>) {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let names = |set: &HashSet<InstanceId>| -> Vec<String> {
            set.iter().map(ToString::to_string).collect()
        };
        (names(&held.instances), names(&held.entities))
    }

    /// Hands every claim back (see `leases::release_all`) and tells the other nodes.
    async fn release_all(&self) {
        let (instances, entities) = self.held_names();
        let released = retried!(
            leases::release_all(
                &mut *self.lease_conn().await?,
                &self.hub,
                &self.owner,
                &instances,
                &entities
            )
            .await
        );
        match released {
            Ok(activities) => {
                let mut changes = notify::Changes::default();
                for id in instances.iter().chain(&entities) {
                    changes.ready(&InstanceId::new(id.as_str()));
                }
                if activities {
                    changes.activities();
                }
                self.notifier.publish(changes);
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not release claims at shutdown; they expire instead");
            }
        }
    }

    /// Notes (`hold`) or forgets a claim on an instance or (`entity`) an entity.
    fn track(&self, entity: bool, id: &InstanceId, hold: bool) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let set = if entity {
            &mut held.entities
        } else {
            &mut held.instances
        };
        if hold {
            set.insert(id.clone());
        } else {
            set.remove(id);
        }
    }

    async fn lease_conn(&self) -> R<PoolConnection<Postgres>> {
        self.lease_pool.acquire().await.map_err(sql("acquire"))
    }

    async fn begin(&self) -> R<Pooled> {
        Pooled::begin(self.conn().await?).await
    }

    /// Ends this owner's claim on an orchestration or (`entity`) an entity.
    async fn release(&self, entity: bool, id: &InstanceId, lease: Lease) -> Result<()> {
        self.track(entity, id, false);
        let now = self.clock.now();
        let waiting = retried!(
            leases::release(
                &mut *self.lease_conn().await?,
                &self.hub,
                &self.owner,
                entity,
                id,
                lease,
                now
            )
            .await
        )?;
        if waiting {
            // Another node may take it at once.
            let mut changes = notify::Changes::default();
            changes.ready(id);
            self.notifier.publish(changes);
        }
        Ok(())
    }

    /// The sweep behind `recover` and `due_work` (see `queries::sweep`).
    async fn sweep(
        &self,
        now: DateTime<Utc>,
        horizon: Option<DateTime<Utc>>,
        limit: Option<u32>,
        own_activities: bool,
    ) -> Result<Recovery> {
        retried!(
            queries::sweep(
                &mut *self.conn().await?,
                &self.hub,
                &self.owner,
                now,
                horizon,
                limit,
                own_activities
            )
            .await
        )
    }
}

impl Drop for PostgresStore {
    /// Stops the feed and the notifier (which sends what is still queued) if `close`
    /// was never called, so a dropped store leaves no task running.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[async_trait]
impl Store for PostgresStore {
    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %new.instance_id))]
    async fn create_instance(&self, new: NewInstance, policy: ReusePolicy) -> Result<()> {
        let created =
            retried!(instances::try_create(&mut *self.conn().await?, &self.hub, &new).await)?;
        if let Some(changes) = created {
            self.notifier.publish(changes);
            return Ok(());
        }
        in_tx!(self, |conn, cx| instances::create(conn, cx, &new, &policy)
            .await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id))]
    async fn instance(&self, id: &InstanceId) -> Result<Option<InstanceRecord>> {
        retried!(queries::instance(&mut *self.conn().await?, &self.hub, id).await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id))]
    async fn history(
        &self,
        id: &InstanceId,
    ) -> Result<Option<(ExecutionId, Vec<pb::HistoryEvent>)>> {
        retried!(queries::history(&mut *self.conn().await?, &self.hub, id).await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id))]
    async fn enqueue_event(
        &self,
        id: &InstanceId,
        event: pb::HistoryEvent,
    ) -> Result<EnqueueOutcome> {
        in_tx!(self, |conn, cx| instances::enqueue_event(
            conn, cx, id, &event
        )
        .await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id))]
    async fn terminate_instance(
        &self,
        id: &InstanceId,
        event: pb::HistoryEvent,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<TerminateOutcome> {
        in_tx!(self, |conn, cx| instances::terminate(
            conn,
            cx,
            id,
            &event,
            reason.as_deref(),
            now
        )
        .await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id, suspend))]
    async fn set_suspended(
        &self,
        id: &InstanceId,
        suspend: bool,
        event: pb::HistoryEvent,
        now: DateTime<Utc>,
    ) -> Result<SuspendOutcome> {
        in_tx!(self, |conn, cx| instances::set_suspended(
            conn, cx, id, suspend, &event, now
        )
        .await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id))]
    async fn orchestration_work(
        &self,
        id: &InstanceId,
        now: DateTime<Utc>,
        max_messages: u32,
        cached: Option<(ExecutionId, u32)>,
    ) -> Result<Option<OrchestrationWork>> {
        let work = retried!(
            queries::orchestration_work(
                &mut *self.lease_conn().await?,
                &self.hub,
                &self.owner,
                self.lease_ms,
                id,
                now,
                max_messages,
                cached.as_ref(),
            )
            .await
        )?;
        if work.is_some() {
            self.track(false, id, true);
        }
        Ok(work)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %transition.instance_id))]
    async fn commit_orchestration(
        &self,
        transition: &Transition,
        lease: Lease,
    ) -> Result<CommitOutcome> {
        // Whatever the outcome, this claim is over: committed (which releases it), lost,
        // or left to expire unless the dispatcher claims the instance again.
        self.track(false, &transition.instance_id, false);
        if commit::fits_one_statement(transition) {
            let (outcome, changes) = retried!({
                let mut cx = tx::Cx::new(&self.hub, &self.owner, self.lease_ms, self.clock.now());
                let outcome =
                    commit::commit_at_once(&mut *self.conn().await?, &mut cx, transition, lease)
                        .await?;
                Ok((outcome, cx.changes))
            })?;
            self.notifier.publish(changes);
            return Ok(outcome);
        }
        in_tx!(self, |conn, cx| commit::commit(conn, cx, transition, lease)
            .await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id))]
    async fn release_orchestration(&self, id: &InstanceId, lease: Lease) -> Result<()> {
        self.release(false, id, lease).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = plan.executions.first().map_or("", |x| x.instance_id.as_str())))]
    async fn rewind(&self, plan: &RewindPlan) -> Result<RewindOutcome> {
        in_tx!(self, |conn, cx| rewind::rewind(conn, cx, plan).await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id))]
    async fn discard_messages(&self, id: &InstanceId, seqs: &[i64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        retried!(sqlx::query(
            "DELETE FROM inbox WHERE hub = $1 AND instance_id = $2 AND seq = ANY($3)"
        )
        .bind(&self.hub)
        .bind(id.as_str())
        .bind(seqs)
        .execute(&mut *self.conn().await?)
        .await
        .map(|_| ())
        .map_err(sql("inbox delete")))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(activity_id))]
    async fn complete_activity(
        &self,
        activity_id: i64,
        result: pb::HistoryEvent,
    ) -> Result<ActivityOutcome> {
        let now = self.clock.now();
        let (outcome, changes) = retried!(
            instances::complete_activity(
                &mut *self.conn().await?,
                &self.hub,
                activity_id,
                &result,
                now
            )
            .await
        )?;
        self.notifier.publish(changes);
        Ok(outcome)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn query_instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>> {
        retried!(queries::query_instances(&mut *self.conn().await?, &self.hub, filter).await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn count_instances(&self, filter: &InstanceFilter) -> Result<Vec<(RuntimeStatus, u64)>> {
        retried!(queries::count_instances(&mut *self.conn().await?, &self.hub, filter).await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_completed(
        &self,
        filter: &CompletedFilter,
    ) -> Result<Vec<(InstanceId, DateTime<Utc>)>> {
        retried!(queries::list_completed(&mut *self.conn().await?, &self.hub, filter).await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(instance_id = %id, recursive))]
    async fn purge_instance(&self, id: &InstanceId, recursive: bool) -> Result<u32> {
        if id.is_entity() {
            return in_tx!(self, |conn, cx| entities::purge(conn, cx, id).await);
        }
        in_tx!(self, |conn, cx| purge::purge_instance(
            conn, cx, id, recursive
        )
        .await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(recursive))]
    async fn purge_where(
        &self,
        filter: &PurgeFilter,
        recursive: bool,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<(u32, bool)> {
        super::codec::purge_in_batches(&*self.clock, deadline, || async {
            in_tx!(self, |conn, cx| purge::purge_batch(
                conn,
                cx,
                filter,
                recursive,
                PURGE_BATCH
            )
            .await)
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn wipe(&self) -> Result<()> {
        in_tx!(self, |conn, cx| purge::wipe(conn, cx).await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn recover(&self, now: DateTime<Utc>) -> Result<Recovery> {
        self.sweep(now, None, None, true).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(entity = %id))]
    async fn signal_entity(
        &self,
        id: &InstanceId,
        event: pb::HistoryEvent,
        visible_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        in_tx!(self, |conn, cx| entities::signal(
            conn, cx, id, &event, visible_at, now
        )
        .await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(entity = %id))]
    async fn entity(&self, id: &InstanceId) -> Result<Option<EntityRecord>> {
        retried!(entities::record(&mut *self.conn().await?, &self.hub, id).await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(entity = %id))]
    async fn entity_work(
        &self,
        id: &InstanceId,
        now: DateTime<Utc>,
        max_messages: u32,
    ) -> Result<Option<EntityWork>> {
        let work = retried!(
            entities::work(
                &mut *self.lease_conn().await?,
                &self.hub,
                &self.owner,
                self.lease_ms,
                id,
                now,
                max_messages
            )
            .await
        )?;
        if work.is_some() {
            self.track(true, id, true);
        }
        Ok(work)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(entity = %transition.entity))]
    async fn commit_entity(
        &self,
        transition: &EntityTransition,
        lease: Lease,
    ) -> Result<CommitOutcome> {
        in_tx!(self, |conn, cx| entities::commit(
            conn, cx, transition, lease
        )
        .await)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(entity = %id))]
    async fn release_entity(&self, id: &InstanceId, lease: Lease) -> Result<()> {
        self.release(true, id, lease).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn query_entities(&self, filter: &EntityFilter) -> Result<Vec<EntityRecord>> {
        retried!(entities::query(&mut *self.conn().await?, &self.hub, filter).await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn clean_entities(
        &self,
        after: Option<String>,
        limit: u32,
        remove_empty: bool,
        release_orphans: bool,
    ) -> Result<CleanOutcome> {
        let (removed, released, next, unblocked) = in_tx!(self, |conn, cx| entities::clean(
            conn,
            cx,
            after.as_deref(),
            limit,
            remove_empty,
            release_orphans
        )
        .await)?;
        Ok(CleanOutcome {
            removed,
            released,
            next,
            unblocked,
        })
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn claim_activities(&self, ids: &[i64]) -> Result<Vec<i64>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        retried!(
            leases::claim_activities(
                &mut *self.lease_conn().await?,
                &self.hub,
                &self.owner,
                self.lease_ms,
                ids
            )
            .await
        )
    }

    #[tracing::instrument(level = "debug", skip_all, fields(activities = ids.len()))]
    async fn release_activities(&self, ids: &[i64]) -> Result<()> {
        self.give_back_activities(ids, false).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(activities = ids.len()))]
    async fn release_unsent_activities(&self, ids: &[i64]) -> Result<()> {
        self.give_back_activities(ids, true).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn renew_leases(&self) -> Result<()> {
        let (instances, entities) = self.held_names();
        retried!(
            leases::renew(
                &mut *self.lease_conn().await?,
                &self.hub,
                &self.owner,
                self.lease_ms,
                &instances,
                &entities
            )
            .await
        )
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn due_work(
        &self,
        now: DateTime<Utc>,
        horizon: DateTime<Utc>,
        limit: u32,
    ) -> Result<Recovery> {
        self.sweep(now, Some(horizon), Some(limit), false).await
    }

    fn subscribe(&self) -> Option<UnboundedReceiver<StoreChange>> {
        let mut feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        if feed.taken || self.cancel.is_cancelled() {
            return None;
        }
        feed.taken = true;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        feed.task = Some(tokio::spawn(notify::listen(
            self.listen_pool.clone(),
            self.hub.clone(),
            self.owner.clone(),
            tx,
            self.cancel.clone(),
        )));
        Some(rx)
    }

    async fn close(&self) {
        if !self.cancel.is_cancelled() {
            self.release_all().await;
        }
        self.cancel.cancel();
        let task = self
            .feed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .task
            .take();
        if let Some(task) = task {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "store change feed task failed");
            }
        }
        // Sends what is still queued, then ends.
        let task = self
            .notifier_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "store notifier task failed");
            }
        }
        self.listen_pool.close().await;
        self.pools.release().await;
    }
}
