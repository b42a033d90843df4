//! The worker protocol driven by hand (PROTOCOL.md §4.1, §4.4.1, §4.7, §4.8): a raw
//! `GetWorkItems` stream plus `Complete*`/`Abandon*` calls, no scripted worker. Work-item
//! shape, token validation, duplicates, token-less completions, abandon, concurrency
//! hints, one episode per instance, health pings and activity failures. Stream loss and
//! late completions are in `worker_redelivery.rs`.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the shared helpers below.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::server::ServerOptions;
use durabletask_sidecar::service::ServiceOptions;
use pb::history_event::EventType;
use pb::work_item::Request as Item;
use pb::OrchestrationStatus as S;
use tonic::Code;

async fn open(server: &TestServer) -> WorkStream {
    WorkStream::open(server.client(), pb::GetWorkItemsRequest::default()).await
}

async fn start(server: &TestServer, id: &str) {
    within("start", server.start_instance(id, "Orch", Some("\"in\""))).await;
}

fn count(events: &[pb::HistoryEvent], pred: fn(&EventType) -> bool) -> usize {
    events
        .iter()
        .filter(|e| e.event_type.as_ref().is_some_and(pred))
        .count()
}

fn is_scheduled(e: &EventType) -> bool {
    matches!(e, EventType::TaskScheduled(_))
}

#[tokio::test]
async fn first_work_item_has_a_token_an_execution_id_and_starts_with_orchestrator_started() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    start(&server, "shape-1").await;
    let (token, req) = w.orchestration().await;
    assert!(!token.is_empty(), "completionToken must be set");
    assert_eq!(req.instance_id, "shape-1");
    let execution = server.get("shape-1").await.unwrap().execution_id;
    assert!(execution.as_deref().is_some_and(|e| !e.is_empty()));
    assert_eq!(req.execution_id, execution);
    assert!(
        req.past_events.is_empty(),
        "first episode: {:?}",
        req.past_events
    );
    assert!(
        matches!(
            req.new_events.first().and_then(|e| e.event_type.as_ref()),
            Some(EventType::OrchestratorStarted(_))
        ),
        "{:?}",
        req.new_events
    );
    match req.new_events.get(1).and_then(|e| e.event_type.as_ref()) {
        Some(EventType::ExecutionStarted(s)) => {
            assert_eq!(s.name, "Orch");
            assert_eq!(s.input.as_deref(), Some("\"in\""));
        }
        other => panic!("second new event must be ExecutionStarted, got {other:?}"),
    }
    assert!(req.new_events.iter().all(|e| e.timestamp.is_some()));
}

#[tokio::test]
async fn completion_with_an_unknown_token_is_not_found() {
    let server = TestServer::start().await;
    let w = open(&server).await;
    start(&server, "unknown-tok").await;
    let s = w
        .complete("o999999", "unknown-tok", vec![])
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let s = w
        .complete("garbage", "unknown-tok", vec![])
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let req = pb::ActivityRequest {
        orchestration_instance: Some(pb::OrchestrationInstance {
            instance_id: "unknown-tok".into(),
            execution_id: None,
        }),
        ..Default::default()
    };
    let s = w
        .complete_activity("a999999", &req, Ok("1"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
}

#[tokio::test]
async fn exact_duplicate_of_a_committed_completion_is_ok_without_a_second_effect() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    start(&server, "dup-1").await;
    let (token, _) = w.orchestration().await;
    let actions = vec![schedule(0, "act", None)];
    w.complete(&token, "dup-1", actions.clone()).await.unwrap();
    w.complete(&token, "dup-1", actions).await.unwrap();
    let events = history(&server.client(), "dup-1").await;
    assert_eq!(count(&events, is_scheduled), 1, "{events:#?}");
    // The duplicate did not schedule a second activity either.
    let (atoken, areq) = w.activity().await;
    assert_eq!(areq.task_id, 0);
    w.none_within(Duration::from_millis(300), is_activity, "second activity")
        .await;
    w.complete_activity(&atoken, &areq, Ok("1")).await.unwrap();
    w.complete_activity(&atoken, &areq, Ok("1")).await.unwrap();
    let (token, req) = w.orchestration().await;
    let completed = count(&req.new_events, |e| {
        matches!(e, EventType::TaskCompleted(_))
    });
    assert_eq!(completed, 1, "{:?}", req.new_events);
    w.complete(&token, "dup-1", vec![finish(1, S::Completed, None)])
        .await
        .unwrap();
}

#[tokio::test]
async fn completion_whose_instance_id_differs_from_the_tokens_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    start(&server, "inst-a").await;
    let (token, _) = w.orchestration().await;
    let s = w
        .complete(&token, "inst-b", vec![finish(0, S::Completed, None)])
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    // The rejected call did not consume the episode.
    w.complete(&token, "inst-a", vec![finish(0, S::Completed, None)])
        .await
        .unwrap();
    assert_eq!(
        server.wait_completion("inst-a").await.orchestration_status,
        S::Completed as i32
    );
}

#[tokio::test]
async fn an_action_without_a_kind_is_invalid_argument_and_fails_the_instance() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    start(&server, "bad-action").await;
    let (token, _) = w.orchestration().await;
    let empty = pb::OrchestratorAction {
        id: 0,
        orchestrator_action_type: None,
    };
    let s = w
        .complete(&token, "bad-action", vec![empty])
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let state = server.wait_completion("bad-action").await;
    assert_eq!(state.orchestration_status, S::Failed as i32);
    assert!(state.failure_details.is_some());
}

#[tokio::test]
async fn token_less_completion_with_the_right_instance_id_is_accepted() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    start(&server, "no-token").await;
    let (_, req) = w.orchestration().await;
    w.complete("", &req.instance_id, vec![schedule(0, "act", None)])
        .await
        .unwrap();
    let (_, areq) = w.activity().await;
    w.complete_activity("", &areq, Ok("\"r\"")).await.unwrap();
    let (_, req) = w.orchestration().await;
    assert_eq!(completed_results(&req), vec!["\"r\""]);
    w.complete(
        "",
        "no-token",
        vec![finish(1, S::Completed, Some("1".into()))],
    )
    .await
    .unwrap();
    let state = server.wait_completion("no-token").await;
    assert_eq!(state.orchestration_status, S::Completed as i32);
    assert_eq!(state.output.as_deref(), Some("1"));
}

#[tokio::test]
async fn an_abandoned_episode_is_redelivered_at_once_and_unknown_abandons_are_ok() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    start(&server, "abandon-1").await;
    let (token, first) = w.orchestration().await;
    let mut c = server.client();
    within(
        "abandon",
        c.abandon_task_orchestrator_work_item(pb::AbandonOrchestrationTaskRequest {
            completion_token: token.clone(),
        }),
    )
    .await
    .unwrap();
    let began = std::time::Instant::now();
    let (token2, again) = w.orchestration().await;
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "first abandon is retried without backoff ({:?})",
        began.elapsed()
    );
    assert_ne!(token2, token);
    assert_eq!(again.new_events[1..], first.new_events[1..]);
    // The abandoned token is dead; unknown tokens are fine to abandon.
    let s = w.complete(&token, "abandon-1", vec![]).await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    for t in [token.as_str(), "o123456789", "garbage", ""] {
        within(
            "abandon unknown",
            c.abandon_task_orchestrator_work_item(pb::AbandonOrchestrationTaskRequest {
                completion_token: t.into(),
            }),
        )
        .await
        .unwrap();
        within(
            "abandon unknown activity",
            c.abandon_task_activity_work_item(pb::AbandonActivityTaskRequest {
                completion_token: t.into(),
            }),
        )
        .await
        .unwrap();
    }
    w.complete(&token2, "abandon-1", vec![finish(0, S::Completed, None)])
        .await
        .unwrap();
}

#[tokio::test]
async fn activity_concurrency_hint_of_one_holds_back_the_other_activities() {
    let server = TestServer::start().await;
    let mut w = WorkStream::open(
        server.client(),
        pb::GetWorkItemsRequest {
            max_concurrent_activity_work_items: 1,
            ..Default::default()
        },
    )
    .await;
    start(&server, "hint-1").await;
    let (token, _) = w.orchestration().await;
    let three = (0..3).map(|i| schedule(i, "act", None)).collect();
    w.complete(&token, "hint-1", three).await.unwrap();
    let mut done = Vec::new();
    for _ in 0..3 {
        let (t, a) = w.activity().await;
        w.none_within(
            Duration::from_millis(300),
            is_activity,
            "second outstanding activity",
        )
        .await;
        done.push(a.task_id);
        w.complete_activity(&t, &a, Ok("1")).await.unwrap();
    }
    done.sort_unstable();
    assert_eq!(done, vec![0, 1, 2]);
}

#[tokio::test]
async fn events_raised_during_an_episode_wait_for_it_and_arrive_in_the_next_one() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    start(&server, "one-ep").await;
    let (token, _) = w.orchestration().await;
    for name in ["x", "y"] {
        within(
            "raise",
            server.client().raise_event(pb::RaiseEventRequest {
                instance_id: "one-ep".into(),
                name: name.into(),
                input: None,
            }),
        )
        .await
        .unwrap();
    }
    w.none_within(
        Duration::from_millis(500),
        is_orchestration,
        "second episode while one is outstanding",
    )
    .await;
    w.complete(&token, "one-ep", vec![]).await.unwrap();
    let (token, req) = w.orchestration().await;
    let names: Vec<&str> = req
        .new_events
        .iter()
        .filter_map(|e| match &e.event_type {
            Some(EventType::EventRaised(r)) => Some(r.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(names, vec!["x", "y"]);
    assert!(
        !req.past_events.is_empty(),
        "second episode replays history"
    );
    w.complete(&token, "one-ep", vec![finish(0, S::Completed, None)])
        .await
        .unwrap();
}

#[tokio::test]
async fn an_idle_stream_receives_health_pings_with_an_empty_token() {
    let server = TestServer::start_with(ServerOptions {
        service: ServiceOptions {
            health_ping_interval: Duration::from_secs(1),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut w = open(&server).await;
    let item = tokio::time::timeout(Duration::from_secs(3), w.inner.message())
        .await
        .expect("no health ping within 3 s")
        .unwrap()
        .expect("stream ended");
    assert!(
        matches!(item.request, Some(Item::HealthPing(_))),
        "{item:?}"
    );
    assert!(item.completion_token.is_empty());
}

#[tokio::test]
async fn a_failed_activity_arrives_as_task_failed_with_its_details() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    start(&server, "act-fail").await;
    let (token, _) = w.orchestration().await;
    w.complete(&token, "act-fail", vec![schedule(7, "boom", None)])
        .await
        .unwrap();
    let (atoken, areq) = w.activity().await;
    assert_eq!(areq.task_id, 7);
    assert_eq!(areq.name, "boom");
    let details = pb::TaskFailureDetails {
        error_type: "MyError".into(),
        error_message: "kaboom".into(),
        stack_trace: Some("at boom()".into()),
        ..Default::default()
    };
    w.complete_activity(&atoken, &areq, Err(details.clone()))
        .await
        .unwrap();
    let (_, req) = w.orchestration().await;
    let failed: Vec<&pb::TaskFailedEvent> = req
        .new_events
        .iter()
        .filter_map(|e| match &e.event_type {
            Some(EventType::TaskFailed(f)) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", req.new_events);
    assert_eq!(failed[0].task_scheduled_id, 7);
    assert_eq!(failed[0].failure_details.as_ref(), Some(&details));
    assert_eq!(
        count(&req.new_events, |e| matches!(
            e,
            EventType::TaskCompleted(_)
        )),
        0
    );
}

#[tokio::test]
async fn an_abandoned_activity_is_redelivered_at_once_with_a_new_token() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    start(&server, "abandon-act").await;
    let (token, _) = w.orchestration().await;
    w.complete(&token, "abandon-act", vec![schedule(0, "act", None)])
        .await
        .unwrap();
    let (atoken, first) = w.activity().await;
    within(
        "abandon activity",
        server
            .client()
            .abandon_task_activity_work_item(pb::AbandonActivityTaskRequest {
                completion_token: atoken.clone(),
            }),
    )
    .await
    .unwrap();
    let began = std::time::Instant::now();
    let (atoken2, again) = w.activity().await;
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    assert_ne!(atoken2, atoken);
    assert_eq!(again, first);
    w.complete_activity(&atoken2, &again, Ok("1"))
        .await
        .unwrap();
    let (_, req) = w.orchestration().await;
    assert_eq!(completed_results(&req), vec!["1"]);
}
