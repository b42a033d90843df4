//! Client RPC semantics (PROTOCOL.md §3.9–§3.12) against a real server and SQLite file:
//! QueryInstances, ListInstanceIds, PurgeInstances and StreamInstanceHistory.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the shared helpers below.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use common::*;
use durabletask_sidecar::proto as pb;
use pb::history_event::EventType;
use pb::OrchestrationStatus as S;
use tonic::Code;

async fn query(
    server: &TestServer,
    q: pb::InstanceQuery,
) -> Result<pb::QueryInstancesResponse, tonic::Status> {
    within(
        "query instances",
        server
            .client()
            .query_instances(pb::QueryInstancesRequest { query: Some(q) }),
    )
    .await
    .map(|r| r.into_inner())
}

fn ids(r: &pb::QueryInstancesResponse) -> Vec<String> {
    r.orchestration_state
        .iter()
        .map(|s| s.instance_id.clone())
        .collect()
}

fn prefixed(prefix: &str) -> pb::InstanceQuery {
    pb::InstanceQuery {
        instance_id_prefix: Some(prefix.into()),
        fetch_inputs_and_outputs: true,
        ..Default::default()
    }
}

fn micros(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
}

fn from_micros(us: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    }
}

async fn created_micros(server: &TestServer, id: &str) -> i64 {
    micros(&server.get(id).await.unwrap().created_timestamp.unwrap())
}

fn completes_at_once(_: &pb::OrchestratorRequest) -> Vec<pb::OrchestratorAction> {
    vec![finish(0, S::Completed, Some("\"ok\"".into()))]
}

fn echo(req: &pb::ActivityRequest) -> Result<Option<String>, String> {
    Ok(req.input.clone())
}

// ---- QueryInstances ------------------------------------------------------------------

#[tokio::test]
async fn query_pages_of_two_over_five_prefixed_instances_cover_all_without_duplicates() {
    let server = TestServer::start().await;
    for i in 0..5 {
        start(&server, &format!("page-{i}"), None).await;
    }
    start(&server, "other-1", None).await;
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let mut q = prefixed("page-");
        q.max_instance_count = 2;
        q.continuation_token = token.clone();
        let r = query(&server, q).await.unwrap();
        assert!(r.orchestration_state.len() <= 2);
        assert!(!r.orchestration_state.is_empty(), "no empty pages");
        pages.push(r.orchestration_state.len());
        seen.extend(ids(&r));
        match r.continuation_token {
            Some(t) => {
                assert!(!t.is_empty() && t != "0", "token {t:?}");
                token = Some(t);
            }
            None => break,
        }
        assert!(pages.len() < 10, "paging does not end");
    }
    assert_eq!(pages, vec![2, 2, 1]);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "duplicates across pages: {seen:?}"
    );
    let expected: HashSet<String> = (0..5).map(|i| format!("page-{i}")).collect();
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), expected);
}

#[tokio::test]
async fn query_filters_by_runtime_status() {
    let server = TestServer::start().await;
    start(&server, "st-p1", None).await;
    start(&server, "st-p2", None).await;
    terminated(&server, "st-t1").await;
    let mut q = prefixed("st-");
    q.runtime_status = vec![S::Terminated as i32];
    assert_eq!(ids(&query(&server, q).await.unwrap()), vec!["st-t1"]);
    let mut q = prefixed("st-");
    q.runtime_status = vec![S::Pending as i32];
    let mut pending = ids(&query(&server, q).await.unwrap());
    pending.sort();
    assert_eq!(pending, vec!["st-p1", "st-p2"]);
    let mut q = prefixed("st-");
    q.runtime_status = vec![S::Pending as i32, S::Terminated as i32];
    assert_eq!(
        query(&server, q).await.unwrap().orchestration_state.len(),
        3
    );
}

#[tokio::test]
async fn query_filters_by_a_created_time_window() {
    let server = TestServer::start().await;
    for id in ["win-a", "win-b", "win-c", "win-d"] {
        start(&server, id, None).await;
    }
    let t: Vec<i64> = futures::future::join_all(
        ["win-a", "win-b", "win-c", "win-d"].map(|id| created_micros(&server, id)),
    )
    .await;
    assert!(t.windows(2).all(|w| w[0] < w[1]), "creation times {t:?}");
    // Midpoints make the test independent of whether the bounds are inclusive.
    let mut q = prefixed("win-");
    q.created_time_from = Some(from_micros((t[0] + t[1]) / 2));
    q.created_time_to = Some(from_micros((t[2] + t[3]) / 2));
    let mut got = ids(&query(&server, q).await.unwrap());
    got.sort();
    assert_eq!(got, vec!["win-b", "win-c"]);
}

#[tokio::test]
async fn query_without_fetch_inputs_and_outputs_omits_payloads() {
    let server = TestServer::start().await;
    terminated(&server, "fetch-1").await;
    let mut q = prefixed("fetch-");
    q.fetch_inputs_and_outputs = false;
    let r = query(&server, q).await.unwrap();
    let s = &r.orchestration_state[0];
    assert!(s.input.is_none(), "input: {:?}", s.input);
    assert!(s.output.is_none(), "output: {:?}", s.output);
    let r = query(&server, prefixed("fetch-")).await.unwrap();
    let s = &r.orchestration_state[0];
    assert_eq!(s.input.as_deref(), Some("\"in\""));
    assert_eq!(s.output.as_deref(), Some("\"stop\""));
}

#[tokio::test]
async fn query_with_a_garbage_continuation_token_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut q = prefixed("x");
    q.continuation_token = Some("not-a-token".into());
    let s = query(&server, q).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
}

// ---- ListInstanceIds -----------------------------------------------------------------

async fn list(
    server: &TestServer,
    page_size: i32,
    key: Option<String>,
) -> pb::ListInstanceIdsResponse {
    within(
        "list instance ids",
        server
            .client()
            .list_instance_ids(pb::ListInstanceIdsRequest {
                page_size,
                last_instance_key: key,
                ..Default::default()
            }),
    )
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test]
async fn list_instance_ids_returns_only_terminal_instances() {
    let server = TestServer::start().await;
    terminated(&server, "li-t1").await;
    terminated(&server, "li-t2").await;
    start(&server, "li-pending", None).await;
    let r = list(&server, 0, None).await;
    let mut got = r.instance_ids.clone();
    got.sort();
    assert_eq!(got, vec!["li-t1", "li-t2"]);
    assert!(r.last_instance_key.is_none());
}

#[tokio::test]
async fn list_instance_ids_pages_carry_a_key_with_the_last_id_until_the_last_page() {
    let server = TestServer::start().await;
    for id in ["lk-1", "lk-2", "lk-3"] {
        terminated(&server, id).await;
    }
    let first_empty_key = list(&server, 1, Some(String::new())).await;
    let first_no_key = list(&server, 1, None).await;
    assert_eq!(
        first_empty_key.instance_ids, first_no_key.instance_ids,
        "an empty key means the first page"
    );
    let mut seen = Vec::new();
    let mut key = Some(String::new());
    for page in 0..3 {
        let r = list(&server, 1, key.clone()).await;
        assert_eq!(r.instance_ids.len(), 1, "page {page}: {r:?}");
        let id = r.instance_ids[0].clone();
        if page < 2 {
            let k = r.last_instance_key.clone().expect("more pages remain");
            assert!(k.contains(&id), "key {k:?} must contain {id:?}");
        } else {
            assert!(
                r.last_instance_key.is_none(),
                "final page has no key: {r:?}"
            );
        }
        seen.push(id);
        key = r.last_instance_key;
    }
    seen.sort();
    assert_eq!(seen, vec!["lk-1", "lk-2", "lk-3"]);
}

#[tokio::test]
async fn list_instance_ids_with_only_live_statuses_in_the_filter_returns_nothing() {
    let server = TestServer::start().await;
    terminated(&server, "ll-t1").await;
    start(&server, "ll-pending", None).await;
    let r = within(
        "list instance ids",
        server
            .client()
            .list_instance_ids(pb::ListInstanceIdsRequest {
                runtime_status: vec![S::Running as i32, S::Pending as i32],
                ..Default::default()
            }),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(
        r.instance_ids.is_empty(),
        "only terminal instances are listed, and none has a live status: {:?}",
        r.instance_ids
    );
}

// ---- PurgeInstances ------------------------------------------------------------------

async fn purge(
    server: &TestServer,
    request: Option<pb::purge_instances_request::Request>,
) -> Result<pb::PurgeInstancesResponse, tonic::Status> {
    within(
        "purge",
        server.client().purge_instances(pb::PurgeInstancesRequest {
            request,
            recursive: false,
            is_orchestration: true,
        }),
    )
    .await
    .map(|r| r.into_inner())
}

fn by_id(id: &str) -> Option<pb::purge_instances_request::Request> {
    Some(pb::purge_instances_request::Request::InstanceId(id.into()))
}

fn by_batch(ids: Vec<String>) -> Option<pb::purge_instances_request::Request> {
    Some(pb::purge_instances_request::Request::InstanceBatch(
        pb::InstanceBatch { instance_ids: ids },
    ))
}

#[tokio::test]
async fn purge_of_an_unknown_id_deletes_nothing_and_is_complete() {
    let server = TestServer::start().await;
    let r = purge(&server, by_id("nobody")).await.unwrap();
    assert_eq!(r.deleted_instance_count, 0);
    assert_eq!(r.is_complete, Some(true));
}

#[tokio::test]
async fn purge_of_a_running_instance_deletes_nothing() {
    let server = TestServer::start().await;
    let worker = ScriptedWorker::start(server.client(), |_| vec![], echo).await;
    start(&server, "purge-running", None).await;
    eventually("instance running", || async {
        let s = server.get("purge-running").await?;
        (s.orchestration_status == S::Running as i32).then_some(())
    })
    .await;
    let r = purge(&server, by_id("purge-running")).await.unwrap();
    assert_eq!(r.deleted_instance_count, 0);
    assert!(exists(&server, "purge-running").await);
    start(&server, "purge-pending", None).await;
    worker.stop().await;
    let r = purge(&server, by_id("purge-pending")).await.unwrap();
    assert_eq!(r.deleted_instance_count, 0);
}

#[tokio::test]
async fn purge_of_a_terminal_instance_deletes_it() {
    let server = TestServer::start().await;
    terminated(&server, "purge-done").await;
    let r = purge(&server, by_id("purge-done")).await.unwrap();
    assert_eq!(r.deleted_instance_count, 1);
    assert_eq!(r.is_complete, Some(true));
    assert!(!exists(&server, "purge-done").await);
    let again = purge(&server, by_id("purge-done")).await.unwrap();
    assert_eq!(again.deleted_instance_count, 0);
}

#[tokio::test]
async fn purge_by_batch_deletes_only_the_terminal_ones() {
    let server = TestServer::start().await;
    for id in ["pb-1", "pb-2", "pb-3"] {
        terminated(&server, id).await;
    }
    start(&server, "pb-live", None).await;
    let batch = ["pb-1", "pb-2", "pb-3", "pb-live", "pb-unknown"]
        .map(String::from)
        .to_vec();
    let r = purge(&server, by_batch(batch)).await.unwrap();
    assert_eq!(r.deleted_instance_count, 3);
    assert!(exists(&server, "pb-live").await);
    assert!(!exists(&server, "pb-2").await);
}

#[tokio::test]
async fn purge_by_filter_honours_the_status_list() {
    let server = TestServer::start().await;
    let worker = ScriptedWorker::start(server.client(), completes_at_once, echo).await;
    start(&server, "pf-completed", None).await;
    server.wait_completion("pf-completed").await;
    worker.stop().await;
    terminated(&server, "pf-t1").await;
    terminated(&server, "pf-t2").await;
    start(&server, "pf-pending", None).await;
    let filter = pb::PurgeInstanceFilter {
        runtime_status: vec![S::Terminated as i32, S::Pending as i32],
        ..Default::default()
    };
    let r = purge(
        &server,
        Some(pb::purge_instances_request::Request::PurgeInstanceFilter(
            filter,
        )),
    )
    .await
    .unwrap();
    assert_eq!(r.deleted_instance_count, 2, "only the TERMINATED ones");
    assert_eq!(r.is_complete, Some(true));
    assert!(exists(&server, "pf-completed").await);
    assert!(
        exists(&server, "pf-pending").await,
        "live instances are never purged"
    );
    assert!(!exists(&server, "pf-t1").await);
}

#[tokio::test]
async fn purge_by_filter_with_only_live_statuses_purges_nothing() {
    let server = TestServer::start().await;
    terminated(&server, "pl-t1").await;
    start(&server, "pl-pending", None).await;
    let filter = pb::PurgeInstanceFilter {
        runtime_status: vec![S::Running as i32, S::Pending as i32],
        ..Default::default()
    };
    let r = purge(
        &server,
        Some(pb::purge_instances_request::Request::PurgeInstanceFilter(
            filter,
        )),
    )
    .await
    .unwrap();
    assert_eq!(
        r.deleted_instance_count, 0,
        "a RUNNING/PENDING filter matches no purgeable instance"
    );
    assert!(
        exists(&server, "pl-t1").await,
        "a TERMINATED instance was purged"
    );
    assert!(exists(&server, "pl-pending").await);
}

#[tokio::test]
async fn purge_without_a_target_is_invalid_argument() {
    let server = TestServer::start().await;
    let s = purge(&server, None).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
}

#[tokio::test]
async fn purge_batch_of_more_than_500_ids_is_invalid_argument() {
    let server = TestServer::start().await;
    terminated(&server, "big-0").await;
    let batch = (0..501).map(|i| format!("big-{i}")).collect();
    let s = purge(&server, by_batch(batch)).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(exists(&server, "big-0").await, "nothing purged");
}

// ---- StreamInstanceHistory -----------------------------------------------------------

async fn history_request(
    server: &TestServer,
    id: &str,
    execution_id: Option<String>,
) -> Result<Vec<pb::HistoryEvent>, tonic::Status> {
    let mut c = server.client();
    within("history", async move {
        let mut stream = c
            .stream_instance_history(pb::StreamInstanceHistoryRequest {
                instance_id: id.into(),
                execution_id,
                for_work_item_processing: false,
            })
            .await?
            .into_inner();
        let mut events = Vec::new();
        while let Some(chunk) = stream.message().await? {
            events.extend(chunk.events);
        }
        Ok(events)
    })
    .await
}

#[tokio::test]
async fn history_of_an_unknown_instance_is_not_found() {
    let server = TestServer::start().await;
    let s = history_request(&server, "nobody", None).await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
}

fn one_activity(req: &pb::OrchestratorRequest) -> Vec<pb::OrchestratorAction> {
    let done = completed_results(req);
    let scheduled = all_events(req)
        .filter(|e| matches!(e.event_type, Some(EventType::TaskScheduled(_))))
        .count();
    match (scheduled, done.first()) {
        (0, _) => vec![schedule(0, "echo", Some("\"a\"".into()))],
        (_, Some(r)) => vec![finish(1, S::Completed, Some(r.clone()))],
        _ => vec![],
    }
}

#[tokio::test]
async fn history_of_a_completed_run_is_ordered_and_timestamped() {
    let server = TestServer::start().await;
    let worker = ScriptedWorker::start(server.client(), one_activity, echo).await;
    start(&server, "hist-1", None).await;
    let state = server.wait_completion("hist-1").await;
    assert_eq!(state.output.as_deref(), Some("\"a\""));
    worker.stop().await;
    let events = history_request(&server, "hist-1", state.execution_id.clone())
        .await
        .unwrap();
    let position = |pred: fn(&EventType) -> bool| {
        events
            .iter()
            .position(|e| e.event_type.as_ref().is_some_and(pred))
    };
    let started = position(|e| matches!(e, EventType::ExecutionStarted(_))).unwrap();
    let scheduled = position(|e| matches!(e, EventType::TaskScheduled(_))).unwrap();
    let completed = position(|e| matches!(e, EventType::TaskCompleted(_))).unwrap();
    assert!(started < scheduled && scheduled < completed, "{events:#?}");
    for e in &events {
        assert!(e.timestamp.is_some(), "event without timestamp: {e:?}");
    }
}

#[tokio::test]
async fn history_with_a_wrong_execution_id_is_not_found() {
    let server = TestServer::start().await;
    start(&server, "hist-exec", None).await;
    let s = history_request(&server, "hist-exec", Some("not-this-one".into()))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
}
