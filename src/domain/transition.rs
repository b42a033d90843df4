//! The result of applying one episode's actions: everything one commit writes.

use chrono::{DateTime, Utc};

use super::{ExecutionId, InstanceId, NewInstance, RuntimeStatus};
use crate::proto as pb;

/// How an episode changes the stored status.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusChange {
    /// The execution goes on: PENDING becomes RUNNING; RUNNING and SUSPENDED stay as the
    /// suspend/resume RPCs left them (PROTOCOL.md §3.6).
    Progress,
    /// The execution ended with this terminal status.
    Terminal {
        /// COMPLETED, FAILED, TERMINATED or CANCELED.
        status: RuntimeStatus,
        /// The output (`result`).
        output: Option<String>,
        /// Failure details for FAILED.
        failure: Option<pb::TaskFailureDetails>,
    },
    /// Continue-as-new: a new execution of the same instance starts.
    ContinuedAsNew {
        /// The new execution id.
        execution_id: ExecutionId,
        /// The new input.
        input: Option<String>,
        /// The new version.
        version: Option<String>,
        /// New inbox head: `ExecutionStarted` then the carry-over events, placed before
        /// every message already waiting in the inbox.
        inbox_head: Vec<pb::HistoryEvent>,
    },
}

/// A message into some instance's inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    /// Target instance.
    pub target: InstanceId,
    /// When set, the message is dropped unless this is still the target's execution.
    pub target_execution: Option<ExecutionId>,
    /// The event to deliver.
    pub event: pb::HistoryEvent,
    /// Not visible before this time (timers).
    pub visible_at: DateTime<Utc>,
}

/// An activity to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewActivity {
    /// The `TaskScheduled` event (eventId = task id).
    pub scheduled: pb::HistoryEvent,
}

/// A sub-orchestration to create with the parent's commit.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildCreation {
    /// The child.
    pub instance: NewInstance,
    /// Sent to the parent instead when a live instance already has the child's id.
    pub on_conflict: OutboundMessage,
}

/// Everything one orchestration episode commits, in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The instance.
    pub instance_id: InstanceId,
    /// Guard: the execution the episode ran against.
    pub expected_execution_id: ExecutionId,
    /// Guard: the history length the episode saw.
    pub expected_history_len: u32,
    /// Inbox rows consumed by this episode (delivered or dropped as stale).
    pub consumed: Vec<i64>,
    /// Events appended to the history of the episode's execution.
    pub history_append: Vec<pb::HistoryEvent>,
    /// Status effect.
    pub status: StatusChange,
    /// The custom status to store (replaces the old one).
    pub custom_status: Option<String>,
    /// The trace context the worker returned, if any.
    pub trace_context: Option<pb::OrchestrationTraceContext>,
    /// Activities to enqueue (for the episode's execution).
    pub activities: Vec<NewActivity>,
    /// Messages to this or other instances (timers, events, terminations, parent notices).
    pub messages: Vec<OutboundMessage>,
    /// Sub-orchestrations to create.
    pub children: Vec<ChildCreation>,
    /// Commit time.
    pub now: DateTime<Utc>,
}
