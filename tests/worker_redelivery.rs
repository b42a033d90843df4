//! Stream loss and late completions (PROTOCOL.md §4.8), driven by hand: work received on
//! a stream that goes away without completing it is redelivered on the next stream, and
//! a late activity completion over the old token counts exactly once.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the shared helpers below.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use durabletask_sidecar::proto as pb;
use pb::history_event::EventType;
use pb::OrchestrationStatus as S;
use tonic::Code;

async fn open(server: &TestServer) -> WorkStream {
    WorkStream::open(server.client(), pb::GetWorkItemsRequest::default()).await
}

fn task_completed_for(events: &[pb::HistoryEvent], task_id: i32) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(&e.event_type,
                Some(EventType::TaskCompleted(c)) if c.task_scheduled_id == task_id)
        })
        .count()
}

/// Starts an instance, takes its first episode on `w`, schedules one activity (task 0).
async fn schedule_one_activity(server: &TestServer, w: &mut WorkStream, id: &str) {
    within("start", server.start_instance(id, "Orch", None)).await;
    let (token, _) = w.orchestration().await;
    w.complete(&token, id, vec![schedule(0, "act", Some("\"x\"".into()))])
        .await
        .unwrap();
}

#[tokio::test]
async fn an_episode_left_on_a_lost_stream_is_redelivered_on_the_next_one() {
    let server = TestServer::start().await;
    let mut first = open(&server).await;
    within("start", server.start_instance("lost-orch", "Orch", None)).await;
    let (old_token, lost) = first.orchestration().await;
    drop(first);
    let mut second = open(&server).await;
    let (token, again) = second.orchestration().await;
    assert_ne!(token, old_token);
    assert_eq!(again.instance_id, "lost-orch");
    assert_eq!(again.execution_id, lost.execution_id);
    assert_eq!(again.past_events, lost.past_events);
    assert!(matches!(
        again.new_events[0].event_type,
        Some(EventType::OrchestratorStarted(_))
    ));
    assert_eq!(
        again.new_events[1..],
        lost.new_events[1..],
        "the same episode apart from OrchestratorStarted"
    );
    second
        .complete(
            &token,
            "lost-orch",
            vec![finish(0, S::Completed, Some("1".into()))],
        )
        .await
        .unwrap();
    let state = server.wait_completion("lost-orch").await;
    assert_eq!(state.orchestration_status, S::Completed as i32);
    assert_eq!(state.output.as_deref(), Some("1"));
}

#[tokio::test]
async fn an_activity_left_on_a_lost_stream_is_redelivered_on_the_next_one() {
    let server = TestServer::start().await;
    let mut first = open(&server).await;
    schedule_one_activity(&server, &mut first, "lost-act").await;
    let (old_token, lost) = first.activity().await;
    drop(first);
    let mut second = open(&server).await;
    let (token, again) = second.activity().await;
    assert_ne!(token, old_token);
    assert_eq!(again, lost, "the same activity request");
    second
        .complete_activity(&token, &again, Ok("\"r\""))
        .await
        .unwrap();
    let (token, req) = second.orchestration().await;
    assert_eq!(completed_results(&req), vec!["\"r\""]);
    second
        .complete(&token, "lost-act", vec![finish(1, S::Completed, None)])
        .await
        .unwrap();
    let events = history(&server.client(), "lost-act").await;
    assert_eq!(task_completed_for(&events, 0), 1, "{events:#?}");
}

#[tokio::test]
async fn a_late_activity_completion_over_the_old_token_counts_once() {
    let server = TestServer::start().await;
    let mut first = open(&server).await;
    schedule_one_activity(&server, &mut first, "late-act").await;
    let (old_token, lost) = first.activity().await;
    // The worker keeps the item: completions still go over the same channel (the client
    // is a clone), only the stream is gone.
    let late = first.client.clone();
    drop(first);
    let mut second = open(&server).await;
    let (new_token, again) = second.activity().await;
    assert_eq!(again.task_id, lost.task_id);

    let mut c = late;
    within(
        "late completion",
        c.complete_activity_task(pb::ActivityResponse {
            instance_id: "late-act".into(),
            task_id: lost.task_id,
            result: Some("\"late\"".into()),
            failure_details: None,
            completion_token: old_token.clone(),
        }),
    )
    .await
    .expect("a late completion of a still-open activity is accepted");
    match second
        .complete_activity(&new_token, &again, Ok("\"redelivered\""))
        .await
    {
        Ok(()) => {}
        Err(s) => assert_eq!(s.code(), Code::NotFound, "{s:?}"),
    }

    let (token, req) = second.orchestration().await;
    assert_eq!(
        task_completed_for(&req.new_events, 0),
        1,
        "exactly one result per activity: {:?}",
        req.new_events
    );
    assert_eq!(completed_results(&req), vec!["\"late\""]);
    second
        .complete(&token, "late-act", vec![finish(1, S::Completed, None)])
        .await
        .unwrap();
    server.wait_completion("late-act").await;
    let events = history(&server.client(), "late-act").await;
    assert_eq!(task_completed_for(&events, 0), 1, "{events:#?}");
    second
        .none_within(
            Duration::from_millis(300),
            is_orchestration,
            "another episode after completion",
        )
        .await;
}

#[tokio::test]
async fn an_episode_completed_late_over_a_lost_stream_is_stale_once_redelivered_and_completed() {
    let server = TestServer::start().await;
    let mut first = open(&server).await;
    within("start", server.start_instance("late-orch", "Orch", None)).await;
    let (old_token, _) = first.orchestration().await;
    let late = first.client.clone();
    drop(first);
    let mut second = open(&server).await;
    let (token, _) = second.orchestration().await;
    second
        .complete(&token, "late-orch", vec![schedule(0, "act", None)])
        .await
        .unwrap();
    let mut c = late;
    let s = within(
        "late orchestration completion",
        c.complete_orchestrator_task(pb::OrchestratorResponse {
            instance_id: "late-orch".into(),
            actions: vec![schedule(0, "act", None)],
            completion_token: old_token,
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let events = history(&server.client(), "late-orch").await;
    let scheduled = events
        .iter()
        .filter(|e| matches!(e.event_type, Some(EventType::TaskScheduled(_))))
        .count();
    assert_eq!(scheduled, 1, "{events:#?}");
}

#[tokio::test]
async fn completing_an_episode_of_an_instance_replaced_meanwhile_is_ok_and_applies_nothing() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    within(
        "start",
        server.start_instance("replaced", "Orch", Some("1")),
    )
    .await;
    let (old_token, old) = w.orchestration().await;
    within(
        "replace",
        server.client().start_instance(pb::CreateInstanceRequest {
            instance_id: "replaced".into(),
            name: "Orch".into(),
            input: Some("2".into()),
            orchestration_id_reuse_policy: Some(pb::OrchestrationIdReusePolicy {
                replaceable_status: vec![
                    S::Pending as i32,
                    S::Running as i32,
                    S::Terminated as i32,
                ],
            }),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    // The sidecar moved the instance on, not the worker: OK, and nothing is applied
    // (an error would make the Java worker abandon its stream).
    w.complete(
        &old_token,
        "replaced",
        vec![finish(0, S::Completed, Some("\"old\"".into()))],
    )
    .await
    .unwrap();
    // The new execution is dispatched and its first episode carries the new input.
    let (token, req) = w.orchestration().await;
    assert_ne!(req.execution_id, old.execution_id);
    assert_eq!(input_of(&req).as_deref(), Some("2"));
    assert!(req.past_events.is_empty());
    w.complete(
        &token,
        "replaced",
        vec![finish(0, S::Completed, Some("\"new\"".into()))],
    )
    .await
    .unwrap();
    let state = server.wait_completion("replaced").await;
    assert_eq!(state.output.as_deref(), Some("\"new\""));
}

#[tokio::test]
async fn an_unstarted_instance_terminated_while_its_first_episode_is_out_stays_terminated() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    within("start", server.start_instance("term-out", "Orch", None)).await;
    let (token, _) = w.orchestration().await;
    within(
        "terminate",
        server.client().terminate_instance(pb::TerminateRequest {
            instance_id: "term-out".into(),
            output: Some("\"stop\"".into()),
            recursive: false,
        }),
    )
    .await
    .unwrap();
    let r = w
        .complete(
            &token,
            "term-out",
            vec![finish(0, S::Completed, Some("\"late\"".into()))],
        )
        .await;
    if let Err(s) = r {
        assert_eq!(s.code(), Code::NotFound, "{s:?}");
    }
    let state = server.wait_completion("term-out").await;
    assert_eq!(state.orchestration_status, S::Terminated as i32);
    assert_eq!(state.output.as_deref(), Some("\"stop\""));
    w.none_within(
        Duration::from_millis(300),
        is_orchestration,
        "episode of a terminated instance",
    )
    .await;
}
