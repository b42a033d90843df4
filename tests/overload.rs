//! Overload and slow peers (issue 11 §4): client writes past the pending-writes bound are
//! refused as retryable overload and nothing acknowledged is lost; a worker stream that
//! holds work without completing it, or stops reading, does not keep other streams from
//! finishing the workload, and its items go to them after the configured timeout.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the shared helpers below.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use durabletask_sidecar::engine::EngineConfig;
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::server::ServerOptions;
use durabletask_sidecar::service::ServiceOptions;
use pb::OrchestrationStatus as S;
use tokio::task::JoinSet;
use tonic::Code;

/// A server that admits only `max_pending_writes` client writes at once.
async fn tiny_admission(max_pending_writes: usize) -> TestServer {
    TestServer::start_with(ServerOptions {
        service: ServiceOptions {
            max_pending_writes,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

/// A worker that completes every orchestration at once with its instance id as output.
async fn finishing_worker(server: &TestServer) -> ScriptedWorker {
    ScriptedWorker::start(
        server.client(),
        |req| {
            vec![finish(
                0,
                S::Completed,
                Some(format!("\"{}\"", req.instance_id)),
            )]
        },
        |_| Ok(None),
    )
    .await
}

/// Connections the flood is spread over, so HTTP/2's per-connection stream limit does
/// not serialise it before it reaches the sidecar.
async fn connections(server: &TestServer, n: usize) -> Vec<Client> {
    let mut out = Vec::new();
    for _ in 0..n {
        let channel = within(
            "connect",
            tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
                .unwrap()
                .connect(),
        )
        .await
        .unwrap();
        out.push(client_of(channel));
    }
    out
}

#[tokio::test]
async fn a_start_flood_past_the_pending_writes_bound_is_refused_as_unavailable_and_loses_nothing() {
    let server = tiny_admission(2).await;
    let clients = connections(&server, 4).await;
    let mut flood = JoinSet::new();
    for i in 0..400 {
        let mut c = clients[i % clients.len()].clone();
        let id = format!("flood-{i}");
        flood.spawn(async move {
            let r = c
                .start_instance(pb::CreateInstanceRequest {
                    instance_id: id.clone(),
                    name: "Orch".into(),
                    input: Some(format!("{i}")),
                    ..Default::default()
                })
                .await;
            (id, r)
        });
    }
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    while let Some(joined) = within("flood", flood.join_next()).await {
        let (id, r) = joined.unwrap();
        match r {
            Ok(resp) => {
                assert_eq!(resp.into_inner().instance_id, id);
                accepted.push(id);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{id}: {status:?}");
                assert!(
                    status.message().contains("overloaded")
                        && status.message().contains("retry")
                        && status.message().contains("--max-pending-writes"),
                    "{id}: {}",
                    status.message()
                );
                refused.push(id);
            }
        }
    }
    assert!(!accepted.is_empty(), "nothing was admitted");
    assert!(
        !refused.is_empty(),
        "400 concurrent starts never exceeded 2 pending writes"
    );

    // Every acknowledged start exists with its input; no refused one does.
    for id in &accepted {
        let state = within("get", server.get(id))
            .await
            .unwrap_or_else(|| panic!("acknowledged start {id} is missing"));
        assert_eq!(state.input.as_deref(), id.strip_prefix("flood-"));
    }
    for id in &refused {
        assert!(!exists(&server, id).await, "refused start {id} exists");
    }

    // The refusals are counted, and the server keeps serving: the accepted instances run
    // to completion and a refused start succeeds when retried.
    let metrics = common::metrics_text(&server).await;
    assert!(
        metrics.contains("durabletask_rejected_requests_total{reason=\"pending_writes\"}"),
        "{metrics}"
    );
    let worker = finishing_worker(&server).await;
    for id in accepted.iter().take(20) {
        let state = server.wait_completion(id).await;
        assert_eq!(state.orchestration_status, S::Completed as i32);
    }
    let retried = &refused[0];
    within("retry", server.start_instance(retried, "Orch", None)).await;
    assert_eq!(
        server.wait_completion(retried).await.orchestration_status,
        S::Completed as i32
    );
    worker.stop().await;
}

#[tokio::test]
async fn an_http_start_flood_past_the_bound_gets_503_with_retry_after() {
    let server = tiny_admission(1).await;
    let http = reqwest::Client::new();
    let url = format!(
        "{}/runtime/webhooks/durabletask/orchestrators/Orch",
        server.http_base()
    );
    let mut flood = JoinSet::new();
    for i in 0..200 {
        let (http, url) = (http.clone(), format!("{url}/http-flood-{i}"));
        flood.spawn(async move { http.post(url).json(&i).send().await.unwrap() });
    }
    let (mut accepted, mut refused) = (0, 0);
    while let Some(joined) = within("flood", flood.join_next()).await {
        let response = joined.unwrap();
        match response.status().as_u16() {
            202 => accepted += 1,
            503 => {
                assert_eq!(
                    response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()),
                    Some("1")
                );
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["error"], "Overloaded");
                assert!(body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("overloaded") && m.contains("retry")));
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

#[tokio::test]
async fn worker_completions_are_admitted_while_client_writes_are_refused() {
    // The bound counts client writes only: with one permit and a flood of starts running,
    // a completion still commits (refusing it would only make the work run again).
    let server = tiny_admission(1).await;
    let mut w = WorkStream::open(server.client(), pb::GetWorkItemsRequest::default()).await;
    start(&server, "favoured", None).await;
    let (token, _) = w.orchestration().await;
    let clients = connections(&server, 2).await;
    let mut flood = JoinSet::new();
    for i in 0..200 {
        let mut c = clients[i % 2].clone();
        flood.spawn(async move {
            c.start_instance(pb::CreateInstanceRequest {
                instance_id: format!("noise-{i}"),
                name: "Noise".into(),
                ..Default::default()
            })
            .await
        });
    }
    w.complete(&token, "favoured", vec![finish(0, S::Completed, None)])
        .await
        .unwrap();
    while within("flood", flood.join_next()).await.is_some() {}
    assert_eq!(
        server
            .wait_completion("favoured")
            .await
            .orchestration_status,
        S::Completed as i32
    );
}

/// A server whose orchestration work items time out after `timeout`.
async fn short_work_item_timeout(timeout: Duration) -> TestServer {
    TestServer::start_with(ServerOptions {
        engine: EngineConfig {
            work_item_timeout: Some(timeout),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn episodes_held_by_a_stream_that_never_completes_go_to_another_stream_after_the_timeout() {
    let server = short_work_item_timeout(Duration::from_millis(300)).await;
    // The stuck stream connects first and takes at most two episodes; it reads them (so
    // the transport is not what holds them) but never completes them.
    let mut stuck = WorkStream::open(
        server.client(),
        pb::GetWorkItemsRequest {
            max_concurrent_orchestration_work_items: 2,
            ..Default::default()
        },
    )
    .await;
    start(&server, "held-0", None).await;
    let (old_token, held) = stuck.orchestration().await;
    assert_eq!(held.instance_id, "held-0");

    // A healthy worker joins, and a workload arrives.
    let worker = finishing_worker(&server).await;
    let ids: Vec<String> = (1..=20).map(|i| format!("held-{i}")).collect();
    for id in &ids {
        start(&server, id, None).await;
    }
    for id in std::iter::once(&"held-0".to_string()).chain(&ids) {
        let state = server.wait_completion(id).await;
        assert_eq!(state.orchestration_status, S::Completed as i32, "{id}");
    }

    // The stuck stream got at most its two episodes, then nothing more: the timed-out
    // items keep its capacity taken.
    let mut seen = HashSet::from([held.instance_id.clone()]);
    stuck
        .none_within(
            Duration::from_millis(300),
            |_| false,
            "nothing (collecting)",
        )
        .await;
    seen.extend(stuck.stash.drain(..).filter_map(|i| match i.request {
        Some(pb::work_item::Request::OrchestratorRequest(r)) => Some(r.instance_id),
        _ => None,
    }));
    assert!(seen.len() <= 2, "the stuck stream received {seen:?}");

    // Its late completion is stale now (PROTOCOL.md §4.8): NOT_FOUND, and the result the
    // other stream committed stands.
    let late = stuck
        .complete(
            &old_token,
            "held-0",
            vec![finish(0, S::Failed, Some("\"late\"".into()))],
        )
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::NotFound, "{late:?}");
    let state = server.wait_completion("held-0").await;
    assert_eq!(state.orchestration_status, S::Completed as i32);
    assert_eq!(state.output.as_deref(), Some("\"held-0\""));
    worker.stop().await;
}

#[tokio::test]
async fn a_stream_that_stops_reading_is_closed_and_its_items_go_to_a_reading_stream() {
    // Inputs large enough that the HTTP/2 window of the non-reading stream fills, so
    // items stay queued in the sidecar: that is what the stall check sees.
    let server = TestServer::start_with(ServerOptions {
        service: ServiceOptions {
            stalled_stream_timeout: Some(Duration::from_millis(400)),
            ..Default::default()
        },
        engine: EngineConfig {
            work_item_timeout: None,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut deaf = WorkStream::open(server.client(), pb::GetWorkItemsRequest::default()).await;
    let input = format!("\"{}\"", "x".repeat(256 * 1024));
    let ids: Vec<String> = (0..40).map(|i| format!("deaf-{i}")).collect();
    for id in &ids {
        start(&server, id, Some(&input)).await;
    }
    let worker = finishing_worker(&server).await;
    for id in &ids {
        let state = server.wait_completion(id).await;
        assert_eq!(state.orchestration_status, S::Completed as i32, "{id}");
    }
    worker.stop().await;

    // The deaf stream was ended: reading it now yields what its transport had buffered
    // and then the end, and completing any of those is stale.
    let mut stale = Vec::new();
    within("drain the closed stream", async {
        while let Some(item) = deaf.inner.message().await.unwrap() {
            if let Some(pb::work_item::Request::OrchestratorRequest(r)) = item.request {
                stale.push((item.completion_token, r.instance_id));
            }
        }
    })
    .await;
    assert!(!stale.is_empty(), "the deaf stream got no work at all");
    let (token, id) = &stale[0];
    let late = deaf
        .complete(token, id, vec![finish(0, S::Failed, None)])
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::NotFound, "{late:?}");
}
