//! The command-line client end to end: the built binary against a real server (and a
//! scripted worker where an instance has to run), every command, table and JSON output,
//! exit statuses, `@file` input, bad arguments, an unreachable address, serving without a
//! command, and the README's examples.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::server::ServerOptions;
use durabletask_sidecar::service::ServiceOptions;
use pb::history_event::EventType;
use pb::OrchestrationStatus as S;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_durabletask-sidecar");

// --- running the binary ----------------------------------------------------------------

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }

    /// Asserts a failure reported as one `durabletask-sidecar: error: ...` line containing
    /// every part of `needles`.
    #[track_caller]
    fn error_line(&self, code: i32, needles: &[&str]) {
        assert_eq!(self.code, code, "{self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{self:?}");
        assert!(
            lines[0].starts_with("durabletask-sidecar: error: "),
            "{self:?}"
        );
        for n in needles {
            assert!(lines[0].contains(n), "missing {n:?}: {self:?}");
        }
    }
}

fn command(args: &[&str], addr: &str, dir: Option<&Path>) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .arg("--addr")
        .arg(addr)
        .env_remove("DURABLETASK_ADDR")
        .env_remove("DURABLETASK_TASK_HUB");
    if let Some(dir) = dir {
        c.current_dir(dir);
    }
    c
}

async fn exec(mut c: Command) -> Run {
    let out = within(
        "run the cli",
        tokio::task::spawn_blocking(move || c.output().unwrap()),
    )
    .await
    .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs `durabletask-sidecar <args> --addr <server>`.
async fn cli(server: &TestServer, args: &[&str]) -> Run {
    exec(command(args, &server.addr.to_string(), None)).await
}

/// The instance ids of `get-instances -o json` output.
fn ids(r: &Run) -> Vec<String> {
    r.json()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instanceId"].as_str().unwrap().to_owned())
        .collect()
}

/// Runs it in `dir` (for relative `@file` arguments).
async fn cli_in(server: &TestServer, dir: &Path, args: &[&str]) -> Run {
    exec(command(args, &server.addr.to_string(), Some(dir))).await
}

/// Runs it with no address at all (for usage errors, which stop before connecting).
async fn cli_bare(args: &[&str]) -> Run {
    let mut c = Command::new(BIN);
    c.args(args);
    exec(c).await
}

// --- a worker with a few orchestrations ------------------------------------------------

/// `Greeting` calls activity `SayHello` with its input and returns the result; `Approval`
/// waits for the event `Approved` and returns its data; `Flaky` calls activity `Flaky`,
/// which fails the first time, and fails if it failed; `Doomed` fails at once.
async fn worker(server: &TestServer) -> ScriptedWorker {
    let flaky_calls = Arc::new(AtomicUsize::new(0));
    ScriptedWorker::start(
        server.client(),
        |req| {
            let events: Vec<_> = all_events(req).collect();
            let name = events
                .iter()
                .find_map(|e| match &e.event_type {
                    Some(EventType::ExecutionStarted(s)) => Some(s.name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let done = |result: Option<String>| vec![finish(2, S::Completed, result)];
            let task = events.iter().find_map(|e| match &e.event_type {
                Some(EventType::TaskCompleted(c)) => Some(Ok(c.result.clone())),
                Some(EventType::TaskFailed(f)) => Some(Err(f.failure_details.clone())),
                _ => None,
            });
            let scheduled = events
                .iter()
                .any(|e| matches!(e.event_type, Some(EventType::TaskScheduled(_))));
            match name.as_str() {
                "Greeting" | "Flaky" => match task {
                    Some(Ok(result)) => done(result),
                    Some(Err(details)) => vec![act(
                        2,
                        pb::orchestrator_action::OrchestratorActionType::CompleteOrchestration(
                            pb::CompleteOrchestrationAction {
                                orchestration_status: S::Failed as i32,
                                failure_details: details,
                                ..Default::default()
                            },
                        ),
                    )],
                    None if scheduled => vec![],
                    None => {
                        let activity = if name == "Flaky" { "Flaky" } else { "SayHello" };
                        vec![schedule(1, activity, input_of(req))]
                    }
                },
                "Approval" => events
                    .iter()
                    .find_map(|e| match &e.event_type {
                        Some(EventType::EventRaised(r)) if r.name == "Approved" => {
                            Some(done(r.input.clone()))
                        }
                        _ => None,
                    })
                    .unwrap_or_default(),
                "Doomed" => vec![act(
                    1,
                    pb::orchestrator_action::OrchestratorActionType::CompleteOrchestration(
                        pb::CompleteOrchestrationAction {
                            orchestration_status: S::Failed as i32,
                            failure_details: Some(pb::TaskFailureDetails {
                                error_type: "DoomedError".into(),
                                error_message: "it was always going to fail".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ),
                )],
                _ => vec![],
            }
        },
        move |req| match req.name.as_str() {
            "SayHello" => {
                let who: String =
                    serde_json::from_str(req.input.as_deref().unwrap_or("\"nobody\"")).unwrap();
                Ok(Some(json!(format!("Hello, {who}")).to_string()))
            }
            "Flaky" if flaky_calls.fetch_add(1, Ordering::SeqCst) == 0 => {
                Err("flaky the first time".into())
            }
            _ => Ok(Some("\"fine\"".into())),
        },
    )
    .await
}

async fn status_of(server: &TestServer, id: &str) -> i32 {
    server.get(id).await.unwrap().orchestration_status
}

// --- instances ---------------------------------------------------------------------------

#[tokio::test]
async fn start_new_then_get_runtime_status_as_table_and_json() {
    let server = TestServer::start().await;
    let r = cli(
        &server,
        &[
            "start-new",
            "--function-name",
            "Orch",
            "--id",
            "cli-1",
            "--input",
            r#"{"n": 1}"#,
        ],
    )
    .await
    .ok();
    assert!(r.stdout.contains("cli-1"), "{r:?}");
    assert_eq!(
        server.get("cli-1").await.unwrap().input.as_deref(),
        Some(r#"{"n": 1}"#)
    );

    // JSON: the server picks the id when none is given.
    let r = cli(
        &server,
        &["start-new", "--function-name", "Orch", "-o", "json"],
    )
    .await
    .ok();
    let picked = r.json()["instanceId"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["name"], "Orch");
    assert!(server.get(&picked).await.is_some());

    let r = cli(
        &server,
        &[
            "get-runtime-status",
            "--id",
            "cli-1",
            "--show-input",
            "--output",
            "json",
        ],
    )
    .await
    .ok();
    let doc = r.json();
    assert_eq!(doc["instanceId"], "cli-1");
    assert_eq!(doc["name"], "Orch");
    assert_eq!(doc["runtimeStatus"], "Pending");
    assert_eq!(doc["input"], json!({"n": 1}));
    assert!(doc.get("output").is_none(), "{doc}");
    assert!(doc["createdTime"].as_str().unwrap().ends_with('Z'));
    assert!(doc["lastUpdatedTime"].is_string());
    assert!(doc["customStatus"].is_null() && doc["failureDetails"].is_null());

    let r = cli(
        &server,
        &[
            "get-runtime-status",
            "--id",
            "cli-1",
            "--show-input",
            "--show-output",
        ],
    )
    .await
    .ok();
    for line in [
        "Instance ID:",
        "Runtime status: Pending",
        r#"Input:          {"n": 1}"#,
        "Output:",
    ] {
        assert!(r.stdout.contains(line), "missing {line:?}: {r:?}");
    }

    cli(&server, &["get-runtime-status", "--id", "nobody"])
        .await
        .error_line(1, &["no instance with id 'nobody'"]);
}

#[tokio::test]
async fn get_instances_filters_and_pages() {
    let server = TestServer::start().await;
    for id in ["gi-1", "gi-2", "gi-3"] {
        start(&server, id, None).await;
    }
    terminated(&server, "gi-4").await;

    let r = cli(
        &server,
        &[
            "get-instances",
            "--runtime-status",
            "terminated",
            "-o",
            "json",
        ],
    )
    .await
    .ok();
    assert_eq!(ids(&r), ["gi-4"]);
    assert_eq!(r.json()["instances"][0]["runtimeStatus"], "Terminated");
    for (filter, expected) in [
        // Comma- or space-separated, case-insensitive.
        (&["--runtime-status", "pending,Terminated"][..], 4),
        (&["--runtime-status", "pending", "terminated"], 4),
        (&["--created-after", "2999-01-01"], 0),
        (&["--created-before", "2999-01-01T00:00:00Z"], 4),
    ] {
        let args = [&["get-instances", "-o", "json"][..], filter].concat();
        assert_eq!(
            ids(&cli(&server, &args).await.ok()).len(),
            expected,
            "{filter:?}"
        );
    }

    // Paging: --top, then --continuation-token until there is none.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut args = vec!["get-instances", "--top", "3", "-o", "json"];
        if let Some(t) = &token {
            args.extend(["--continuation-token", t.as_str()]);
        }
        let r = cli(&server, &args).await.ok();
        seen.extend(ids(&r));
        token = r.json()["continuationToken"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, ["gi-1", "gi-2", "gi-3", "gi-4"]);

    // The table: a header, a row per instance, and the token to go on with.
    let r = cli(&server, &["get-instances", "--top", "2"]).await.ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].starts_with("INSTANCE ID") && lines[0].contains("STATUS"),
        "{r:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("gi-")).count(),
        2,
        "{r:?}"
    );
    assert!(r.stdout.contains("--continuation-token"), "{r:?}");
}

#[tokio::test]
async fn raise_event_suspend_resume_and_wait_for_completion() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("order.json"), r#"{"amount": 42}"#).unwrap();
    std::fs::write(dir.path().join("yes.json"), "{\"approved\": true}\n").unwrap();
    let _worker = worker(&server).await;

    cli_in(
        &server,
        dir.path(),
        &[
            "start-new",
            "--function-name",
            "Approval",
            "--id",
            "ap-1",
            "--input",
            "@order.json",
        ],
    )
    .await
    .ok();
    assert_eq!(
        server.get("ap-1").await.unwrap().input.as_deref(),
        Some(r#"{"amount": 42}"#)
    );
    eventually("ap-1 running", || async {
        (status_of(&server, "ap-1").await == S::Running as i32).then_some(())
    })
    .await;

    let r = cli(
        &server,
        &["suspend", "--id", "ap-1", "--reason", "audit", "-o", "json"],
    )
    .await
    .ok();
    assert_eq!(
        r.json(),
        json!({"instanceId": "ap-1", "action": "suspended"})
    );
    eventually("ap-1 suspended", || async {
        (status_of(&server, "ap-1").await == S::Suspended as i32).then_some(())
    })
    .await;
    let r = cli(&server, &["resume", "--id", "ap-1"]).await.ok();
    assert!(r.stdout.contains("resumed"), "{r:?}");
    eventually("ap-1 resumed", || async {
        (status_of(&server, "ap-1").await == S::Running as i32).then_some(())
    })
    .await;

    let r = cli_in(
        &server,
        dir.path(),
        &[
            "raise-event",
            "--id",
            "ap-1",
            "--event-name",
            "Approved",
            "--event-data",
            "@yes.json",
            "-o",
            "json",
        ],
    )
    .await
    .ok();
    assert_eq!(
        r.json(),
        json!({"instanceId": "ap-1", "eventName": "Approved"})
    );

    let r = cli(
        &server,
        &[
            "wait",
            "--id",
            "ap-1",
            "--timeout",
            "20s",
            "--show-output",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["runtimeStatus"], "Completed");
    assert_eq!(r.json()["output"], json!({"approved": true}));
    // Table form of an ended instance.
    let r = cli(&server, &["wait", "--id", "ap-1", "--show-output"])
        .await
        .ok();
    assert!(r.stdout.contains("Runtime status: Completed"), "{r:?}");
    assert!(r.stdout.contains(r#"{"approved": true}"#), "{r:?}");

    cli(
        &server,
        &["raise-event", "--id", "nobody", "--event-name", "x"],
    )
    .await
    .error_line(1, &["RaiseEvent failed: NOT_FOUND"]);
}

#[tokio::test]
async fn wait_exit_status_tells_how_the_instance_ended() {
    let server = TestServer::start().await;
    let _worker = worker(&server).await;
    start_named(&server, "w-ok", "Greeting", Some("\"you\"")).await;
    start_named(&server, "w-failed", "Doomed", None).await;
    terminated(&server, "w-terminated").await;
    start_named(&server, "w-stuck", "Approval", None).await;

    let r = cli(
        &server,
        &["wait", "--id", "w-ok", "--show-output", "-o", "json"],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["output"], "Hello, you");

    let r = cli(&server, &["wait", "--id", "w-failed", "-o", "json"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.json()["runtimeStatus"], "Failed");
    assert_eq!(r.json()["failureDetails"]["errorType"], "DoomedError");

    let r = cli(&server, &["wait", "--id", "w-terminated"]).await;
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stdout.contains("Terminated"), "{r:?}");

    cli(&server, &["wait", "--id", "w-stuck", "--timeout", "300ms"])
        .await
        .error_line(5, &["w-stuck", "did not end within 300ms"]);

    cli(&server, &["wait", "--id", "nobody", "--timeout", "5s"])
        .await
        .error_line(1, &["no instance with id 'nobody'"]);
}

async fn start_named(server: &TestServer, id: &str, name: &str, input: Option<&str>) {
    server.start_instance(id, name, input).await;
}

#[tokio::test]
async fn terminate_restart_and_purge_history() {
    let server = TestServer::start().await;
    start(&server, "tr-1", Some("\"in\"")).await;

    let r = cli(
        &server,
        &["terminate", "--id", "tr-1", "--reason", "no longer needed"],
    )
    .await
    .ok();
    assert!(r.stdout.contains("terminated"), "{r:?}");
    let state = server.wait_completion("tr-1").await;
    assert_eq!(state.orchestration_status, S::Terminated as i32);
    // The reason is the output, as a JSON string (what SDKs send).
    assert_eq!(state.output.as_deref(), Some("\"no longer needed\""));

    // Restart under the same id, then under a new one.
    let r = cli(&server, &["restart", "--id", "tr-1", "-o", "json"])
        .await
        .ok();
    assert_eq!(
        r.json(),
        json!({"instanceId": "tr-1", "restartedFrom": "tr-1"})
    );
    cli(&server, &["terminate", "--id", "tr-1"]).await.ok();
    server.wait_completion("tr-1").await;
    let r = cli(
        &server,
        &["restart", "--id", "tr-1", "--new-instance-id", "-o", "json"],
    )
    .await
    .ok();
    let new_id = r.json()["instanceId"].as_str().unwrap().to_owned();
    assert_ne!(new_id, "tr-1");
    assert_eq!(
        server.get(&new_id).await.unwrap().input.as_deref(),
        Some("\"in\"")
    );

    // Purge one instance by id; an unknown id is an error.
    let r = cli(&server, &["purge-history", "--id", "tr-1", "-o", "json"])
        .await
        .ok();
    assert_eq!(r.json(), json!({"instancesDeleted": 1}));
    assert!(!exists(&server, "tr-1").await);
    cli(&server, &["purge-history", "--id", "tr-1"])
        .await
        .error_line(1, &["no instance with id 'tr-1'"]);

    // Purge by filter: only ended instances that match.
    terminated(&server, "tr-2").await;
    terminated(&server, "tr-3").await;
    let r = cli(
        &server,
        &[
            "purge-history",
            "--runtime-status",
            "terminated",
            "--created-after",
            "2000-01-01",
            "--created-before",
            "2999-01-01",
        ],
    )
    .await
    .ok();
    assert!(r.stdout.contains("Purged 2 instance(s)"), "{r:?}");
    assert!(!exists(&server, "tr-2").await && !exists(&server, "tr-3").await);
    assert!(
        exists(&server, &new_id).await,
        "a pending instance is never purged"
    );
}

#[tokio::test]
async fn a_long_purge_reports_progress_on_stderr() {
    let server = TestServer::start().await;
    // The server purges in batches of 100 and stops a round at its deadline: with
    // millisecond rounds, 150 instances take more than one.
    for i in 0..150 {
        terminated(&server, &format!("lp-{i}")).await;
    }
    let r = cli(
        &server,
        &[
            "purge-history",
            "--runtime-status",
            "terminated",
            "--round",
            "1ms",
            "-o",
            "json",
        ],
    )
    .await
    .ok();
    assert_eq!(r.json(), json!({"instancesDeleted": 150}));
    let progress: Vec<&str> = r.stderr.lines().collect();
    assert!(!progress.is_empty(), "{r:?}");
    assert!(
        progress
            .iter()
            .all(|l| l.starts_with("purge-history: ") && l.contains("purged so far")),
        "{r:?}"
    );
    assert!(!exists(&server, "lp-149").await);
}

#[tokio::test]
async fn rewind_runs_a_failed_instance_again() {
    let server = TestServer::start().await;
    let _worker = worker(&server).await;
    start_named(&server, "rw-1", "Flaky", Some("1")).await;
    let r = cli(&server, &["wait", "--id", "rw-1"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.contains("flaky the first time"), "{r:?}");

    let r = cli(
        &server,
        &[
            "rewind",
            "--id",
            "rw-1",
            "--reason",
            "try again",
            "-o",
            "json",
        ],
    )
    .await
    .ok();
    assert_eq!(r.json(), json!({"instanceId": "rw-1", "action": "rewound"}));
    let r = cli(
        &server,
        &["wait", "--id", "rw-1", "--show-output", "-o", "json"],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["output"], "fine");

    // Rewinding an instance that did not fail is refused by the server.
    cli(&server, &["rewind", "--id", "rw-1"])
        .await
        .error_line(1, &["RewindInstance failed: FAILED_PRECONDITION"]);
}

// --- history -----------------------------------------------------------------------------

#[tokio::test]
async fn get_history_as_table_and_json() {
    let server = TestServer::start().await;
    let _worker = worker(&server).await;
    start_named(&server, "h-1", "Greeting", Some("\"history\"")).await;
    server.wait_completion("h-1").await;

    let r = cli(&server, &["get-history", "--id", "h-1", "-o", "json"])
        .await
        .ok();
    let events = r.json();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    for k in [
        "ExecutionStarted",
        "TaskScheduled",
        "TaskCompleted",
        "ExecutionCompleted",
    ] {
        assert!(kinds.contains(&k), "missing {k}: {kinds:?}");
    }
    let started = &events[kinds.iter().position(|k| *k == "ExecutionStarted").unwrap()];
    assert_eq!(started["name"], "Greeting");
    assert_eq!(started["input"], "history");
    let scheduled = &events[kinds.iter().position(|k| *k == "TaskScheduled").unwrap()];
    assert_eq!(scheduled["name"], "SayHello");
    assert_eq!(scheduled["eventId"], 1);
    let completed = &events[kinds
        .iter()
        .position(|k| *k == "ExecutionCompleted")
        .unwrap()];
    assert_eq!(completed["orchestrationStatus"], "Completed");
    assert_eq!(completed["result"], "Hello, history");
    assert!(completed["timestamp"].as_str().unwrap().ends_with('Z'));

    let r = cli(&server, &["get-history", "--id", "h-1"]).await.ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].contains("TIMESTAMP") && lines[0].contains("TYPE"),
        "{r:?}"
    );
    assert_eq!(lines.len(), kinds.len() + 1, "{r:?}");
    assert!(r.stdout.contains("name=SayHello"), "{r:?}");
    assert!(r.stdout.contains(r#"result="Hello, history""#), "{r:?}");
}

#[tokio::test]
async fn get_history_follow_prints_events_as_they_happen_until_the_end() {
    let server = TestServer::start().await;
    start_named(&server, "f-1", "Greeting", Some("\"tail\"")).await;
    start_named(&server, "f-2", "Greeting", Some("\"table\"")).await;
    // Both followers start before any worker: the instances have no history yet.
    let json_follow = tokio::task::spawn_blocking({
        let c = command(
            &["get-history", "--id", "f-1", "--follow", "-o", "json"],
            &server.addr.to_string(),
            None,
        );
        move || run_blocking(c)
    });
    let table_follow = tokio::task::spawn_blocking({
        let c = command(
            &["get-history", "--id", "f-2", "-f"],
            &server.addr.to_string(),
            None,
        );
        move || run_blocking(c)
    });
    let _worker = worker(&server).await;

    let r = within("follow ends", json_follow).await.unwrap().ok();
    let kinds: Vec<String> = r
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["eventType"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for k in [
        "ExecutionStarted",
        "TaskScheduled",
        "TaskCompleted",
        "ExecutionCompleted",
    ] {
        assert!(kinds.iter().any(|seen| seen == k), "missing {k}: {kinds:?}");
    }
    // Every event once, in order.
    let all = history(&server.client(), "f-1").await;
    assert_eq!(kinds.len(), all.len(), "{r:?}");

    let r = within("follow ends", table_follow).await.unwrap().ok();
    assert!(
        r.stdout.lines().next().unwrap().contains("TIMESTAMP"),
        "{r:?}"
    );
    assert!(r.stdout.contains("ExecutionCompleted"), "{r:?}");

    let r = cli(&server, &["get-history", "--id", "nobody", "--follow"]).await;
    r.error_line(1, &["nobody"]);
    assert!(r.stdout.is_empty(), "{r:?}");
}

fn run_blocking(mut c: Command) -> Run {
    let out = c.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

// --- entities, task hub, health ----------------------------------------------------------

#[tokio::test]
async fn entity_commands() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("five.json"), "5").unwrap();

    let r = cli_in(
        &server,
        dir.path(),
        &[
            "signal-entity",
            "--id",
            "@counter@a",
            "--operation",
            "add",
            "--input",
            "@five.json",
            "-o",
            "json",
        ],
    )
    .await
    .ok();
    assert_eq!(r.json()["entityId"], "@counter@a");
    assert_eq!(r.json()["operation"], "add");
    cli(
        &server,
        &["signal-entity", "--id", "@other@b", "--operation", "reset"],
    )
    .await
    .ok();

    // No worker runs entities here: the signal waits in the entity's backlog.
    let r = cli(&server, &["get-entity", "--id", "@counter@a", "-o", "json"])
        .await
        .ok();
    let doc = r.json();
    assert_eq!(doc["entityId"], "@counter@a");
    assert_eq!(doc["name"], "counter");
    assert_eq!(doc["key"], "a");
    assert_eq!(doc["backlogQueueSize"], 1);
    assert!(doc["state"].is_null() && doc["lockedBy"].is_null(), "{doc}");
    let r = cli(&server, &["get-entity", "--id", "@counter@a"])
        .await
        .ok();
    assert!(
        r.stdout.contains("Entity ID:") && r.stdout.contains("Backlog:       1"),
        "{r:?}"
    );

    let r = cli(
        &server,
        &[
            "list-entities",
            "--id-prefix",
            "counter",
            "--show-state",
            "-o",
            "json",
        ],
    )
    .await
    .ok();
    let entities = r.json()["entities"].as_array().unwrap().clone();
    assert_eq!(entities.len(), 1, "{r:?}");
    assert!(entities[0].get("state").is_some());
    let r = cli(&server, &["list-entities"]).await.ok();
    assert!(r.stdout.starts_with("ENTITY ID"), "{r:?}");
    assert!(
        r.stdout.contains("@counter@a") && r.stdout.contains("@other@b"),
        "{r:?}"
    );

    let r = cli(&server, &["clean-entities", "-o", "json"]).await.ok();
    assert!(r.json()["emptyEntitiesRemoved"].is_number(), "{r:?}");
    assert!(r.json()["orphanedLocksReleased"].is_number(), "{r:?}");

    cli(&server, &["get-entity", "--id", "@counter@nobody"])
        .await
        .error_line(1, &["no entity with id '@counter@nobody'"]);
    cli(
        &server,
        &["signal-entity", "--id", "counter", "--operation", "add"],
    )
    .await
    .error_line(1, &["SignalEntity failed: INVALID_ARGUMENT", "@name@key"]);
}

#[tokio::test]
async fn delete_task_hub_wipes_everything_unless_disabled() {
    let server = TestServer::start().await;
    start(&server, "hub-1", None).await;
    let r = cli(&server, &["delete-task-hub", "-o", "json"]).await.ok();
    assert_eq!(r.json(), json!({"taskHubDeleted": true}));
    assert!(!exists(&server, "hub-1").await);

    let locked = TestServer::start_with(ServerOptions {
        service: ServiceOptions {
            task_hub_admin: false,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    start(&locked, "hub-2", None).await;
    cli(&locked, &["delete-task-hub"]).await.error_line(
        1,
        &[
            "DeleteTaskHub failed: FAILED_PRECONDITION",
            "--disable-task-hub-admin",
        ],
    );
    assert!(exists(&locked, "hub-2").await);
}

#[tokio::test]
async fn task_hub_name_picks_the_hub_of_every_command() {
    let server = TestServer::start().await;
    start(&server, "both", None).await;
    let start_in = |hub: &'static str| {
        let server = &server;
        async move {
            cli(
                server,
                &[
                    "start-new",
                    "--function-name",
                    "Orch",
                    "--id",
                    "both",
                    "--task-hub-name",
                    hub,
                ],
            )
            .await
            .ok();
        }
    };
    start_in("Blue").await;
    start_in("green").await;
    let list = |hub: Option<&'static str>| {
        let server = &server;
        async move {
            let mut args = vec!["get-instances", "-o", "json"];
            args.extend(hub.map(|h| ["--task-hub-name", h]).into_iter().flatten());
            ids(&cli(server, &args).await.ok())
        }
    };
    assert_eq!(list(Some("blue")).await, ["both"]);
    assert_eq!(list(None).await, ["both"]);
    // Wiping one hub leaves the others.
    cli(&server, &["delete-task-hub", "--task-hub-name", "BLUE"])
        .await
        .ok();
    assert!(list(Some("blue")).await.is_empty());
    assert_eq!(list(Some("green")).await, ["both"]);
    assert_eq!(list(None).await, ["both"]);
    cli(&server, &["get-instances", "--task-hub-name", "no.dots"])
        .await
        .error_line(1, &["--task-hub-name", "contains '.'"]);
}

#[tokio::test]
async fn health_is_zero_when_serving_and_one_otherwise() {
    let mut server = TestServer::start().await;
    let r = cli(&server, &["health"]).await.ok();
    assert_eq!(r.stdout.trim(), "SERVING");
    let r = cli(&server, &["health", "-o", "json"]).await.ok();
    assert_eq!(r.json(), json!({"status": "SERVING"}));
    cli(&server, &["health", "--service", ""]).await.ok();
    cli(&server, &["health", "--service", "NoSuchService"])
        .await
        .error_line(1, &["Health/Check failed: NOT_FOUND"]);

    let addr = server.addr;
    server.stop().await;
    exec(command(&["health"], &addr.to_string(), None))
        .await
        .error_line(1, &[&format!("cannot connect to http://{addr}")]);
}

// --- errors --------------------------------------------------------------------------------

#[tokio::test]
async fn an_unreachable_address_is_one_error_line() {
    // A port nothing listens on: bind one, then close it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for args in [
        &["get-instances"][..],
        &["get-runtime-status", "--id", "x"],
        &["start-new", "--function-name", "Orch"],
    ] {
        exec(command(args, &addr.to_string(), None))
            .await
            .error_line(1, &[&format!("cannot connect to http://{addr}")]);
    }
    exec(command(&["health"], "https://127.0.0.1:1", None))
        .await
        .error_line(1, &["TLS is not supported"]);
    // The default address, and DURABLETASK_ADDR.
    let mut c = Command::new(BIN);
    c.args(["get-instances"])
        .env("DURABLETASK_ADDR", addr.to_string());
    exec(c)
        .await
        .error_line(1, &[&format!("cannot connect to http://{addr}")]);
}

#[tokio::test]
async fn bad_arguments_are_usage_errors_with_status_2() {
    for args in [
        &["start-new"][..],
        &["start-new", "--function-name", "O", "--bogus"],
        &["get-runtime-status"],
        &["get-instances", "--runtime-status", "sleeping"],
        &["get-instances", "--created-after", "yesterday"],
        &["get-instances", "--top", "-1"],
        &["wait", "--id", "x", "--timeout", "soon"],
        &[
            "purge-history",
            "--id",
            "x",
            "--runtime-status",
            "completed",
        ],
        &["get-instances", "--output", "xml"],
        &["no-such-command"],
    ] {
        let r = cli_bare(args).await;
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.starts_with("error: "), "{args:?}: {r:?}");
        assert!(r.stdout.is_empty(), "{args:?}: {r:?}");
    }
}

#[tokio::test]
async fn bad_payloads_name_the_option_and_the_file() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.json"), "{not json").unwrap();
    let start = |input: &'static str| {
        let server = &server;
        let dir = dir.path().to_owned();
        async move {
            cli_in(
                server,
                &dir,
                &[
                    "start-new",
                    "--function-name",
                    "O",
                    "--id",
                    "bad",
                    "--input",
                    input,
                ],
            )
            .await
        }
    };
    start("@missing.json")
        .await
        .error_line(1, &["--input", "missing.json", "cannot read"]);
    start("@broken.json")
        .await
        .error_line(1, &["--input", "file broken.json is not valid JSON"]);
    start("plain text")
        .await
        .error_line(1, &["--input", "not valid JSON", "quote it"]);
    cli(
        &server,
        &[
            "raise-event",
            "--id",
            "x",
            "--event-name",
            "e",
            "--event-data",
            "{",
        ],
    )
    .await
    .error_line(1, &["--event-data", "not valid JSON"]);
    assert!(
        !exists(&server, "bad").await,
        "nothing is started with a bad input"
    );
}

// --- serving and the README ------------------------------------------------------------------

#[tokio::test]
async fn no_command_still_serves() {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "--port",
            &port.to_string(),
            "--db",
            ":memory:",
            "--log-level",
            "warn",
        ])
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    eventually("the served binary answers health", || {
        let addr = addr.clone();
        async move { (exec(command(&["health"], &addr, None)).await.code == 0).then_some(()) }
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Every line of the README's "Command-line tool" example block runs, in order, against a
/// server with a worker, and succeeds: the examples stay true.
#[tokio::test]
async fn readme_examples_run() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("\n## Command-line tool\n")
        .nth(1)
        .expect("README has a '## Command-line tool' section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the section has a ```sh block");
    let lines: Vec<&str> = block
        .lines()
        .map(|l| l.split(" # ").next().unwrap().trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(lines.len() >= 10, "{lines:?}");

    let server = TestServer::start().await;
    let _worker = worker(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for line in lines {
        let mut c = Command::new("sh");
        c.args(["-c", line])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("DURABLETASK_ADDR", server.addr.to_string());
        let r = exec(c).await;
        assert_eq!(r.code, 0, "README line failed: {line}\n{r:?}");
    }
}
