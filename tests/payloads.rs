//! Large payloads and chunked completions (PROTOCOL.md §1.2, §4.4.8): 16 MiB inputs,
//! outputs and events round-trip; a request over the limit is RESOURCE_EXHAUSTED and
//! writes nothing; `isPartial` chunks are held until the last one commits them together.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the shared helpers below.
#![allow(clippy::unwrap_used)]
#![allow(deprecated)] // isPartial / chunkIndex: deprecated upstream, still sent by .NET and Java

mod common;

use common::*;
use durabletask_sidecar::grpc::GrpcOptions;
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::server::ServerOptions;
use pb::history_event::EventType;
use tonic::Code;

const MIB: usize = 1024 * 1024;

/// A client whose own limits do not get in the way of big messages.
async fn big_client(server: &TestServer) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    client_of(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

fn json_string_of(len: usize) -> String {
    format!("\"{}\"", "x".repeat(len - 2))
}

#[tokio::test]
async fn sixteen_mib_input_event_and_output_round_trip() {
    let server = TestServer::start().await;
    let mut c = big_client(&server).await;
    let payload = json_string_of(16 * MIB);
    c.start_instance(pb::CreateInstanceRequest {
        instance_id: "big".into(),
        name: "Orch".into(),
        input: Some(payload.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    c.raise_event(pb::RaiseEventRequest {
        instance_id: "big".into(),
        name: "e".into(),
        input: Some(payload.clone()),
    })
    .await
    .unwrap();
    let mut w = WorkStream::open(c.clone(), pb::GetWorkItemsRequest::default()).await;
    let (token, req) = w.orchestration().await;
    assert_eq!(input_of(&req).as_deref(), Some(payload.as_str()));
    let event_input = req.new_events.iter().find_map(|e| match &e.event_type {
        Some(EventType::EventRaised(r)) => r.input.clone(),
        _ => None,
    });
    assert_eq!(event_input.as_deref(), Some(payload.as_str()));
    w.complete(
        &token,
        "big",
        vec![finish(
            0,
            pb::OrchestrationStatus::Completed,
            Some(payload.clone()),
        )],
    )
    .await
    .unwrap();
    let state = c
        .get_instance(pb::GetInstanceRequest {
            instance_id: "big".into(),
            get_inputs_and_outputs: true,
        })
        .await
        .unwrap()
        .into_inner()
        .orchestration_state
        .unwrap();
    assert_eq!(state.output.as_deref(), Some(payload.as_str()));
}

#[tokio::test]
async fn a_request_over_the_limit_is_resource_exhausted_and_writes_nothing() {
    let server = TestServer::start_with(ServerOptions {
        grpc: GrpcOptions {
            max_message_bytes: MIB,
        },
        ..Default::default()
    })
    .await;
    let mut c = big_client(&server).await;
    let s = c
        .start_instance(pb::CreateInstanceRequest {
            instance_id: "too-big".into(),
            name: "Orch".into(),
            input: Some(json_string_of(2 * MIB)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(
        s.message().contains("limit of 1048576 bytes")
            && s.message().contains("--max-message-size-mb"),
        "{}",
        s.message()
    );
    assert!(!exists(&server, "too-big").await);
    // The connection stays usable and small requests still work.
    start(&server, "small", None).await;
    assert!(exists(&server, "small").await);
}

#[tokio::test]
async fn partial_chunks_commit_together_with_the_last_one() {
    let server = TestServer::start().await;
    let mut w = WorkStream::open(server.client(), pb::GetWorkItemsRequest::default()).await;
    within("start", server.start_instance("chunked", "Orch", None)).await;
    let (token, _) = w.orchestration().await;
    let mut c = server.client();
    let chunk = |index: i32, partial: bool, actions: Vec<pb::OrchestratorAction>| {
        pb::OrchestratorResponse {
            instance_id: "chunked".into(),
            actions,
            completion_token: token.clone(),
            is_partial: partial,
            chunk_index: Some(index),
            ..Default::default()
        }
    };
    c.complete_orchestrator_task(chunk(0, true, vec![schedule(0, "a", None)]))
        .await
        .unwrap();
    // Nothing is committed before the last chunk.
    assert!(history(&c, "chunked").await.is_empty());
    let s = c
        .complete_orchestrator_task(chunk(5, true, vec![schedule(1, "b", None)]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    c.complete_orchestrator_task(chunk(1, true, vec![schedule(1, "b", None)]))
        .await
        .unwrap();
    c.complete_orchestrator_task(chunk(2, false, vec![schedule(2, "c", None)]))
        .await
        .unwrap();
    let scheduled: Vec<String> = history(&c, "chunked")
        .await
        .into_iter()
        .filter_map(|e| match e.event_type {
            Some(EventType::TaskScheduled(t)) => Some(t.name),
            _ => None,
        })
        .collect();
    assert_eq!(scheduled, vec!["a", "b", "c"]);
    for _ in 0..3 {
        let (_, a) = w.activity().await;
        assert!(["a", "b", "c"].contains(&a.name.as_str()));
    }
}

#[tokio::test]
async fn chunks_of_an_abandoned_work_item_are_dropped() {
    let server = TestServer::start().await;
    let mut w = WorkStream::open(server.client(), pb::GetWorkItemsRequest::default()).await;
    within(
        "start",
        server.start_instance("chunk-abandon", "Orch", None),
    )
    .await;
    let (token, _) = w.orchestration().await;
    let mut c = server.client();
    c.complete_orchestrator_task(pb::OrchestratorResponse {
        instance_id: "chunk-abandon".into(),
        actions: vec![schedule(0, "dropped", None)],
        completion_token: token.clone(),
        is_partial: true,
        chunk_index: Some(0),
        ..Default::default()
    })
    .await
    .unwrap();
    c.abandon_task_orchestrator_work_item(pb::AbandonOrchestrationTaskRequest {
        completion_token: token,
    })
    .await
    .unwrap();
    let (token, _) = w.orchestration().await;
    w.complete(
        &token,
        "chunk-abandon",
        vec![finish(0, pb::OrchestrationStatus::Completed, None)],
    )
    .await
    .unwrap();
    let events = history(&c, "chunk-abandon").await;
    assert!(!events
        .iter()
        .any(|e| matches!(e.event_type, Some(EventType::TaskScheduled(_)))));
}
