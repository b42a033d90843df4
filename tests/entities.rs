//! Durable entities at the protocol level (PROTOCOL.md §5), driven by hand: validation,
//! the V2 work item, results and state, partial results, abandon and stream loss,
//! restart safety, GetEntity/QueryEntities/purge, and orchestration calls with locks.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the shared helpers below.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use durabletask_sidecar::domain::Clock;
use durabletask_sidecar::proto as pb;
use pb::history_event::EventType;
use pb::operation_result::ResultType;
use pb::orchestrator_action::OrchestratorActionType as A;
use pb::send_entity_message_action::EntityMessageType as M;
use tonic::Code;

fn is_entity(i: &pb::WorkItem) -> bool {
    matches!(i.request, Some(pb::work_item::Request::EntityRequestV2(_)))
}

async fn entity_item(w: &mut WorkStream) -> (String, pb::EntityRequest) {
    let item = w.next_where(is_entity).await;
    let Some(pb::work_item::Request::EntityRequestV2(req)) = item.request else {
        unreachable!()
    };
    (item.completion_token, req)
}

async fn signal(server: &TestServer, id: &str, op: &str, input: Option<&str>) {
    within(
        "signal",
        server.client().signal_entity(pb::SignalEntityRequest {
            instance_id: id.into(),
            name: op.into(),
            input: input.map(Into::into),
            request_id: format!("{op}-{}", input.unwrap_or("")),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
}

fn ok(result: Option<&str>) -> pb::OperationResult {
    pb::OperationResult {
        result_type: Some(ResultType::Success(pb::OperationResultSuccess {
            result: result.map(Into::into),
            ..Default::default()
        })),
    }
}

async fn complete(
    w: &WorkStream,
    token: &str,
    results: Vec<pb::OperationResult>,
    state: Option<&str>,
) -> Result<(), tonic::Status> {
    within(
        "complete entity",
        w.client
            .clone()
            .complete_entity_task(pb::EntityBatchResult {
                results,
                entity_state: state.map(Into::into),
                completion_token: token.into(),
                ..Default::default()
            }),
    )
    .await
    .map(|_| ())
}

async fn get(server: &TestServer, id: &str) -> pb::GetEntityResponse {
    within(
        "get entity",
        server.client().get_entity(pb::GetEntityRequest {
            instance_id: id.into(),
            include_state: true,
        }),
    )
    .await
    .unwrap()
    .into_inner()
}

fn operations(req: &pb::EntityRequest) -> Vec<String> {
    req.operation_requests
        .iter()
        .map(|e| match &e.event_type {
            Some(EventType::EntityOperationSignaled(s)) => s.operation.clone(),
            Some(EventType::EntityOperationCalled(c)) => c.operation.clone(),
            _ => "?".into(),
        })
        .collect()
}

async fn open(server: &TestServer) -> WorkStream {
    WorkStream::open(server.client(), pb::GetWorkItemsRequest::default()).await
}

#[tokio::test]
async fn bad_entity_ids_and_missing_operation_names_are_invalid_argument() {
    let server = TestServer::start().await;
    let mut c = server.client();
    for (id, name) in [
        ("plain", "op"),
        ("@noKey", "op"),
        ("@@key", "op"),
        ("@e@k", ""),
    ] {
        let s = c
            .signal_entity(pb::SignalEntityRequest {
                instance_id: id.into(),
                name: name.into(),
                ..Default::default()
            })
            .await
            .expect_err("expected INVALID_ARGUMENT");
        assert_eq!(s.code(), Code::InvalidArgument, "{id}/{name}: {s:?}");
    }
    let s = c
        .get_entity(pb::GetEntityRequest {
            instance_id: "plain".into(),
            include_state: false,
        })
        .await
        .expect_err("expected INVALID_ARGUMENT");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(!get(&server, "@never@touched").await.exists);
}

#[tokio::test]
async fn signals_arrive_as_one_v2_batch_and_the_result_sets_the_state() {
    let server = TestServer::start().await;
    signal(&server, "@counter@a", "add", Some("1")).await;
    signal(&server, "@counter@a", "add", Some("2")).await;
    // Queued before any worker: no state yet, so it exists only as a transient entity.
    assert!(!get(&server, "@counter@a").await.exists);
    let transient = query_all(&server, true).await;
    assert_eq!(transient.len(), 1);
    assert_eq!(transient[0].backlog_queue_size, 2);
    assert_eq!(transient[0].serialized_state, None);

    let mut w = open(&server).await;
    let (token, req) = entity_item(&mut w).await;
    assert_eq!(req.instance_id, "@counter@a");
    assert_eq!(req.entity_state, None);
    assert_eq!(operations(&req), vec!["add", "add"]);
    complete(&w, &token, vec![ok(None), ok(None)], Some("3"))
        .await
        .unwrap();
    let after = get(&server, "@counter@a").await.entity.unwrap();
    assert_eq!(after.serialized_state.as_deref(), Some("3"));
    assert_eq!(after.backlog_queue_size, 0);
    assert_eq!(after.locked_by, None);

    // The same token again is a harmless duplicate; an unknown one is NOT_FOUND.
    complete(&w, &token, vec![], None).await.unwrap();
    let s = complete(&w, "e999", vec![], None).await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound);

    // The next batch sees the stored state.
    signal(&server, "@counter@a", "add", Some("4")).await;
    let (_, req) = entity_item(&mut w).await;
    assert_eq!(req.entity_state.as_deref(), Some("3"));
}

#[tokio::test]
async fn operations_without_a_result_are_delivered_again() {
    let server = TestServer::start().await;
    for n in ["1", "2", "3"] {
        signal(&server, "@counter@p", "add", Some(n)).await;
    }
    let mut w = open(&server).await;
    let (token, req) = entity_item(&mut w).await;
    assert_eq!(req.operation_requests.len(), 3);
    complete(&w, &token, vec![ok(None)], Some("1"))
        .await
        .unwrap();
    let (_, again) = entity_item(&mut w).await;
    assert_eq!(
        again.operation_requests,
        req.operation_requests[1..].to_vec()
    );
    assert_eq!(again.entity_state.as_deref(), Some("1"));
}

#[tokio::test]
async fn abandoned_and_lost_batches_come_back_with_the_state_unchanged() {
    let server = TestServer::start().await;
    signal(&server, "@counter@x", "add", Some("5")).await;
    let mut first = open(&server).await;
    let (token, req) = entity_item(&mut first).await;
    within(
        "abandon",
        server
            .client()
            .abandon_task_entity_work_item(pb::AbandonEntityTaskRequest {
                completion_token: token.clone(),
            }),
    )
    .await
    .unwrap();
    let (token2, again) = entity_item(&mut first).await;
    assert_ne!(token, token2);
    assert_eq!(again.operation_requests, req.operation_requests);
    drop(first);
    let mut second = open(&server).await;
    let (token3, third) = entity_item(&mut second).await;
    assert_eq!(third.operation_requests, req.operation_requests);
    // The lost stream's token is void.
    let s = complete(&second, &token2, vec![ok(None)], Some("9"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    complete(&second, &token3, vec![ok(None)], Some("5"))
        .await
        .unwrap();
    let meta = get(&server, "@counter@x").await.entity.unwrap();
    assert_eq!(meta.serialized_state.as_deref(), Some("5"));
}

#[tokio::test]
async fn a_batch_in_flight_at_a_restart_is_delivered_again() {
    let server = TestServer::start().await;
    signal(&server, "@counter@r", "add", Some("7")).await;
    let mut w = open(&server).await;
    let _ = entity_item(&mut w).await;
    drop(w);
    let server = server.restart().await;
    let mut w = open(&server).await;
    let (token, req) = entity_item(&mut w).await;
    assert_eq!(operations(&req), vec!["add"]);
    complete(&w, &token, vec![ok(None)], Some("7"))
        .await
        .unwrap();
    assert_eq!(
        get(&server, "@counter@r")
            .await
            .entity
            .unwrap()
            .serialized_state
            .as_deref(),
        Some("7")
    );
}

#[tokio::test]
async fn delayed_signals_wait_for_their_time() {
    let server = TestServer::start().await;
    let clock = durabletask_sidecar::domain::SystemClock;
    let at = clock.now() + chrono::Duration::milliseconds(1500);
    within(
        "signal",
        server.client().signal_entity(pb::SignalEntityRequest {
            instance_id: "@counter@d".into(),
            name: "add".into(),
            scheduled_time: Some(prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: at.timestamp_subsec_nanos() as i32,
            }),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    // The batch must not be received before its time. Checking the clock when it arrives,
    // rather than watching a fixed window, holds however slowly the signal and the stream
    // were set up.
    let mut w = open(&server).await;
    let (_, req) = entity_item(&mut w).await;
    let received = clock.now();
    assert!(received >= at, "delivered {} early", at - received);
    assert_eq!(operations(&req), vec!["add"]);
}

#[tokio::test]
async fn query_pages_by_id_and_purge_removes_an_idle_entity() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    for key in ["a", "b", "c"] {
        signal(&server, &format!("@q@{key}"), "set", None).await;
        let (token, _) = entity_item(&mut w).await;
        complete(&w, &token, vec![ok(None)], Some("0"))
            .await
            .unwrap();
    }
    let mut c = server.client();
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .query_entities(pb::QueryEntitiesRequest {
                query: Some(pb::EntityQuery {
                    instance_id_starts_with: Some("@q@".into()),
                    include_state: true,
                    page_size: Some(2),
                    continuation_token: token.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(
            page.entities
                .iter()
                .map(|e| (e.instance_id.clone(), e.serialized_state.clone())),
        );
        token = page.continuation_token;
        if token.is_none() {
            break;
        }
    }
    let zero = Some("0".to_string());
    assert_eq!(
        seen,
        vec![
            ("@q@a".to_string(), zero.clone()),
            ("@q@b".to_string(), zero.clone()),
            ("@q@c".to_string(), zero)
        ]
    );
    let purged = c
        .purge_instances(pb::PurgeInstancesRequest {
            request: Some(pb::purge_instances_request::Request::InstanceId(
                "@q@a".into(),
            )),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.deleted_instance_count, 1);
    assert!(!get(&server, "@q@a").await.exists);
}

fn entity_action(id: i32, m: M) -> pb::OrchestratorAction {
    pb::OrchestratorAction {
        id,
        orchestrator_action_type: Some(A::SendEntityMessage(pb::SendEntityMessageAction {
            entity_message_type: Some(m),
        })),
    }
}

/// `owner`'s request to lock `set` in critical section `section`.
fn lock_action(id: i32, owner: &str, section: &str, set: &[&str]) -> pb::OrchestratorAction {
    entity_action(
        id,
        M::EntityLockRequested(pb::EntityLockRequestedEvent {
            critical_section_id: section.into(),
            lock_set: set.iter().map(|e| e.to_string()).collect(),
            position: 0,
            parent_instance_id: Some(owner.into()),
        }),
    )
}

/// A call of `operation` on `entity`, answered to `request_id`.
fn call_action(id: i32, request_id: &str, operation: &str, entity: &str) -> pb::OrchestratorAction {
    entity_action(
        id,
        M::EntityOperationCalled(pb::EntityOperationCalledEvent {
            request_id: request_id.into(),
            operation: operation.into(),
            target_instance_id: Some(entity.into()),
            ..Default::default()
        }),
    )
}

#[tokio::test]
async fn an_orchestration_locks_calls_and_its_end_releases_the_lock() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    within("start", server.start_instance("locker", "Orch", None)).await;
    let (token, _) = w.orchestration().await;
    w.complete(
        &token,
        "locker",
        vec![lock_action(0, "locker", "cs-1", &["@lk@a", "@lk@b"])],
    )
    .await
    .unwrap();
    // Both entities lock in order; the grant arrives as a new event.
    let (token, req) = w.orchestration().await;
    assert!(req.new_events.iter().any(|e| matches!(&e.event_type,
        Some(EventType::EntityLockGranted(g)) if g.critical_section_id == "cs-1")));
    // Locked but without state: it does not exist for GetEntity, only as a transient one.
    assert!(!get(&server, "@lk@b").await.exists);
    let locked = query_all(&server, true).await;
    let locked = locked.iter().find(|e| e.instance_id == "@lk@b").unwrap();
    assert_eq!(locked.locked_by.as_deref(), Some("locker"));

    // A client signal waits behind the lock; the owner's call runs.
    signal(&server, "@lk@a", "other", None).await;
    w.complete(
        &token,
        "locker",
        vec![call_action(1, "call-1", "get", "@lk@a")],
    )
    .await
    .unwrap();
    let (etoken, ereq) = entity_item(&mut w).await;
    assert_eq!(operations(&ereq), vec!["get"]);
    let Some(EventType::EntityOperationCalled(call)) = &ereq.operation_requests[0].event_type
    else {
        unreachable!()
    };
    // The sidecar filled in who called.
    assert_eq!(call.parent_instance_id.as_deref(), Some("locker"));
    assert!(call.parent_execution_id.is_some());
    complete(&w, &etoken, vec![ok(Some("42"))], None)
        .await
        .unwrap();
    let (token, req) = w.orchestration().await;
    assert!(req.new_events.iter().any(|e| matches!(&e.event_type,
        Some(EventType::EntityOperationCompleted(c))
            if c.request_id == "call-1" && c.output.as_deref() == Some("42"))));

    // Completing without unlocking releases both locks; the held signal then runs.
    w.complete(
        &token,
        "locker",
        vec![finish(2, pb::OrchestrationStatus::Completed, None)],
    )
    .await
    .unwrap();
    let (_, held) = entity_item(&mut w).await;
    assert_eq!(operations(&held), vec!["other"]);
    eventually("lock on @lk@b released", || async {
        query_all(&server, true)
            .await
            .iter()
            .all(|e| e.locked_by.is_none())
            .then_some(())
    })
    .await;
}

/// Every entity (transient ones too when asked), one page.
async fn query_all(server: &TestServer, include_transient: bool) -> Vec<pb::EntityMetadata> {
    within(
        "query entities",
        server.client().query_entities(pb::QueryEntitiesRequest {
            query: Some(pb::EntityQuery {
                include_transient,
                include_state: true,
                ..Default::default()
            }),
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .entities
}

#[tokio::test]
async fn an_entity_exists_once_it_has_state() {
    let server = TestServer::start().await;
    let clock = durabletask_sidecar::domain::SystemClock;
    let later = clock.now() + chrono::Duration::hours(1);
    within(
        "delayed signal",
        server.client().signal_entity(pb::SignalEntityRequest {
            instance_id: "@later@k".into(),
            name: "add".into(),
            scheduled_time: Some(prost_types::Timestamp {
                seconds: later.timestamp(),
                nanos: 0,
            }),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let got = get(&server, "@later@k").await;
    assert!(!got.exists, "only a delayed signal waits: {got:?}");
    assert!(got.entity.is_none());
    assert!(query_all(&server, false).await.is_empty());
    let transient = query_all(&server, true).await;
    assert_eq!(transient.len(), 1, "{transient:?}");
    assert_eq!(transient[0].backlog_queue_size, 1);

    let mut w = open(&server).await;
    signal(&server, "@later@k", "set", Some("5")).await;
    let (token, _) = entity_item(&mut w).await;
    complete(&w, &token, vec![ok(None)], Some("5"))
        .await
        .unwrap();
    let got = get(&server, "@later@k").await;
    assert!(got.exists);
    assert_eq!(got.entity.unwrap().serialized_state.as_deref(), Some("5"));
}

/// The owner's final commit and the release of its locks become visible together: the
/// entity still has the owner's call in flight (so it cannot apply the queued release
/// yet), and GetEntity right after the owner's completion must not name the owner.
#[tokio::test]
async fn a_finished_owner_no_longer_holds_its_locks_when_its_end_is_visible() {
    let server = TestServer::start().await;
    let mut w = open(&server).await;
    signal(&server, "@vis@a", "init", None).await;
    let (token, _) = entity_item(&mut w).await;
    complete(&w, &token, vec![ok(None)], Some("1"))
        .await
        .unwrap();

    within("start", server.start_instance("owner", "Orch", None)).await;
    let (token, _) = w.orchestration().await;
    w.complete(
        &token,
        "owner",
        vec![lock_action(0, "owner", "cs-vis", &["@vis@a"])],
    )
    .await
    .unwrap();
    let (token, _) = w.orchestration().await;
    w.complete(
        &token,
        "owner",
        vec![call_action(1, "call-vis", "slow", "@vis@a")],
    )
    .await
    .unwrap();
    // The call is in flight and stays unanswered: the entity cannot step until it is.
    let (held_token, held) = entity_item(&mut w).await;
    assert_eq!(operations(&held), vec!["slow"]);
    assert_eq!(
        get(&server, "@vis@a")
            .await
            .entity
            .unwrap()
            .locked_by
            .as_deref(),
        Some("owner")
    );

    within(
        "raise",
        server.client().raise_event(pb::RaiseEventRequest {
            instance_id: "owner".into(),
            name: "go".into(),
            input: None,
        }),
    )
    .await
    .unwrap();
    let (token, _) = w.orchestration().await;
    w.complete(
        &token,
        "owner",
        vec![finish(2, pb::OrchestrationStatus::Completed, None)],
    )
    .await
    .unwrap();
    let done = within("wait", server.wait_completion("owner")).await;
    assert_eq!(
        done.orchestration_status,
        pb::OrchestrationStatus::Completed as i32
    );
    let entity = get(&server, "@vis@a").await.entity.unwrap();
    assert_eq!(
        entity.locked_by, None,
        "the finished owner still holds the lock"
    );
    let listed = query_all(&server, false).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].locked_by, None);

    complete(&w, &held_token, vec![ok(None)], Some("2"))
        .await
        .unwrap();
    eventually("the held call's state", || async {
        let e = get(&server, "@vis@a").await.entity?;
        (e.serialized_state.as_deref() == Some("2")).then_some(())
    })
    .await;
}
