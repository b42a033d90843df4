//! Client RPC semantics (PROTOCOL.md §3.1–§3.8) against a real server and SQLite file:
//! StartInstance validation and id reuse, GetInstance, the long-poll waits, RaiseEvent,
//! Terminate, Suspend/Resume and Restart. Queries, purge, history and the admin/health
//! surface are in `client_queries.rs`.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the shared helpers below.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::server::ServerOptions;
use durabletask_sidecar::service::ServiceOptions;
use pb::OrchestrationStatus as S;
use tonic::Code;

fn create(id: &str, name: &str) -> pb::CreateInstanceRequest {
    pb::CreateInstanceRequest {
        instance_id: id.into(),
        name: name.into(),
        ..Default::default()
    }
}

fn policy(statuses: &[S]) -> Option<pb::OrchestrationIdReusePolicy> {
    Some(pb::OrchestrationIdReusePolicy {
        replaceable_status: statuses.iter().map(|s| *s as i32).collect(),
    })
}

async fn start(
    server: &TestServer,
    req: pb::CreateInstanceRequest,
) -> Result<tonic::Response<pb::CreateInstanceResponse>, tonic::Status> {
    within("start instance", server.client().start_instance(req)).await
}

async fn get(server: &TestServer, id: &str, payloads: bool) -> pb::GetInstanceResponse {
    within(
        "get instance",
        server.client().get_instance(pb::GetInstanceRequest {
            instance_id: id.into(),
            get_inputs_and_outputs: payloads,
        }),
    )
    .await
    .unwrap()
    .into_inner()
}

async fn state(server: &TestServer, id: &str) -> pb::OrchestrationState {
    get(server, id, true)
        .await
        .orchestration_state
        .unwrap_or_else(|| panic!("instance {id} does not exist"))
}

async fn terminate(
    server: &TestServer,
    id: &str,
    reason: Option<&str>,
) -> Result<tonic::Response<pb::TerminateResponse>, tonic::Status> {
    within(
        "terminate",
        server.client().terminate_instance(pb::TerminateRequest {
            instance_id: id.into(),
            output: reason.map(Into::into),
            recursive: false,
        }),
    )
    .await
}

/// Starts an instance and terminates it before any worker sees it: a terminal instance
/// without needing a worker.
async fn terminated(server: &TestServer, id: &str, input: Option<&str>) -> pb::OrchestrationState {
    let mut req = create(id, "Orch");
    req.input = input.map(Into::into);
    start(server, req).await.unwrap();
    terminate(server, id, Some("\"done\"")).await.unwrap();
    let s = state(server, id).await;
    assert_eq!(s.orchestration_status, S::Terminated as i32);
    s
}

fn completes_at_once(_: &pb::OrchestratorRequest) -> Vec<pb::OrchestratorAction> {
    vec![finish(0, S::Completed, Some("\"ok\"".into()))]
}

fn echo(req: &pb::ActivityRequest) -> Result<Option<String>, String> {
    Ok(req.input.clone())
}

// ---- StartInstance -------------------------------------------------------------------

#[tokio::test]
async fn start_with_empty_name_is_invalid_argument() {
    let server = TestServer::start().await;
    let s = expect_err(start(&server, create("no-name", "")).await);
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(!get(&server, "no-name", false).await.exists);
}

#[tokio::test]
async fn start_with_entity_style_id_is_invalid_argument() {
    let server = TestServer::start().await;
    let s = expect_err(start(&server, create("@counter@k1", "Orch")).await);
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
}

#[tokio::test]
async fn start_with_id_longer_than_256_is_invalid_argument_and_256_is_accepted() {
    let server = TestServer::start().await;
    let s = expect_err(start(&server, create(&"x".repeat(257), "Orch")).await);
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let id = "y".repeat(256);
    let r = start(&server, create(&id, "Orch")).await.unwrap();
    assert_eq!(r.into_inner().instance_id, id);
}

#[tokio::test]
async fn start_with_empty_id_generates_a_32_hex_id() {
    let server = TestServer::start().await;
    let id = start(&server, create("", "Orch"))
        .await
        .unwrap()
        .into_inner()
        .instance_id;
    assert_eq!(id.len(), 32, "generated id {id:?}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id:?}");
    assert_eq!(
        state(&server, &id).await.orchestration_status,
        S::Pending as i32
    );
}

#[tokio::test]
async fn start_duplicate_of_a_pending_instance_without_policy_is_already_exists() {
    let server = TestServer::start().await;
    start(&server, create("dup-1", "Orch")).await.unwrap();
    let s = expect_err(start(&server, create("dup-1", "Orch")).await);
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
    assert!(s.message().contains("dup-1"), "message: {}", s.message());
}

#[tokio::test]
async fn reuse_policy_replacing_live_statuses_without_terminated_is_invalid_argument() {
    let server = TestServer::start().await;
    // Checked before the instance is looked up: the id does not even exist.
    let mut req = create("policy-bad", "Orch");
    req.orchestration_id_reuse_policy = policy(&[S::Running, S::Pending]);
    let s = expect_err(start(&server, req).await);
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message().starts_with("Invalid reusable statuses"),
        "message: {}",
        s.message()
    );
    assert!(!get(&server, "policy-bad", false).await.exists);
}

#[tokio::test]
async fn reuse_policy_with_pending_and_terminated_replaces_a_live_instance() {
    let server = TestServer::start().await;
    let mut first = create("replace-live", "Orch");
    first.input = Some("1".into());
    start(&server, first).await.unwrap();
    let old = state(&server, "replace-live").await;
    let mut second = create("replace-live", "Orch");
    second.input = Some("2".into());
    second.orchestration_id_reuse_policy = policy(&[S::Pending, S::Terminated]);
    start(&server, second).await.unwrap();
    let new = state(&server, "replace-live").await;
    assert_ne!(new.execution_id, old.execution_id, "a new execution");
    assert_eq!(new.orchestration_status, S::Pending as i32);
    assert_eq!(new.input.as_deref(), Some("2"));
}

#[tokio::test]
async fn terminal_instance_without_policy_is_replaced_by_a_new_pending_execution() {
    let server = TestServer::start().await;
    let old = terminated(&server, "replace-terminal", Some("1")).await;
    let mut req = create("replace-terminal", "Orch");
    req.input = Some("2".into());
    start(&server, req).await.unwrap();
    let new = state(&server, "replace-terminal").await;
    assert_ne!(new.execution_id, old.execution_id);
    assert_eq!(new.orchestration_status, S::Pending as i32);
    assert_eq!(new.input.as_deref(), Some("2"));
    assert!(new.output.is_none(), "the old output is gone");
    assert!(new.completed_timestamp.is_none());
}

#[tokio::test]
async fn reuse_policy_with_empty_list_rejects_even_a_terminal_instance() {
    let server = TestServer::start().await;
    let old = terminated(&server, "dedupe-all", None).await;
    let mut req = create("dedupe-all", "Orch");
    req.orchestration_id_reuse_policy = policy(&[]);
    let s = expect_err(start(&server, req).await);
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
    assert_eq!(
        state(&server, "dedupe-all").await.execution_id,
        old.execution_id
    );
}

#[tokio::test]
async fn scheduled_start_in_the_future_stays_pending_and_is_reported() {
    let server = TestServer::start().await;
    let worker = ScriptedWorker::start(server.client(), completes_at_once, echo).await;
    // The worker is live: an unscheduled instance completes...
    start(&server, create("now-1", "Orch")).await.unwrap();
    let now = server
        .wait_completion("now-1")
        .await
        .created_timestamp
        .unwrap();
    let at = prost_types::Timestamp {
        seconds: now.seconds + 60,
        nanos: 0,
    };
    let mut req = create("later-1", "Orch");
    req.scheduled_start_timestamp = Some(at);
    start(&server, req).await.unwrap();
    // ...but the scheduled one does not start before its time.
    let mut wait = tonic::Request::new(pb::GetInstanceRequest {
        instance_id: "later-1".into(),
        get_inputs_and_outputs: false,
    });
    wait.set_timeout(Duration::from_millis(500));
    let r = within("wait start", server.client().wait_for_instance_start(wait)).await;
    assert!(
        r.is_err(),
        "a scheduled instance must not start early: {r:?}"
    );
    let s = state(&server, "later-1").await;
    assert_eq!(s.orchestration_status, S::Pending as i32);
    assert_eq!(
        s.scheduled_start_timestamp.map(|t| t.seconds),
        Some(at.seconds)
    );
    worker.stop().await;
}

#[tokio::test]
async fn tags_round_trip_in_get_instance() {
    let server = TestServer::start().await;
    let tags: HashMap<String, String> = [("team", "a"), ("env", "dev")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut req = create("tags-1", "Orch");
    req.tags = tags.clone();
    start(&server, req).await.unwrap();
    assert_eq!(state(&server, "tags-1").await.tags, tags);
    // Tags are not a payload: they come back without getInputsAndOutputs too.
    let bare = get(&server, "tags-1", false)
        .await
        .orchestration_state
        .unwrap();
    assert_eq!(bare.tags, tags);
}

// ---- GetInstance ---------------------------------------------------------------------

#[tokio::test]
async fn get_unknown_instance_is_exists_false_without_state() {
    let server = TestServer::start().await;
    let r = get(&server, "nobody", true).await;
    assert!(!r.exists);
    assert!(r.orchestration_state.is_none());
}

#[tokio::test]
async fn get_returns_payloads_only_with_get_inputs_and_outputs() {
    let server = TestServer::start().await;
    terminated(&server, "payloads-1", Some("\"in\"")).await;
    let bare = get(&server, "payloads-1", false)
        .await
        .orchestration_state
        .unwrap();
    assert!(
        bare.input.is_none(),
        "input without the flag: {:?}",
        bare.input
    );
    assert!(
        bare.output.is_none(),
        "output without the flag: {:?}",
        bare.output
    );
    let full = state(&server, "payloads-1").await;
    assert_eq!(full.input.as_deref(), Some("\"in\""));
    assert_eq!(full.output.as_deref(), Some("\"done\""));
}

#[tokio::test]
async fn get_always_sets_timestamps_and_execution_id() {
    let server = TestServer::start().await;
    start(&server, create("stamps-1", "Orch")).await.unwrap();
    for payloads in [false, true] {
        let s = get(&server, "stamps-1", payloads)
            .await
            .orchestration_state
            .unwrap();
        assert!(s.created_timestamp.is_some());
        assert!(s.last_updated_timestamp.is_some());
        assert!(s.execution_id.as_deref().is_some_and(|e| !e.is_empty()));
        assert_eq!(s.instance_id, "stamps-1");
        assert_eq!(s.name, "Orch");
        assert!(s.completed_timestamp.is_none(), "not terminal yet");
    }
}

// ---- WaitForInstanceStart / WaitForInstanceCompletion --------------------------------

#[tokio::test]
async fn wait_for_an_unknown_instance_returns_exists_false_at_once() {
    let server = TestServer::start().await;
    let req = || pb::GetInstanceRequest {
        instance_id: "ghost".into(),
        get_inputs_and_outputs: true,
    };
    let mut c = server.client();
    let started = tokio::time::timeout(Duration::from_secs(2), c.wait_for_instance_start(req()))
        .await
        .expect("WaitForInstanceStart on an unknown id must not block")
        .unwrap()
        .into_inner();
    assert!(!started.exists && started.orchestration_state.is_none());
    let done = tokio::time::timeout(
        Duration::from_secs(2),
        c.wait_for_instance_completion(req()),
    )
    .await
    .expect("WaitForInstanceCompletion on an unknown id must not block")
    .unwrap()
    .into_inner();
    assert!(!done.exists && done.orchestration_state.is_none());
}

/// tonic's own client enforces `grpc-timeout` with a local timer and reports it as
/// CANCELLED "Timeout expired" (source `tonic::TimeoutExpired`), not DEADLINE_EXCEEDED;
/// SDK clients (Python, Java, .NET) report DEADLINE_EXCEEDED for the same event.
fn is_tonic_local_timeout(s: &tonic::Status) -> bool {
    let mut e = std::error::Error::source(s);
    while let Some(err) = e {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        e = err.source();
    }
    false
}

fn assert_deadline(s: &tonic::Status) {
    assert!(
        s.code() == Code::DeadlineExceeded
            || (s.code() == Code::Cancelled && is_tonic_local_timeout(s)),
        "expected DEADLINE_EXCEEDED (or tonic's local timeout), got {s:?}"
    );
}

async fn wait_with_deadline(server: &TestServer, id: &str, completion: bool) -> tonic::Status {
    let began = std::time::Instant::now();
    let mut req = tonic::Request::new(pb::GetInstanceRequest {
        instance_id: id.into(),
        get_inputs_and_outputs: false,
    });
    req.set_timeout(Duration::from_millis(300));
    let mut c = server.client();
    let r = if completion {
        within("wait completion", c.wait_for_instance_completion(req)).await
    } else {
        within("wait start", c.wait_for_instance_start(req)).await
    };
    let s = expect_err(r);
    assert!(
        began.elapsed() >= Duration::from_millis(250),
        "answered before the deadline: {s:?}"
    );
    s
}

#[tokio::test]
async fn wait_for_start_on_a_pending_instance_honours_the_client_deadline() {
    let server = TestServer::start().await;
    start(&server, create("deadline-start", "Orch"))
        .await
        .unwrap();
    let s = wait_with_deadline(&server, "deadline-start", false).await;
    assert_deadline(&s);
}

#[tokio::test]
async fn wait_for_completion_on_a_pending_instance_honours_the_client_deadline() {
    let server = TestServer::start().await;
    start(&server, create("deadline-done", "Orch"))
        .await
        .unwrap();
    let s = wait_with_deadline(&server, "deadline-done", true).await;
    assert_deadline(&s);
}

#[tokio::test]
async fn wait_without_client_deadline_ends_with_deadline_exceeded_at_the_server_maximum() {
    let server = TestServer::start_with(ServerOptions {
        service: ServiceOptions {
            max_wait: Duration::from_secs(1),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    start(&server, create("max-wait", "Orch")).await.unwrap();
    let s = expect_err(
        within(
            "wait completion",
            server
                .client()
                .wait_for_instance_completion(pb::GetInstanceRequest {
                    instance_id: "max-wait".into(),
                    get_inputs_and_outputs: false,
                }),
        )
        .await,
    );
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
}

#[tokio::test]
async fn a_waiter_is_woken_by_a_completion_that_happens_after_the_wait_began() {
    let server = TestServer::start().await;
    start(&server, create("woken-1", "Orch")).await.unwrap();
    let mut c = server.client();
    let mut waiter = tokio::spawn(async move {
        c.wait_for_instance_completion(pb::GetInstanceRequest {
            instance_id: "woken-1".into(),
            get_inputs_and_outputs: true,
        })
        .await
    });
    // No worker yet: the wait must still be blocked.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiter)
            .await
            .is_err(),
        "the wait returned before the instance completed"
    );
    let worker = ScriptedWorker::start(server.client(), completes_at_once, echo).await;
    let r = within("woken waiter", waiter)
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    assert!(r.exists);
    let s = r.orchestration_state.unwrap();
    assert_eq!(s.orchestration_status, S::Completed as i32);
    assert_eq!(s.output.as_deref(), Some("\"ok\""));
    worker.stop().await;
}

// ---- RaiseEvent ----------------------------------------------------------------------

async fn raise(
    server: &TestServer,
    id: &str,
    name: &str,
) -> Result<tonic::Response<pb::RaiseEventResponse>, tonic::Status> {
    within(
        "raise event",
        server.client().raise_event(pb::RaiseEventRequest {
            instance_id: id.into(),
            name: name.into(),
            input: Some("1".into()),
        }),
    )
    .await
}

#[tokio::test]
async fn raise_event_on_an_unknown_instance_is_not_found() {
    let server = TestServer::start().await;
    let s = expect_err(raise(&server, "nobody", "go").await);
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
}

#[tokio::test]
async fn raise_event_with_an_empty_name_is_invalid_argument() {
    let server = TestServer::start().await;
    start(&server, create("ev-noname", "Orch")).await.unwrap();
    let s = expect_err(raise(&server, "ev-noname", "").await);
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
}

#[tokio::test]
async fn raise_event_on_a_terminal_instance_is_ok_and_dropped() {
    let server = TestServer::start().await;
    let before = terminated(&server, "ev-done", None).await;
    raise(&server, "ev-done", "go").await.unwrap();
    let after = state(&server, "ev-done").await;
    assert_eq!(after.orchestration_status, S::Terminated as i32);
    assert_eq!(after.execution_id, before.execution_id);
    let raised = history(&server.client(), "ev-done")
        .await
        .iter()
        .filter(|e| {
            matches!(
                e.event_type,
                Some(pb::history_event::EventType::EventRaised(_))
            )
        })
        .count();
    assert_eq!(raised, 0);
}

// ---- TerminateInstance ---------------------------------------------------------------

#[tokio::test]
async fn terminate_an_unknown_instance_is_not_found() {
    let server = TestServer::start().await;
    let s = expect_err(terminate(&server, "nobody", None).await);
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
}

#[tokio::test]
async fn terminate_a_pending_instance_without_worker_terminates_it_at_once() {
    let server = TestServer::start().await;
    start(&server, create("term-pending", "Orch"))
        .await
        .unwrap();
    terminate(&server, "term-pending", Some("\"why\""))
        .await
        .unwrap();
    // No worker is connected: the state must already be final when the RPC returns.
    let s = state(&server, "term-pending").await;
    assert_eq!(s.orchestration_status, S::Terminated as i32);
    assert_eq!(s.output.as_deref(), Some("\"why\""));
    assert!(s.completed_timestamp.is_some());
}

#[tokio::test]
async fn terminate_a_terminal_instance_is_an_ok_no_op() {
    let server = TestServer::start().await;
    let before = terminated(&server, "term-twice", None).await;
    terminate(&server, "term-twice", Some("\"again\""))
        .await
        .unwrap();
    let after = state(&server, "term-twice").await;
    assert_eq!(after.orchestration_status, S::Terminated as i32);
    assert_eq!(after.output, before.output, "the first reason stays");
    assert_eq!(after.completed_timestamp, before.completed_timestamp);
}

// ---- SuspendInstance / ResumeInstance ------------------------------------------------

async fn suspend(server: &TestServer, id: &str, on: bool) -> Result<(), tonic::Status> {
    let mut c = server.client();
    if on {
        within(
            "suspend",
            c.suspend_instance(pb::SuspendRequest {
                instance_id: id.into(),
                reason: Some("r".into()),
            }),
        )
        .await
        .map(|_| ())
    } else {
        within(
            "resume",
            c.resume_instance(pb::ResumeRequest {
                instance_id: id.into(),
                reason: Some("r".into()),
            }),
        )
        .await
        .map(|_| ())
    }
}

#[tokio::test]
async fn suspend_and_resume_of_an_unknown_instance_are_not_found() {
    let server = TestServer::start().await;
    let s = suspend(&server, "nobody", true).await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let s = suspend(&server, "nobody", false).await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
}

#[tokio::test]
async fn suspend_flips_a_pending_instance_at_once_and_resume_brings_it_back_idempotently() {
    let server = TestServer::start().await;
    start(&server, create("susp-1", "Orch")).await.unwrap();
    suspend(&server, "susp-1", true).await.unwrap();
    let s = state(&server, "susp-1").await;
    assert_eq!(s.orchestration_status, S::Suspended as i32);
    suspend(&server, "susp-1", true).await.unwrap();
    assert_eq!(
        state(&server, "susp-1").await.orchestration_status,
        S::Suspended as i32
    );
    suspend(&server, "susp-1", false).await.unwrap();
    let resumed = state(&server, "susp-1").await.orchestration_status;
    assert!(
        resumed == S::Running as i32 || resumed == S::Pending as i32,
        "after resume: {resumed}"
    );
    suspend(&server, "susp-1", false).await.unwrap();
    assert_eq!(state(&server, "susp-1").await.orchestration_status, resumed);
}

// ---- RestartInstance -----------------------------------------------------------------

async fn restart(
    server: &TestServer,
    id: &str,
    new_id: bool,
) -> Result<tonic::Response<pb::RestartInstanceResponse>, tonic::Status> {
    within(
        "restart",
        server
            .client()
            .restart_instance(pb::RestartInstanceRequest {
                instance_id: id.into(),
                restart_with_new_instance_id: new_id,
            }),
    )
    .await
}

#[tokio::test]
async fn restart_an_unknown_instance_is_not_found() {
    let server = TestServer::start().await;
    let s = expect_err(restart(&server, "nobody", false).await);
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
}

#[tokio::test]
async fn restart_a_live_instance_with_the_same_id_is_failed_precondition() {
    let server = TestServer::start().await;
    start(&server, create("restart-live", "Orch"))
        .await
        .unwrap();
    let s = expect_err(restart(&server, "restart-live", false).await);
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
}

#[tokio::test]
async fn restart_a_live_instance_with_a_new_id_creates_another_instance() {
    let server = TestServer::start().await;
    let mut req = create("restart-new", "Orch");
    req.input = Some("\"in\"".into());
    start(&server, req).await.unwrap();
    let new_id = restart(&server, "restart-new", true)
        .await
        .unwrap()
        .into_inner()
        .instance_id;
    assert_ne!(new_id, "restart-new");
    let s = state(&server, &new_id).await;
    assert_eq!(s.name, "Orch");
    assert_eq!(s.input.as_deref(), Some("\"in\""));
    assert_eq!(
        state(&server, "restart-new").await.orchestration_status,
        S::Pending as i32,
        "the original is untouched"
    );
}

#[tokio::test]
async fn restart_a_terminal_instance_with_the_same_id_makes_it_pending_with_the_same_input() {
    let server = TestServer::start().await;
    let old = terminated(&server, "restart-same", Some("\"in\"")).await;
    let id = restart(&server, "restart-same", false)
        .await
        .unwrap()
        .into_inner()
        .instance_id;
    assert_eq!(id, "restart-same");
    let s = state(&server, &id).await;
    assert_eq!(s.orchestration_status, S::Pending as i32);
    assert_eq!(s.input.as_deref(), Some("\"in\""));
    assert_ne!(s.execution_id, old.execution_id);
}
