//! Client RPCs that need more than a one-line delegation: request conversion and
//! response assembly.

use tonic::{Response, Status};

use super::convert::{instance_query, orchestration_state, purge_criteria, start_request};
use super::Rpc;
use crate::proto as pb;
use crate::service::client::WaitFor;
use crate::service::AppState;

pub(super) async fn start_instance(
    state: &AppState,
    req: pb::CreateInstanceRequest,
) -> Rpc<pb::CreateInstanceResponse> {
    let id = state.start_instance(start_request(req)?).await?;
    Ok(Response::new(pb::CreateInstanceResponse {
        instance_id: id.into_string(),
    }))
}

fn instance_response(
    record: Option<crate::domain::InstanceRecord>,
    payloads: bool,
) -> pb::GetInstanceResponse {
    match record {
        Some(r) => pb::GetInstanceResponse {
            exists: true,
            orchestration_state: Some(orchestration_state(r, payloads)),
        },
        None => pb::GetInstanceResponse {
            exists: false,
            orchestration_state: None,
        },
    }
}

pub(super) async fn get_instance(
    state: &AppState,
    req: pb::GetInstanceRequest,
) -> Rpc<pb::GetInstanceResponse> {
    let record = state.get_instance(&req.instance_id).await?;
    Ok(Response::new(instance_response(
        record,
        req.get_inputs_and_outputs,
    )))
}

pub(super) async fn wait(
    state: &AppState,
    req: pb::GetInstanceRequest,
    until: WaitFor,
    deadline: Option<std::time::Duration>,
) -> Rpc<pb::GetInstanceResponse> {
    let record = state
        .wait_for_instance(&req.instance_id, until, deadline)
        .await?;
    Ok(Response::new(instance_response(
        record,
        req.get_inputs_and_outputs,
    )))
}

pub(super) async fn restart_instance(
    state: &AppState,
    req: pb::RestartInstanceRequest,
) -> Rpc<pb::RestartInstanceResponse> {
    let id = state
        .restart_instance(&req.instance_id, req.restart_with_new_instance_id)
        .await?;
    Ok(Response::new(pb::RestartInstanceResponse {
        instance_id: id.into_string(),
    }))
}

pub(super) async fn query_instances(
    state: &AppState,
    req: pb::QueryInstancesRequest,
) -> Rpc<pb::QueryInstancesResponse> {
    let query = req.query.unwrap_or_default();
    let page = state.query_instances(&instance_query(&query)?).await?;
    Ok(Response::new(pb::QueryInstancesResponse {
        orchestration_state: page
            .items
            .into_iter()
            .map(|r| orchestration_state(r, query.fetch_inputs_and_outputs))
            .collect(),
        continuation_token: page.next,
    }))
}

pub(super) async fn purge_instances(
    state: &AppState,
    req: pb::PurgeInstancesRequest,
) -> Rpc<pb::PurgeInstancesResponse> {
    use pb::purge_instances_request::Request as Target;
    let (count, complete) = match req.request {
        Some(Target::InstanceId(id)) => (state.purge_instance(&id, req.recursive).await?, true),
        Some(Target::InstanceBatch(batch)) => (
            state
                .purge_batch(&batch.instance_ids, req.recursive)
                .await?,
            true,
        ),
        Some(Target::PurgeInstanceFilter(filter)) => {
            state
                .purge_where(&purge_criteria(&filter)?, req.recursive)
                .await?
        }
        None => return Err(Status::invalid_argument(
            "PurgeInstancesRequest needs one of instanceId, purgeInstanceFilter or instanceBatch",
        )),
    };
    Ok(Response::new(pb::PurgeInstancesResponse {
        deleted_instance_count: i32::try_from(count).unwrap_or(i32::MAX),
        is_complete: Some(complete),
    }))
}
