//! Instance records and creation requests.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::events::{event, to_timestamp};
use super::{ExecutionId, InstanceId, RuntimeStatus};
use crate::proto as pb;
use pb::history_event::EventType;

/// Everything stored about an instance besides its history and inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    /// The instance id.
    pub instance_id: InstanceId,
    /// The current execution.
    pub execution_id: ExecutionId,
    /// Orchestrator name.
    pub name: String,
    /// Version of the current execution, if any.
    pub version: Option<String>,
    /// Stored runtime status.
    pub status: RuntimeStatus,
    /// When the instance was created (kept across continue-as-new).
    pub created_at: DateTime<Utc>,
    /// Last change of the record.
    pub last_updated_at: DateTime<Utc>,
    /// When the instance reached a terminal status.
    pub completed_at: Option<DateTime<Utc>>,
    /// A requested future start time, if one was given.
    pub scheduled_start_at: Option<DateTime<Utc>>,
    /// Input of the current execution.
    pub input: Option<String>,
    /// Output, once terminal.
    pub output: Option<String>,
    /// Custom status from the latest committed episode.
    pub custom_status: Option<String>,
    /// Failure details, for FAILED instances only.
    pub failure: Option<pb::TaskFailureDetails>,
    /// Parent instance for sub-orchestrations.
    pub parent_instance_id: Option<InstanceId>,
    /// User tags.
    pub tags: BTreeMap<String, String>,
    /// The last trace context a worker returned for this execution.
    pub trace_context: Option<pb::OrchestrationTraceContext>,
    /// Number of committed history events of the current execution.
    pub history_len: u32,
}

/// A new execution to create: a fresh instance, a replacement, a restart or a child.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInstance {
    /// The instance id.
    pub instance_id: InstanceId,
    /// The first execution's id.
    pub execution_id: ExecutionId,
    /// Orchestrator name.
    pub name: String,
    /// Version, if any.
    pub version: Option<String>,
    /// Input, if any.
    pub input: Option<String>,
    /// User tags.
    pub tags: BTreeMap<String, String>,
    /// A future start time; `None` = start now.
    pub scheduled_start_at: Option<DateTime<Utc>>,
    /// Parent instance for sub-orchestrations.
    pub parent_instance_id: Option<InstanceId>,
    /// The `ExecutionStarted` event put at the head of the inbox.
    pub start_event: pb::HistoryEvent,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// What to do when an instance with the requested id already exists (PROTOCOL.md §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReusePolicy {
    /// No policy in the request: replace a terminal instance, reject a live one.
    ReplaceTerminal,
    /// An explicit `replaceableStatus` list: replace only when the status is listed.
    Replaceable(Vec<RuntimeStatus>),
}

impl ReusePolicy {
    /// Whether an existing instance with `status` may be replaced.
    pub fn allows(&self, status: RuntimeStatus) -> bool {
        match self {
            Self::ReplaceTerminal => status.is_terminal(),
            Self::Replaceable(list) => list.contains(&status),
        }
    }
}

/// A top-level execution to create (`StartInstance`, restart, an entity starting an
/// orchestration): the fields a caller chooses. Converts into a [`NewInstance`].
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// The instance id.
    pub id: InstanceId,
    /// The execution id.
    pub execution_id: ExecutionId,
    /// Orchestrator name.
    pub name: String,
    /// Version.
    pub version: Option<String>,
    /// Input.
    pub input: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// A future start time; `None` = start now.
    pub scheduled: Option<DateTime<Utc>>,
    /// W3C parent trace context to copy into `ExecutionStarted`.
    pub parent_trace_context: Option<pb::TraceContext>,
    /// Creation time.
    pub now: DateTime<Utc>,
}

impl From<NewExecution> for NewInstance {
    fn from(x: NewExecution) -> Self {
        let start = pb::ExecutionStartedEvent {
            name: x.name.clone(),
            version: x.version.clone(),
            input: x.input.clone(),
            orchestration_instance: Some(pb::OrchestrationInstance {
                instance_id: x.id.to_string(),
                execution_id: Some(x.execution_id.to_string()),
            }),
            parent_instance: None,
            scheduled_start_timestamp: x.scheduled.map(to_timestamp),
            parent_trace_context: x.parent_trace_context,
            orchestration_span_id: None,
            tags: x.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        NewInstance {
            instance_id: x.id,
            execution_id: x.execution_id,
            name: x.name,
            version: x.version,
            input: x.input,
            tags: x.tags,
            scheduled_start_at: x.scheduled,
            parent_instance_id: None,
            start_event: event(-1, x.now, EventType::ExecutionStarted(start)),
            created_at: x.now,
        }
    }
}
