//! Fuzzing entry point (the `fuzz/` crate, `grpc_requests` target): one request through
//! the gRPC door exactly as tonic hands it over (decoded message → the
//! `TaskHubSidecarService` method → conversion, validation, use case). Not used by the
//! server itself; public only so an out-of-tree fuzz target can reach the door without a
//! socket. tonic types stay inside this module: the outcome is a status code and message.

use tonic::Request;

use super::Api;
use crate::proto as pb;
use crate::service::AppState;
use pb::task_hub_sidecar_service_server::TaskHubSidecarService;

/// The RPCs [`call`] drives, indexed by its `method` argument (worker streams are left
/// out: they never end by themselves).
pub const METHODS: &[&str] = &[
    "StartInstance",
    "GetInstance",
    "RewindInstance",
    "RestartInstance",
    "WaitForInstanceStart",
    "WaitForInstanceCompletion",
    "RaiseEvent",
    "TerminateInstance",
    "SuspendInstance",
    "ResumeInstance",
    "QueryInstances",
    "ListInstanceIds",
    "PurgeInstances",
    "CompleteActivityTask",
    "CompleteOrchestratorTask",
    "CompleteEntityTask",
    "StreamInstanceHistory",
    "CreateTaskHub",
    "DeleteTaskHub",
    "SignalEntity",
    "GetEntity",
    "QueryEntities",
    "CleanEntityStorage",
    "AbandonTaskActivityWorkItem",
    "AbandonTaskOrchestratorWorkItem",
    "AbandonTaskEntityWorkItem",
    "SkipGracefulOrchestrationTerminations",
];

/// What the door answered: the gRPC status code (0 = OK) and its message.
pub type Outcome = (i32, String);

/// Decodes `body` as the request message of `METHODS[method % METHODS.len()]` and calls
/// that RPC on a door over `state`. `None` when `body` is not a valid message of that type
/// (tonic refuses it before any of our code runs).
pub async fn call(state: &AppState, method: usize, body: &[u8]) -> Option<Outcome> {
    let api = Api {
        hubs: crate::service::TaskHubs::single(state.clone()),
    };
    macro_rules! unary {
        ($rpc:ident, $message:ty) => {{
            let message = <$message as prost::Message>::decode(body).ok()?;
            outcome(api.$rpc(Request::new(message)).await.map(drop))
        }};
    }
    Some(match method % METHODS.len() {
        0 => unary!(start_instance, pb::CreateInstanceRequest),
        1 => unary!(get_instance, pb::GetInstanceRequest),
        2 => unary!(rewind_instance, pb::RewindInstanceRequest),
        3 => unary!(restart_instance, pb::RestartInstanceRequest),
        4 => unary!(wait_for_instance_start, pb::GetInstanceRequest),
        5 => unary!(wait_for_instance_completion, pb::GetInstanceRequest),
        6 => unary!(raise_event, pb::RaiseEventRequest),
        7 => unary!(terminate_instance, pb::TerminateRequest),
        8 => unary!(suspend_instance, pb::SuspendRequest),
        9 => unary!(resume_instance, pb::ResumeRequest),
        10 => unary!(query_instances, pb::QueryInstancesRequest),
        11 => unary!(list_instance_ids, pb::ListInstanceIdsRequest),
        12 => unary!(purge_instances, pb::PurgeInstancesRequest),
        13 => unary!(complete_activity_task, pb::ActivityResponse),
        14 => unary!(complete_orchestrator_task, pb::OrchestratorResponse),
        15 => unary!(complete_entity_task, pb::EntityBatchResult),
        16 => {
            let message =
                <pb::StreamInstanceHistoryRequest as prost::Message>::decode(body).ok()?;
            match api.stream_instance_history(Request::new(message)).await {
                Ok(stream) => {
                    use futures::StreamExt as _;
                    let chunks: Vec<_> = stream.into_inner().collect().await;
                    outcome(chunks.into_iter().collect::<Result<Vec<_>, _>>().map(drop))
                }
                Err(status) => outcome(Err(status)),
            }
        }
        17 => unary!(create_task_hub, pb::CreateTaskHubRequest),
        18 => unary!(delete_task_hub, pb::DeleteTaskHubRequest),
        19 => unary!(signal_entity, pb::SignalEntityRequest),
        20 => unary!(get_entity, pb::GetEntityRequest),
        21 => unary!(query_entities, pb::QueryEntitiesRequest),
        22 => unary!(clean_entity_storage, pb::CleanEntityStorageRequest),
        23 => unary!(
            abandon_task_activity_work_item,
            pb::AbandonActivityTaskRequest
        ),
        24 => unary!(
            abandon_task_orchestrator_work_item,
            pb::AbandonOrchestrationTaskRequest
        ),
        25 => unary!(abandon_task_entity_work_item, pb::AbandonEntityTaskRequest),
        _ => unary!(
            skip_graceful_orchestration_terminations,
            pb::SkipGracefulOrchestrationTerminationsRequest
        ),
    })
}

fn outcome(result: Result<(), tonic::Status>) -> Outcome {
    match result {
        Ok(()) => (0, String::new()),
        Err(status) => (status.code() as i32, status.message().to_owned()),
    }
}
