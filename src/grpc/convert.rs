//! Conversions between wire messages and domain/service types: the only place both meet.

use chrono::{DateTime, Utc};

use crate::domain::events::{from_timestamp, to_timestamp};
use crate::domain::{InstanceRecord, RuntimeStatus};
use crate::proto as pb;
use crate::service::client::{CompletedQuery, InstanceQuery, PurgeCriteria, StartRequest};
use crate::service::entities::{EntityQuery, EntitySignal};
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

/// Wire status numbers → statuses; an unknown number is a malformed request.
fn statuses(raw: &[i32]) -> Result<Vec<RuntimeStatus>, ServiceError> {
    raw.iter()
        .map(|v| {
            RuntimeStatus::from_i32(*v).ok_or_else(|| {
                ServiceError::InvalidArgument(format!("unknown orchestration status value {v}"))
            })
        })
        .collect()
}

/// A wire page size: negative values mean "the default", as 0 does.
fn page_size(raw: i32) -> u32 {
    u32::try_from(raw).unwrap_or(0)
}

/// `InstanceQuery` → `InstanceQuery` (domain).
pub(crate) fn instance_query(q: &pb::InstanceQuery) -> Result<InstanceQuery, ServiceError> {
    Ok(InstanceQuery {
        statuses: statuses(&q.runtime_status)?,
        created_from: time(&q.created_time_from),
        created_to: time(&q.created_time_to),
        id_prefix: q.instance_id_prefix.clone(),
        page_size: page_size(q.max_instance_count),
        continuation_token: q.continuation_token.clone(),
        ..Default::default()
    })
}

/// `ListInstanceIdsRequest` → `CompletedQuery`.
pub(crate) fn completed_query(
    r: &pb::ListInstanceIdsRequest,
) -> Result<CompletedQuery, ServiceError> {
    Ok(CompletedQuery {
        statuses: statuses(&r.runtime_status)?,
        completed_from: time(&r.completed_time_from),
        completed_to: time(&r.completed_time_to),
        page_size: page_size(r.page_size),
        last_instance_key: r.last_instance_key.clone(),
    })
}

/// `PurgeInstanceFilter` → `PurgeCriteria`; a zero or negative timeout means none.
pub(crate) fn purge_criteria(f: &pb::PurgeInstanceFilter) -> Result<PurgeCriteria, ServiceError> {
    let timeout = f.timeout.as_ref().and_then(|d| {
        let secs = u64::try_from(d.seconds).ok()?;
        let nanos = u32::try_from(d.nanos).ok()?;
        Some(std::time::Duration::new(secs, nanos.min(999_999_999)))
    });
    Ok(PurgeCriteria {
        created_from: time(&f.created_time_from),
        created_to: time(&f.created_time_to),
        statuses: statuses(&f.runtime_status)?,
        timeout,
    })
}

/// `SignalEntityRequest` → `EntitySignal`.
pub(crate) fn entity_signal(r: pb::SignalEntityRequest) -> EntitySignal {
    EntitySignal {
        entity_id: r.instance_id,
        operation: r.name,
        input: r.input,
        scheduled_time: time(&r.scheduled_time),
        request_id: r.request_id,
    }
}

/// `EntityQuery` (wire) → `EntityQuery` (domain).
pub(crate) fn entity_query(q: pb::EntityQuery) -> EntityQuery {
    EntityQuery {
        prefix: q.instance_id_starts_with,
        modified_from: time(&q.last_modified_from),
        modified_to: time(&q.last_modified_to),
        include_transient: q.include_transient,
        page_size: q.page_size.map_or(0, page_size),
        token: q.continuation_token,
    }
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
