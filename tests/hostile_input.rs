//! Hostile and malformed input, table-driven: every row sends one bad request (gRPC or
//! HTTP) and names the status it must get and words its message must contain (the field
//! that was wrong). After the table, what was committed before it is untouched and
//! nothing malformed was stored.

mod common;

use std::future::Future;
use std::pin::Pin;

use common::*;
use durabletask_sidecar::grpc::GrpcOptions;
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::server::ServerOptions;
use prost_types::Timestamp;
use tonic::Code;

type Call = Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + Send>>;

/// One row: what is sent, the code it must get, and text its message must contain.
struct Case {
    what: &'static str,
    code: Code,
    says: &'static str,
    call: Call,
}

fn case(
    what: &'static str,
    code: Code,
    says: &'static str,
    call: impl Future<Output = Result<(), tonic::Status>> + Send + 'static,
) -> Case {
    Case {
        what,
        code,
        says,
        call: Box::pin(call),
    }
}

fn bad(
    what: &'static str,
    says: &'static str,
    call: impl Future<Output = Result<(), tonic::Status>> + Send + 'static,
) -> Case {
    case(what, Code::InvalidArgument, says, call)
}

fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos })
}

fn start(id: &str, name: &str) -> pb::CreateInstanceRequest {
    pb::CreateInstanceRequest {
        instance_id: id.into(),
        name: name.into(),
        input: Some("\"in\"".into()),
        ..Default::default()
    }
}

fn get(id: &str) -> pb::GetInstanceRequest {
    pb::GetInstanceRequest {
        instance_id: id.into(),
        get_inputs_and_outputs: true,
    }
}

fn query(q: pb::InstanceQuery) -> pb::QueryInstancesRequest {
    pb::QueryInstancesRequest { query: Some(q) }
}

fn entities(q: pb::EntityQuery) -> pb::QueryEntitiesRequest {
    pb::QueryEntitiesRequest { query: Some(q) }
}

fn signal(id: &str, op: &str) -> pb::SignalEntityRequest {
    pb::SignalEntityRequest {
        instance_id: id.into(),
        name: op.into(),
        request_id: "r1".into(),
        ..Default::default()
    }
}

fn purge_filter(f: pb::PurgeInstanceFilter) -> pb::PurgeInstancesRequest {
    pb::PurgeInstancesRequest {
        request: Some(pb::purge_instances_request::Request::PurgeInstanceFilter(f)),
        ..Default::default()
    }
}

/// Every client RPC's malformed shapes, on gRPC.
fn grpc_cases(client: &Client, max_message: usize) -> Vec<Case> {
    let long_id = "i".repeat(257);
    let long_name = "n".repeat(1025);
    macro_rules! rpc {
        ($method:ident, $req:expr) => {{
            let mut c = client.clone();
            let req = $req;
            async move { c.$method(req).await.map(drop) }
        }};
    }
    vec![
        // StartInstance
        bad(
            "start without a name",
            "name (the orchestrator name) is required",
            rpc!(start_instance, start("s1", "")),
        ),
        bad(
            "start with a NUL in the name",
            "name contains the control character U+0000",
            rpc!(start_instance, start("s1", "a\0b")),
        ),
        bad(
            "start with a 1025-byte name",
            "name (the orchestrator name) is 1025 bytes long",
            rpc!(start_instance, start("s1", &long_name)),
        ),
        bad(
            "start with a 257-byte id",
            "instanceId is 257 bytes long",
            rpc!(start_instance, start(&long_id, "o")),
        ),
        bad(
            "start with a newline in the id",
            "instanceId contains the control character U+000A",
            rpc!(start_instance, start("a\nb", "o")),
        ),
        bad(
            "start with an entity id",
            "reserved for entity ids",
            rpc!(start_instance, start("@e@k", "o")),
        ),
        bad(
            "start at negative nanos",
            "scheduledStartTimestamp: nanos must lie in 0..=999999999, got -1",
            rpc!(
                start_instance,
                pb::CreateInstanceRequest {
                    scheduled_start_timestamp: at(0, -1),
                    ..start("s1", "o")
                }
            ),
        ),
        bad(
            "start beyond year 9999",
            "scheduledStartTimestamp: seconds 253402300800 is outside",
            rpc!(
                start_instance,
                pb::CreateInstanceRequest {
                    scheduled_start_timestamp: at(253_402_300_800, 0),
                    ..start("s1", "o")
                }
            ),
        ),
        bad(
            "start before year 1",
            "scheduledStartTimestamp: seconds -9223372036854775808",
            rpc!(
                start_instance,
                pb::CreateInstanceRequest {
                    scheduled_start_timestamp: at(i64::MIN, 0),
                    ..start("s1", "o")
                }
            ),
        ),
        bad(
            "start with an undefined status in the reuse policy",
            "orchestrationIdReusePolicy.replaceableStatus: unknown orchestration status value 99",
            rpc!(
                start_instance,
                pb::CreateInstanceRequest {
                    orchestration_id_reuse_policy: Some(pb::OrchestrationIdReusePolicy {
                        replaceable_status: vec![99],
                    }),
                    ..start("s1", "o")
                }
            ),
        ),
        case(
            "start with an input over the message limit",
            Code::ResourceExhausted,
            "--max-message-size-mb",
            rpc!(
                start_instance,
                pb::CreateInstanceRequest {
                    input: Some("x".repeat(max_message + 1)),
                    ..start("s1", "o")
                }
            ),
        ),
        // Reads and operations by id
        bad(
            "get without an id",
            "instanceId is required",
            rpc!(get_instance, get("")),
        ),
        bad(
            "get with an escape in the id",
            "instanceId contains the control character U+001B",
            rpc!(get_instance, get("a\u{1b}[2J")),
        ),
        bad(
            "wait with a 257-byte id",
            "instanceId is 257 bytes long",
            rpc!(wait_for_instance_completion, get(&long_id)),
        ),
        bad(
            "raise without an event name",
            "name (the event name) is required",
            rpc!(
                raise_event,
                pb::RaiseEventRequest {
                    instance_id: "keep".into(),
                    name: String::new(),
                    input: None,
                }
            ),
        ),
        bad(
            "raise with a tab in the event name",
            "name contains the control character U+0009",
            rpc!(
                raise_event,
                pb::RaiseEventRequest {
                    instance_id: "keep".into(),
                    name: "a\tb".into(),
                    input: None,
                }
            ),
        ),
        bad(
            "terminate without an id",
            "instanceId is required",
            rpc!(terminate_instance, pb::TerminateRequest::default()),
        ),
        bad(
            "suspend with a DEL in the id",
            "instanceId contains the control character U+007F",
            rpc!(
                suspend_instance,
                pb::SuspendRequest {
                    instance_id: "a\u{7f}".into(),
                    reason: None,
                }
            ),
        ),
        bad(
            "resume without an id",
            "instanceId is required",
            rpc!(resume_instance, pb::ResumeRequest::default()),
        ),
        bad(
            "rewind without an id",
            "instanceId is required",
            rpc!(rewind_instance, pb::RewindInstanceRequest::default()),
        ),
        bad(
            "restart with a control character",
            "instanceId contains the control character",
            rpc!(
                restart_instance,
                pb::RestartInstanceRequest {
                    instance_id: "x\u{8}".into(),
                    restart_with_new_instance_id: false,
                }
            ),
        ),
        bad(
            "history without an id",
            "instanceId is required",
            rpc!(
                stream_instance_history,
                pb::StreamInstanceHistoryRequest::default()
            ),
        ),
        // QueryInstances
        bad(
            "query an undefined status",
            "query.runtimeStatus: unknown orchestration status value 42",
            rpc!(
                query_instances,
                query(pb::InstanceQuery {
                    runtime_status: vec![42],
                    ..Default::default()
                })
            ),
        ),
        bad(
            "query a negative page size",
            "query.maxInstanceCount must not be negative, got -1",
            rpc!(
                query_instances,
                query(pb::InstanceQuery {
                    max_instance_count: -1,
                    ..Default::default()
                })
            ),
        ),
        bad(
            "query from nanos over a second",
            "query.createdTimeFrom: nanos",
            rpc!(
                query_instances,
                query(pb::InstanceQuery {
                    created_time_from: at(0, 1_000_000_000),
                    ..Default::default()
                })
            ),
        ),
        bad(
            "query to the far future",
            "query.createdTimeTo: seconds",
            rpc!(
                query_instances,
                query(pb::InstanceQuery {
                    created_time_to: at(i64::MAX, 0),
                    ..Default::default()
                })
            ),
        ),
        bad(
            "query with a forged continuation token",
            "continuation token 'garbage' is not one this server issued",
            rpc!(
                query_instances,
                query(pb::InstanceQuery {
                    continuation_token: Some("garbage".into()),
                    ..Default::default()
                })
            ),
        ),
        bad(
            "query with a NUL in the prefix",
            "instanceIdPrefix contains the control character U+0000",
            rpc!(
                query_instances,
                query(pb::InstanceQuery {
                    instance_id_prefix: Some("a\0".into()),
                    ..Default::default()
                })
            ),
        ),
        // ListInstanceIds
        bad(
            "list ids with a negative page size",
            "pageSize must not be negative, got -5",
            rpc!(
                list_instance_ids,
                pb::ListInstanceIdsRequest {
                    page_size: -5,
                    ..Default::default()
                }
            ),
        ),
        bad(
            "list ids with a forged key",
            "continuation token 'x|y' is not one this server issued",
            rpc!(
                list_instance_ids,
                pb::ListInstanceIdsRequest {
                    last_instance_key: Some("x|y".into()),
                    ..Default::default()
                }
            ),
        ),
        bad(
            "list ids completed before year 1",
            "completedTimeFrom: seconds",
            rpc!(
                list_instance_ids,
                pb::ListInstanceIdsRequest {
                    completed_time_from: at(-62_135_596_801, 0),
                    ..Default::default()
                }
            ),
        ),
        bad(
            "list ids with an undefined status",
            "runtimeStatus: unknown orchestration status value -3",
            rpc!(
                list_instance_ids,
                pb::ListInstanceIdsRequest {
                    runtime_status: vec![-3],
                    ..Default::default()
                }
            ),
        ),
        // PurgeInstances
        bad(
            "purge naming nothing",
            "needs one of instanceId, purgeInstanceFilter or instanceBatch",
            rpc!(purge_instances, pb::PurgeInstancesRequest::default()),
        ),
        bad(
            "purge a batch with an empty id",
            "instanceBatch.instanceIds[1]: instanceId is required",
            rpc!(
                purge_instances,
                pb::PurgeInstancesRequest {
                    request: Some(pb::purge_instances_request::Request::InstanceBatch(
                        pb::InstanceBatch {
                            instance_ids: vec!["keep".into(), String::new()],
                        }
                    )),
                    ..Default::default()
                }
            ),
        ),
        bad(
            "purge with a negative timeout",
            "purgeInstanceFilter.timeout must not be negative",
            rpc!(
                purge_instances,
                purge_filter(pb::PurgeInstanceFilter {
                    timeout: Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0
                    }),
                    ..Default::default()
                })
            ),
        ),
        bad(
            "purge an undefined status",
            "purgeInstanceFilter.runtimeStatus: unknown orchestration status value 12",
            rpc!(
                purge_instances,
                purge_filter(pb::PurgeInstanceFilter {
                    runtime_status: vec![12],
                    ..Default::default()
                })
            ),
        ),
        bad(
            "purge from negative nanos",
            "purgeInstanceFilter.createdTimeFrom: nanos",
            rpc!(
                purge_instances,
                purge_filter(pb::PurgeInstanceFilter {
                    created_time_from: at(10, -7),
                    ..Default::default()
                })
            ),
        ),
        // Entities
        bad(
            "signal an id without the entity form",
            "instanceId: entity id 'counter' must have the form '@name@key'",
            rpc!(signal_entity, signal("counter", "add")),
        ),
        bad(
            "signal without an operation",
            "name (the operation name) is required",
            rpc!(signal_entity, signal("@counter@k", "")),
        ),
        bad(
            "signal with a newline in the key",
            "instanceId contains the control character U+000A",
            rpc!(signal_entity, signal("@counter@k\n", "add")),
        ),
        bad(
            "signal at negative nanos",
            "scheduledTime: nanos",
            rpc!(
                signal_entity,
                pb::SignalEntityRequest {
                    scheduled_time: at(1, -1),
                    ..signal("@counter@k", "add")
                }
            ),
        ),
        bad(
            "get an entity without a name",
            "has an empty entity name",
            rpc!(
                get_entity,
                pb::GetEntityRequest {
                    instance_id: "@@k".into(),
                    include_state: true,
                }
            ),
        ),
        bad(
            "query entities with a negative page size",
            "query.pageSize must not be negative, got -1",
            rpc!(
                query_entities,
                entities(pb::EntityQuery {
                    page_size: Some(-1),
                    ..Default::default()
                })
            ),
        ),
        bad(
            "query entities with a forged token",
            "continuationToken: entity id 'not-an-entity'",
            rpc!(
                query_entities,
                entities(pb::EntityQuery {
                    continuation_token: Some("not-an-entity".into()),
                    ..Default::default()
                })
            ),
        ),
        bad(
            "query entities modified after year 9999",
            "query.lastModifiedFrom: seconds",
            rpc!(
                query_entities,
                entities(pb::EntityQuery {
                    last_modified_from: at(300_000_000_000, 0),
                    ..Default::default()
                })
            ),
        ),
        bad(
            "clean entities with a forged token",
            "continuationToken: entity id 'zzz'",
            rpc!(
                clean_entity_storage,
                pb::CleanEntityStorageRequest {
                    continuation_token: Some("zzz".into()),
                    remove_empty_entities: true,
                    release_orphaned_locks: true,
                }
            ),
        ),
    ]
}

/// The HTTP API's malformed shapes: (what, method, path and query, body, status, text).
const HTTP_CASES: &[(&str, &str, &str, &str, u16, &str)] = &[
    (
        "status of an id with a BEL",
        "GET",
        "/instances/a%07b",
        "",
        400,
        "instanceId contains the control character U+0007",
    ),
    (
        "start with a NUL in the name",
        "POST",
        "/orchestrators/a%00b",
        "",
        400,
        "name contains the control character U+0000",
    ),
    (
        "raise with a newline in the event name",
        "POST",
        "/instances/keep/raiseEvent/a%0Ab",
        "1",
        400,
        "name contains the control character U+000A",
    ),
    (
        "list with a negative page size",
        "GET",
        "/instances?top=-1",
        "",
        400,
        "'top'",
    ),
    (
        "list from an impossible date",
        "GET",
        "/instances?createdTimeFrom=2026-13-45",
        "",
        400,
        "'createdTimeFrom'",
    ),
    (
        "list with a prefix holding an escape",
        "GET",
        "/instances?instanceIdPrefix=%1B",
        "",
        400,
        "instanceIdPrefix contains the control character U+001B",
    ),
    (
        "count an undefined status",
        "GET",
        "/instanceCounts?runtimeStatus=Exploded",
        "",
        400,
        "unknown runtime status 'Exploded'",
    ),
    (
        "signal an entity without an operation",
        "POST",
        "/entities/counter/k",
        "1",
        400,
        "'op'",
    ),
    (
        "signal an entity with a newline in the key",
        "POST",
        "/entities/counter/a%0A?op=add",
        "1",
        400,
        "control character U+000A",
    ),
];

#[tokio::test]
async fn malformed_requests_get_a_precise_status_and_change_nothing() {
    let max_message = 256 * 1024;
    let server = TestServer::start_with(ServerOptions {
        grpc: GrpcOptions {
            max_message_bytes: max_message,
        },
        ..ServerOptions::default()
    })
    .await;
    let mut client = server.client.clone();
    within("start keep", client.start_instance(start("keep", "o")))
        .await
        .unwrap();

    let mut failures = Vec::new();
    for c in grpc_cases(&client, max_message) {
        match within(c.what, c.call).await {
            Ok(()) => failures.push(format!("{}: accepted", c.what)),
            Err(status) => {
                if status.code() != c.code || !status.message().contains(c.says) {
                    failures.push(format!(
                        "{}: got {:?} {:?}, want {:?} containing {:?}",
                        c.what,
                        status.code(),
                        status.message(),
                        c.code,
                        c.says
                    ));
                }
            }
        }
    }

    let http = reqwest::Client::new();
    let base = format!("{}/runtime/webhooks/durabletask", server.http_base());
    for (what, method, path, body, want, says) in HTTP_CASES {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = http.request(method, format!("{base}{path}"));
        if !body.is_empty() {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = within(what, req.send()).await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        if status != *want || !text.contains(says) {
            failures.push(format!(
                "HTTP {what}: got {status} {text}, want {want} containing {says:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // What was there is untouched, and nothing malformed was stored.
    let keep = within("get keep", client.get_instance(get("keep")))
        .await
        .unwrap()
        .into_inner();
    let state = keep.orchestration_state.unwrap();
    assert_eq!(state.input.as_deref(), Some("\"in\""));
    assert_eq!(
        state.orchestration_status,
        pb::OrchestrationStatus::Pending as i32
    );
    let all = within(
        "query",
        client.query_instances(query(pb::InstanceQuery::default())),
    )
    .await
    .unwrap()
    .into_inner();
    let ids: Vec<_> = all
        .orchestration_state
        .iter()
        .map(|s| s.instance_id.as_str())
        .collect();
    assert_eq!(ids, ["keep"]);
    let entities = within(
        "entities",
        client.query_entities(entities(pb::EntityQuery {
            include_transient: true,
            ..Default::default()
        })),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(entities.entities.is_empty(), "{:?}", entities.entities);
}
