//! `/metrics` on the HTTP port: the text parses, and the numbers move as a workload of
//! orchestrations (an activity, then a timer, then completion) runs through a scripted
//! worker.
//!
//! Metrics are process-wide, so this file holds ONE test: no other test in this binary can
//! move the counters it checks for exact deltas.
// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the shared helpers below.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{act, finish, schedule, within, ScriptedWorker, TestServer, WorkStream};
use durabletask_sidecar::proto as pb;
use pb::history_event::EventType;
use pb::orchestrator_action::OrchestratorActionType as A;
use pb::send_entity_message_action::EntityMessageType as EntityMessage;

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape.
#[derive(Debug)]
struct Scrape(Vec<Sample>);

impl Scrape {
    /// The value of `name` with (at least) `labels`; 0 when no such series exists yet (a
    /// labelled counter appears on its first increment).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<&Sample> = self
            .0
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {labels:?} matches several series: {matching:?}"
        );
        matching.first().map_or(0.0, |s| s.value)
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|s| s.name == name)
    }
}

/// Parses the Prometheus text format strictly enough to catch a malformed line: every
/// line is a `#` comment or `name{label="value",...} value`.
fn parse(text: &str) -> Scrape {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment line: {line}");
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or_else(|| panic!("no value on line: {line}"));
        let name = &line[..name_end];
        assert!(
            name.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':'),
            "bad metric name on line: {line}"
        );
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let mut consumed = None;
            while let Some((i, c)) = chars.next() {
                if c == '}' {
                    consumed = Some(i + 1);
                    break;
                }
                if c == ',' {
                    continue;
                }
                // label name up to '="'
                let start = i;
                let eq = body[start..]
                    .find("=\"")
                    .unwrap_or_else(|| panic!("bad label on line: {line}"));
                let key = &body[start..start + eq];
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !key.is_empty(),
                    "bad label name {key:?} on line: {line}"
                );
                while chars.peek().is_some_and(|(j, _)| *j < start + eq + 2) {
                    chars.next();
                }
                let mut value = String::new();
                loop {
                    let (_, c) = chars
                        .next()
                        .unwrap_or_else(|| panic!("unterminated label value on line: {line}"));
                    match c {
                        '"' => break,
                        '\\' => {
                            let (_, e) = chars.next().expect("escape");
                            value.push(match e {
                                'n' => '\n',
                                other => other,
                            });
                        }
                        other => value.push(other),
                    }
                }
                labels.insert(key.to_string(), value);
            }
            let consumed = consumed.unwrap_or_else(|| panic!("unclosed labels on line: {line}"));
            rest = &body[consumed..];
        }
        let value_text = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before the value on line: {line}"));
        let value: f64 = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value {v:?} on line: {line}")),
        };
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Scrape(samples)
}

async fn scrape(http: &reqwest::Client, server: &TestServer) -> Scrape {
    let response = within(
        "scrape",
        http.get(format!("{}/metrics", server.http_base())).send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(&response.text().await.unwrap())
}

/// Scrapes until `ok` holds (the gauges are sampled, so a change shows on a later scrape).
async fn scrape_until(
    http: &reqwest::Client,
    server: &TestServer,
    what: &str,
    ok: impl Fn(&Scrape) -> bool,
) -> Scrape {
    within(what, async {
        loop {
            let s = scrape(http, server).await;
            if ok(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// The newest `OrchestratorStarted` time of the request: "now" for the orchestration.
fn episode_time(req: &pb::OrchestratorRequest) -> prost_types::Timestamp {
    req.new_events
        .iter()
        .filter(|e| matches!(e.event_type, Some(EventType::OrchestratorStarted(_))))
        .find_map(|e| e.timestamp)
        .expect("every episode starts with OrchestratorStarted")
}

/// Activity 1, then a 50 ms timer, then complete.
fn chain(req: &pb::OrchestratorRequest) -> Vec<pb::OrchestratorAction> {
    let events = || req.past_events.iter().chain(req.new_events.iter());
    let fired = events().any(|e| matches!(e.event_type, Some(EventType::TimerFired(_))));
    let done = events().any(|e| matches!(e.event_type, Some(EventType::TaskCompleted(_))));
    if fired {
        vec![finish(
            2,
            pb::OrchestrationStatus::Completed,
            Some("\"ok\"".into()),
        )]
    } else if done {
        let now = episode_time(req);
        let fire_at = prost_types::Timestamp {
            seconds: now.seconds + i64::from(now.nanos >= 950_000_000),
            nanos: (now.nanos + 50_000_000) % 1_000_000_000,
        };
        vec![act(
            1,
            A::CreateTimer(pb::CreateTimerAction {
                fire_at: Some(fire_at),
            }),
        )]
    } else {
        vec![schedule(0, "Double", Some("21".into()))]
    }
}

fn double(req: &pb::ActivityRequest) -> Result<Option<String>, String> {
    let n: i64 = req.input.as_deref().unwrap_or("0").parse().unwrap();
    Ok(Some((n * 2).to_string()))
}

const STARTED: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_a_workload_and_the_text_parses() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let backend = if common::postgres_backend() {
        "postgres"
    } else {
        "sqlite"
    };
    let requests = "durabletask_grpc_requests_total";
    let completed = "durabletask_work_items_completed_total";
    let dispatched = "durabletask_work_items_dispatched_total";
    let commits = "durabletask_store_commit_duration_seconds_count";
    let streams = "durabletask_worker_streams";

    let before = scrape(&http, &server).await;
    assert_eq!(before.get(streams, &[]), 0.0);
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "durabletask_store_commit_batch_size_bucket",
        "durabletask_backlog_items",
        "durabletask_backlog_oldest_age_seconds",
    ] {
        assert!(before.has(name), "{name} missing from the scrape");
    }

    // A worker connects: the stream gauge goes up.
    let worker = ScriptedWorker::start(server.client(), chain, double).await;
    let connected = scrape_until(&http, &server, "worker stream counted", |s| {
        s.get(streams, &[]) == 1.0
    })
    .await;
    assert_eq!(
        connected.get(
            "durabletask_grpc_streams_opened_total",
            &[("method", "GetWorkItems")]
        ) - before.get(
            "durabletask_grpc_streams_opened_total",
            &[("method", "GetWorkItems")]
        ),
        1.0
    );

    let ids: Vec<String> = (0..STARTED).map(|i| format!("metrics-{i}")).collect();
    for id in &ids {
        server.start_instance(id, "Chain", None).await;
    }
    for id in &ids {
        let state = server.wait_completion(id).await;
        assert_eq!(
            state.orchestration_status,
            pb::OrchestrationStatus::Completed as i32
        );
    }
    // An error status (trailers-only answer) is counted under its code.
    let mut client = server.client();
    let missing = client
        .raise_event(pb::RaiseEventRequest {
            instance_id: "no-such-instance".into(),
            name: "e".into(),
            input: None,
        })
        .await;
    assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);
    // An HTTP API request is counted under its route template, not its path.
    let status = within(
        "HTTP status",
        http.get(format!(
            "{}/runtime/webhooks/durabletask/instances/{}",
            server.http_base(),
            ids[0]
        ))
        .send(),
    )
    .await
    .unwrap();
    assert_eq!(status.status(), 200);

    let after = scrape(&http, &server).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let n = STARTED as f64;
    let start_ok = [("method", "StartInstance"), ("code", "OK")];
    assert_eq!(delta(requests, &start_ok), n, "StartInstance count");
    assert_eq!(
        delta("durabletask_grpc_request_duration_seconds_count", &start_ok),
        n,
        "StartInstance latency observations"
    );
    assert_eq!(
        delta(requests, &[("method", "RaiseEvent"), ("code", "NotFound")]),
        1.0
    );
    // Each instance: an episode that schedules the activity, one that creates the timer,
    // one that completes.
    let orch = [("kind", "orchestration")];
    let activity = [("kind", "activity")];
    assert_eq!(delta(completed, &orch), 3.0 * n, "orchestration episodes");
    assert_eq!(delta(dispatched, &orch), 3.0 * n);
    assert_eq!(delta(completed, &activity), n, "activities");
    assert_eq!(delta(dispatched, &activity), n);
    assert_eq!(delta(completed, &[("kind", "entity")]), 0.0);
    assert_eq!(
        delta("durabletask_work_items_redelivered_total", &orch),
        0.0
    );
    assert_eq!(
        delta("durabletask_timer_lateness_seconds_count", &[]),
        n,
        "one timer per instance"
    );
    assert!(
        delta(commits, &[("backend", backend)]) >= 1.0,
        "commits were observed on {backend}"
    );
    assert_eq!(
        delta(
            "durabletask_store_commit_batch_size_count",
            &[("backend", backend)]
        ),
        delta(commits, &[("backend", backend)])
    );
    assert_eq!(
        delta(
            "durabletask_http_requests_total",
            &[
                ("method", "GET"),
                (
                    "route",
                    "/runtime/webhooks/durabletask/instances/{instance_id}"
                ),
                ("status", "200"),
            ]
        ),
        1.0
    );
    assert!(
        !after.0.iter().any(|s| s
            .labels
            .get("route")
            .is_some_and(|r| r.contains("metrics-0"))),
        "no raw path becomes a label"
    );
    for kind in ["orchestration", "activity", "entity"] {
        assert_eq!(
            after.get("durabletask_backlog_items", &[("kind", kind)]),
            0.0
        );
    }
    // Instance counts are cached for a few seconds: a later scrape shows them.
    let instances = "durabletask_instances";
    assert_eq!(before.get(instances, &[("status", "Completed")]), 0.0);
    let counted = scrape_until(&http, &server, "instances counted", |s| {
        s.get(instances, &[("status", "Completed")]) == n
    })
    .await;
    for status in ["Running", "Pending", "Failed", "Terminated", "Suspended"] {
        assert_eq!(
            counted.get(instances, &[("status", status)]),
            0.0,
            "{status}"
        );
    }

    // The worker leaves: the gauge goes down and its stream counts as a closed request.
    worker.stop().await;
    let left = scrape_until(&http, &server, "worker stream gone", |s| {
        s.get(streams, &[]) == 0.0
    })
    .await;
    let get_work_items = |s: &Scrape| {
        s.0.iter()
            .filter(|x| {
                x.name == requests
                    && x.labels.get("method").map(String::as_str) == Some("GetWorkItems")
            })
            .map(|x| x.value)
            .sum::<f64>()
    };
    let closed = within("stream close counted", async {
        loop {
            let s = scrape(&http, &server).await;
            if get_work_items(&s) - get_work_items(&before) >= 1.0 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(get_work_items(&closed) - get_work_items(&before), 1.0);
    assert_eq!(left.get(streams, &[]), 0.0);

    // With no worker, a started instance waits in the backlog, and its wait grows.
    server
        .start_instance("metrics-waiting", "Chain", None)
        .await;
    let waiting = scrape_until(&http, &server, "backlog ages", |s| {
        s.get("durabletask_backlog_oldest_age_seconds", &orch) > 0.0
            && s.get(instances, &[("status", "Pending")]) == 1.0
    })
    .await;
    assert_eq!(waiting.get("durabletask_backlog_items", &orch), 1.0);

    // A worker takes it: the backlog drains.
    let worker = ScriptedWorker::start(server.client(), chain, double).await;
    server.wait_completion("metrics-waiting").await;
    let drained = scrape(&http, &server).await;
    assert_eq!(drained.get("durabletask_backlog_items", &orch), 0.0);
    assert_eq!(
        drained.get("durabletask_backlog_oldest_age_seconds", &orch),
        0.0
    );
    worker.stop().await;

    // By hand: an orchestration locks two entities (each grant is one lock wait), and
    // abandons one work item explicitly.
    let before = drained;
    let mut w = WorkStream::open(server.client(), pb::GetWorkItemsRequest::default()).await;
    server.start_instance("locker", "Locker", None).await;
    let (token, _) = w.orchestration().await;
    let lock = pb::SendEntityMessageAction {
        entity_message_type: Some(EntityMessage::EntityLockRequested(
            pb::EntityLockRequestedEvent {
                critical_section_id: "cs-1".into(),
                lock_set: vec!["@lk@a".into(), "@lk@b".into()],
                position: 0,
                parent_instance_id: Some("locker".into()),
            },
        )),
    };
    w.complete(&token, "locker", vec![act(0, A::SendEntityMessage(lock))])
        .await
        .unwrap();
    let (token, granted) = w.orchestration().await;
    assert!(granted
        .new_events
        .iter()
        .any(|e| matches!(e.event_type, Some(EventType::EntityLockGranted(_)))));
    within(
        "abandon",
        client.abandon_task_orchestrator_work_item(pb::AbandonOrchestrationTaskRequest {
            completion_token: token,
        }),
    )
    .await
    .unwrap();
    let (token, _) = w.orchestration().await;
    w.complete(
        &token,
        "locker",
        vec![finish(1, pb::OrchestrationStatus::Completed, None)],
    )
    .await
    .unwrap();
    server.wait_completion("locker").await;
    let after = scrape(&http, &server).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    assert_eq!(
        delta("durabletask_entity_lock_wait_seconds_count", &[]),
        2.0,
        "one grant per entity of the lock set"
    );
    assert_eq!(delta("durabletask_work_items_abandoned_total", &orch), 1.0);
    assert_eq!(
        delta(
            requests,
            &[
                ("method", "AbandonTaskOrchestratorWorkItem"),
                ("code", "OK")
            ]
        ),
        1.0
    );
}
