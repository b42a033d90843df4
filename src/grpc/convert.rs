//! Conversions between wire messages and domain/service types: the only place both meet.

use chrono::{DateTime, Utc};

use crate::domain::events::{from_timestamp, to_timestamp};
use crate::domain::{InstanceRecord, RuntimeStatus};
use crate::proto as pb;
use crate::service::client::StartRequest;
use crate::service::ServiceError;

/// Builds `OrchestrationState` per PROTOCOL.md §3.2. Failure details are always included
/// for FAILED instances; payloads only when asked for.
pub(crate) fn orchestration_state(
    r: InstanceRecord,
    with_payloads: bool,
) -> pb::OrchestrationState {
    let non_empty = |s: Option<String>| s.filter(|v| !v.is_empty());
    let terminal = r.status.is_terminal();
    pb::OrchestrationState {
        instance_id: r.instance_id.into_string(),
        name: r.name,
        version: r.version,
        orchestration_status: r.status.as_i32(),
        scheduled_start_timestamp: r.scheduled_start_at.map(to_timestamp),
        created_timestamp: Some(to_timestamp(r.created_at)),
        last_updated_timestamp: Some(to_timestamp(r.last_updated_at)),
        input: if with_payloads { r.input } else { None },
        output: if with_payloads { r.output } else { None },
        // An empty custom status counts as none for Java and Python clients.
        custom_status: if with_payloads {
            non_empty(r.custom_status)
        } else {
            None
        },
        failure_details: if r.status == RuntimeStatus::Failed {
            r.failure
        } else {
            None
        },
        execution_id: Some(r.execution_id.to_string()),
        completed_timestamp: if terminal {
            r.completed_at.map(to_timestamp)
        } else {
            None
        },
        parent_instance_id: r.parent_instance_id.map(|p| p.into_string()),
        tags: r.tags.into_iter().collect(),
    }
}

fn time(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref().map(from_timestamp)
}

/// `CreateInstanceRequest` → `StartRequest`.
pub(crate) fn start_request(req: pb::CreateInstanceRequest) -> Result<StartRequest, ServiceError> {
    let reuse_policy = match req.orchestration_id_reuse_policy {
        None => None,
        Some(p) => Some(
            p.replaceable_status
                .iter()
                .map(|v| {
                    RuntimeStatus::from_i32(*v).ok_or_else(|| {
                        ServiceError::InvalidArgument(format!(
                            "unknown orchestration status value {v} in replaceableStatus"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(StartRequest {
        instance_id: req.instance_id,
        name: req.name,
        version: req.version,
        input: req.input,
        scheduled_start: time(&req.scheduled_start_timestamp),
        reuse_policy,
        execution_id: req.execution_id,
        tags: req.tags.into_iter().collect(),
        parent_trace_context: req.parent_trace_context,
    })
}
