//! Durable state behind one trait: instances, histories, inboxes, timers and activities.
//!
//! Every method is atomic (one database transaction) and speaks in domain terms. Backends
//! are free to batch many calls into one transaction (group commit) as long as each call's
//! effects are all-or-nothing and a call returns only after its effects are durable.
//! Must not depend on `engine`, `service` or `grpc`; sqlx types never leave this module.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use std::collections::HashSet;

use crate::domain::{
    EntityFilter, EntityRecord, EntityTransition, ExecutionId, InstanceId, InstanceRecord,
    NewInstance, ReusePolicy, RewindPlan, RuntimeStatus, Transition,
};
use crate::proto as pb;

mod codec;
mod hubs;
pub mod postgres;
mod rows;
mod schema;
pub mod sqlite;
mod url;

pub use hubs::HubStores;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use url::{StoreUrl, StoreUrlError};

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The instance does not exist.
    #[error("instance '{0}' not found")]
    NotFound(InstanceId),
    /// An instance with this id exists and may not be replaced.
    #[error("instance '{instance_id}' already exists with status {status}")]
    AlreadyExists {
        /// The id.
        instance_id: InstanceId,
        /// Its current status.
        status: RuntimeStatus,
    },
    /// A commit's guard failed: the instance changed (replaced, purged, restarted) since
    /// the episode was dispatched.
    #[error("instance '{0}' changed while its work item was outstanding")]
    LeaseLost(InstanceId),
    /// The database cannot be reached or the writer is gone.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The database could not write because its disk (or quota) is full. Retryable: the
    /// transaction was rolled back whole, and commits succeed again once space is freed.
    #[error("the database could not commit because the disk is full")]
    DiskFull,
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Any other backend failure.
    #[error("database error: {0}")]
    Backend(String),
}

/// What a client is told about [`StoreError::DiskFull`] (gRPC UNAVAILABLE, HTTP 503):
/// retrying is safe, since the failed transaction was rolled back whole.
pub const DISK_FULL_MESSAGE: &str = "the database could not commit because the disk is full; \
     nothing of this request was stored, retry once space is freed";

/// `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One inbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxMessage {
    /// Row id; inbox order is ascending `seq` per instance.
    pub seq: i64,
    /// Execution the message is meant for, if it is execution-scoped.
    pub target_execution: Option<ExecutionId>,
    /// The event.
    pub event: pb::HistoryEvent,
    /// Not visible before this time.
    pub visible_at: DateTime<Utc>,
}

/// A claim on one instance, entity or activity, held by this store's owner (node) until
/// committed, released or expired. `epoch` is the fencing token: every claim bumps it, and
/// a commit is refused (`LeaseLost`) unless the row still carries this owner and epoch,
/// checked inside the commit's own transaction. Single-process stores (SQLite, which locks
/// its file) own everything and hand out epoch 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lease {
    /// The claim's fencing token.
    pub epoch: i64,
}

/// A change another process made that this one's dispatcher or waiters should look at
/// (shared stores only; see [`Store::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StoreChange {
    /// The instance or entity has a message visible now, or its lease was released.
    Ready(InstanceId),
    /// The instance or entity gets a message that becomes visible at this time.
    Wakeup(InstanceId, DateTime<Utc>),
    /// The instance's status or output changed (for `WaitForInstance*`).
    Status(InstanceId),
    /// Activities were enqueued (or released) that any node may claim.
    Activities,
    /// Notifications may have been missed (the listener reconnected): sweep now.
    Resync,
}

/// What an orchestration episode needs, read in one snapshot.
#[derive(Debug, Clone)]
pub struct OrchestrationWork {
    /// The claim this episode's commit must present.
    pub lease: Lease,
    /// The instance record.
    pub record: InstanceRecord,
    /// Committed history of the current execution; `None` when the caller's cached copy
    /// (same execution, same length) is still current and was not re-read.
    pub history: Option<Vec<pb::HistoryEvent>>,
    /// Visible inbox messages (visible_at <= now), in inbox order, at most the batch cap.
    pub messages: Vec<InboxMessage>,
}

/// What an entity step needs, read in one snapshot (PROTOCOL.md §5.3).
#[derive(Debug, Clone)]
pub struct EntityWork {
    /// The claim this step's commit must present.
    pub lease: Lease,
    /// The entity record.
    pub record: EntityRecord,
    /// Visible queue messages in order, at most the batch cap.
    pub messages: Vec<InboxMessage>,
    /// Which orchestrations named by the lock or by queued lock requests are live.
    pub live: HashSet<InstanceId>,
}

/// What one `CleanEntityStorage` page did.
#[derive(Debug, Clone, Default)]
pub struct CleanOutcome {
    /// Entities deleted for having no state, lock or backlog.
    pub removed: u32,
    /// Locks released because their owner is gone or terminal.
    pub released: u32,
    /// Where the next page starts; `None` when done.
    pub next: Option<String>,
    /// Entities whose queue can move again.
    pub unblocked: Vec<InstanceId>,
}

/// An activity row.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityItem {
    /// Row id.
    pub id: i64,
    /// The orchestration that scheduled it.
    pub instance_id: InstanceId,
    /// Its execution.
    pub execution_id: ExecutionId,
    /// The `TaskScheduled` event (eventId = task id).
    pub scheduled: pb::HistoryEvent,
}

/// What committing an episode produced that the dispatcher must know.
#[derive(Debug, Clone, Default)]
pub struct CommitOutcome {
    /// The activities enqueued, with their row ids.
    pub activities: Vec<ActivityItem>,
    /// Whether the instance still has visible inbox messages after the commit.
    pub has_visible_inbox: bool,
    /// Instances that received a visible message (or were created) by this commit.
    pub touched: Vec<InstanceId>,
    /// The activities are claimed for this owner already (a shared store claims them in
    /// the commit, since the committing process is the likeliest to send them): they may
    /// be sent without `claim_activities`, and must be released if they are not.
    pub activities_claimed: bool,
}

/// What a rewind produced that the dispatcher must know.
#[derive(Debug, Clone, Default)]
pub struct RewindOutcome {
    /// Activity rows of the rewound executions (moved to the new execution or created
    /// again), with their row ids.
    pub activities: Vec<ActivityItem>,
}

/// Result of enqueueing a client event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Stored in the inbox.
    Enqueued,
    /// The instance is terminal; the event was discarded.
    Dropped,
}

/// Result of a terminate request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminateOutcome {
    /// `ExecutionTerminated` is in the inbox.
    Enqueued,
    /// The instance had not started yet and was terminated in place.
    TerminatedDirectly,
    /// Already terminal: nothing done.
    AlreadyTerminal,
}

/// Result of suspend/resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspendOutcome {
    /// Status flipped and the marker event enqueued.
    Changed,
    /// Nothing to do (already in that state, or terminal).
    Unchanged,
}

/// Result of completing an activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivityOutcome {
    /// The result is in the orchestration's inbox.
    Delivered(InstanceId),
    /// The orchestration is gone, terminal, or on another execution: result discarded.
    Dropped,
    /// No such activity row (already completed, or purged).
    Unknown,
}

/// Filter of `QueryInstances` (PROTOCOL.md §3.9).
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    /// Empty = any status.
    pub statuses: Vec<RuntimeStatus>,
    /// Inclusive.
    pub created_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub created_to: Option<DateTime<Utc>>,
    /// Plain string prefix.
    pub id_prefix: Option<String>,
    /// Exact orchestration name.
    pub name: Option<String>,
    /// Order by `(created_at, instance_id)` descending instead of ascending.
    pub newest_first: bool,
    /// Keyset cursor: return rows strictly after `(created_at, instance_id)` in the
    /// chosen order.
    pub after: Option<(DateTime<Utc>, String)>,
    /// Maximum rows to return.
    pub limit: u32,
}

/// Filter of `ListInstanceIds` (PROTOCOL.md §3.10). Terminal instances only.
#[derive(Debug, Clone, Default)]
pub struct CompletedFilter {
    /// Subset of the terminal statuses; empty = all terminal.
    pub statuses: Vec<RuntimeStatus>,
    /// Inclusive.
    pub completed_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub completed_to: Option<DateTime<Utc>>,
    /// Keyset cursor: rows strictly after `(completed_at, instance_id)`.
    pub after: Option<(DateTime<Utc>, String)>,
    /// Maximum rows to return.
    pub limit: u32,
}

/// Filter of a purge (PROTOCOL.md §3.11).
#[derive(Debug, Clone, Default)]
pub struct PurgeFilter {
    /// Inclusive.
    pub created_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub created_to: Option<DateTime<Utc>>,
    /// Terminal statuses to purge; empty = all terminal. Non-terminal entries are ignored.
    pub statuses: Vec<RuntimeStatus>,
    /// Exclusive: only instances that ended before this time (retention).
    pub completed_before: Option<DateTime<Utc>>,
    /// Only roots of instance trees: no parent, or the parent is gone. With `recursive`,
    /// a sub-orchestration then leaves with its root, never on its own.
    pub roots_only: bool,
}

/// What the dispatcher must rebuild after a restart.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Instances with at least one visible inbox message.
    pub ready: Vec<InstanceId>,
    /// Future inbox messages (timers, scheduled starts): when each instance wakes.
    pub wakeups: Vec<(DateTime<Utc>, InstanceId)>,
    /// Every activity row not yet completed.
    pub activities: Vec<ActivityItem>,
}

/// The durable store.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Creates an instance (row with status PENDING + `ExecutionStarted` in its inbox,
    /// visible at `scheduled_start_at` or now). If the id exists: replace it when `policy`
    /// allows its status (delete its history, inbox, activities; recreate), else
    /// `AlreadyExists`.
    async fn create_instance(&self, new: NewInstance, policy: ReusePolicy) -> Result<()>;

    /// The instance record, or `None`.
    async fn instance(&self, id: &InstanceId) -> Result<Option<InstanceRecord>>;

    /// The committed history of the current execution, or `None` for unknown ids.
    async fn history(
        &self,
        id: &InstanceId,
    ) -> Result<Option<(ExecutionId, Vec<pb::HistoryEvent>)>>;

    /// Adds a client event (`EventRaised`) to the inbox: `NotFound` for unknown ids,
    /// `Dropped` for terminal ones.
    async fn enqueue_event(
        &self,
        id: &InstanceId,
        event: pb::HistoryEvent,
    ) -> Result<EnqueueOutcome>;

    /// Terminates: terminal → no-op; a top-level instance with nothing committed yet
    /// (PENDING, or SUSPENDED before its first episode) → status TERMINATED in place
    /// (output = reason, completed now, inbox dropped); otherwise enqueue `event` (an
    /// `ExecutionTerminated`).
    async fn terminate_instance(
        &self,
        id: &InstanceId,
        event: pb::HistoryEvent,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<TerminateOutcome>;

    /// Suspend (`suspend = true`) or resume: flips RUNNING/PENDING ↔ SUSPENDED at once and
    /// enqueues `event` (`ExecutionSuspended`/`ExecutionResumed`); a no-op when already in
    /// that state or terminal.
    async fn set_suspended(
        &self,
        id: &InstanceId,
        suspend: bool,
        event: pb::HistoryEvent,
        now: DateTime<Utc>,
    ) -> Result<SuspendOutcome>;

    /// Claims the instance for this owner and reads what an episode needs: `None` when
    /// the instance is unknown or terminal, or another owner holds a live lease on it.
    /// `cached` = the (execution, history length) the caller already holds in memory; the
    /// history is only read when the stored one differs, so an episode costs no full
    /// history reload (it would grow with every step).
    async fn orchestration_work(
        &self,
        id: &InstanceId,
        now: DateTime<Utc>,
        max_messages: u32,
        cached: Option<(ExecutionId, u32)>,
    ) -> Result<Option<OrchestrationWork>>;

    /// Commits an episode atomically (see `Transition`) and releases the claim. `LeaseLost`
    /// when the lease (owner and epoch) or the guard (current execution id and history
    /// length) no longer holds; nothing is written then.
    async fn commit_orchestration(
        &self,
        transition: &Transition,
        lease: Lease,
    ) -> Result<CommitOutcome>;

    /// Gives up a claim without committing (nothing to do, abandoned, stream lost), so any
    /// owner may claim the instance at once. A lease no longer held is ignored.
    async fn release_orchestration(&self, id: &InstanceId, lease: Lease) -> Result<()>;

    /// Applies a rewind (PROTOCOL.md §4.10) atomically: each rewound execution's history
    /// replaced, its record RUNNING with the new execution id (output, failure and
    /// completion cleared), its inbox messages and open activities moved to the new
    /// execution, the plan's messages enqueued; purged children created again; live
    /// children's stored parent link moved. `LeaseLost` when any guard no longer holds;
    /// nothing is written then.
    async fn rewind(&self, plan: &RewindPlan) -> Result<RewindOutcome>;

    /// Deletes inbox rows that turned out to be undeliverable (stale execution).
    async fn discard_messages(&self, id: &InstanceId, seqs: &[i64]) -> Result<()>;

    /// Completes an activity row with its `TaskCompleted`/`TaskFailed` event: deletes the
    /// row and enqueues the event for the row's (instance, execution) when still current.
    async fn complete_activity(
        &self,
        activity_id: i64,
        result: pb::HistoryEvent,
    ) -> Result<ActivityOutcome>;

    /// One page of instances, ordered by (created_at, instance_id).
    async fn query_instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>>;

    /// How many instances (not entities) match `filter`, ignoring its cursor and limit: one
    /// entry per status of `RuntimeStatus::ALL`, in that order, zeros included.
    async fn count_instances(&self, filter: &InstanceFilter) -> Result<Vec<(RuntimeStatus, u64)>>;

    /// One page of terminal instance ids with their completion time, ordered by
    /// (completed_at, instance_id).
    async fn list_completed(
        &self,
        filter: &CompletedFilter,
    ) -> Result<Vec<(InstanceId, DateTime<Utc>)>>;

    /// Purges a terminal instance (and, if `recursive`, its terminal descendants found by
    /// `parent_instance_id`). Returns the number of instances deleted; 0 when unknown or
    /// not terminal.
    async fn purge_instance(&self, id: &InstanceId, recursive: bool) -> Result<u32>;

    /// Purges every terminal instance matching the filter, stopping at `deadline` if given.
    /// Returns (deleted count, completed-without-hitting-the-deadline).
    async fn purge_where(
        &self,
        filter: &PurgeFilter,
        recursive: bool,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<(u32, bool)>;

    /// Deletes everything (task hub recreate/delete).
    async fn wipe(&self) -> Result<()>;

    /// What to rebuild in memory after a start-up (entities included).
    async fn recover(&self, now: DateTime<Utc>) -> Result<Recovery>;

    /// Puts a message (`EntityOperationSignaled`) on an entity's queue, visible at
    /// `visible_at`; the first message creates the entity.
    async fn signal_entity(
        &self,
        id: &InstanceId,
        event: pb::HistoryEvent,
        visible_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// The entity record with its backlog, or `None`, as readers see it: a lock whose
    /// owner has ended is reported released (in the same snapshot as the owner's end).
    async fn entity(&self, id: &InstanceId) -> Result<Option<EntityRecord>>;

    /// Claims the entity for this owner and reads what a step needs; `None` for unknown
    /// entities and for entities another owner holds a live lease on.
    async fn entity_work(
        &self,
        id: &InstanceId,
        now: DateTime<Utc>,
        max_messages: u32,
    ) -> Result<Option<EntityWork>>;

    /// Commits an entity step atomically; `LeaseLost` when the lease or the record
    /// changed since it was read. The claim stays held: one step commits its lock
    /// bookkeeping, then the worker's batch, and gives the claim back with
    /// `release_entity` when it ends.
    async fn commit_entity(
        &self,
        transition: &EntityTransition,
        lease: Lease,
    ) -> Result<CommitOutcome>;

    /// Gives up an entity claim without committing.
    async fn release_entity(&self, id: &InstanceId, lease: Lease) -> Result<()>;

    /// One page of entities, ordered by id, their locks as [`Store::entity`] reports them.
    async fn query_entities(&self, filter: &EntityFilter) -> Result<Vec<EntityRecord>>;

    /// One page of `CleanEntityStorage` after entity id `after`.
    async fn clean_entities(
        &self,
        after: Option<String>,
        limit: u32,
        remove_empty: bool,
        release_orphans: bool,
    ) -> Result<CleanOutcome>;

    /// Claims activity rows for this owner before they are sent to a worker: returns the
    /// ids it claimed (unclaimed, expired, or already this owner's), in the given order.
    /// Completed rows are gone and never returned.
    async fn claim_activities(&self, ids: &[i64]) -> Result<Vec<i64>>;

    /// Gives up activity claims (abandoned, stream lost, not sent) so any owner may send
    /// them. Claims no longer held are ignored.
    async fn release_activities(&self, ids: &[i64]) -> Result<()>;

    /// Gives back the claims a commit made on the activities it created
    /// (`CommitOutcome::activities_claimed`) that were not sent; a row claimed since
    /// (`claim_activities`) keeps its claim, so a late call cannot free a newer claim.
    async fn release_unsent_activities(&self, ids: &[i64]) -> Result<()>;

    /// Extends every lease this owner holds by the lease duration. An error means the
    /// database was not reached, and leases older than the duration may be taken over.
    async fn renew_leases(&self) -> Result<()>;

    /// Work that is due and that no other owner holds a live lease on: instances and
    /// entities with a visible message, wake-ups until `horizon`, and unclaimed activities,
    /// at most `limit` of each. The dispatcher's safety sweep; single-process stores,
    /// whose dispatcher already knows all of it, may answer empty.
    async fn due_work(
        &self,
        now: DateTime<Utc>,
        horizon: DateTime<Utc>,
        limit: u32,
    ) -> Result<Recovery>;

    /// Changes made by other processes, for a store shared by several; `None` for a
    /// single-process store. Called once, by the dispatcher.
    fn subscribe(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<StoreChange>>;

    /// Finishes queued writes and releases the database (connections, and the SQLite
    /// file lock, so another process may open it). Later calls fail with `Unavailable`.
    async fn close(&self);
}
