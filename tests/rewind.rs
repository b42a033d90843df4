//! `RewindInstance` end to end (PROTOCOL.md §3.7, §4.10) against a real server and SQLite
//! file: failed work runs again and successful work does not, children are rewound,
//! recreated or relinked, lost results are redone, the RPC's status codes, durability
//! across a restart, and a worker's `rewindOrchestration` action.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use durabletask_sidecar::proto as pb;
use pb::history_event::EventType;
use pb::orchestrator_action::OrchestratorActionType as A;
use pb::OrchestrationStatus as S;

// --- helpers ---------------------------------------------------------------------------

async fn rewind(server: &TestServer, id: &str, reason: Option<&str>) -> Result<(), tonic::Status> {
    within(
        "rewind",
        server.client().rewind_instance(pb::RewindInstanceRequest {
            instance_id: id.into(),
            reason: reason.map(Into::into),
        }),
    )
    .await
    .map(|_| ())
}

fn fail_with(id: i32, message: &str) -> pb::OrchestratorAction {
    act(
        id,
        A::CompleteOrchestration(pb::CompleteOrchestrationAction {
            orchestration_status: S::Failed as i32,
            failure_details: Some(pb::TaskFailureDetails {
                error_type: "TaskFailedError".into(),
                error_message: message.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    )
}

fn failure(message: &str) -> pb::TaskFailureDetails {
    pb::TaskFailureDetails {
        error_type: "Error".into(),
        error_message: message.into(),
        ..Default::default()
    }
}

fn name_of(req: &pb::OrchestratorRequest) -> String {
    all_events(req)
        .find_map(|e| match &e.event_type {
            Some(EventType::ExecutionStarted(s)) => Some(s.name.clone()),
            _ => None,
        })
        .unwrap()
}

fn started_of(events: &[pb::HistoryEvent]) -> pb::ExecutionStartedEvent {
    events
        .iter()
        .find_map(|e| match &e.event_type {
            Some(EventType::ExecutionStarted(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap()
}

fn execution_of(events: &[pb::HistoryEvent]) -> String {
    started_of(events)
        .orchestration_instance
        .unwrap()
        .execution_id
        .unwrap()
}

fn scheduled(req: &pb::OrchestratorRequest, task: i32) -> bool {
    all_events(req)
        .any(|e| e.event_id == task && matches!(e.event_type, Some(EventType::TaskScheduled(_))))
}

fn task_result(req: &pb::OrchestratorRequest, task: i32) -> Option<Result<String, String>> {
    all_events(req).find_map(|e| match &e.event_type {
        Some(EventType::TaskCompleted(c)) if c.task_scheduled_id == task => {
            Some(Ok(c.result.clone().unwrap_or_default()))
        }
        Some(EventType::TaskFailed(f)) if f.task_scheduled_id == task => Some(Err(f
            .failure_details
            .as_ref()
            .map(|d| d.error_message.clone())
            .unwrap_or_default())),
        _ => None,
    })
}

fn kinds(events: &[pb::HistoryEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match &e.event_type {
            Some(EventType::OrchestratorStarted(_)) => "OrchestratorStarted",
            Some(EventType::ExecutionStarted(_)) => "ExecutionStarted",
            Some(EventType::ExecutionCompleted(_)) => "ExecutionCompleted",
            Some(EventType::ExecutionRewound(_)) => "ExecutionRewound",
            Some(EventType::TaskScheduled(_)) => "TaskScheduled",
            Some(EventType::TaskCompleted(_)) => "TaskCompleted",
            Some(EventType::TaskFailed(_)) => "TaskFailed",
            Some(EventType::TimerCreated(_)) => "TimerCreated",
            Some(EventType::TimerFired(_)) => "TimerFired",
            Some(EventType::SubOrchestrationInstanceCreated(_)) => {
                "SubOrchestrationInstanceCreated"
            }
            Some(EventType::SubOrchestrationInstanceCompleted(_)) => {
                "SubOrchestrationInstanceCompleted"
            }
            Some(EventType::SubOrchestrationInstanceFailed(_)) => "SubOrchestrationInstanceFailed",
            _ => "other",
        })
        .collect()
}

/// Calls per activity name, shared with the activity closure.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<HashMap<String, usize>>>);

impl Calls {
    fn count(&self, name: &str) -> usize {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    /// Activities: "flaky" fails its first `failures` calls; every other name succeeds.
    fn activities(
        &self,
        failures: usize,
    ) -> impl Fn(&pb::ActivityRequest) -> Result<Option<String>, String> + Send + Sync + 'static
    {
        let calls = Arc::clone(&self.0);
        move |req| {
            let n = {
                let mut calls = calls.lock().unwrap();
                let n = calls.entry(req.name.clone()).or_default();
                *n += 1;
                *n
            };
            if req.name == "flaky" && n <= failures {
                Err(format!("flaky failure #{n}"))
            } else {
                Ok(Some(format!("\"{}-{n}\"", req.name)))
            }
        }
    }
}

/// Runs "ok" (task 0) then "flaky" (task 1) and returns both results; an activity
/// failure fails the orchestration, as an SDK does with an uncaught error. Decides from
/// the whole history like an SDK replay, so it re-schedules whatever a rewind removed.
fn two_steps(req: &pb::OrchestratorRequest) -> Vec<pb::OrchestratorAction> {
    match (task_result(req, 0), task_result(req, 1)) {
        (Some(Err(e)), _) | (_, Some(Err(e))) => vec![fail_with(2, &e)],
        (Some(Ok(a)), Some(Ok(b))) => vec![finish(2, S::Completed, Some(format!("[{a},{b}]")))],
        (Some(Ok(_)), None) if !scheduled(req, 1) => vec![schedule(1, "flaky", None)],
        (None, _) if !scheduled(req, 0) => vec![schedule(0, "ok", None)],
        _ => vec![],
    }
}

async fn wait_status(server: &TestServer, id: &str, status: S) -> pb::OrchestrationState {
    let state = server.wait_completion(id).await;
    assert_eq!(
        state.orchestration_status, status as i32,
        "{id}: {:?}",
        state.failure_details
    );
    state
}

// --- the failed work runs again, the successful work does not ---------------------------

#[tokio::test]
async fn a_failed_activity_runs_again_once_and_the_instance_completes() {
    let server = TestServer::start().await;
    let calls = Calls::default();
    let worker = ScriptedWorker::start(server.client(), two_steps, calls.activities(1)).await;
    let id = server.start_instance("rw-activity", "TwoSteps", None).await;
    let failed = wait_status(&server, &id, S::Failed).await;
    assert_eq!(
        failed.failure_details.unwrap().error_message,
        "flaky failure #1"
    );

    rewind(&server, &id, Some("the flaky service is back"))
        .await
        .unwrap();
    let state = wait_status(&server, &id, S::Completed).await;
    assert_eq!(state.output.as_deref(), Some("[\"ok-1\",\"flaky-2\"]"));
    assert!(state.failure_details.is_none());
    assert_eq!(calls.count("flaky"), 2, "the failed activity ran once more");
    assert_eq!(
        calls.count("ok"),
        1,
        "the successful activity was not re-run"
    );

    let h = history(&server.client(), &id).await;
    assert!(!kinds(&h).contains(&"TaskFailed"));
    assert!(
        !kinds(&h).contains(&"ExecutionRewound"),
        "the rewind is never stored in the worker-visible history"
    );
    assert_eq!(kinds(&h).last(), Some(&"ExecutionCompleted"));
    worker.stop().await;
}

#[tokio::test]
async fn successful_fan_out_activities_are_not_rerun() {
    let server = TestServer::start().await;
    let calls = Calls::default();
    // Tasks 0..3: "ok" three times and "flaky" once; fails when all are in and one failed.
    let fan = |req: &pb::OrchestratorRequest| {
        let missing: Vec<_> = (0..4)
            .filter(|&i| !scheduled(req, i))
            .map(|i| schedule(i, if i == 3 { "flaky" } else { "ok" }, None))
            .collect();
        if !missing.is_empty() {
            return missing;
        }
        let results: Vec<_> = (0..4).filter_map(|i| task_result(req, i)).collect();
        if results.len() < 4 {
            return vec![];
        }
        match results.iter().find_map(|r| r.clone().err()) {
            Some(e) => vec![fail_with(9, &e)],
            None => vec![finish(9, S::Completed, Some(results.len().to_string()))],
        }
    };
    let worker = ScriptedWorker::start(server.client(), fan, calls.activities(1)).await;
    let id = server.start_instance("rw-fan", "Fan", None).await;
    wait_status(&server, &id, S::Failed).await;
    rewind(&server, &id, None).await.unwrap();
    wait_status(&server, &id, S::Completed).await;
    assert_eq!(calls.count("ok"), 3, "no successful activity ran twice");
    assert_eq!(calls.count("flaky"), 2);
    worker.stop().await;
}

#[tokio::test]
async fn the_first_episode_after_a_rewind_replays_the_rewritten_history_with_only_orchestrator_started(
) {
    let server = TestServer::start().await;
    let mut w = WorkStream::open(server.client(), Default::default()).await;
    start(&server, "rw-episode", None).await;
    let (t, first) = w.orchestration().await;
    let old_execution = first.execution_id.clone().unwrap();
    w.complete(&t, "rw-episode", vec![schedule(0, "bad", None)])
        .await
        .unwrap();
    let (t, a) = w.activity().await;
    w.complete_activity(&t, &a, Err(failure("boom")))
        .await
        .unwrap();
    let (t, _) = w.orchestration().await;
    w.complete(&t, "rw-episode", vec![fail_with(1, "boom")])
        .await
        .unwrap();
    wait_status(&server, "rw-episode", S::Failed).await;

    rewind(&server, "rw-episode", Some("retry")).await.unwrap();
    let (t, req) = w.orchestration().await;
    assert_eq!(kinds(&req.new_events), vec!["OrchestratorStarted"]);
    assert_eq!(
        kinds(&req.past_events),
        vec![
            "OrchestratorStarted",
            "ExecutionStarted",
            "OrchestratorStarted"
        ],
        "TaskScheduled/TaskFailed of the failed task and ExecutionCompleted are gone"
    );
    let new_execution = req.execution_id.clone().unwrap();
    assert_ne!(new_execution, old_execution);
    assert_eq!(execution_of(&req.past_events), new_execution);

    w.complete(&t, "rw-episode", vec![schedule(0, "bad", None)])
        .await
        .unwrap();
    let (t, a) = w.activity().await;
    assert_eq!(
        a.orchestration_instance.as_ref().unwrap().execution_id,
        Some(new_execution.clone())
    );
    w.complete_activity(&t, &a, Ok("\"fine\"")).await.unwrap();
    let (t, _) = w.orchestration().await;
    w.complete(
        &t,
        "rw-episode",
        vec![finish(1, S::Completed, Some("\"fine\"".into()))],
    )
    .await
    .unwrap();
    let state = wait_status(&server, "rw-episode", S::Completed).await;
    assert_eq!(state.output.as_deref(), Some("\"fine\""));
}

#[tokio::test]
async fn the_instance_is_running_with_output_and_failure_cleared_when_rewind_returns() {
    let server = TestServer::start().await;
    let calls = Calls::default();
    let worker = ScriptedWorker::start(server.client(), two_steps, calls.activities(1)).await;
    let id = server.start_instance("rw-status", "TwoSteps", None).await;
    wait_status(&server, &id, S::Failed).await;
    worker.stop().await;

    // No worker: nothing can move the instance on after the RPC.
    rewind(&server, &id, None).await.unwrap();
    let state = server.get(&id).await.unwrap();
    assert_eq!(state.orchestration_status, S::Running as i32);
    assert!(state.failure_details.is_none());
    assert!(state.output.is_none());
    assert!(state.completed_timestamp.is_none());
    // WaitForInstanceCompletion must not report the old FAILED state: it keeps waiting.
    let mut c = server.client();
    let waited = tokio::time::timeout(
        Duration::from_millis(300),
        c.wait_for_instance_completion(pb::GetInstanceRequest {
            instance_id: id.clone(),
            get_inputs_and_outputs: true,
        }),
    )
    .await;
    assert!(
        waited.is_err(),
        "a rewound instance is not complete: {waited:?}"
    );
}

#[tokio::test]
async fn an_instance_can_be_rewound_twice_with_and_without_a_reason() {
    let server = TestServer::start().await;
    let calls = Calls::default();
    let worker = ScriptedWorker::start(server.client(), two_steps, calls.activities(2)).await;
    let id = server.start_instance("rw-twice", "TwoSteps", None).await;
    wait_status(&server, &id, S::Failed).await;
    let first_execution = execution_of(&history(&server.client(), &id).await);

    rewind(&server, &id, None).await.unwrap();
    let again = wait_status(&server, &id, S::Failed).await;
    assert_eq!(
        again.failure_details.unwrap().error_message,
        "flaky failure #2"
    );
    let second_execution = execution_of(&history(&server.client(), &id).await);
    assert_ne!(first_execution, second_execution);

    rewind(&server, &id, Some("second try")).await.unwrap();
    let state = wait_status(&server, &id, S::Completed).await;
    assert_eq!(state.output.as_deref(), Some("[\"ok-1\",\"flaky-3\"]"));
    assert_eq!(calls.count("flaky"), 3);
    assert_eq!(calls.count("ok"), 1);
    worker.stop().await;
}

// --- children ------------------------------------------------------------------------------

/// "Parent" creates "<id>-child" (action 0) and returns its result (or fails with its
/// failure); "Child" runs "flaky" (task 0) and returns its result.
fn family(req: &pb::OrchestratorRequest) -> Vec<pb::OrchestratorAction> {
    if name_of(req) == "Child" {
        return match task_result(req, 0) {
            Some(Err(e)) => vec![fail_with(1, &e)],
            Some(Ok(r)) => vec![finish(1, S::Completed, Some(r))],
            None if !scheduled(req, 0) => vec![schedule(0, "flaky", None)],
            None => vec![],
        };
    }
    for e in all_events(req) {
        match &e.event_type {
            Some(EventType::SubOrchestrationInstanceFailed(f)) => {
                return vec![fail_with(
                    1,
                    &f.failure_details.clone().unwrap_or_default().error_message,
                )]
            }
            Some(EventType::SubOrchestrationInstanceCompleted(c)) => {
                return vec![finish(1, S::Completed, c.result.clone())]
            }
            _ => {}
        }
    }
    let created = all_events(req).any(|e| {
        matches!(
            e.event_type,
            Some(EventType::SubOrchestrationInstanceCreated(_))
        )
    });
    if created {
        return vec![];
    }
    vec![act(
        0,
        A::CreateSubOrchestration(pb::CreateSubOrchestrationAction {
            instance_id: format!("{}-child", req.instance_id),
            name: "Child".into(),
            input: Some("\"c\"".into()),
            ..Default::default()
        }),
    )]
}

#[tokio::test]
async fn a_failed_child_is_rewound_with_its_parent() {
    let server = TestServer::start().await;
    let calls = Calls::default();
    let worker = ScriptedWorker::start(server.client(), family, calls.activities(1)).await;
    let id = server.start_instance("rw-parent", "Parent", None).await;
    wait_status(&server, &id, S::Failed).await;
    let child = format!("{id}-child");
    wait_status(&server, &child, S::Failed).await;

    rewind(&server, &id, Some("fix the child")).await.unwrap();
    assert_eq!(
        server.get(&child).await.unwrap().orchestration_status,
        S::Running as i32,
        "the failed child is rewound in the same call"
    );
    let state = wait_status(&server, &id, S::Completed).await;
    assert_eq!(state.output.as_deref(), Some("\"flaky-2\""));
    wait_status(&server, &child, S::Completed).await;
    assert_eq!(calls.count("flaky"), 2);

    let parent_history = history(&server.client(), &id).await;
    let child_history = history(&server.client(), &child).await;
    let link = started_of(&child_history).parent_instance.unwrap();
    assert_eq!(
        link.orchestration_instance.unwrap().execution_id,
        Some(execution_of(&parent_history)),
        "the child's parent link names the parent's new execution"
    );
    assert!(!kinds(&parent_history).contains(&"SubOrchestrationInstanceFailed"));
    worker.stop().await;
}

#[tokio::test]
async fn a_purged_child_is_recreated_when_its_parent_is_rewound() {
    let server = TestServer::start().await;
    let calls = Calls::default();
    let worker = ScriptedWorker::start(server.client(), family, calls.activities(1)).await;
    let id = server.start_instance("rw-purged", "Parent", None).await;
    wait_status(&server, &id, S::Failed).await;
    let child = format!("{id}-child");
    wait_status(&server, &child, S::Failed).await;
    let purged = server
        .client()
        .purge_instances(pb::PurgeInstancesRequest {
            request: Some(pb::purge_instances_request::Request::InstanceId(
                child.clone(),
            )),
            recursive: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.deleted_instance_count, 1);
    assert!(!exists(&server, &child).await);

    rewind(&server, &id, None).await.unwrap();
    let state = wait_status(&server, &id, S::Completed).await;
    assert_eq!(state.output.as_deref(), Some("\"flaky-2\""));
    let recreated = wait_status(&server, &child, S::Completed).await;
    assert_eq!(recreated.parent_instance_id.as_deref(), Some(id.as_str()));
    assert_eq!(recreated.input.as_deref(), Some("\"c\""));
    worker.stop().await;
}

/// "Parent" creates "<id>-child" ("Waiter", action 0) and runs "flaky" (task 1); it
/// fails when "flaky" fails and completes with the child's result once both are in.
/// "Waiter" completes when it gets the event "go".
fn parent_with_waiting_child(req: &pb::OrchestratorRequest) -> Vec<pb::OrchestratorAction> {
    if name_of(req) == "Waiter" {
        let go = all_events(req)
            .any(|e| matches!(&e.event_type, Some(EventType::EventRaised(r)) if r.name == "go"));
        return if go {
            vec![finish(0, S::Completed, Some("\"child done\"".into()))]
        } else {
            vec![]
        };
    }
    if let Some(Err(e)) = task_result(req, 1) {
        return vec![fail_with(2, &e)];
    }
    let child = all_events(req).find_map(|e| match &e.event_type {
        Some(EventType::SubOrchestrationInstanceCompleted(c)) => c.result.clone(),
        _ => None,
    });
    if let (Some(Ok(_)), Some(result)) = (task_result(req, 1), child) {
        return vec![finish(2, S::Completed, Some(result))];
    }
    let mut actions = Vec::new();
    let created = all_events(req).any(|e| {
        matches!(
            e.event_type,
            Some(EventType::SubOrchestrationInstanceCreated(_))
        )
    });
    if !created {
        actions.push(act(
            0,
            A::CreateSubOrchestration(pb::CreateSubOrchestrationAction {
                instance_id: format!("{}-child", req.instance_id),
                name: "Waiter".into(),
                ..Default::default()
            }),
        ));
    }
    if !scheduled(req, 1) {
        actions.push(schedule(1, "flaky", None));
    }
    actions
}

async fn raise_go(server: &TestServer, id: &str) {
    within(
        "raise go",
        server.client().raise_event(pb::RaiseEventRequest {
            instance_id: id.into(),
            name: "go".into(),
            input: None,
        }),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_running_child_reports_to_the_rewound_parent() {
    let server = TestServer::start().await;
    let calls = Calls::default();
    let worker = ScriptedWorker::start(
        server.client(),
        parent_with_waiting_child,
        calls.activities(1),
    )
    .await;
    let id = server.start_instance("rw-live", "Parent", None).await;
    wait_status(&server, &id, S::Failed).await;
    let child = format!("{id}-child");
    // The parent can fail before the child's first episode has committed.
    eventually("child running", || async {
        let status = server.get(&child).await?.orchestration_status;
        (status == S::Running as i32).then_some(())
    })
    .await;

    rewind(&server, &id, None).await.unwrap();
    let link = started_of(&history(&server.client(), &child).await)
        .parent_instance
        .unwrap();
    assert_eq!(
        link.orchestration_instance.unwrap().execution_id,
        Some(execution_of(&history(&server.client(), &id).await)),
        "the live child's stored parent link moved to the new execution"
    );
    raise_go(&server, &child).await;
    let state = wait_status(&server, &id, S::Completed).await;
    assert_eq!(state.output.as_deref(), Some("\"child done\""));
    assert_eq!(calls.count("flaky"), 2);
    worker.stop().await;
}

#[tokio::test]
async fn a_child_that_finished_while_its_parent_was_failed_reports_again() {
    let server = TestServer::start().await;
    let calls = Calls::default();
    let worker = ScriptedWorker::start(
        server.client(),
        parent_with_waiting_child,
        calls.activities(1),
    )
    .await;
    let id = server.start_instance("rw-late-child", "Parent", None).await;
    wait_status(&server, &id, S::Failed).await;
    let child = format!("{id}-child");
    // Its completion notice reaches a FAILED parent and is dropped (PROTOCOL.md §4.5).
    raise_go(&server, &child).await;
    wait_status(&server, &child, S::Completed).await;

    rewind(&server, &id, None).await.unwrap();
    let state = wait_status(&server, &id, S::Completed).await;
    assert_eq!(state.output.as_deref(), Some("\"child done\""));
    worker.stop().await;
}

// --- work whose result was lost while the instance was FAILED -------------------------------

/// Episode 1 schedules "slow" (task 0) and "bad" (task 1); "bad" fails and the episode
/// after it fails the instance while "slow" is still out. Returns the stream and the
/// "slow" activity (token, request), not yet completed.
async fn fail_with_slow_activity_out(
    server: &TestServer,
    id: &str,
) -> (WorkStream, (String, pb::ActivityRequest)) {
    let mut w = WorkStream::open(server.client(), Default::default()).await;
    start(server, id, None).await;
    let (t, _) = w.orchestration().await;
    w.complete(
        &t,
        id,
        vec![schedule(0, "slow", None), schedule(1, "bad", None)],
    )
    .await
    .unwrap();
    let mut items = vec![w.activity().await, w.activity().await];
    items.sort_by_key(|(_, a)| a.task_id);
    let (bad_token, bad) = items.pop().unwrap();
    let slow = items.pop().unwrap();
    w.complete_activity(&bad_token, &bad, Err(failure("bad")))
        .await
        .unwrap();
    let (t, _) = w.orchestration().await;
    w.complete(&t, id, vec![fail_with(2, "bad")]).await.unwrap();
    wait_status(server, id, S::Failed).await;
    (w, slow)
}

/// Drives episodes until tasks 0 and 1 have results, answering activities with `done`,
/// then completes the instance.
async fn finish_both_tasks(w: &mut WorkStream, id: &str) {
    loop {
        let (t, req) = w.orchestration().await;
        let both = task_result(&req, 0).is_some() && task_result(&req, 1).is_some();
        let actions = if both {
            vec![finish(3, S::Completed, None)]
        } else {
            vec![]
        };
        w.complete(&t, id, actions).await.unwrap();
        if both {
            return;
        }
    }
}

#[tokio::test]
async fn an_activity_whose_result_was_dropped_while_failed_runs_again() {
    let server = TestServer::start().await;
    let id = "rw-dropped";
    let (mut w, (slow_token, slow)) = fail_with_slow_activity_out(&server, id).await;
    // The parent is FAILED: this result is dropped.
    w.complete_activity(&slow_token, &slow, Ok("\"late\""))
        .await
        .unwrap();

    rewind(&server, id, None).await.unwrap();
    let (t, req) = w.orchestration().await;
    assert_eq!(kinds(&req.new_events), vec!["OrchestratorStarted"]);
    assert!(scheduled(&req, 0) && !scheduled(&req, 1));
    w.complete(&t, id, vec![schedule(1, "bad", None)])
        .await
        .unwrap();
    let mut tasks = BTreeSet::new();
    for _ in 0..2 {
        let (t, a) = w.activity().await;
        tasks.insert((a.task_id, a.name.clone()));
        w.complete_activity(&t, &a, Ok("\"ok\"")).await.unwrap();
    }
    assert_eq!(
        tasks,
        BTreeSet::from([(0, "slow".to_string()), (1, "bad".to_string())]),
        "the lost task runs again beside the rescheduled failed one"
    );
    finish_both_tasks(&mut w, id).await;
    wait_status(&server, id, S::Completed).await;
}

#[tokio::test]
async fn an_activity_still_running_at_rewind_reports_to_the_new_execution() {
    let server = TestServer::start().await;
    let id = "rw-inflight";
    let (mut w, (slow_token, slow)) = fail_with_slow_activity_out(&server, id).await;

    rewind(&server, id, None).await.unwrap();
    let (t, _) = w.orchestration().await;
    w.complete(&t, id, vec![schedule(1, "bad", None)])
        .await
        .unwrap();
    let (t, bad) = w.activity().await;
    assert_eq!(bad.task_id, 1);
    w.complete_activity(&t, &bad, Ok("\"ok\"")).await.unwrap();
    // The old token still completes "slow", now for the new execution.
    w.complete_activity(&slow_token, &slow, Ok("\"slow\""))
        .await
        .unwrap();
    w.none_within(Duration::from_millis(300), is_activity, "activity re-run")
        .await;
    finish_both_tasks(&mut w, id).await;
    wait_status(&server, id, S::Completed).await;
}

#[tokio::test]
async fn a_timer_pending_when_the_instance_failed_fires_after_the_rewind() {
    let server = TestServer::start().await;
    let id = "rw-timer";
    let mut w = WorkStream::open(server.client(), Default::default()).await;
    start(&server, id, None).await;
    let (t, first) = w.orchestration().await;
    let now = first.new_events[0].timestamp.unwrap();
    let fire_at = prost_types::Timestamp {
        seconds: now.seconds + 2,
        nanos: now.nanos,
    };
    w.complete(
        &t,
        id,
        vec![
            act(
                0,
                A::CreateTimer(pb::CreateTimerAction {
                    fire_at: Some(fire_at),
                }),
            ),
            schedule(1, "bad", None),
        ],
    )
    .await
    .unwrap();
    let (t, bad) = w.activity().await;
    w.complete_activity(&t, &bad, Err(failure("bad")))
        .await
        .unwrap();
    let (t, _) = w.orchestration().await;
    w.complete(&t, id, vec![fail_with(2, "bad")]).await.unwrap();
    wait_status(&server, id, S::Failed).await;

    rewind(&server, id, None).await.unwrap();
    let (t, _) = w.orchestration().await;
    w.complete(&t, id, vec![schedule(1, "bad", None)])
        .await
        .unwrap();
    let (t, bad) = w.activity().await;
    w.complete_activity(&t, &bad, Ok("\"ok\"")).await.unwrap();
    loop {
        let (t, req) = w.orchestration().await;
        let fired = all_events(&req).find_map(|e| match &e.event_type {
            Some(EventType::TimerFired(f)) => Some(*f),
            _ => None,
        });
        let done = fired.is_some() && task_result(&req, 1).is_some();
        let actions = if done {
            let f = fired.unwrap();
            assert_eq!((f.timer_id, f.fire_at), (0, Some(fire_at)));
            vec![finish(3, S::Completed, None)]
        } else {
            vec![]
        };
        w.complete(&t, id, actions).await.unwrap();
        if done {
            break;
        }
    }
    wait_status(&server, id, S::Completed).await;
}

// --- refusals ------------------------------------------------------------------------------

#[tokio::test]
async fn rewinding_an_unknown_instance_is_not_found() {
    let server = TestServer::start().await;
    let status = rewind(&server, "no-such-instance", None).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = rewind(&server, "", None).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn only_failed_instances_can_be_rewound() {
    let server = TestServer::start().await;
    // COMPLETED
    let worker = ScriptedWorker::start(
        server.client(),
        |_| vec![finish(0, S::Completed, None)],
        |_| Ok(None),
    )
    .await;
    let done = server.start_instance("rw-completed", "Done", None).await;
    wait_status(&server, &done, S::Completed).await;
    worker.stop().await;
    // TERMINATED
    terminated(&server, "rw-terminated").await;
    // PENDING (no worker)
    start(&server, "rw-pending", None).await;
    // RUNNING: one episode that leaves an activity open
    let mut w = WorkStream::open(server.client(), Default::default()).await;
    start(&server, "rw-running", None).await;
    let (t, _) = loop {
        let (t, req) = w.orchestration().await;
        if req.instance_id == "rw-running" {
            break (t, req);
        }
    };
    w.complete(&t, "rw-running", vec![schedule(0, "open", None)])
        .await
        .unwrap();

    for (id, status) in [
        ("rw-completed", "COMPLETED"),
        ("rw-terminated", "TERMINATED"),
        ("rw-pending", "PENDING"),
        ("rw-running", "RUNNING"),
    ] {
        let err = rewind(&server, id, Some("no")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{id}");
        assert!(
            err.message().contains(status) && err.message().contains("does not allow rewinding"),
            "{id}: {}",
            err.message()
        );
    }
    assert_eq!(
        server
            .get("rw-completed")
            .await
            .unwrap()
            .orchestration_status,
        S::Completed as i32,
        "a refused rewind changes nothing"
    );
}

// --- durability ----------------------------------------------------------------------------

#[tokio::test]
async fn a_rewind_survives_a_restart_before_its_first_episode() {
    let server = TestServer::start().await;
    let calls = Calls::default();
    let worker = ScriptedWorker::start(server.client(), two_steps, calls.activities(1)).await;
    let id = server.start_instance("rw-restart", "TwoSteps", None).await;
    wait_status(&server, &id, S::Failed).await;
    worker.stop().await;

    rewind(&server, &id, Some("after the restart"))
        .await
        .unwrap();
    let server = server.restart().await;
    assert_eq!(
        server.get(&id).await.unwrap().orchestration_status,
        S::Running as i32
    );
    let worker = ScriptedWorker::start(server.client(), two_steps, calls.activities(1)).await;
    let state = wait_status(&server, &id, S::Completed).await;
    assert_eq!(state.output.as_deref(), Some("[\"ok-1\",\"flaky-2\"]"));
    assert_eq!(calls.count("ok"), 1);
    worker.stop().await;
}

// --- a worker's rewindOrchestration action (PROTOCOL.md §4.10 Flow A) ------------------------

#[tokio::test]
async fn a_worker_rewind_action_replaces_the_history_and_wakes_the_instance() {
    let server = TestServer::start().await;
    let id = "rw-action";
    let mut w = WorkStream::open(server.client(), Default::default()).await;
    start(&server, id, None).await;
    let (t, _) = w.orchestration().await;
    w.complete(&t, id, vec![schedule(0, "bad", None)])
        .await
        .unwrap();
    let (t, a) = w.activity().await;
    w.complete_activity(&t, &a, Err(failure("bad")))
        .await
        .unwrap();
    let (t, req) = w.orchestration().await;

    // What the Python SDK's rewind answers, built by hand.
    let mut new_history: Vec<pb::HistoryEvent> = all_events(&req)
        .filter(|e| match e.event_type {
            Some(EventType::TaskFailed(_)) => false,
            Some(EventType::TaskScheduled(_)) => e.event_id != 0,
            _ => true,
        })
        .cloned()
        .collect();
    for e in &mut new_history {
        if let Some(EventType::ExecutionStarted(s)) = &mut e.event_type {
            s.orchestration_instance.as_mut().unwrap().execution_id = Some("w-exec".into());
        }
    }
    new_history.push(pb::HistoryEvent {
        event_id: -1,
        timestamp: req.new_events[0].timestamp,
        event_type: Some(EventType::ExecutionRewound(pb::ExecutionRewoundEvent {
            reason: Some("from the worker".into()),
            ..Default::default()
        })),
    });
    w.complete(
        &t,
        id,
        vec![act(
            -1,
            A::RewindOrchestration(pb::RewindOrchestrationAction {
                new_history: new_history.clone(),
            }),
        )],
    )
    .await
    .unwrap();

    let (t, req) = w.orchestration().await;
    assert_eq!(req.execution_id.as_deref(), Some("w-exec"));
    assert_eq!(req.past_events, new_history, "stored exactly as given");
    assert_eq!(kinds(&req.new_events), vec!["OrchestratorStarted"]);
    w.complete(&t, id, vec![schedule(0, "bad", None)])
        .await
        .unwrap();
    let (t, a) = w.activity().await;
    w.complete_activity(&t, &a, Ok("\"ok\"")).await.unwrap();
    let (t, _) = w.orchestration().await;
    w.complete(&t, id, vec![finish(1, S::Completed, None)])
        .await
        .unwrap();
    wait_status(&server, id, S::Completed).await;
}
