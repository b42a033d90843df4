//! Orchestrations end to end against a real server and SQLite file, driven by a scripted
//! worker (no SDK): sequences, fan-out, timers, events, children, continue-as-new,
//! terminate, and survival across a restart.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use durabletask_sidecar::proto as pb;
use pb::history_event::EventType;
use pb::orchestrator_action::OrchestratorActionType as A;
use pb::OrchestrationStatus as S;

fn count(req: &pb::OrchestratorRequest, pred: impl Fn(&EventType) -> bool) -> usize {
    all_events(req)
        .filter(|e| e.event_type.as_ref().is_some_and(&pred))
        .count()
}

/// Schedules activity k after k results, completes with the results joined.
fn sequence(n: usize) -> impl Fn(&pb::OrchestratorRequest) -> Vec<pb::OrchestratorAction> {
    move |req| {
        let done = completed_results(req);
        let scheduled = count(req, |e| matches!(e, EventType::TaskScheduled(_)));
        if done.len() == n {
            vec![finish(
                n as i32,
                S::Completed,
                Some(format!("[{}]", done.join(","))),
            )]
        } else if scheduled == done.len() {
            vec![schedule(
                done.len() as i32,
                "echo",
                Some(format!("{}", done.len())),
            )]
        } else {
            vec![]
        }
    }
}

fn echo(req: &pb::ActivityRequest) -> Result<Option<String>, String> {
    Ok(req.input.clone())
}

#[tokio::test]
async fn activity_sequence_completes_with_every_result_in_order() {
    let server = TestServer::start().await;
    let worker = ScriptedWorker::start(server.client(), sequence(3), echo).await;
    let id = server.start_instance("seq-1", "Seq", Some("\"x\"")).await;
    let state = server.wait_completion(&id).await;
    assert_eq!(state.orchestration_status, S::Completed as i32);
    assert_eq!(state.output.as_deref(), Some("[0,1,2]"));
    assert_eq!(state.input.as_deref(), Some("\"x\""));
    assert!(state.completed_timestamp.is_some());
    assert!(state.failure_details.is_none());
    worker.stop().await;
}

#[tokio::test]
async fn fan_out_results_arrive_batched_and_all_are_applied_once() {
    let server = TestServer::start().await;
    let orchestrator = |req: &pb::OrchestratorRequest| {
        let done = completed_results(req);
        if count(req, |e| matches!(e, EventType::TaskScheduled(_))) == 0 {
            (0..50)
                .map(|i| schedule(i, "echo", Some(i.to_string())))
                .collect()
        } else if done.len() == 50 {
            let sum: i64 = done.iter().map(|r| r.parse::<i64>().unwrap()).sum();
            vec![finish(100, S::Completed, Some(sum.to_string()))]
        } else {
            vec![]
        }
    };
    let worker = ScriptedWorker::start(server.client(), orchestrator, echo).await;
    let id = server.start_instance("fan-1", "Fan", None).await;
    let state = server.wait_completion(&id).await;
    assert_eq!(
        state.output.as_deref(),
        Some(&*(0..50).sum::<i64>().to_string())
    );
    let episodes = worker
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|w| {
            matches!(
                w.request,
                Some(pb::work_item::Request::OrchestratorRequest(_))
            )
        })
        .count();
    assert!(
        episodes < 50,
        "results should be batched into few episodes, got {episodes}"
    );
    worker.stop().await;
}

#[tokio::test]
async fn timer_fires_no_earlier_than_fire_at_with_the_same_fire_at() {
    let server = TestServer::start().await;
    let orchestrator = |req: &pb::OrchestratorRequest| {
        let fired = all_events(req).find_map(|e| match &e.event_type {
            Some(EventType::TimerFired(f)) => Some(*f),
            _ => None,
        });
        let created = all_events(req).find_map(|e| match &e.event_type {
            Some(EventType::TimerCreated(c)) => Some(*c),
            _ => None,
        });
        let started_at = req.new_events[0].timestamp.unwrap();
        match (created, fired) {
            (None, _) => {
                let fire_at = prost_types::Timestamp {
                    seconds: started_at.seconds + 1,
                    nanos: started_at.nanos,
                };
                vec![act(
                    1,
                    A::CreateTimer(pb::CreateTimerAction {
                        fire_at: Some(fire_at),
                    }),
                )]
            }
            (Some(c), Some(f)) => {
                assert_eq!(
                    c.fire_at, f.fire_at,
                    "TimerFired.fireAt must copy TimerCreated.fireAt"
                );
                assert_eq!(f.timer_id, 1);
                let late = (started_at.seconds, started_at.nanos)
                    >= (
                        c.fire_at.as_ref().unwrap().seconds,
                        c.fire_at.as_ref().unwrap().nanos,
                    );
                vec![finish(2, S::Completed, Some(late.to_string()))]
            }
            _ => vec![],
        }
    };
    let worker = ScriptedWorker::start(server.client(), orchestrator, echo).await;
    let id = server.start_instance("timer-1", "Timer", None).await;
    let state = server.wait_completion(&id).await;
    assert_eq!(
        state.output.as_deref(),
        Some("true"),
        "the episode after the timer must start at or after fireAt"
    );
    worker.stop().await;
}

fn wait_for_event(req: &pb::OrchestratorRequest) -> Vec<pb::OrchestratorAction> {
    let raised: Vec<String> = all_events(req)
        .filter_map(|e| match &e.event_type {
            Some(EventType::EventRaised(r)) => Some(format!(
                "{}={}",
                r.name,
                r.input.clone().unwrap_or_default()
            )),
            _ => None,
        })
        .collect();
    if raised.len() >= 3 {
        vec![finish(0, S::Completed, Some(raised.join(";")))]
    } else {
        vec![]
    }
}

#[tokio::test]
async fn events_raised_before_the_first_episode_are_delivered_in_order() {
    let server = TestServer::start().await;
    let id = server.start_instance("ev-1", "Ev", None).await;
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        server
            .client()
            .raise_event(pb::RaiseEventRequest {
                instance_id: id.clone(),
                name: name.to_string(),
                input: Some(i.to_string()),
            })
            .await
            .unwrap();
    }
    let worker = ScriptedWorker::start(server.client(), wait_for_event, echo).await;
    let state = server.wait_completion(&id).await;
    assert_eq!(state.output.as_deref(), Some("a=0;b=1;c=2"));
    worker.stop().await;
}

#[tokio::test]
async fn sub_orchestration_result_reaches_the_parent() {
    let server = TestServer::start().await;
    let orchestrator = |req: &pb::OrchestratorRequest| {
        let name = all_events(req)
            .find_map(|e| match &e.event_type {
                Some(EventType::ExecutionStarted(s)) => Some(s.name.clone()),
                _ => None,
            })
            .unwrap();
        if name == "Child" {
            return vec![finish(
                0,
                S::Completed,
                Some(format!("child-of-{}", input_of(req).unwrap())),
            )];
        }
        let child_done = all_events(req).find_map(|e| match &e.event_type {
            Some(EventType::SubOrchestrationInstanceCompleted(c)) => Some(c.clone()),
            _ => None,
        });
        match child_done {
            Some(c) => {
                assert_eq!(c.task_scheduled_id, 4);
                vec![finish(5, S::Completed, c.result)]
            }
            None if count(req, |e| {
                matches!(e, EventType::SubOrchestrationInstanceCreated(_))
            }) == 0 =>
            {
                vec![act(
                    4,
                    A::CreateSubOrchestration(pb::CreateSubOrchestrationAction {
                        instance_id: format!("{}-child", req.instance_id),
                        name: "Child".into(),
                        input: Some("\"p\"".into()),
                        ..Default::default()
                    }),
                )]
            }
            None => vec![],
        }
    };
    let worker = ScriptedWorker::start(server.client(), orchestrator, echo).await;
    let id = server.start_instance("parent-1", "Parent", None).await;
    let state = server.wait_completion(&id).await;
    assert_eq!(state.output.as_deref(), Some("child-of-\"p\""));
    let child = server.get("parent-1-child").await.unwrap();
    assert_eq!(child.parent_instance_id.as_deref(), Some("parent-1"));
    assert_eq!(child.orchestration_status, S::Completed as i32);
    worker.stop().await;
}

#[tokio::test]
async fn continue_as_new_runs_generations_with_new_execution_ids() {
    let server = TestServer::start().await;
    let executions = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&executions);
    let orchestrator = move |req: &pb::OrchestratorRequest| {
        let n: i32 = input_of(req).unwrap().parse().unwrap();
        seen.lock().unwrap().push(req.execution_id.clone().unwrap());
        if n < 5 {
            vec![act(
                0,
                A::CompleteOrchestration(pb::CompleteOrchestrationAction {
                    orchestration_status: S::ContinuedAsNew as i32,
                    result: Some((n + 1).to_string()),
                    ..Default::default()
                }),
            )]
        } else {
            vec![finish(0, S::Completed, Some(n.to_string()))]
        }
    };
    let worker = ScriptedWorker::start(server.client(), orchestrator, echo).await;
    let id = server.start_instance("can-1", "Can", Some("0")).await;
    let state = server.wait_completion(&id).await;
    assert_eq!(state.output.as_deref(), Some("5"));
    assert_eq!(
        state.input.as_deref(),
        Some("5"),
        "input is the last generation's input"
    );
    let mut ids = executions.lock().unwrap().clone();
    ids.dedup();
    assert_eq!(ids.len(), 6, "every generation has its own execution id");
    worker.stop().await;
}

#[tokio::test]
async fn terminate_reaches_a_waiting_instance_and_recursive_terminate_reaches_children() {
    let server = TestServer::start().await;
    let orchestrator = |req: &pb::OrchestratorRequest| {
        if let Some(t) = all_events(req).find_map(|e| match &e.event_type {
            Some(EventType::ExecutionTerminated(t)) => Some(t.clone()),
            _ => None,
        }) {
            return vec![finish(-1, S::Terminated, t.input)];
        }
        let is_parent = input_of(req).as_deref() == Some("\"parent\"");
        if is_parent
            && count(req, |e| {
                matches!(e, EventType::SubOrchestrationInstanceCreated(_))
            }) == 0
        {
            return vec![act(
                0,
                A::CreateSubOrchestration(pb::CreateSubOrchestrationAction {
                    instance_id: "term-child".into(),
                    name: "Waiter".into(),
                    input: Some("\"child\"".into()),
                    ..Default::default()
                }),
            )];
        }
        vec![]
    };
    let worker = ScriptedWorker::start(server.client(), orchestrator, echo).await;
    let id = server
        .start_instance("term-parent", "Waiter", Some("\"parent\""))
        .await;
    // Wait until the child exists and runs.
    within("child start", async {
        loop {
            if let Some(c) = server.get("term-child").await {
                if c.orchestration_status == S::Running as i32 {
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    server
        .client()
        .terminate_instance(pb::TerminateRequest {
            instance_id: id.clone(),
            output: Some("\"stop\"".into()),
            recursive: true,
        })
        .await
        .unwrap();
    let state = server.wait_completion(&id).await;
    assert_eq!(state.orchestration_status, S::Terminated as i32);
    assert_eq!(state.output.as_deref(), Some("\"stop\""));
    let child = server.wait_completion("term-child").await;
    assert_eq!(child.orchestration_status, S::Terminated as i32);
    worker.stop().await;
}

#[tokio::test]
async fn a_waiting_orchestration_survives_a_restart_and_completes_after() {
    let server = TestServer::start().await;
    let id = server.start_instance("durable-1", "Ev", None).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let worker = ScriptedWorker::start(
        server.client(),
        move |r| {
            c.fetch_add(1, Ordering::SeqCst);
            wait_for_event(r)
        },
        echo,
    )
    .await;
    for name in ["a", "b"] {
        server
            .client()
            .raise_event(pb::RaiseEventRequest {
                instance_id: id.clone(),
                name: name.into(),
                input: None,
            })
            .await
            .unwrap();
    }
    within("two events processed", async {
        loop {
            let h = server
                .client()
                .stream_instance_history(pb::StreamInstanceHistoryRequest {
                    instance_id: id.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .message()
                .await
                .unwrap();
            let raised = h
                .map(|c| {
                    c.events
                        .iter()
                        .filter(|e| matches!(e.event_type, Some(EventType::EventRaised(_))))
                        .count()
                })
                .unwrap_or(0);
            if raised == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    worker.stop().await;
    let server = server.restart().await;
    let worker = ScriptedWorker::start(server.client(), wait_for_event, echo).await;
    server
        .client()
        .raise_event(pb::RaiseEventRequest {
            instance_id: id.clone(),
            name: "c".into(),
            input: None,
        })
        .await
        .unwrap();
    let state = server.wait_completion(&id).await;
    assert_eq!(state.output.as_deref(), Some("a=;b=;c="));
    worker.stop().await;
}
