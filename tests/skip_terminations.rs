//! `SkipGracefulOrchestrationTerminations` (PROTOCOL.md §3.14): the sidecar ends
//! orchestrations as TERMINATED without their worker, tells parents, and reports the ids
//! it left alone.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the shared helpers below.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use durabletask_sidecar::domain::Clock;
use durabletask_sidecar::proto as pb;
use pb::history_event::EventType;
use pb::orchestrator_action::OrchestratorActionType as A;
use tonic::Code;

const REASON: &str = "\"maintenance\"";

async fn skip(server: &TestServer, ids: &[&str]) -> Result<Vec<String>, tonic::Status> {
    within(
        "skip graceful terminations",
        server.client().skip_graceful_orchestration_terminations(
            pb::SkipGracefulOrchestrationTerminationsRequest {
                instance_batch: Some(pb::InstanceBatch {
                    instance_ids: ids.iter().map(|s| s.to_string()).collect(),
                }),
                reason: Some(REASON.into()),
            },
        ),
    )
    .await
    .map(|r| r.into_inner().unterminated_instance_ids)
}

async fn open(server: &TestServer) -> WorkStream {
    WorkStream::open(server.client(), pb::GetWorkItemsRequest::default()).await
}

/// Asserts the instance reads TERMINATED with the reason as output, and that its history
/// ends the way a worker's TERMINATED completion would have ended it.
async fn assert_terminated_by_skip(server: &TestServer, id: &str) {
    let state = server.get(id).await.unwrap();
    assert_eq!(
        state.orchestration_status,
        pb::OrchestrationStatus::Terminated as i32,
        "{id}: {state:?}"
    );
    assert_eq!(state.output.as_deref(), Some(REASON), "{id}");
    let events = history(&server.client(), id).await;
    let n = events.len();
    assert!(n >= 3, "{id}: {events:?}");
    assert!(
        matches!(&events[n - 2].event_type, Some(EventType::ExecutionTerminated(t))
            if t.input.as_deref() == Some(REASON) && !t.recurse),
        "{id}: {events:?}"
    );
    assert!(
        matches!(&events[n - 1].event_type, Some(EventType::ExecutionCompleted(c))
            if c.orchestration_status == pb::OrchestrationStatus::Terminated as i32
                && c.result.as_deref() == Some(REASON)),
        "{id}: {events:?}"
    );
}

#[tokio::test]
async fn a_running_orchestration_ends_at_once_and_its_work_is_never_sent_again() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    server.start_instance("skip-run", "Orch", None).await;
    let (token, _) = w.orchestration().await;
    w.complete(&token, "skip-run", vec![schedule(0, "Act", None)])
        .await
        .unwrap();
    let (act_token, act) = w.activity().await;

    assert_eq!(
        skip(&server, &["skip-run"]).await.unwrap(),
        Vec::<String>::new()
    );
    // Durable when the call returns: no wait needed.
    assert_terminated_by_skip(&server, "skip-run").await;

    // The activity's late result changes nothing, and no episode follows.
    w.complete_activity(&act_token, &act, Ok("\"late\""))
        .await
        .unwrap();
    w.none_within(Duration::from_millis(300), is_orchestration, "episode")
        .await;
    assert_terminated_by_skip(&server, "skip-run").await;
}

#[tokio::test]
async fn an_episode_out_with_a_worker_is_moot_once_skipped() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    server.start_instance("skip-out", "Orch", None).await;
    let (token, _) = w.orchestration().await;

    assert!(skip(&server, &["skip-out"]).await.unwrap().is_empty());
    assert_terminated_by_skip(&server, "skip-out").await;
    // The worker answers afterwards: OK (nothing it could fix), and nothing is applied.
    w.complete(
        &token,
        "skip-out",
        vec![finish(
            0,
            pb::OrchestrationStatus::Completed,
            Some("\"done\"".into()),
        )],
    )
    .await
    .unwrap();
    assert_terminated_by_skip(&server, "skip-out").await;
}

#[tokio::test]
async fn instances_no_worker_has_seen_are_terminated_too() {
    let server = TestServer::start().await;
    server.start_instance("skip-pending", "Orch", None).await;
    let later = durabletask_sidecar::domain::SystemClock.now() + chrono::Duration::hours(1);
    within(
        "start scheduled",
        server.client().start_instance(pb::CreateInstanceRequest {
            instance_id: "skip-later".into(),
            name: "Orch".into(),
            scheduled_start_timestamp: Some(prost_types::Timestamp {
                seconds: later.timestamp(),
                nanos: 0,
            }),
            ..Default::default()
        }),
    )
    .await
    .unwrap();

    assert!(skip(&server, &["skip-pending", "skip-later"])
        .await
        .unwrap()
        .is_empty());
    // The pending one's start became part of the ending episode.
    assert_terminated_by_skip(&server, "skip-pending").await;
    let events = history(&server.client(), "skip-pending").await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e.event_type, Some(EventType::ExecutionStarted(_)))),
        "{events:?}"
    );
    let later = server.get("skip-later").await.unwrap();
    assert_eq!(
        later.orchestration_status,
        pb::OrchestrationStatus::Terminated as i32
    );
    assert_eq!(later.output.as_deref(), Some(REASON));

    // A worker connecting afterwards gets nothing for either.
    let mut w = open(&server).await;
    w.none_within(Duration::from_millis(300), is_orchestration, "episode")
        .await;
}

#[tokio::test]
async fn a_skipped_child_fails_its_parents_task() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    server.start_instance("skip-parent", "Parent", None).await;
    let (token, _) = w.orchestration().await;
    w.complete(
        &token,
        "skip-parent",
        vec![act(
            0,
            A::CreateSubOrchestration(pb::CreateSubOrchestrationAction {
                instance_id: "skip-child".into(),
                name: "Child".into(),
                ..Default::default()
            }),
        )],
    )
    .await
    .unwrap();
    let (_child_token, child) = w.orchestration().await;
    assert_eq!(child.instance_id, "skip-child");

    assert!(skip(&server, &["skip-child"]).await.unwrap().is_empty());
    assert_terminated_by_skip(&server, "skip-child").await;
    let (_, parent) = w.orchestration().await;
    assert_eq!(parent.instance_id, "skip-parent");
    let failed = parent
        .new_events
        .iter()
        .find_map(|e| match &e.event_type {
            Some(EventType::SubOrchestrationInstanceFailed(f)) => Some(f),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no SubOrchestrationInstanceFailed: {parent:?}"));
    assert_eq!(failed.task_scheduled_id, 0);
    let details = failed.failure_details.as_ref().unwrap();
    assert_eq!(details.error_type, "OrchestrationTerminated");
}

#[tokio::test]
async fn ids_left_alone_are_reported_in_request_order() {
    let server = TestServer::start().await;
    terminated(&server, "skip-done").await;
    start(&server, "skip-live", None).await;
    let unterminated = skip(
        &server,
        &[
            "skip-done",
            "skip-nobody",
            "@counter@x",
            "skip-live",
            "skip-live",
        ],
    )
    .await
    .unwrap();
    assert_eq!(unterminated, ["skip-done", "skip-nobody", "@counter@x"]);
    assert_terminated_by_skip(&server, "skip-live").await;
    // The earlier termination is untouched.
    let done = server.get("skip-done").await.unwrap();
    assert_eq!(done.output.as_deref(), Some("\"stop\""));
}

#[tokio::test]
async fn an_orchestration_holding_entity_locks_is_left_running() {
    use pb::send_entity_message_action::EntityMessageType as M;
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    server.start_instance("skip-locker", "Orch", None).await;
    let (token, _) = w.orchestration().await;
    w.complete(
        &token,
        "skip-locker",
        vec![act(
            0,
            A::SendEntityMessage(pb::SendEntityMessageAction {
                entity_message_type: Some(M::EntityLockRequested(pb::EntityLockRequestedEvent {
                    critical_section_id: "cs-1".into(),
                    lock_set: vec!["@lk@a".into()],
                    position: 0,
                    parent_instance_id: Some("skip-locker".into()),
                })),
            }),
        )],
    )
    .await
    .unwrap();

    assert_eq!(
        skip(&server, &["skip-locker"]).await.unwrap(),
        ["skip-locker"]
    );
    let state = server.get("skip-locker").await.unwrap();
    assert_eq!(
        state.orchestration_status,
        pb::OrchestrationStatus::Running as i32
    );
}

#[tokio::test]
async fn malformed_batches_are_invalid_argument_and_terminate_nothing() {
    let server = TestServer::start().await;
    start(&server, "skip-keep", None).await;
    let mut c = server.client();

    let s = expect_err(
        within(
            "no batch",
            c.skip_graceful_orchestration_terminations(
                pb::SkipGracefulOrchestrationTerminationsRequest::default(),
            ),
        )
        .await,
    );
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("instanceBatch"), "{s:?}");

    let many: Vec<String> = (0..501).map(|i| format!("skip-{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let s = skip(&server, &many).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("at most 500"), "{s:?}");

    let s = skip(&server, &["skip-keep", ""]).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("instanceIds[1]"), "{s:?}");
    let kept = server.get("skip-keep").await.unwrap();
    assert_eq!(
        kept.orchestration_status,
        pb::OrchestrationStatus::Pending as i32
    );
}
