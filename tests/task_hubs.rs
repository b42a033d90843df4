//! Task hubs: the `taskhub` call metadata (and the HTTP API's `taskHub` parameter) picks
//! the hub; hubs share nothing: instances, ids, work, entities, queries, purge, wipe.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the shared helpers below.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use durabletask_sidecar::domain::TaskHubName;
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::server::ServerOptions;
use durabletask_sidecar::service::HubPolicy;
use pb::OrchestrationStatus as S;
use tonic::Code;

fn is_orchestration(i: &pb::WorkItem) -> bool {
    matches!(
        i.request,
        Some(pb::work_item::Request::OrchestratorRequest(_))
    )
}

async fn start(client: &Client, id: &str, input: &str) {
    within(
        "start",
        client.clone().start_instance(pb::CreateInstanceRequest {
            instance_id: id.into(),
            name: "Echo".into(),
            input: Some(input.into()),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
}

async fn get(client: &Client, id: &str) -> Option<pb::OrchestrationState> {
    let r = within(
        "get",
        client.clone().get_instance(pb::GetInstanceRequest {
            instance_id: id.into(),
            get_inputs_and_outputs: true,
        }),
    )
    .await
    .unwrap()
    .into_inner();
    r.orchestration_state.filter(|_| r.exists)
}

async fn ids(client: &Client) -> BTreeSet<String> {
    let r = within(
        "query",
        client.clone().query_instances(pb::QueryInstancesRequest {
            query: Some(pb::InstanceQuery {
                max_instance_count: 100,
                ..Default::default()
            }),
        }),
    )
    .await
    .unwrap()
    .into_inner();
    r.orchestration_state
        .into_iter()
        .map(|s| s.instance_id)
        .collect()
}

/// Completes every orchestration with its input, tagged with the hub the worker is on.
async fn echo_worker(client: Client, tag: &'static str) -> ScriptedWorker {
    ScriptedWorker::start(
        client,
        move |req| {
            let input = input_of(req).unwrap_or_default();
            vec![finish(
                0,
                S::Completed,
                Some(format!("\"{tag}:{}\"", input.trim_matches('"'))),
            )]
        },
        |_| Ok(None),
    )
    .await
}

fn hub_names(names: &[&str]) -> Option<BTreeSet<TaskHubName>> {
    Some(
        names
            .iter()
            .map(|n| TaskHubName::parse(n).unwrap())
            .collect(),
    )
}

/// Clients of two task hubs of one server.
async fn two_hubs(server: &TestServer, a: &str, b: &str) -> (Client, Client) {
    (server.hub_client(a).await, server.hub_client(b).await)
}

#[tokio::test]
async fn the_same_instance_id_lives_in_two_hubs_and_each_worker_gets_only_its_hub() {
    let server = TestServer::start().await;
    let (a, b) = two_hubs(&server, "hub-a", "Hub-B").await;
    start(&a, "same", "\"x\"").await;
    start(&b, "same", "\"y\"").await;
    start(&a, "only-a", "\"z\"").await;
    assert_eq!(
        ids(&a).await,
        BTreeSet::from(["same".into(), "only-a".into()])
    );
    assert_eq!(ids(&b).await, BTreeSet::from(["same".into()]));
    assert!(
        ids(&server.client()).await.is_empty(),
        "default hub sees nothing"
    );

    // A worker on hub B is handed B's instance only; A's work waits for A's worker.
    let worker_b = echo_worker(b.clone(), "b").await;
    assert_eq!(
        wait_completion_on(&b, "same").await.output.as_deref(),
        Some("\"b:y\"")
    );
    assert_eq!(
        get(&a, "same").await.unwrap().orchestration_status,
        S::Pending as i32
    );
    let worker_a = echo_worker(a.clone(), "a").await;
    assert_eq!(
        wait_completion_on(&a, "same").await.output.as_deref(),
        Some("\"a:x\"")
    );
    assert_eq!(
        wait_completion_on(&a, "only-a").await.output.as_deref(),
        Some("\"a:z\"")
    );
    let seen_by_b: Vec<String> = worker_b
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|i| match &i.request {
            Some(pb::work_item::Request::OrchestratorRequest(r)) => Some(r.instance_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(seen_by_b, ["same"]);
    worker_a.stop().await;
    worker_b.stop().await;

    // Purging on A leaves B's instance of the same id.
    let purged = within(
        "purge",
        a.clone().purge_instances(pb::PurgeInstancesRequest {
            request: Some(pb::purge_instances_request::Request::InstanceId(
                "same".into(),
            )),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(purged.deleted_instance_count, 1);
    assert!(get(&a, "same").await.is_none());
    assert_eq!(
        get(&b, "same").await.unwrap().output.as_deref(),
        Some("\"b:y\"")
    );
}

#[tokio::test]
async fn entities_events_and_task_hub_wipes_stay_in_their_hub() {
    let server = TestServer::start().await;
    let (a, b) = two_hubs(&server, "left", "right").await;
    within(
        "signal",
        a.clone().signal_entity(pb::SignalEntityRequest {
            instance_id: "@counter@k".into(),
            name: "add".into(),
            input: Some("1".into()),
            request_id: "r1".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    // The entity's work goes to a worker of `left` only.
    let mut right = WorkStream::open(b.clone(), pb::GetWorkItemsRequest::default()).await;
    let mut left = WorkStream::open(a.clone(), pb::GetWorkItemsRequest::default()).await;
    let item = left
        .next_where(|i| matches!(i.request, Some(pb::work_item::Request::EntityRequestV2(_))))
        .await;
    complete_entity_ok(&a, item.completion_token, Some("1".into())).await;
    let entity = |c: &Client| {
        let mut c = c.clone();
        async move {
            within(
                "get entity",
                c.get_entity(pb::GetEntityRequest {
                    instance_id: "@counter@k".into(),
                    include_state: true,
                }),
            )
            .await
            .unwrap()
            .into_inner()
        }
    };
    assert!(entity(&a).await.exists);
    assert!(!entity(&b).await.exists);

    // An event raised on `right` for an id that only `left` has is NOT_FOUND.
    start(&a, "waiter", "\"w\"").await;
    let s = expect_err(
        b.clone()
            .raise_event(pb::RaiseEventRequest {
                instance_id: "waiter".into(),
                name: "go".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    right
        .none_within(
            Duration::from_millis(300),
            is_orchestration,
            "work of another hub",
        )
        .await;

    // DeleteTaskHub on `right` wipes `right` only.
    start(&b, "doomed", "\"d\"").await;
    within(
        "delete hub",
        b.clone().delete_task_hub(pb::DeleteTaskHubRequest {}),
    )
    .await
    .unwrap();
    assert!(get(&b, "doomed").await.is_none());
    assert!(get(&a, "waiter").await.is_some());
    assert!(entity(&a).await.exists);
}

#[tokio::test]
async fn hubs_outside_the_list_are_not_found_and_bad_names_are_invalid() {
    let server = TestServer::start_with(ServerOptions {
        hubs: HubPolicy {
            only: hub_names(&["orders", "billing"]),
            ..HubPolicy::default()
        },
        ..ServerOptions::default()
    })
    .await;
    start(&server.hub_client("ORDERS").await, "o1", "\"o\"").await;
    for (client, what) in [
        (server.hub_client("shipping").await, "shipping"),
        (server.client(), "default"),
    ] {
        let s = expect_err(
            client
                .clone()
                .get_instance(pb::GetInstanceRequest::default())
                .await,
        );
        assert_eq!(s.code(), Code::NotFound, "{what}: {s:?}");
        assert!(
            s.message().contains(&format!("'{what}'")) && s.message().contains("billing, orders"),
            "{what}: {}",
            s.message()
        );
    }
    for bad in ["1abc", "a.b", "with space"] {
        let s = expect_err(
            server
                .hub_client(bad)
                .await
                .get_instance(pb::GetInstanceRequest::default())
                .await,
        );
        assert_eq!(s.code(), Code::InvalidArgument, "{bad}: {s:?}");
        assert!(
            s.message().contains("task hub name"),
            "{bad}: {}",
            s.message()
        );
    }
}

#[tokio::test]
async fn hubs_beyond_the_limit_are_refused_and_existing_ones_reopen_after_a_restart() {
    let server = TestServer::start_with(ServerOptions {
        hubs: HubPolicy {
            only: None,
            max_open: 2,
        },
        ..ServerOptions::default()
    })
    .await;
    // `default` is open from the start, so one more fits.
    let one = server.hub_client("one").await;
    start(&one, "kept", "\"k\"").await;
    let s = expect_err(
        server
            .hub_client("two")
            .await
            .get_instance(pb::GetInstanceRequest::default())
            .await,
    );
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(s.message().contains("--max-task-hubs"), "{}", s.message());

    // The restarted server opens `one` by itself (its state exists): a worker connected
    // to it finishes the instance started before the restart.
    let server = server.restart().await;
    let one = server.hub_client("one").await;
    let worker = echo_worker(one.clone(), "one").await;
    assert_eq!(
        wait_completion_on(&one, "kept").await.output.as_deref(),
        Some("\"one:k\"")
    );
    worker.stop().await;
}

#[tokio::test]
async fn the_http_api_takes_the_hub_from_the_task_hub_parameter() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let base = format!("{}/runtime/webhooks/durabletask", server.http_base());
    let started: serde_json::Value = http
        .post(format!("{base}/orchestrators/Echo/web-1?taskHub=Web"))
        .json(&"in")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let status_url = started["statusQueryGetUri"].as_str().unwrap();
    assert!(
        status_url.ends_with("/instances/web-1?taskHub=Web"),
        "{status_url}"
    );
    assert!(
        started["terminatePostUri"]
            .as_str()
            .unwrap()
            .ends_with("/terminate?reason={text}&taskHub=Web"),
        "{started}"
    );
    assert_eq!(http.get(status_url).send().await.unwrap().status(), 202);
    assert_eq!(
        http.get(format!("{base}/instances/web-1"))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "the default hub has no web-1"
    );
    assert!(get(&server.hub_client("web").await, "web-1")
        .await
        .is_some());
    let bad = http
        .get(format!("{base}/instances?taskHub=no.dots"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let listed: serde_json::Value = http
        .get(format!("{base}/taskHubs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed,
        serde_json::json!({ "taskHubs": ["default", "web"] })
    );

    // Per-hub gauges in /metrics.
    let metrics = common::metrics_text(&server).await;
    assert!(
        metrics.contains("durabletask_instances{status=\"Pending\",task_hub=\"web\"} 1"),
        "{metrics}"
    );
}
