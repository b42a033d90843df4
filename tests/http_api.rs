//! The HTTP door (Durable Functions' HTTP API) against a real server, with a real HTTP
//! client and the scripted gRPC worker doing the work. Every response is checked
//! against `/openapi.json`: its status must be documented for the route, and a JSON body
//! with a documented object schema must carry that schema's required fields.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the shared helpers below.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use durabletask_sidecar::http::ROUTES;
use durabletask_sidecar::proto as pb;
use pb::history_event::EventType;
use pb::orchestrator_action::OrchestratorActionType as A;
use pb::OrchestrationStatus as S;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

const B: &str = "/runtime/webhooks/durabletask";

/// A reqwest client that checks each reply against the OpenAPI document.
struct Api {
    origin: String,
    http: reqwest::Client,
    doc: Value,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request: route template, path parameters, query string, body, extra headers.
#[derive(Default)]
struct Req<'a> {
    params: &'a [(&'a str, &'a str)],
    query: &'a str,
    json: Option<Value>,
    body: Option<(&'a str, &'a str)>,
    headers: &'a [(&'a str, &'a str)],
}

fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Api {
    async fn new(server: &TestServer) -> Self {
        let http = reqwest::Client::new();
        let origin = server.http_base();
        let doc = within("openapi", http.get(format!("{origin}/openapi.json")).send())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self { origin, http, doc }
    }

    async fn call(&self, method: &str, template: &str, r: Req<'_>) -> Reply {
        let mut path = template.to_string();
        for (k, v) in r.params {
            path = path.replace(&format!("{{{k}}}"), &encode(v));
        }
        let query = if r.query.is_empty() {
            String::new()
        } else {
            format!("?{}", r.query)
        };
        let url = format!("{}{path}{query}", self.origin);
        self.send(method, template, &url, r).await
    }

    /// Sends to an absolute URL (a management URL from a reply) known to match `template`.
    async fn send(&self, method: &str, template: &str, url: &str, r: Req<'_>) -> Reply {
        let method_ = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method_, url);
        for (k, v) in r.headers {
            req = req.header(*k, *v);
        }
        if let Some(j) = r.json {
            req = req
                .header("content-type", "application/json")
                .body(j.to_string());
        } else if let Some((ctype, text)) = r.body {
            req = req.header("content-type", ctype).body(text.to_string());
        }
        let resp = within(&format!("{method} {url}"), req.send())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text}"))
        };
        self.conforms(method, template, status, &body);
        Reply {
            status,
            headers,
            body,
        }
    }

    fn resolve<'v>(&'v self, schema: &'v Value) -> &'v Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.rsplit('/').next().unwrap();
                &self.doc["components"]["schemas"][name]
            }
            None => schema,
        }
    }

    fn check_schema(&self, schema: &Value, body: &Value, at: &str) {
        let schema = self.resolve(schema);
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => {
                let obj = body
                    .as_object()
                    .unwrap_or_else(|| panic!("{at}: expected an object, got {body}"));
                for field in schema["required"].as_array().into_iter().flatten() {
                    let field = field.as_str().unwrap();
                    assert!(obj.contains_key(field), "{at}: no '{field}' in {body}");
                }
                if let Some(props) = schema["properties"].as_object() {
                    for (k, v) in obj {
                        if let Some(p) = props.get(k) {
                            if let Some(allowed) = p["enum"].as_array() {
                                assert!(allowed.contains(v), "{at}.{k}: {v} not in {allowed:?}");
                            }
                        }
                    }
                }
            }
            Some("array") => {
                let items = body
                    .as_array()
                    .unwrap_or_else(|| panic!("{at}: expected an array, got {body}"));
                for item in items {
                    self.check_schema(&schema["items"], item, at);
                }
            }
            _ => {}
        }
    }

    fn conforms(&self, method: &str, template: &str, status: u16, body: &Value) {
        if template.is_empty() {
            return; // deliberately off the API
        }
        let at = format!("{method} {template} -> {status}");
        let op = &self.doc["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "{at}: route not in openapi.json");
        let resp = &op["responses"][status.to_string()];
        assert!(resp.is_object(), "{at}: status not documented; body {body}");
        match resp["content"]["application/json"]["schema"].as_object() {
            Some(_) => self.check_schema(&resp["content"]["application/json"]["schema"], body, &at),
            None => assert!(body.is_null(), "{at}: undocumented body {body}"),
        }
    }

    /// A request with no body and no extra headers.
    async fn plain(
        &self,
        method: &str,
        template: &str,
        params: &[(&str, &str)],
        query: &str,
    ) -> Reply {
        let r = Req {
            params,
            query,
            ..Req::default()
        };
        self.call(method, template, r).await
    }

    async fn get(&self, template: &str, params: &[(&str, &str)], query: &str) -> Reply {
        self.plain("GET", template, params, query).await
    }

    async fn start(&self, name: &str, id: &str, input: Value, query: &str) -> Reply {
        self.call(
            "POST",
            &format!("{B}/orchestrators/{{functionName}}/{{instanceId}}"),
            Req {
                params: &[("functionName", name), ("instanceId", id)],
                query,
                json: Some(input),
                ..Req::default()
            },
        )
        .await
    }

    async fn status(&self, id: &str, query: &str) -> Reply {
        self.get(
            &format!("{B}/instances/{{instanceId}}"),
            &[("instanceId", id)],
            query,
        )
        .await
    }

    async fn op(&self, id: &str, op: &str, query: &str) -> Reply {
        self.plain(
            "POST",
            &format!("{B}/instances/{{instanceId}}/{op}"),
            &[("instanceId", id)],
            query,
        )
        .await
    }
}

fn scheduled(req: &pb::OrchestratorRequest, task: i32) -> bool {
    all_events(req)
        .any(|e| e.event_id == task && matches!(e.event_type, Some(EventType::TaskScheduled(_))))
}

fn task_failed(req: &pb::OrchestratorRequest) -> Option<String> {
    all_events(req).find_map(|e| match &e.event_type {
        Some(EventType::TaskFailed(f)) => {
            f.failure_details.as_ref().map(|d| d.error_message.clone())
        }
        _ => None,
    })
}

/// Calls activity "greet" with the input, completes with its result; an activity
/// failure fails the orchestration.
fn greet_once(req: &pb::OrchestratorRequest) -> Vec<pb::OrchestratorAction> {
    if let Some(message) = task_failed(req) {
        return vec![act(
            1,
            A::CompleteOrchestration(pb::CompleteOrchestrationAction {
                orchestration_status: S::Failed as i32,
                failure_details: Some(pb::TaskFailureDetails {
                    error_type: "Error".into(),
                    error_message: message,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        )];
    }
    match completed_results(req).first() {
        Some(r) => vec![finish(1, S::Completed, Some(r.clone()))],
        None if !scheduled(req, 0) => vec![schedule(0, "greet", input_of(req))],
        None => vec![],
    }
}

fn greet(req: &pb::ActivityRequest) -> Result<Option<String>, String> {
    let who: Value = serde_json::from_str(req.input.as_deref().unwrap_or("null")).unwrap();
    if who == json!("fail") {
        return Err("cannot greet 'fail'".into());
    }
    Ok(Some(
        json!(format!("Hello {}!", who["name"].as_str().unwrap_or("?"))).to_string(),
    ))
}

#[tokio::test]
async fn start_answers_the_management_payload_and_its_status_uri_leads_to_the_output() {
    let server = TestServer::start().await;
    let api = Api::new(&server).await;
    let started = api
        .start("Greet", "h-start", json!({"name": "Tokyo"}), "")
        .await;
    assert_eq!(started.status, 202);
    let p = &started.body;
    let base = format!("{}{B}/instances/h-start", api.origin);
    assert_eq!(p["id"], "h-start");
    assert_eq!(p["statusQueryGetUri"], base);
    assert_eq!(started.header("location"), Some(base.as_str()));
    assert_eq!(started.header("retry-after"), Some("10"));
    assert_eq!(
        p["sendEventPostUri"],
        format!("{base}/raiseEvent/{{eventName}}")
    );
    assert_eq!(
        p["terminatePostUri"],
        format!("{base}/terminate?reason={{text}}")
    );
    assert_eq!(p["purgeHistoryDeleteUri"], base);
    assert_eq!(p["rewindPostUri"], format!("{base}/rewind?reason={{text}}"));
    assert_eq!(
        p["suspendPostUri"],
        format!("{base}/suspend?reason={{text}}")
    );
    assert_eq!(p["resumePostUri"], format!("{base}/resume?reason={{text}}"));
    assert_eq!(p["restartPostUri"], format!("{base}/restart"));

    // No worker yet: Pending, 202 with Location and Retry-After.
    let status_uri = p["statusQueryGetUri"].as_str().unwrap().to_string();
    let template = format!("{B}/instances/{{instanceId}}");
    let pending = api
        .send("GET", &template, &status_uri, Req::default())
        .await;
    assert_eq!(pending.status, 202);
    assert_eq!(pending.body["runtimeStatus"], "Pending");
    assert_eq!(pending.body["input"], json!({"name": "Tokyo"}));
    assert_eq!(pending.body["name"], "Greet");
    assert_eq!(pending.header("location"), Some(status_uri.as_str()));
    assert_eq!(pending.header("retry-after"), Some("5"));

    let worker = ScriptedWorker::start(server.client(), greet_once, greet).await;
    let done = eventually("status 200", || async {
        let r = api
            .send("GET", &template, &status_uri, Req::default())
            .await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(done.body["runtimeStatus"], "Completed");
    assert_eq!(done.body["output"], "Hello Tokyo!");
    assert_eq!(done.body["instanceId"], "h-start");
    assert_eq!(done.body["customStatus"], Value::Null);
    assert!(done.header("location").is_none());
    for field in ["createdTime", "lastUpdatedTime"] {
        let t = done.body[field].as_str().unwrap();
        assert!(
            t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "{t}"
        );
    }
    assert!(done.body.get("historyEvents").is_none());

    // History on request, outputs only with showHistoryOutput, input hidden on request.
    let h = api
        .status("h-start", "showHistory=true&showInput=false")
        .await;
    assert_eq!(h.body["input"], Value::Null);
    let events = h.body["historyEvents"].as_array().unwrap();
    let kinds: Vec<_> = events
        .iter()
        .map(|e| e["EventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["ExecutionStarted", "TaskCompleted", "ExecutionCompleted"]
    );
    assert_eq!(events[0]["FunctionName"], "Greet");
    assert_eq!(events[1]["FunctionName"], "greet");
    assert!(events[1].get("ScheduledTime").is_some());
    assert!(events[1].get("Result").is_none());
    assert_eq!(events[2]["OrchestrationStatus"], "Completed");
    let h = api
        .status("h-start", "showHistory=true&showHistoryOutput=true")
        .await;
    assert_eq!(h.body["historyEvents"][1]["Result"], "Hello Tokyo!");
    assert_eq!(h.body["historyEvents"][2]["Result"], "Hello Tokyo!");
    worker.stop().await;
}

#[tokio::test]
async fn wait_or_check_status_answers_the_output_or_the_failure_or_the_payload() {
    let server = TestServer::start().await;
    let api = Api::new(&server).await;
    // Nobody runs it within the timeout: the 202 payload.
    let r = api
        .start(
            "Greet",
            "h-wait-202",
            json!({"name": "x"}),
            "timeout=0.2&pollingInterval=0.1",
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.body["id"], "h-wait-202");

    let worker = ScriptedWorker::start(server.client(), greet_once, greet).await;
    let r = api
        .start(
            "Greet",
            "h-wait-200",
            json!({"name": "Paris"}),
            "timeout=15",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!("Hello Paris!"));

    // A failure: the status response, 200 or 500 on request.
    let r = api
        .start("Greet", "h-wait-fail", json!("fail"), "timeout=15")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["runtimeStatus"], "Failed");
    assert_eq!(r.body["output"], "cannot greet 'fail'");
    let r = api
        .status("h-wait-fail", "returnInternalServerErrorOnFailure=true")
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body["runtimeStatus"], "Failed");

    // Malformed waits.
    let r = api
        .start("Greet", "h-wait-bad", json!(1), "timeout=soon")
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body["message"].as_str().unwrap().contains("timeout"));
    worker.stop().await;
}

#[tokio::test]
async fn rewind_and_restart() {
    let server = TestServer::start().await;
    let api = Api::new(&server).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    // Fails the first time only.
    let worker = ScriptedWorker::start(server.client(), greet_once, move |req| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            Err("first try fails".into())
        } else {
            greet(req)
        }
    })
    .await;
    let r = api
        .start("Greet", "h-rw", json!({"name": "again"}), "timeout=15")
        .await;
    assert_eq!(r.body["runtimeStatus"], "Failed");

    assert_eq!(api.op("h-rw", "rewind", "reason=fixed").await.status, 202);
    let state = server.wait_completion("h-rw").await;
    assert_eq!(state.orchestration_status, S::Completed as i32);
    // Rewinding a completed instance: 412; an unknown one: 404.
    assert_eq!(api.op("h-rw", "rewind", "").await.status, 412);
    assert_eq!(api.op("h-nope", "rewind", "").await.status, 404);

    // Restart in place (same id) and under a new id (the default).
    let r = api
        .op(
            "h-rw",
            "restart",
            "restartWithNewInstanceId=false&timeout=15",
        )
        .await;
    assert_eq!((r.status, &r.body), (200, &json!("Hello again!")));
    let r = api.op("h-rw", "restart", "").await;
    assert_eq!(r.status, 202);
    let new_id = r.body["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, "h-rw");
    assert_eq!(
        server.wait_completion(&new_id).await.output.as_deref(),
        Some("\"Hello again!\"")
    );
    assert_eq!(api.op("h-nope", "restart", "").await.status, 404);
    worker.stop().await;

    // Same-id restart of a live instance: 412.
    api.start("Greet", "h-live", json!(1), "").await;
    let r = api
        .op("h-live", "restart", "restartWithNewInstanceId=false")
        .await;
    assert_eq!(r.status, 412);
    assert_eq!(
        api.op("h-live", "restart", "restartWithNewInstanceId=maybe")
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn instance_operations_answer_202_404_410_and_400() {
    let server = TestServer::start().await;
    let api = Api::new(&server).await;
    let ev = format!("{B}/instances/{{instanceId}}/raiseEvent/{{eventName}}");
    let raise = |id: &'static str, body: Option<(&'static str, &'static str)>| {
        let ev = ev.clone();
        let api = &api;
        async move {
            api.call(
                "POST",
                &ev,
                Req {
                    params: &[("instanceId", id), ("eventName", "Approval")],
                    body,
                    ..Req::default()
                },
            )
            .await
        }
    };
    api.start("Orch", "h-ops", json!(null), "").await;

    // Unknown instances: 404 with a JSON error body naming the id.
    for op in ["terminate", "suspend", "resume"] {
        let r = api.op("h-none", op, "").await;
        assert_eq!(r.status, 404, "{op}");
        assert_eq!(r.body["error"], "NotFound");
        assert!(r.body["message"].as_str().unwrap().contains("h-none"));
    }
    assert_eq!(
        raise("h-none", Some(("application/json", "1")))
            .await
            .status,
        404
    );
    assert_eq!(api.status("h-none", "").await.status, 404);

    // Malformed: bad JSON, wrong content type, bad flag, bad body on start, entity ids.
    let r = raise("h-ops", Some(("application/json", "{nope"))).await;
    assert_eq!(r.status, 400);
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    assert_eq!(raise("h-ops", Some(("text/plain", "1"))).await.status, 400);
    assert_eq!(api.status("h-ops", "showHistory=maybe").await.status, 400);
    // A path segment that is not UTF-8 once decoded: the JSON error body too.
    let r = api
        .send(
            "GET",
            &format!("{B}/instances/{{instanceId}}"),
            &format!("{}{B}/instances/%FF", api.origin),
            Req::default(),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("malformed path"),
        "{}",
        r.body
    );
    let r = api
        .call(
            "POST",
            &format!("{B}/orchestrators/{{functionName}}"),
            Req {
                params: &[("functionName", "Orch")],
                body: Some(("application/json", "{\"unterminated\": ")),
                ..Req::default()
            },
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        api.start("Orch", "@counter@x", json!(1), "").await.status,
        400
    );
    // Status options are checked before anything starts, timeout or not.
    let r = api
        .start("Orch", "h-bad-flag", json!(1), "showInput=null")
        .await;
    assert_eq!(r.status, 400);
    assert!(!exists(&server, "h-bad-flag").await);
    // A live instance with the id: 409.
    assert_eq!(api.start("Orch", "h-ops", json!(1), "").await.status, 409);

    // Live: 202, and suspend/resume take effect at once.
    assert_eq!(
        raise("h-ops", Some(("application/json", "{\"ok\":true}")))
            .await
            .status,
        202
    );
    assert_eq!(raise("h-ops", None).await.status, 202);
    api.start("Orch", "h-sr", json!(null), "").await;
    assert_eq!(api.op("h-sr", "suspend", "reason=hold").await.status, 202);
    assert_eq!(
        api.status("h-sr", "").await.body["runtimeStatus"],
        "Suspended"
    );
    assert_eq!(api.op("h-sr", "suspend", "").await.status, 202);
    assert_eq!(api.op("h-sr", "resume", "reason=go").await.status, 202);
    assert_ne!(
        api.status("h-sr", "").await.body["runtimeStatus"],
        "Suspended"
    );
    // Not started by any worker yet: terminated at once.
    assert_eq!(
        api.op("h-ops", "terminate", "reason=enough").await.status,
        202
    );
    let ended = api.status("h-ops", "").await;
    assert_eq!(
        (ended.status, &ended.body["runtimeStatus"]),
        (200, &json!("Terminated"))
    );
    assert_eq!(ended.body["output"], "enough");

    // Ended: 410 Gone.
    for op in ["terminate", "suspend", "resume"] {
        let r = api.op("h-ops", op, "").await;
        assert_eq!(
            (r.status, r.body["error"].as_str()),
            (410, Some("Gone")),
            "{op}"
        );
    }
    assert_eq!(
        raise("h-ops", Some(("application/json", "1"))).await.status,
        410
    );

    // Unknown paths: a JSON 404.
    let r = api
        .send(
            "GET",
            "",
            &format!("{}/nowhere", api.origin),
            Req::default(),
        )
        .await;
    assert_eq!((r.status, r.body["error"].as_str()), (404, Some("NoRoute")));
}

#[tokio::test]
async fn purge_by_id_and_by_filter() {
    let server = TestServer::start().await;
    let api = Api::new(&server).await;
    let one = format!("{B}/instances/{{instanceId}}");
    let all = format!("{B}/instances");
    let delete = |id: &'static str| {
        let one = one.clone();
        let api = &api;
        async move {
            api.call(
                "DELETE",
                &one,
                Req {
                    params: &[("instanceId", id)],
                    ..Req::default()
                },
            )
            .await
        }
    };
    api.start("Orch", "h-purge-live", json!(1), "").await;
    for id in ["h-purge-1", "h-purge-2", "h-purge-3"] {
        terminated(&server, id).await;
    }
    assert_eq!(delete("h-purge-none").await.status, 404);
    assert_eq!(delete("h-purge-live").await.status, 412);
    let r = delete("h-purge-1").await;
    assert_eq!((r.status, &r.body), (200, &json!({"instancesDeleted": 1})));
    assert_eq!(api.status("h-purge-1", "").await.status, 404);

    let filtered = |query: &'static str| {
        let all = all.clone();
        let api = &api;
        async move {
            api.call(
                "DELETE",
                &all,
                Req {
                    query,
                    ..Req::default()
                },
            )
            .await
        }
    };
    assert_eq!(filtered("").await.status, 400);
    assert_eq!(filtered("createdTimeFrom=yesterday").await.status, 400);
    assert_eq!(
        filtered("createdTimeFrom=2000-01-01T00:00:00Z&runtimeStatus=Completed")
            .await
            .status,
        404
    );
    let r = filtered("createdTimeFrom=2000-01-01T00:00:00Z&runtimeStatus=Terminated,Failed").await;
    assert_eq!((r.status, &r.body), (200, &json!({"instancesDeleted": 2})));
    assert_eq!(filtered("createdTimeFrom=2000-01-01").await.status, 404);
    assert!(
        exists(&server, "h-purge-live").await,
        "live instances are never purged"
    );
}

#[tokio::test]
async fn list_filters_and_pages_through_the_continuation_header() {
    let server = TestServer::start().await;
    let api = Api::new(&server).await;
    for i in 0..5 {
        api.start("Orch", &format!("page-{i}"), json!(i), "").await;
    }
    terminated(&server, "page-x").await;
    api.start("Orch", "other", json!(null), "").await;
    let list = format!("{B}/instances");

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let headers: Vec<(&str, &str)> = token
            .as_deref()
            .map(|t| vec![("x-ms-continuation-token", t)])
            .unwrap_or_default();
        let r = api
            .call(
                "GET",
                &list,
                Req {
                    query: "instanceIdPrefix=page-&top=2&showInput=false",
                    headers: &headers,
                    ..Req::default()
                },
            )
            .await;
        assert_eq!(r.status, 200);
        let items = r.body.as_array().unwrap();
        assert!(items.len() <= 2);
        for item in items {
            assert_eq!(item["input"], Value::Null);
            seen.push(item["instanceId"].as_str().unwrap().to_string());
        }
        pages += 1;
        match r.header("x-ms-continuation-token") {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        ["page-0", "page-1", "page-2", "page-3", "page-4", "page-x"]
    );
    assert_eq!(pages, 3);

    let r = api.get(&list, &[], "runtimeStatus=Terminated").await;
    let ids: Vec<_> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instanceId"].clone())
        .collect();
    assert_eq!(ids, [json!("page-x")]);
    let r = api
        .get(
            &list,
            &[],
            "runtimeStatus=pending&createdTimeFrom=2000-01-01T00:00:00Z",
        )
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 6);
    assert_eq!(r.body[0]["input"], json!(0));
    let r = api
        .get(&list, &[], "createdTimeTo=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(r.body, json!([]));

    for bad in ["runtimeStatus=Done", "top=-1", "createdTimeFrom=today"] {
        assert_eq!(api.get(&list, &[], bad).await.status, 400, "{bad}");
    }
    let r = api
        .call(
            "GET",
            &list,
            Req {
                headers: &[("x-ms-continuation-token", "not-ours")],
                ..Req::default()
            },
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn list_by_name_newest_first_and_count_per_status() {
    let server = TestServer::start().await;
    let api = Api::new(&server).await;
    for i in 0..3 {
        api.start("Orch", &format!("n-{i}"), json!(i), "").await;
    }
    api.start("Other", "o-0", json!(null), "").await;
    terminated(&server, "t-0").await;
    let list = format!("{B}/instances");
    let ids = |r: &Reply| -> Vec<String> {
        let items = r.body.as_array().unwrap();
        items
            .iter()
            .map(|i| i["instanceId"].as_str().unwrap().to_string())
            .collect()
    };

    let r = api
        .get(&list, &[], "name=Orch&instanceIdPrefix=n-&order=desc&top=2")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(ids(&r), ["n-2", "n-1"]);
    let token = r.header("x-ms-continuation-token").unwrap().to_string();
    let r = api
        .call(
            "GET",
            &list,
            Req {
                query: "name=Orch&instanceIdPrefix=n-&order=DESC&top=2",
                headers: &[("x-ms-continuation-token", &token)],
                ..Req::default()
            },
        )
        .await;
    assert_eq!(ids(&r), ["n-0"]);
    assert_eq!(r.header("x-ms-continuation-token"), None);
    let r = api.get(&list, &[], "name=Other").await;
    assert_eq!(ids(&r), ["o-0"], "the name is matched exactly");

    let counts = format!("{B}/instanceCounts");
    let r = api.get(&counts, &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["total"], json!(5));
    assert_eq!(r.body["byStatus"]["Pending"], json!(4));
    assert_eq!(r.body["byStatus"]["Terminated"], json!(1));
    assert_eq!(r.body["byStatus"]["Running"], json!(0));
    let r = api
        .get(
            &counts,
            &[],
            "name=Orch&instanceIdPrefix=n-&runtimeStatus=Pending",
        )
        .await;
    assert_eq!(r.body["total"], json!(3));

    for (bad, names) in [
        ("order=sideways", "'order'"),
        ("runtimeStatus=Done", "'runtimeStatus'"),
    ] {
        for url in [&list, &counts] {
            let r = api.get(url, &[], bad).await;
            assert_eq!(r.status, 400, "{url}?{bad}");
            assert!(r.body.to_string().contains(names), "{bad}: {}", r.body);
        }
    }
}

fn is_entity(i: &pb::WorkItem) -> bool {
    matches!(i.request, Some(pb::work_item::Request::EntityRequestV2(_)))
}

#[tokio::test]
async fn entities_signal_get_and_list() {
    let server = TestServer::start().await;
    let api = Api::new(&server).await;
    let one = format!("{B}/entities/{{entityName}}/{{entityKey}}");
    let signal =
        |key: &'static str, query: &'static str, body: Option<(&'static str, &'static str)>| {
            let one = one.clone();
            let api = &api;
            async move {
                api.call(
                    "POST",
                    &one,
                    Req {
                        params: &[("entityName", "Counter"), ("entityKey", key)],
                        query,
                        body,
                        ..Req::default()
                    },
                )
                .await
            }
        };
    assert_eq!(
        signal("a", "op=add", Some(("application/json", "5")))
            .await
            .status,
        202
    );
    assert_eq!(
        signal("b", "op=set", Some(("text/plain", "hello")))
            .await
            .status,
        202
    );
    assert_eq!(signal("a", "", None).await.status, 400);
    assert_eq!(
        signal("a", "op=add", Some(("application/json", "{x")))
            .await
            .status,
        400
    );
    // Queued but never run: no state yet.
    let get = |key: &'static str| {
        let one = one.clone();
        let api = &api;
        async move {
            api.get(&one, &[("entityName", "counter"), ("entityKey", key)], "")
                .await
        }
    };
    assert_eq!(get("a").await.status, 404);

    let mut w = WorkStream::open(server.client(), pb::GetWorkItemsRequest::default()).await;
    for _ in 0..2 {
        let item = w.next_where(is_entity).await;
        let Some(pb::work_item::Request::EntityRequestV2(req)) = item.request else {
            unreachable!()
        };
        let input = req
            .operation_requests
            .iter()
            .find_map(|e| match &e.event_type {
                Some(EventType::EntityOperationSignaled(s)) => s.input.clone(),
                _ => None,
            });
        complete_entity_ok(&w.client, item.completion_token, input).await;
    }
    let a = get("a").await;
    assert_eq!((a.status, &a.body), (200, &json!(5)));
    assert_eq!(get("b").await.body, json!("hello"));
    assert_eq!(get("missing").await.status, 404);

    let all = api
        .get(&format!("{B}/entities"), &[], "fetchState=true")
        .await;
    assert_eq!(all.status, 200);
    let items = all.body.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["entityId"], json!({"name": "counter", "key": "a"}));
    assert_eq!(items[0]["state"], json!(5));
    let named = format!("{B}/entities/{{entityName}}");
    let page = api.get(&named, &[("entityName", "COUNTER")], "top=1").await;
    assert_eq!(page.body.as_array().unwrap().len(), 1);
    assert!(page.body[0].get("state").is_none());
    let token = page.header("x-ms-continuation-token").unwrap().to_string();
    let next = api
        .call(
            "GET",
            &named,
            Req {
                params: &[("entityName", "counter")],
                query: "top=1",
                headers: &[("x-ms-continuation-token", &token)],
                ..Req::default()
            },
        )
        .await;
    assert_eq!(next.body[0]["entityId"]["key"], "b");
    assert_eq!(
        api.get(&named, &[("entityName", "other")], "").await.body,
        json!([])
    );
    assert_eq!(
        api.get(
            &named,
            &[("entityName", "counter")],
            "lastOperationTimeFrom=x"
        )
        .await
        .status,
        400
    );

    let r = api
        .call(
            "DELETE",
            &one,
            Req {
                params: &[("entityName", "counter"), ("entityKey", "a")],
                ..Req::default()
            },
        )
        .await;
    assert_eq!(r.status, 202);
}

#[tokio::test]
async fn delete_task_hub_wipes_everything_unless_disabled() {
    let server = TestServer::start().await;
    let api = Api::new(&server).await;
    api.start("Orch", "h-hub", json!(1), "").await;
    let hub = format!("{B}/taskhub");
    let r = api.call("DELETE", &hub, Req::default()).await;
    assert_eq!(r.status, 204);
    assert_eq!(api.status("h-hub", "").await.status, 404);

    let mut options = durabletask_sidecar::server::ServerOptions::default();
    options.service.task_hub_admin = false;
    let locked = TestServer::start_with(options).await;
    let api = Api::new(&locked).await;
    api.start("Orch", "h-hub", json!(1), "").await;
    let r = api.call("DELETE", &hub, Req::default()).await;
    assert_eq!(r.status, 412);
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("disable-task-hub-admin"));
    assert_eq!(api.status("h-hub", "").await.status, 202);
}

#[tokio::test]
async fn shutdown_ends_a_waiting_start_with_503_and_stops_both_doors() {
    let mut server = TestServer::start().await;
    let api = Api::new(&server).await;
    let waiting = api.start("Greet", "h-shutdown", json!(1), "timeout=60");
    tokio::pin!(waiting);
    // The start is accepted (the instance exists) and the request is now waiting.
    within("instance created", async {
        loop {
            tokio::select! {
                biased;
                _ = &mut waiting => panic!("the wait ended before shutdown"),
                found = exists(&server, "h-shutdown") => if found { break },
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let (reply, ()) = tokio::join!(waiting, server.stop());
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body["error"], "Unavailable");
    let refused = reqwest::get(format!("{}/openapi.json", api.origin)).await;
    assert!(
        refused.is_err(),
        "the HTTP door still answers after shutdown"
    );
}

/// Every route the OpenAPI document lists is served (the unit test in src/http checks
/// the document against the router's route table; this checks the table against the
/// live router): no route answers the router's fallback or 405.
#[tokio::test]
async fn every_documented_route_is_served() {
    let server = TestServer::start().await;
    let api = Api::new(&server).await;
    let paths = api.doc["paths"].as_object().unwrap();
    assert_eq!(
        paths
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum::<usize>(),
        ROUTES.len()
    );
    for (method, template) in ROUTES {
        let params = [
            ("functionName", "Orch"),
            ("instanceId", "route-check"),
            ("eventName", "e"),
            ("entityName", "counter"),
            ("entityKey", "k"),
        ];
        let r = api
            .call(
                method,
                template,
                Req {
                    params: &params,
                    ..Req::default()
                },
            )
            .await;
        assert_ne!(r.status, 405, "{method} {template}");
        assert_ne!(r.body["error"], "NoRoute", "{method} {template}");
    }
}

/// The fields the dashboard adds to Durable Functions' shapes: a failed instance's
/// `failureDetails` (stack trace, inner failure), a child's `parentInstanceId`, the
/// child's `InstanceId` on the parent's sub-orchestration event, and an entity listing's
/// `lockedBy`, `backlogQueueSize` and `keyPrefix` filter; and the scheduling events of
/// work in progress, which the history keeps as the extension does.
#[tokio::test]
async fn dashboard_fields_failure_details_parent_and_child_and_entity_keys() {
    let server = TestServer::start().await;
    let api = Api::new(&server).await;
    let orchestrator = |req: &pb::OrchestratorRequest| -> Vec<pb::OrchestratorAction> {
        let name = all_events(req)
            .find_map(|e| match &e.event_type {
                Some(EventType::ExecutionStarted(s)) => Some(s.name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let child_failed = all_events(req).find_map(|e| match &e.event_type {
            Some(EventType::SubOrchestrationInstanceFailed(f)) => f.failure_details.clone(),
            _ => None,
        });
        let failed = |details: pb::TaskFailureDetails| {
            vec![act(
                1,
                A::CompleteOrchestration(pb::CompleteOrchestrationAction {
                    orchestration_status: S::Failed as i32,
                    failure_details: Some(details),
                    ..Default::default()
                }),
            )]
        };
        match (name.as_str(), child_failed) {
            ("Kid", _) => failed(pb::TaskFailureDetails {
                error_type: "Outer".into(),
                error_message: "kid gave up".into(),
                stack_trace: Some("at kid (kid.js:1)".into()),
                inner_failure: Some(Box::new(pb::TaskFailureDetails {
                    error_type: "Inner".into(),
                    error_message: "the cause".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            (_, Some(details)) => failed(details),
            (_, None)
                if all_events(req).any(|e| {
                    matches!(
                        e.event_type,
                        Some(EventType::SubOrchestrationInstanceCreated(_))
                    )
                }) =>
            {
                vec![]
            }
            (_, None) => vec![act(
                0,
                A::CreateSubOrchestration(pb::CreateSubOrchestrationAction {
                    instance_id: "h-dash-kid".into(),
                    name: "Kid".into(),
                    ..Default::default()
                }),
            )],
        }
    };
    let worker = ScriptedWorker::start(server.client(), orchestrator, greet).await;
    api.start("Parent", "h-dash-parent", json!(null), "").await;
    let parent = eventually("the parent to fail", || async {
        let r = api.status("h-dash-parent", "showHistory=true").await;
        (r.body["runtimeStatus"] == "Failed").then_some(r)
    })
    .await;
    let kid = api.status("h-dash-kid", "").await;
    assert_eq!(kid.body["parentInstanceId"], "h-dash-parent");
    assert_eq!(
        kid.body["failureDetails"],
        json!({
            "errorType": "Outer",
            "errorMessage": "kid gave up",
            "stackTrace": "at kid (kid.js:1)",
            "innerFailure": {"errorType": "Inner", "errorMessage": "the cause"}
        })
    );
    assert!(parent.body.get("parentInstanceId").is_none());
    let sub = parent.body["historyEvents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["EventType"] == "SubOrchestrationInstanceFailed")
        .unwrap();
    assert_eq!(sub["InstanceId"], "h-dash-kid");
    assert_eq!(sub["FunctionName"], "Kid");
    assert_eq!(sub["FailureDetails"]["StackTrace"], "at kid (kid.js:1)");
    assert_eq!(sub["FailureDetails"]["InnerFailure"]["ErrorType"], "Inner");
    worker.stop().await;

    // Entities: queued signals count as backlog; nobody holds a lock; keys by prefix.
    let one = format!("{B}/entities/{{entityName}}/{{entityKey}}");
    for key in ["ab1", "ab2", "b"] {
        let r = api
            .call(
                "POST",
                &one,
                Req {
                    params: &[("entityName", "Counter"), ("entityKey", key)],
                    query: "op=add",
                    json: Some(json!(1)),
                    ..Req::default()
                },
            )
            .await;
        assert_eq!(r.status, 202);
    }
    let named = format!("{B}/entities/{{entityName}}");
    let keys = |r: &Reply| -> Vec<String> {
        r.body
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["entityId"]["key"].as_str().unwrap().to_string())
            .collect()
    };
    // Signalled but never run: listed only once they have state, so run them first.
    let mut w = WorkStream::open(server.client(), pb::GetWorkItemsRequest::default()).await;
    for _ in 0..3 {
        let item = w.next_where(is_entity).await;
        complete_entity_ok(&w.client, item.completion_token, Some("1".into())).await;
    }
    let all = eventually("three counters listed", || async {
        let r = api.get(&named, &[("entityName", "counter")], "").await;
        (r.body.as_array().map(Vec::len) == Some(3)).then_some(r)
    })
    .await;
    assert_eq!(all.body[0]["lockedBy"], Value::Null);
    assert_eq!(all.body[0]["backlogQueueSize"], 0);
    let ab = api
        .get(&named, &[("entityName", "counter")], "keyPrefix=ab")
        .await;
    assert_eq!(keys(&ab), ["ab1", "ab2"]);
    let none = api
        .get(&named, &[("entityName", "counter")], "keyPrefix=c")
        .await;
    assert_eq!(keys(&none), Vec::<String>::new());

    // Work in progress: scheduling events without a completion stay in the history.
    api.start("Slow", "h-dash-slow", json!(null), "").await;
    let (token, _) = w.orchestration().await;
    let actions = vec![
        schedule(0, "slow", None),
        act(
            1,
            A::CreateSubOrchestration(pb::CreateSubOrchestrationAction {
                instance_id: "h-dash-slow-kid".into(),
                name: "Kid".into(),
                ..Default::default()
            }),
        ),
    ];
    w.complete(&token, "h-dash-slow", actions).await.unwrap();
    let r = api.status("h-dash-slow", "showHistory=true").await;
    let pending: Vec<&Value> = r.body["historyEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["EventType"] != "ExecutionStarted")
        .collect();
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert_eq!(pending[0]["EventType"], "TaskScheduled");
    assert_eq!(pending[0]["Name"], "slow");
    assert_eq!(pending[1]["EventType"], "SubOrchestrationInstanceCreated");
    assert_eq!(pending[1]["Name"], "Kid");
    assert_eq!(pending[1]["InstanceId"], "h-dash-slow-kid");
}
