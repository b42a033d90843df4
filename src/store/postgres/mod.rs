//! `PostgresStore`: the [`Store`] on PostgreSQL (sqlx). Placeholder until the backend
//! lands: every call answers `Unavailable`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    ActivityOutcome, CleanOutcome, CommitOutcome, CompletedFilter, EnqueueOutcome, EntityWork,
    InstanceFilter, Lease, OrchestrationWork, PurgeFilter, Recovery, Result, RewindOutcome, Store,
    StoreChange, StoreError, SuspendOutcome, TerminateOutcome,
};
use crate::domain::{
    Clock, EntityFilter, EntityRecord, EntityTransition, ExecutionId, InstanceId, InstanceRecord,
    NewInstance, ReusePolicy, RewindPlan, SystemClock, Transition,
};
use crate::proto as pb;

/// Tuning of [`PostgresStore::open_with`]. `Default` suits production.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Do not run the embedded migrations at open (the schema is managed elsewhere).
    pub skip_migrations: bool,
    /// Most pooled connections.
    pub max_connections: u32,
    /// How long a call waits for a pooled connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// Time source for deadlines; every stored time comes from arguments.
    pub clock: Arc<dyn Clock>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            skip_migrations: false,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            clock: Arc::new(SystemClock),
        }
    }
}

/// The PostgreSQL store.
#[derive(Debug)]
pub struct PostgresStore {}

fn missing<T>() -> Result<T> {
    Err(StoreError::Unavailable(
        "the PostgreSQL backend is not built yet".into(),
    ))
}

impl PostgresStore {
    /// Connects to `url` and applies the migrations.
    pub async fn open_with(_url: &str, _options: PostgresOptions) -> Result<Self> {
        missing()
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_instance(&self, _new: NewInstance, _policy: ReusePolicy) -> Result<()> {
        missing()
    }
    async fn instance(&self, _id: &InstanceId) -> Result<Option<InstanceRecord>> {
        missing()
    }
    async fn history(
        &self,
        _id: &InstanceId,
    ) -> Result<Option<(ExecutionId, Vec<pb::HistoryEvent>)>> {
        missing()
    }
    async fn enqueue_event(
        &self,
        _id: &InstanceId,
        _event: pb::HistoryEvent,
    ) -> Result<EnqueueOutcome> {
        missing()
    }
    async fn terminate_instance(
        &self,
        _id: &InstanceId,
        _event: pb::HistoryEvent,
        _reason: Option<String>,
        _now: DateTime<Utc>,
    ) -> Result<TerminateOutcome> {
        missing()
    }
    async fn set_suspended(
        &self,
        _id: &InstanceId,
        _suspend: bool,
        _event: pb::HistoryEvent,
        _now: DateTime<Utc>,
    ) -> Result<SuspendOutcome> {
        missing()
    }
    async fn orchestration_work(
        &self,
        _id: &InstanceId,
        _now: DateTime<Utc>,
        _max_messages: u32,
        _cached: Option<(ExecutionId, u32)>,
    ) -> Result<Option<OrchestrationWork>> {
        missing()
    }
    async fn commit_orchestration(
        &self,
        _transition: &Transition,
        _lease: Lease,
    ) -> Result<CommitOutcome> {
        missing()
    }
    async fn rewind(&self, _plan: &RewindPlan) -> Result<RewindOutcome> {
        missing()
    }
    async fn discard_messages(&self, _id: &InstanceId, _seqs: &[i64]) -> Result<()> {
        missing()
    }
    async fn complete_activity(
        &self,
        _activity_id: i64,
        _result: pb::HistoryEvent,
    ) -> Result<ActivityOutcome> {
        missing()
    }
    async fn query_instances(&self, _filter: &InstanceFilter) -> Result<Vec<InstanceRecord>> {
        missing()
    }
    async fn list_completed(
        &self,
        _filter: &CompletedFilter,
    ) -> Result<Vec<(InstanceId, DateTime<Utc>)>> {
        missing()
    }
    async fn purge_instance(&self, _id: &InstanceId, _recursive: bool) -> Result<u32> {
        missing()
    }
    async fn purge_where(
        &self,
        _filter: &PurgeFilter,
        _recursive: bool,
        _deadline: Option<DateTime<Utc>>,
    ) -> Result<(u32, bool)> {
        missing()
    }
    async fn wipe(&self) -> Result<()> {
        missing()
    }
    async fn recover(&self, _now: DateTime<Utc>) -> Result<Recovery> {
        missing()
    }
    async fn signal_entity(
        &self,
        _id: &InstanceId,
        _event: pb::HistoryEvent,
        _visible_at: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> Result<()> {
        missing()
    }
    async fn entity(&self, _id: &InstanceId) -> Result<Option<EntityRecord>> {
        missing()
    }
    async fn entity_work(
        &self,
        _id: &InstanceId,
        _now: DateTime<Utc>,
        _max_messages: u32,
    ) -> Result<Option<EntityWork>> {
        missing()
    }
    async fn commit_entity(
        &self,
        _transition: &EntityTransition,
        _lease: Lease,
    ) -> Result<CommitOutcome> {
        missing()
    }
    async fn query_entities(&self, _filter: &EntityFilter) -> Result<Vec<EntityRecord>> {
        missing()
    }
    async fn clean_entities(
        &self,
        _after: Option<String>,
        _limit: u32,
        _remove_empty: bool,
        _release_orphans: bool,
    ) -> Result<CleanOutcome> {
        missing()
    }
    async fn release_orchestration(&self, _id: &InstanceId, _lease: Lease) -> Result<()> {
        missing()
    }
    async fn release_entity(&self, _id: &InstanceId, _lease: Lease) -> Result<()> {
        missing()
    }
    async fn claim_activities(&self, _ids: &[i64]) -> Result<Vec<i64>> {
        missing()
    }
    async fn release_activity(&self, _id: i64) -> Result<()> {
        missing()
    }
    async fn renew_leases(&self) -> Result<()> {
        missing()
    }
    async fn due_work(
        &self,
        _now: DateTime<Utc>,
        _horizon: DateTime<Utc>,
        _limit: u32,
    ) -> Result<Recovery> {
        missing()
    }
    fn subscribe(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<StoreChange>> {
        None
    }
    async fn close(&self) {}
}
