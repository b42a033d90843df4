//! Handlers of the routes `DaprCompat` serves itself. Requests arrive as raw bytes;
//! whatever reads as upstream's message goes to the ordinary `Api` handler unchanged.

use prost::bytes::Bytes;
use tonic::{Request, Response, Status};

use super::completion::{self, Completion};
use super::encode::{decode, History};
use super::wire;
use crate::grpc::{Api, BoxStream, Rpc};
use crate::proto::{self as pb, dapr};
use crate::service::client::{InstanceQuery, MAX_PAGE_SIZE};
use crate::service::AppState;
use pb::task_hub_sidecar_service_server::TaskHubSidecarService;

/// Decodes the body of `req` as `M`, keeping its metadata.
fn decoded<M: prost::Message + Default>(req: Request<Bytes>) -> Result<Request<M>, Status> {
    let (metadata, extensions, body) = req.into_parts();
    Ok(Request::from_parts(metadata, extensions, decode(&body)?))
}

/// `CompleteOrchestratorTask` (either contract, told apart by `wire::is_fork_response`)
/// and `CompleteWorkflowTask` (`fork_only`: the fork's contract).
pub(super) async fn complete(
    api: Api,
    req: Request<Bytes>,
    fork_only: bool,
) -> Rpc<pb::CompleteTaskResponse> {
    if !fork_only && !wire::is_fork_response(req.get_ref()) {
        return api.complete_orchestrator_task(decoded(req)?).await;
    }
    let state = api.hub(&req).await?;
    let (metadata, extensions, body) = req.into_parts();
    let response: dapr::WorkflowResponse = decode(&body)?;
    tracing::debug!(
        rpc = if fork_only { "CompleteWorkflowTask" } else { "CompleteOrchestratorTask" },
        instance_id = %response.instance_id,
        "completion in the Dapr fork's shape"
    );
    match completion::from_fork(response) {
        Completion::Apply(response) => {
            api.complete_orchestrator_task(Request::from_parts(metadata, extensions, response))
                .await
        }
        Completion::Abandon { completion_token } => {
            tracing::warn!(
                token = %completion_token,
                "worker has no orchestrator of this workflow's version; work item handed back"
            );
            state.abandon_orchestration(&completion_token);
            Ok(Response::new(pb::CompleteTaskResponse {}))
        }
    }
}

/// `GetWorkItems`: upstream's handler; the route's codec writes the items.
pub(super) async fn get_work_items(api: Api, req: Request<Bytes>) -> Rpc<BoxStream<pb::WorkItem>> {
    api.get_work_items(decoded(req)?).await
}

/// `PurgeInstances`, where the fork's field 4 is `force` (a varint) and upstream's the
/// `instanceBatch` message.
pub(super) async fn purge_instances(
    api: Api,
    req: Request<Bytes>,
) -> Rpc<pb::PurgeInstancesResponse> {
    let Some(force) = wire::purge_force(req.get_ref()) else {
        return api.purge_instances(decoded(req)?).await;
    };
    let state = api.hub(&req).await?;
    let (metadata, extensions, body) = req.into_parts();
    let fork: dapr::PurgeInstancesRequest = decode(&body)?;
    use dapr::purge_instances_request::Request as Fork;
    use pb::purge_instances_request::Request as Target;
    let request = match fork.request {
        Some(Fork::InstanceId(id)) => {
            if force {
                refuse_live(&state, &id).await?;
            }
            Some(Target::InstanceId(id))
        }
        // A filter matches terminal instances only, forced or not.
        Some(Fork::PurgeInstanceFilter(filter)) => Some(Target::PurgeInstanceFilter(filter)),
        None => None,
    };
    let upstream = pb::PurgeInstancesRequest {
        request,
        recursive: fork.recursive,
        ..Default::default()
    };
    api.purge_instances(Request::from_parts(metadata, extensions, upstream))
        .await
}

/// A forced purge (Dapr: delete whatever the instance's state) of a live instance is
/// refused: only terminal instances can be purged here.
async fn refuse_live(state: &AppState, id: &str) -> Result<(), Status> {
    match state.get_instance(id).await? {
        Some(record) if !record.status.is_terminal() => Err(Status::failed_precondition(format!(
            "instance '{id}' is {}: this sidecar purges terminal instances only, even with \
             force; terminate it first",
            record.status.name()
        ))),
        _ => Ok(()),
    }
}

/// `ListInstanceIDs`: every instance whatever its status, oldest first. Without a
/// `pageSize` (or with 0) every id is returned in one reply, as Dapr does.
pub(super) async fn list_instance_ids(
    api: Api,
    req: Request<Bytes>,
) -> Rpc<dapr::ListInstanceIDsResponse> {
    let state = api.hub(&req).await?;
    let req: dapr::ListInstanceIDsRequest = decoded(req)?.into_inner();
    let page_size = req.page_size.filter(|n| *n > 0);
    let mut query = InstanceQuery {
        page_size: page_size.map_or(MAX_PAGE_SIZE, |n| n.min(MAX_PAGE_SIZE)),
        continuation_token: req.continuation_token.filter(|t| !t.is_empty()),
        ..Default::default()
    };
    let mut instance_ids = Vec::new();
    loop {
        let page = state.query_instances(&query).await?;
        instance_ids.extend(page.items.into_iter().map(|r| r.instance_id.into_string()));
        match page.next {
            Some(next) if page_size.is_none() => query.continuation_token = Some(next),
            continuation_token => {
                return Ok(Response::new(dapr::ListInstanceIDsResponse {
                    instance_ids,
                    continuation_token,
                }))
            }
        }
    }
}

/// `GetInstanceHistory`: the current execution's committed history.
pub(super) async fn get_instance_history(api: Api, req: Request<Bytes>) -> Rpc<History> {
    let state = api.hub(&req).await?;
    let req: dapr::GetInstanceHistoryRequest = decoded(req)?.into_inner();
    let events = state.instance_history(&req.instance_id, None).await?;
    Ok(Response::new(History(events)))
}

/// `RerunWorkflowFromEvent`: not supported.
pub(super) async fn rerun_workflow_from_event(
    req: Request<Bytes>,
) -> Rpc<dapr::RerunWorkflowFromEventResponse> {
    let _: Request<dapr::RerunWorkflowFromEventRequest> = decoded(req)?;
    Err(Status::unimplemented(
        "RerunWorkflowFromEvent is not supported by this sidecar: a rerun starts a new \
         instance from a copy of the source instance's history up to eventID, and this \
         engine only starts instances from an ExecutionStarted event",
    ))
}
