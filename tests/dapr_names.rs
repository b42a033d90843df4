//! The Dapr Workflow fork of the contract (src/grpc/dapr), driven by raw gRPC calls on its
//! paths with the fork's message shapes, as a Dapr SDK sends and reads them: fork-only
//! RPCs (`ListInstanceIDs`, `GetInstanceHistory`, `RerunWorkflowFromEvent`,
//! `CompleteWorkflowTask`), fork-shaped completions on `CompleteOrchestratorTask`,
//! `taskExecutionId` round trips, purge with `force`, and reflection.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the shared helpers below.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use durabletask_sidecar::proto::{self as pb, dapr};
use prost::Message;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_prost::ProstCodec;

use dapr::workflow_action::WorkflowActionType as Fork;

/// The fork's work item and history messages, as a Dapr worker decodes them: where they
/// differ from upstream's (`ActivityRequest.7`, `TaskScheduledEvent.5`) they are strings.
mod fork {
    use durabletask_sidecar::proto as pb;

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct WorkItem {
        #[prost(message, optional, tag = "1")]
        pub(crate) orchestrator_request: Option<OrchestratorRequest>,
        #[prost(message, optional, tag = "2")]
        pub(crate) activity_request: Option<ActivityRequest>,
        #[prost(message, optional, tag = "4")]
        pub(crate) health_ping: Option<pb::HealthPing>,
        #[prost(string, tag = "10")]
        pub(crate) completion_token: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ActivityRequest {
        #[prost(string, tag = "1")]
        pub(crate) name: String,
        #[prost(message, optional, tag = "3")]
        pub(crate) input: Option<String>,
        #[prost(message, optional, tag = "4")]
        pub(crate) orchestration_instance: Option<pb::OrchestrationInstance>,
        #[prost(int32, tag = "5")]
        pub(crate) task_id: i32,
        #[prost(string, tag = "7")]
        pub(crate) task_execution_id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct OrchestratorRequest {
        #[prost(string, tag = "1")]
        pub(crate) instance_id: String,
        #[prost(message, repeated, tag = "3")]
        pub(crate) past_events: Vec<HistoryEvent>,
        #[prost(message, repeated, tag = "4")]
        pub(crate) new_events: Vec<HistoryEvent>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct HistoryEvent {
        #[prost(int32, tag = "1")]
        pub(crate) event_id: i32,
        #[prost(message, optional, tag = "3")]
        pub(crate) execution_started: Option<pb::ExecutionStartedEvent>,
        #[prost(message, optional, tag = "4")]
        pub(crate) execution_completed: Option<pb::ExecutionCompletedEvent>,
        #[prost(message, optional, tag = "6")]
        pub(crate) task_scheduled: Option<TaskScheduledEvent>,
        #[prost(message, optional, tag = "7")]
        pub(crate) task_completed: Option<pb::TaskCompletedEvent>,
        #[prost(message, optional, tag = "14")]
        pub(crate) orchestrator_started: Option<pb::OrchestratorStartedEvent>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct TaskScheduledEvent {
        #[prost(string, tag = "1")]
        pub(crate) name: String,
        #[prost(message, optional, tag = "3")]
        pub(crate) input: Option<String>,
        #[prost(string, tag = "5")]
        pub(crate) task_execution_id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct GetInstanceHistoryResponse {
        #[prost(message, repeated, tag = "1")]
        pub(crate) events: Vec<HistoryEvent>,
    }
}

async fn channel(server: &TestServer) -> Channel {
    within(
        "connect",
        Channel::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect(),
    )
    .await
    .unwrap()
}

/// A unary call on `/TaskHubSidecarService/<method>`.
async fn call<Req, Resp>(channel: &Channel, method: &str, req: Req) -> Result<Resp, Status>
where
    Req: Message + Send + Sync + 'static,
    Resp: Message + Default + Send + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    within("ready", grpc.ready()).await.unwrap();
    let path = PathAndQuery::try_from(format!("/TaskHubSidecarService/{method}")).unwrap();
    within(
        method,
        grpc.unary(Request::new(req), path, ProstCodec::<Req, Resp>::default()),
    )
    .await
    .map(tonic::Response::into_inner)
}

/// A worker reading `GetWorkItems` with the fork's messages.
struct ForkWorker {
    channel: Channel,
    stream: tonic::Streaming<fork::WorkItem>,
}

impl ForkWorker {
    async fn open(channel: &Channel) -> Self {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        within("ready", grpc.ready()).await.unwrap();
        let stream = within(
            "GetWorkItems",
            grpc.server_streaming(
                Request::new(pb::GetWorkItemsRequest::default()),
                PathAndQuery::from_static("/TaskHubSidecarService/GetWorkItems"),
                ProstCodec::<pb::GetWorkItemsRequest, fork::WorkItem>::default(),
            ),
        )
        .await
        .unwrap()
        .into_inner();
        Self {
            channel: channel.clone(),
            stream,
        }
    }

    async fn next(&mut self) -> fork::WorkItem {
        loop {
            let item = within("work item", self.stream.message())
                .await
                .unwrap()
                .expect("work item stream ended");
            if item.health_ping.is_none() {
                return item;
            }
        }
    }

    async fn orchestration(&mut self) -> (String, fork::OrchestratorRequest) {
        let item = self.next().await;
        let req = item
            .orchestrator_request
            .unwrap_or_else(|| panic!("expected an orchestration work item"));
        (item.completion_token, req)
    }

    async fn activity(&mut self) -> (String, fork::ActivityRequest) {
        let item = self.next().await;
        let req = item
            .activity_request
            .unwrap_or_else(|| panic!("expected an activity work item"));
        (item.completion_token, req)
    }

    /// Completes an episode with the fork's `WorkflowResponse` on `method`.
    async fn complete(
        &self,
        method: &str,
        instance_id: &str,
        token: String,
        actions: Vec<dapr::WorkflowAction>,
        version: Option<dapr::WorkflowVersion>,
    ) {
        let response = dapr::WorkflowResponse {
            instance_id: instance_id.into(),
            actions,
            completion_token: token,
            version,
            ..Default::default()
        };
        let _: pb::CompleteTaskResponse = call(&self.channel, method, response).await.unwrap();
    }
}

/// What the Python SDK sends for `call_activity`: a router inside the action and beside it.
fn activity_action(id: i32, name: &str, input: &str, execution_id: &str) -> dapr::WorkflowAction {
    let router = dapr::TaskRouter {
        source_app_id: "app".into(),
        ..Default::default()
    };
    dapr::WorkflowAction {
        id,
        workflow_action_type: Some(Fork::ScheduleTask(dapr::ScheduleTaskAction {
            name: name.into(),
            input: Some(input.into()),
            router: Some(router.clone()),
            task_execution_id: execution_id.into(),
            ..Default::default()
        })),
        router: Some(router),
    }
}

fn complete_action(id: i32, output: &str) -> dapr::WorkflowAction {
    dapr::WorkflowAction {
        id,
        workflow_action_type: Some(Fork::CompleteWorkflow(pb::CompleteOrchestrationAction {
            orchestration_status: pb::OrchestrationStatus::Completed as i32,
            result: Some(output.into()),
            ..Default::default()
        })),
        router: None,
    }
}

#[tokio::test]
async fn fork_completions_run_activities_with_their_task_execution_ids() {
    let server = TestServer::start().await;
    let channel = channel(&server).await;
    let mut worker = ForkWorker::open(&channel).await;
    server.start_instance("seq-1", "Seq", Some("\"in\"")).await;

    // Episode 1, on the name the 0.17 Python SDK uses.
    let (token, req) = worker.orchestration().await;
    assert_eq!(req.instance_id, "seq-1");
    worker
        .complete(
            "CompleteOrchestratorTask",
            "seq-1",
            token,
            vec![activity_action(0, "Greet", "\"a\"", "exec-0")],
            None,
        )
        .await;

    let (token, act) = worker.activity().await;
    assert_eq!(act.name, "Greet");
    assert_eq!(act.input.as_deref(), Some("\"a\""));
    assert_eq!(act.task_execution_id, "exec-0");
    let _: pb::CompleteTaskResponse = call(
        &channel,
        "CompleteActivityTask",
        pb::ActivityResponse {
            instance_id: "seq-1".into(),
            task_id: act.task_id,
            result: Some("\"hello a\"".into()),
            completion_token: token,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // Episode 2: the replayed TaskScheduled event carries the id in the fork's field;
    // completed on the fork's new name.
    let (token, req) = worker.orchestration().await;
    let scheduled = req
        .past_events
        .iter()
        .find_map(|e| e.task_scheduled.clone())
        .expect("TaskScheduled in past events");
    assert_eq!(
        (
            scheduled.name.as_str(),
            scheduled.task_execution_id.as_str()
        ),
        ("Greet", "exec-0")
    );
    assert!(req.new_events.iter().any(|e| e.task_completed.is_some()));
    worker
        .complete(
            "CompleteWorkflowTask",
            "seq-1",
            token,
            vec![complete_action(1, "\"done\"")],
            None,
        )
        .await;

    let state = server.wait_completion("seq-1").await;
    assert_eq!(
        state.orchestration_status,
        pb::OrchestrationStatus::Completed as i32
    );
    assert_eq!(state.output.as_deref(), Some("\"done\""));

    // GetInstanceHistory: the whole history, TaskScheduled in the fork's shape.
    let history: fork::GetInstanceHistoryResponse = call(
        &channel,
        "GetInstanceHistory",
        dapr::GetInstanceHistoryRequest {
            instance_id: "seq-1".into(),
        },
    )
    .await
    .unwrap();
    let events = &history.events;
    assert!(events[0].orchestrator_started.is_some(), "{events:?}");
    assert!(events[1].execution_started.is_some(), "{events:?}");
    assert!(events.last().unwrap().execution_completed.is_some());
    let ids: Vec<_> = events
        .iter()
        .filter_map(|e| e.task_scheduled.as_ref())
        .map(|t| t.task_execution_id.as_str())
        .collect();
    assert_eq!(ids, ["exec-0"]);
}

#[tokio::test]
async fn get_instance_history_of_an_unknown_instance_is_not_found() {
    let server = TestServer::start().await;
    let channel = channel(&server).await;
    let err = call::<_, dapr::GetInstanceHistoryResponse>(
        &channel,
        "GetInstanceHistory",
        dapr::GetInstanceHistoryRequest {
            instance_id: "nobody".into(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

#[tokio::test]
async fn list_instance_ids_lists_every_status_and_pages() {
    let server = TestServer::start().await;
    let channel = channel(&server).await;
    for id in ["list-a", "list-b", "list-c"] {
        server.start_instance(id, "Orch", None).await;
    }
    // A terminal one too: upstream's ListInstanceIds would list only this one.
    server
        .client()
        .terminate_instance(pb::TerminateRequest {
            instance_id: "list-b".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let all: dapr::ListInstanceIDsResponse = call(
        &channel,
        "ListInstanceIDs",
        dapr::ListInstanceIDsRequest::default(),
    )
    .await
    .unwrap();
    let mut ids = all.instance_ids.clone();
    ids.sort();
    assert_eq!(ids, ["list-a", "list-b", "list-c"]);
    assert_eq!(all.continuation_token, None);

    let first: dapr::ListInstanceIDsResponse = call(
        &channel,
        "ListInstanceIDs",
        dapr::ListInstanceIDsRequest {
            continuation_token: None,
            page_size: Some(2),
        },
    )
    .await
    .unwrap();
    assert_eq!(first.instance_ids.len(), 2);
    let token = first.continuation_token.expect("a second page");
    let second: dapr::ListInstanceIDsResponse = call(
        &channel,
        "ListInstanceIDs",
        dapr::ListInstanceIDsRequest {
            continuation_token: Some(token),
            page_size: Some(2),
        },
    )
    .await
    .unwrap();
    assert_eq!(second.instance_ids.len(), 1);
    assert_eq!(second.continuation_token, None);
    let mut paged = [first.instance_ids, second.instance_ids].concat();
    paged.sort();
    assert_eq!(paged, ids);
}

#[tokio::test]
async fn rerun_workflow_from_event_is_unimplemented_with_the_reason() {
    let server = TestServer::start().await;
    let channel = channel(&server).await;
    let err = call::<_, dapr::RerunWorkflowFromEventResponse>(
        &channel,
        "RerunWorkflowFromEvent",
        dapr::RerunWorkflowFromEventRequest {
            source_instance_id: "x".into(),
            event_id: 3,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("RerunWorkflowFromEvent"), "{err:?}");
}

#[tokio::test]
async fn version_not_available_hands_the_episode_back_for_redelivery() {
    let server = TestServer::start().await;
    let channel = channel(&server).await;
    let mut worker = ForkWorker::open(&channel).await;
    server.start_instance("stalled-1", "Versioned", None).await;
    let (token, _) = worker.orchestration().await;
    let stalled = dapr::WorkflowAction {
        id: 0,
        workflow_action_type: Some(Fork::WorkflowVersionNotAvailable(
            dapr::WorkflowVersionNotAvailableAction {},
        )),
        router: None,
    };
    worker
        .complete(
            "CompleteOrchestratorTask",
            "stalled-1",
            token,
            vec![stalled],
            None,
        )
        .await;
    // Nothing was committed: the instance has not even started.
    assert_eq!(
        server.get("stalled-1").await.unwrap().orchestration_status,
        pb::OrchestrationStatus::Pending as i32
    );
    // Redelivered (the abandon back-off starts at zero); a worker that has it finishes.
    let (token, req) = worker.orchestration().await;
    assert!(req.past_events.is_empty(), "nothing was committed: {req:?}");
    worker
        .complete(
            "CompleteWorkflowTask",
            "stalled-1",
            token,
            vec![complete_action(0, "1")],
            None,
        )
        .await;
    assert_eq!(
        server
            .wait_completion("stalled-1")
            .await
            .orchestration_status,
        pb::OrchestrationStatus::Completed as i32
    );
}

#[tokio::test]
async fn patches_fail_the_workflow_with_the_reason() {
    let server = TestServer::start().await;
    let channel = channel(&server).await;
    let mut worker = ForkWorker::open(&channel).await;
    server.start_instance("patched-1", "Patched", None).await;
    let (token, _) = worker.orchestration().await;
    worker
        .complete(
            "CompleteOrchestratorTask",
            "patched-1",
            token,
            vec![activity_action(0, "Greet", "1", "exec-p")],
            Some(dapr::WorkflowVersion {
                patches: vec!["fix-1".into()],
                name: None,
            }),
        )
        .await;
    let state = server.wait_completion("patched-1").await;
    assert_eq!(
        state.orchestration_status,
        pb::OrchestrationStatus::Failed as i32
    );
    let failure = state.failure_details.unwrap();
    assert_eq!(failure.error_type, "UnsupportedDaprFeature");
    assert!(failure.error_message.contains("is_patched"), "{failure:?}");
}

#[tokio::test]
async fn upstream_completions_keep_tags_and_trace_context() {
    let server = TestServer::start().await;
    let mut w = WorkStream::open(server.client(), pb::GetWorkItemsRequest::default()).await;
    server.start_instance("up-1", "Up", None).await;
    let (token, _) = w.orchestration().await;
    let trace = pb::TraceContext {
        trace_parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        trace_state: Some("k=v".into()),
        ..Default::default()
    };
    let task = pb::ScheduleTaskAction {
        name: "Act".into(),
        tags: [("team".to_string(), "blue".to_string())].into(),
        parent_trace_context: Some(trace.clone()),
        ..Default::default()
    };
    server
        .client()
        .complete_orchestrator_task(pb::OrchestratorResponse {
            instance_id: "up-1".into(),
            actions: vec![act(
                0,
                pb::orchestrator_action::OrchestratorActionType::ScheduleTask(task),
            )],
            completion_token: token,
            orchestration_trace_context: Some(pb::OrchestrationTraceContext {
                span_id: Some("b7ad6b7169203331".into()),
                span_start_time: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, activity) = w.activity().await;
    assert_eq!(activity.tags.get("team").map(String::as_str), Some("blue"));
    assert_eq!(activity.parent_trace_context, Some(trace));
}

#[tokio::test]
async fn purge_with_force_purges_terminal_instances_and_refuses_live_ones() {
    let server = TestServer::start().await;
    let channel = channel(&server).await;
    server.start_instance("purge-done", "Orch", None).await;
    server.start_instance("purge-live", "Orch", None).await;
    server
        .client()
        .terminate_instance(pb::TerminateRequest {
            instance_id: "purge-done".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let purge = |id: &str, force: Option<bool>| dapr::PurgeInstancesRequest {
        request: Some(dapr::purge_instances_request::Request::InstanceId(
            id.into(),
        )),
        recursive: true,
        force,
    };

    let err = call::<_, pb::PurgeInstancesResponse>(
        &channel,
        "PurgeInstances",
        purge("purge-live", Some(true)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(server.get("purge-live").await.is_some());

    let done: pb::PurgeInstancesResponse =
        call(&channel, "PurgeInstances", purge("purge-done", Some(true)))
            .await
            .unwrap();
    assert_eq!(done.deleted_instance_count, 1);
    assert_eq!(done.is_complete, Some(true));
    assert!(server.get("purge-done").await.is_none());

    // Without `force` the message is upstream's: a live instance is left alone.
    let live: pb::PurgeInstancesResponse =
        call(&channel, "PurgeInstances", purge("purge-live", None))
            .await
            .unwrap();
    assert_eq!(live.deleted_instance_count, 0);
}

#[tokio::test]
async fn reflection_lists_the_fork_methods_under_task_hub_sidecar_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let server = TestServer::start().await;
    let mut client = ServerReflectionClient::new(channel(&server).await);
    let ask = |m: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let requests = vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "TaskHubSidecarService".into(),
        )),
        ask(MessageRequest::FileByFilename("dapr.proto".into())),
    ];
    let mut replies = within(
        "reflection",
        client.server_reflection_info(futures::stream::iter(requests)),
    )
    .await
    .unwrap()
    .into_inner();
    let mut got = Vec::new();
    for _ in 0..3 {
        let reply = within("reflection reply", replies.message()).await;
        got.push(reply.unwrap().unwrap().message_response.unwrap());
    }
    let [services, service_file, dapr_file] = <[MessageResponse; 3]>::try_from(got).unwrap();

    let MessageResponse::ListServicesResponse(list) = services else {
        panic!("expected a service list")
    };
    let services: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(services.contains(&"TaskHubSidecarService"), "{services:?}");
    assert!(
        !services.iter().any(|s| s.starts_with("dapr.")),
        "{services:?}"
    );

    let MessageResponse::FileDescriptorResponse(files) = service_file else {
        panic!("expected a file descriptor")
    };
    let file = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice())
        .unwrap();
    let methods: Vec<_> = file.service[0].method.iter().map(|m| m.name()).collect();
    for m in [
        "ListInstanceIds",
        "CompleteOrchestratorTask",
        "ListInstanceIDs",
        "GetInstanceHistory",
        "RerunWorkflowFromEvent",
        "CompleteWorkflowTask",
    ] {
        assert!(methods.contains(&m), "{m} missing from {methods:?}");
    }

    let MessageResponse::FileDescriptorResponse(files) = dapr_file else {
        panic!("expected dapr.proto")
    };
    let dapr_file =
        prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice())
            .unwrap();
    assert_eq!(dapr_file.package(), "dapr");
}
