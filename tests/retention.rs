//! `--retention`: a real server with second-long ages purges ended instances (with their
//! sub-orchestrations) once they are old enough, keeps what its rules keep, applies a
//! hub's own rule to that hub only, and cleans empty entities. Runs on SQLite, or on
//! PostgreSQL with `DURABLETASK_TEST_BACKEND=postgres`.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the shared helpers below.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::server::ServerOptions;
use durabletask_sidecar::service::RetentionPolicy;
use pb::history_event::EventType;
use pb::orchestrator_action::OrchestratorActionType as A;

async fn server_with(retention: &str) -> TestServer {
    TestServer::start_with(ServerOptions {
        retention: RetentionPolicy::parse(retention).unwrap(),
        ..ServerOptions::default()
    })
    .await
}

fn name_of(req: &pb::OrchestratorRequest) -> String {
    all_events(req)
        .find_map(|e| match &e.event_type {
            Some(EventType::ExecutionStarted(s)) => Some(s.name.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn child_done(req: &pb::OrchestratorRequest) -> bool {
    all_events(req).any(|e| {
        matches!(
            e.event_type,
            Some(EventType::SubOrchestrationInstanceCompleted(_))
        )
    })
}

fn sub_orchestration(instance_id: String) -> pb::OrchestratorAction {
    act(
        0,
        A::CreateSubOrchestration(pb::CreateSubOrchestrationAction {
            instance_id,
            name: "Done".into(),
            ..Default::default()
        }),
    )
}

/// Done completes; Fail fails; Wait and Unserved never end; Parent starts child `<id>-child` and
/// completes after it; Holder starts one too but never ends.
fn orchestrator(req: &pb::OrchestratorRequest) -> Vec<pb::OrchestratorAction> {
    let child = format!("{}-child", req.instance_id);
    // Termination reaches a dispatched instance as an event its worker answers.
    if all_events(req).any(|e| matches!(e.event_type, Some(EventType::ExecutionTerminated(_)))) {
        return vec![finish(1, pb::OrchestrationStatus::Terminated, None)];
    }
    match name_of(req).as_str() {
        "Done" => vec![finish(1, pb::OrchestrationStatus::Completed, None)],
        "Fail" => vec![finish(1, pb::OrchestrationStatus::Failed, None)],
        "Parent" if child_done(req) => {
            vec![finish(1, pb::OrchestrationStatus::Completed, None)]
        }
        "Parent" | "Holder" if !child_done(req) => vec![sub_orchestration(child)],
        _ => vec![],
    }
}

async fn start_on(client: &Client, id: &str, name: &str) {
    within(
        "start instance",
        client.clone().start_instance(pb::CreateInstanceRequest {
            instance_id: id.into(),
            name: name.into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
}

async fn wait_ended(client: &Client, id: &str) -> pb::OrchestrationStatus {
    // A sub-orchestration exists only once its parent's episode committed.
    eventually(&format!("{id} exists"), || async {
        exists_on(client, id).await.then_some(())
    })
    .await;
    wait_completion_on(client, id).await.orchestration_status()
}

async fn terminate_on(client: &Client, id: &str) {
    start_on(client, id, "Unserved").await;
    within(
        "terminate",
        client.clone().terminate_instance(pb::TerminateRequest {
            instance_id: id.into(),
            output: None,
            recursive: false,
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        wait_ended(client, id).await,
        pb::OrchestrationStatus::Terminated
    );
}

/// The value of one sample of `/metrics`, 0 when absent.
async fn metric(server: &TestServer, sample: &str) -> f64 {
    common::metrics_text(server)
        .await
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn ended_instances_leave_after_their_age_under_their_hub_rules() {
    let server = server_with("completed=1s,terminated=1s,failed=1h,orders:completed=1h").await;
    let main = server.client();
    let orders = server.hub_client("orders").await;
    let worker = ScriptedWorker::start(main.clone(), orchestrator, |_| Ok(None)).await;
    let orders_worker = ScriptedWorker::start(orders.clone(), orchestrator, |_| Ok(None)).await;

    // The holder's child ends first of all, but its root never ends: it must stay.
    start_on(&main, "holder", "Holder").await;
    wait_ended(&main, "holder-child").await;
    start_on(&main, "parent", "Parent").await;
    assert_eq!(
        wait_ended(&main, "parent").await,
        pb::OrchestrationStatus::Completed
    );
    start_on(&main, "done", "Done").await;
    wait_ended(&main, "done").await;
    start_on(&main, "fail", "Fail").await;
    assert_eq!(
        wait_ended(&main, "fail").await,
        pb::OrchestrationStatus::Failed
    );
    start_on(&main, "wait", "Wait").await;
    terminate_on(&main, "term").await;
    start_on(&orders, "o-done", "Done").await;
    wait_ended(&orders, "o-done").await;
    terminate_on(&orders, "o-term").await;

    for (client, id) in [
        (&main, "parent"),
        (&main, "parent-child"),
        (&main, "done"),
        (&main, "term"),
        (&orders, "o-term"),
    ] {
        eventually(&format!("{id} purged"), || async {
            (!exists_on(client, id).await).then_some(())
        })
        .await;
    }
    // Everything above ended no earlier than these, so the rules, not the clock, kept
    // them: failed=1h, a live root (and its ended child), and orders' own completed=1h.
    for (client, id) in [
        (&main, "fail"),
        (&main, "wait"),
        (&main, "holder"),
        (&main, "holder-child"),
        (&orders, "o-done"),
    ] {
        assert!(exists_on(client, id).await, "{id} should stay");
    }
    // Children count with their root: parent, parent-child and done.
    eventually("purges counted", || async {
        let n = metric(
            &server,
            r#"durabletask_retention_purged_total{status="completed",task_hub="default"}"#,
        )
        .await;
        (n >= 3.0).then_some(())
    })
    .await;
    worker.stop().await;
    orders_worker.stop().await;
}

fn is_entity(i: &pb::WorkItem) -> bool {
    matches!(i.request, Some(pb::work_item::Request::EntityRequestV2(_)))
}

async fn transient_entities(server: &TestServer) -> Vec<String> {
    within(
        "query entities",
        server.client().query_entities(pb::QueryEntitiesRequest {
            query: Some(pb::EntityQuery {
                include_transient: true,
                ..Default::default()
            }),
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .entities
    .into_iter()
    .map(|e| e.instance_id)
    .collect()
}

#[tokio::test]
async fn empty_entities_are_cleaned_and_entities_with_state_stay() {
    let server = server_with("completed=1s").await;
    let mut w = WorkStream::open(server.client(), pb::GetWorkItemsRequest::default()).await;
    for (entity, state) in [("@counter@empty", None), ("@counter@kept", Some("1"))] {
        within(
            "signal",
            server.client().signal_entity(pb::SignalEntityRequest {
                instance_id: entity.into(),
                name: "op".into(),
                request_id: entity.into(),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
        let item = w.next_where(is_entity).await;
        complete_entity_ok(
            &server.client(),
            item.completion_token,
            state.map(Into::into),
        )
        .await;
    }
    eventually("empty entity removed", || async {
        let left = transient_entities(&server).await;
        (left == ["@counter@kept"]).then_some(())
    })
    .await;
    // The count shows retention removed it (it is counted once its pass ends).
    eventually("removal counted", || async {
        let removed = metric(
            &server,
            r#"durabletask_retention_entities_removed_total{task_hub="default"}"#,
        )
        .await;
        (removed >= 1.0).then_some(())
    })
    .await;
}
