//! What one rewind writes (PROTOCOL.md §4.10): the engine plans it from a snapshot of the
//! instances involved, the store applies it in one transaction, guarded so that a change
//! since the snapshot makes the whole rewind fail and be planned again.

use chrono::{DateTime, Utc};

use super::{ExecutionId, InstanceId, NewInstance, OutboundMessage, RuntimeStatus};
use crate::proto as pb;

/// Everything one rewind commits, in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct RewindPlan {
    /// The rewound executions: the requested instance first, then its failed descendants.
    pub executions: Vec<RewoundExecution>,
    /// Purged children, created again from their `SubOrchestrationInstanceCreated`.
    pub recreated: Vec<NewInstance>,
    /// Live children whose stored parent link moves to the parent's new execution.
    pub relinked: Vec<ParentRelink>,
    /// Commit time.
    pub now: DateTime<Utc>,
}

/// One execution replaced by its rewound successor.
#[derive(Debug, Clone, PartialEq)]
pub struct RewoundExecution {
    /// The instance.
    pub instance_id: InstanceId,
    /// Guard: the stored execution.
    pub expected_execution_id: ExecutionId,
    /// Guard: the stored history length.
    pub expected_history_len: u32,
    /// Guard: the stored status (FAILED for `RewindInstance`; the episode's status for a
    /// worker's `rewindOrchestration` action).
    pub expected_status: RuntimeStatus,
    /// Inbox rows consumed with the rewind (the worker episode's; none for the RPC).
    pub consumed: Vec<i64>,
    /// The new execution id.
    pub execution_id: ExecutionId,
    /// The history that replaces the stored one.
    pub history: Vec<pb::HistoryEvent>,
    /// `TaskScheduled` events of the new history that have no result: their activity rows
    /// move to the new execution, and rows that are gone (the result was dropped while the
    /// instance was terminal) are created again.
    pub pending_tasks: Vec<pb::HistoryEvent>,
    /// Inbox messages for the new execution, in order: the wake-up trigger first.
    pub messages: Vec<OutboundMessage>,
}

/// A live child's parent link, moved to the parent's new execution so that its
/// completion is not dropped by the execution check of PROTOCOL.md §4.5.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentRelink {
    /// The child.
    pub instance_id: InstanceId,
    /// Guard: the child's stored parent.
    pub parent_instance_id: InstanceId,
    /// The parent's new execution.
    pub parent_execution_id: ExecutionId,
}
