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

/// The range a protobuf `Timestamp` may hold (its own definition: 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999999999Z).
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

/// An optional wire time; out-of-range seconds or nanos are a malformed request, not a
/// time to clamp.
fn time(
    field: &str,
    t: &Option<prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, ServiceError> {
    let Some(t) = t else { return Ok(None) };
    if !(0..=999_999_999).contains(&t.nanos) {
        return Err(ServiceError::InvalidArgument(format!(
            "{field}: nanos must lie in 0..=999999999, got {}",
            t.nanos
        )));
    }
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&t.seconds) {
        return Err(ServiceError::InvalidArgument(format!(
            "{field}: seconds {} is outside the timestamp range 0001-01-01..9999-12-31",
            t.seconds
        )));
    }
    Ok(Some(from_timestamp(t)))
}

/// Wire status numbers → statuses; an unknown number is a malformed request.
fn statuses(field: &str, raw: &[i32]) -> Result<Vec<RuntimeStatus>, ServiceError> {
    raw.iter()
        .map(|v| {
            RuntimeStatus::from_i32(*v).ok_or_else(|| {
                ServiceError::InvalidArgument(format!(
                    "{field}: unknown orchestration status value {v}"
                ))
            })
        })
        .collect()
}

/// A wire page size: 0 means the server's default; a negative one is malformed.
fn page_size(field: &str, raw: i32) -> Result<u32, ServiceError> {
    u32::try_from(raw).map_err(|_| {
        ServiceError::InvalidArgument(format!("{field} must not be negative, got {raw}"))
    })
}

/// `InstanceQuery` → `InstanceQuery` (domain).
pub(crate) fn instance_query(q: &pb::InstanceQuery) -> Result<InstanceQuery, ServiceError> {
    Ok(InstanceQuery {
        statuses: statuses("query.runtimeStatus", &q.runtime_status)?,
        created_from: time("query.createdTimeFrom", &q.created_time_from)?,
        created_to: time("query.createdTimeTo", &q.created_time_to)?,
        id_prefix: q.instance_id_prefix.clone(),
        page_size: page_size("query.maxInstanceCount", q.max_instance_count)?,
        continuation_token: q.continuation_token.clone(),
        ..Default::default()
    })
}

/// `ListInstanceIdsRequest` → `CompletedQuery`.
pub(crate) fn completed_query(
    r: &pb::ListInstanceIdsRequest,
) -> Result<CompletedQuery, ServiceError> {
    Ok(CompletedQuery {
        statuses: statuses("runtimeStatus", &r.runtime_status)?,
        completed_from: time("completedTimeFrom", &r.completed_time_from)?,
        completed_to: time("completedTimeTo", &r.completed_time_to)?,
        page_size: page_size("pageSize", r.page_size)?,
        last_instance_key: r.last_instance_key.clone(),
    })
}

/// `PurgeInstanceFilter` → `PurgeCriteria`; a zero timeout means none.
pub(crate) fn purge_criteria(f: &pb::PurgeInstanceFilter) -> Result<PurgeCriteria, ServiceError> {
    let timeout = match &f.timeout {
        None => None,
        Some(d) => {
            let (Ok(secs), Ok(nanos)) = (u64::try_from(d.seconds), u32::try_from(d.nanos)) else {
                return Err(ServiceError::InvalidArgument(format!(
                    "purgeInstanceFilter.timeout must not be negative, got {}s {}ns",
                    d.seconds, d.nanos
                )));
            };
            if nanos > 999_999_999 {
                return Err(ServiceError::InvalidArgument(format!(
                    "purgeInstanceFilter.timeout: nanos must lie in 0..=999999999, got {nanos}"
                )));
            }
            Some(std::time::Duration::new(secs, nanos)).filter(|d| !d.is_zero())
        }
    };
    Ok(PurgeCriteria {
        created_from: time("purgeInstanceFilter.createdTimeFrom", &f.created_time_from)?,
        created_to: time("purgeInstanceFilter.createdTimeTo", &f.created_time_to)?,
        statuses: statuses("purgeInstanceFilter.runtimeStatus", &f.runtime_status)?,
        timeout,
    })
}

/// `SignalEntityRequest` → `EntitySignal`.
pub(crate) fn entity_signal(r: pb::SignalEntityRequest) -> Result<EntitySignal, ServiceError> {
    Ok(EntitySignal {
        scheduled_time: time("scheduledTime", &r.scheduled_time)?,
        entity_id: r.instance_id,
        operation: r.name,
        input: r.input,
        request_id: r.request_id,
    })
}

/// `EntityQuery` (wire) → `EntityQuery` (domain).
pub(crate) fn entity_query(q: pb::EntityQuery) -> Result<EntityQuery, ServiceError> {
    Ok(EntityQuery {
        modified_from: time("query.lastModifiedFrom", &q.last_modified_from)?,
        modified_to: time("query.lastModifiedTo", &q.last_modified_to)?,
        page_size: match q.page_size {
            None => 0,
            Some(n) => page_size("query.pageSize", n)?,
        },
        prefix: q.instance_id_starts_with,
        include_transient: q.include_transient,
        token: q.continuation_token,
    })
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
                            "orchestrationIdReusePolicy.replaceableStatus: unknown orchestration status value {v}"
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
        scheduled_start: time("scheduledStartTimestamp", &req.scheduled_start_timestamp)?,
        reuse_policy,
        execution_id: req.execution_id,
        tags: req.tags.into_iter().collect(),
        parent_trace_context: req.parent_trace_context,
    })
}
