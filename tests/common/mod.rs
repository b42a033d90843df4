//! Test support: a real server on an ephemeral port over a real database, a connected
//! client, and a scripted worker that answers work items with closures.
//!
//! The database is a SQLite file in a temporary directory, or, with
//! `DURABLETASK_TEST_BACKEND=postgres`, a fresh PostgreSQL database on the server
//! `DURABLETASK_TEST_POSTGRES` names (see `postgres.rs`), so every server suite runs
//! unchanged on either backend.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // test support code

pub mod postgres;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durabletask_sidecar::proto as pb;
use durabletask_sidecar::server::{self, ServerOptions};
use durabletask_sidecar::store::StoreUrl;
use pb::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::{InterceptedService, Interceptor};
use tonic::transport::Channel;

/// A client that names a task hub on every call (`taskhub` metadata) or, by default, none.
pub type Client = TaskHubSidecarServiceClient<InterceptedService<Channel, HubHeader>>;

/// Sends `taskhub: <hub>` with every call when set.
#[derive(Debug, Clone, Default)]
pub struct HubHeader(Option<String>);

impl Interceptor for HubHeader {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(hub) = &self.0 {
            req.metadata_mut()
                .insert("taskhub", hub.parse().expect("ASCII hub name"));
        }
        Ok(req)
    }
}

/// A client over `channel` that names no task hub.
pub fn client_of(channel: Channel) -> Client {
    TaskHubSidecarServiceClient::with_interceptor(channel, HubHeader::default())
}

/// A client over `channel` that names task hub `hub` on every call.
pub fn hub_client_of(channel: Channel, hub: &str) -> Client {
    TaskHubSidecarServiceClient::with_interceptor(channel, HubHeader(Some(hub.to_owned())))
}

/// A loopback port free when asked, for a sidecar process started by a test (taken and
/// released here; a clash with another process in between is unlikely).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every await on the server goes through this, so a bug fails instead of hanging.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Which backend `TestServer` runs on: `DURABLETASK_TEST_BACKEND` = `sqlite` (the default)
/// or `postgres`.
pub const BACKEND_VAR: &str = "DURABLETASK_TEST_BACKEND";

/// Whether the server suites run on PostgreSQL (`DURABLETASK_TEST_BACKEND=postgres`).
pub fn postgres_backend() -> bool {
    match std::env::var(BACKEND_VAR).as_deref() {
        Err(_) | Ok("" | "sqlite") => false,
        Ok("postgres") => true,
        Ok(other) => panic!("{BACKEND_VAR}={other:?}: use sqlite or postgres"),
    }
}

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    /// The HTTP API's address.
    pub http_addr: std::net::SocketAddr,
    pub client: Client,
    /// A temporary directory of this server's (holding its SQLite file on SQLite).
    pub dir: tempfile::TempDir,
    /// The database: the SQLite file's path, or the PostgreSQL database's URL.
    pub db: String,
    /// The PostgreSQL database, dropped with the last server on it.
    pg: Option<Arc<postgres::TestDatabase>>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(ServerOptions::default()).await
    }

    /// A server with `options` on a fresh database of the selected backend (`options.store`
    /// is replaced).
    pub async fn start_with(options: ServerOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if postgres_backend() {
            let Some(admin_url) = std::env::var(postgres::ADMIN_URL_VAR)
                .ok()
                .filter(|url| !url.trim().is_empty())
            else {
                panic!(
                    "{BACKEND_VAR}=postgres needs {}: {}",
                    postgres::ADMIN_URL_VAR,
                    postgres::HOW_TO_RUN
                );
            };
            let pg = Arc::new(postgres::TestDatabase::create(admin_url.trim()).await);
            let db = pg.url.clone();
            return Self::start_on(dir, db, Some(pg), options).await;
        }
        let db = dir
            .path()
            .join("test.sqlite")
            .to_string_lossy()
            .into_owned();
        Self::start_on(dir, db, None, options).await
    }

    /// A SQLite server on `dir/test.sqlite` (a directory the test chose, e.g. on a small
    /// tmpfs), whatever the selected backend.
    pub async fn start_in(dir: tempfile::TempDir) -> Self {
        let db = dir
            .path()
            .join("test.sqlite")
            .to_string_lossy()
            .into_owned();
        Self::start_on(dir, db, None, ServerOptions::default()).await
    }

    async fn start_on(
        dir: tempfile::TempDir,
        db: String,
        pg: Option<Arc<postgres::TestDatabase>>,
        options: ServerOptions,
    ) -> Self {
        // TEST_LOG=debug shows the server's log while debugging a test.
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let store = match &pg {
            Some(_) => StoreUrl::Postgres(db.clone()),
            None => StoreUrl::SqliteFile(db.clone().into()),
        };
        let options = ServerOptions { store, ..options };
        let token = cancel.clone();
        let task = tokio::spawn(async move {
            let listeners = server::Listeners {
                grpc: listener,
                http: Some(http),
            };
            server::run(options, listeners, token)
                .await
                .expect("server failed");
        });
        let channel = within(
            "connect",
            Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect(),
        )
        .await
        .unwrap();
        let client = client_of(channel);
        Self {
            addr,
            http_addr,
            client,
            dir,
            db,
            pg,
            cancel,
            task: Some(task),
        }
    }

    /// Stops the server and starts a new one on the same database.
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let pg = self.pg.take();
        Self::start_on(dir, self.db.clone(), pg, ServerOptions::default()).await
    }

    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            within("server shutdown", task).await.unwrap();
        }
    }

    /// `http://127.0.0.1:<port>`: the HTTP API's origin.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A client of this server that names task hub `hub` on every call.
    pub async fn hub_client(&self, hub: &str) -> Client {
        let channel = within(
            "connect",
            Channel::from_shared(format!("http://{}", self.addr))
                .unwrap()
                .connect(),
        )
        .await
        .unwrap();
        hub_client_of(channel, hub)
    }

    pub async fn start_instance(&self, id: &str, name: &str, input: Option<&str>) -> String {
        self.client()
            .start_instance(pb::CreateInstanceRequest {
                instance_id: id.into(),
                name: name.into(),
                input: input.map(Into::into),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .instance_id
    }

    pub async fn wait_completion(&self, id: &str) -> pb::OrchestrationState {
        wait_completion_on(&self.client(), id).await
    }

    pub async fn get(&self, id: &str) -> Option<pb::OrchestrationState> {
        let r = self
            .client()
            .get_instance(pb::GetInstanceRequest {
                instance_id: id.into(),
                get_inputs_and_outputs: true,
            })
            .await
            .unwrap()
            .into_inner();
        r.orchestration_state
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub type OrchestratorFn =
    dyn Fn(&pb::OrchestratorRequest) -> Vec<pb::OrchestratorAction> + Send + Sync;
pub type ActivityFn = dyn Fn(&pb::ActivityRequest) -> Result<Option<String>, String> + Send + Sync;

/// A worker driven by closures: no replay engine, it decides from the events it gets.
pub struct ScriptedWorker {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    pub seen: Arc<Mutex<Vec<pb::WorkItem>>>,
}

impl ScriptedWorker {
    pub async fn start(
        client: Client,
        orchestrator: impl Fn(&pb::OrchestratorRequest) -> Vec<pb::OrchestratorAction>
            + Send
            + Sync
            + 'static,
        activity: impl Fn(&pb::ActivityRequest) -> Result<Option<String>, String>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        let orchestrator: Arc<OrchestratorFn> = Arc::new(orchestrator);
        let activity: Arc<ActivityFn> = Arc::new(activity);
        let cancel = CancellationToken::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut c = client.clone();
        let mut stream = within(
            "open stream",
            c.get_work_items(pb::GetWorkItemsRequest::default()),
        )
        .await
        .unwrap()
        .into_inner();
        let token = cancel.clone();
        let seen2 = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    _ = token.cancelled() => return,
                    item = stream.message() => item,
                };
                let Ok(Some(item)) = item else { return };
                seen2.lock().unwrap().push(item.clone());
                let mut c = client.clone();
                let token_str = item.completion_token.clone();
                match item.request {
                    Some(pb::work_item::Request::OrchestratorRequest(req)) => {
                        let actions = orchestrator(&req);
                        let r = c
                            .complete_orchestrator_task(pb::OrchestratorResponse {
                                instance_id: req.instance_id.clone(),
                                actions,
                                completion_token: token_str,
                                ..Default::default()
                            })
                            .await;
                        if let Err(e) = r {
                            eprintln!("scripted worker: orchestrator completion failed: {e}");
                        }
                    }
                    Some(pb::work_item::Request::ActivityRequest(req)) => {
                        let (result, failure_details) = match activity(&req) {
                            Ok(r) => (r, None),
                            Err(msg) => (
                                None,
                                Some(pb::TaskFailureDetails {
                                    error_type: "Error".into(),
                                    error_message: msg,
                                    ..Default::default()
                                }),
                            ),
                        };
                        let _ = c
                            .complete_activity_task(pb::ActivityResponse {
                                instance_id: req
                                    .orchestration_instance
                                    .as_ref()
                                    .unwrap()
                                    .instance_id
                                    .clone(),
                                task_id: req.task_id,
                                result,
                                failure_details,
                                completion_token: token_str,
                            })
                            .await;
                    }
                    _ => {}
                }
            }
        });
        Self { cancel, task, seen }
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// All events of a request, past then new.
pub fn all_events(req: &pb::OrchestratorRequest) -> impl Iterator<Item = &pb::HistoryEvent> {
    req.past_events.iter().chain(req.new_events.iter())
}

pub fn input_of(req: &pb::OrchestratorRequest) -> Option<String> {
    all_events(req).find_map(|e| match &e.event_type {
        Some(pb::history_event::EventType::ExecutionStarted(s)) => s.input.clone(),
        _ => None,
    })
}

pub fn completed_results(req: &pb::OrchestratorRequest) -> Vec<String> {
    all_events(req)
        .filter_map(|e| match &e.event_type {
            Some(pb::history_event::EventType::TaskCompleted(c)) => {
                Some(c.result.clone().unwrap_or_default())
            }
            _ => None,
        })
        .collect()
}

pub fn act(
    id: i32,
    kind: pb::orchestrator_action::OrchestratorActionType,
) -> pb::OrchestratorAction {
    pb::OrchestratorAction {
        id,
        orchestrator_action_type: Some(kind),
    }
}

pub fn schedule(id: i32, name: &str, input: Option<String>) -> pb::OrchestratorAction {
    act(
        id,
        pb::orchestrator_action::OrchestratorActionType::ScheduleTask(pb::ScheduleTaskAction {
            name: name.into(),
            input,
            ..Default::default()
        }),
    )
}

pub fn finish(
    id: i32,
    status: pb::OrchestrationStatus,
    result: Option<String>,
) -> pb::OrchestratorAction {
    act(
        id,
        pb::orchestrator_action::OrchestratorActionType::CompleteOrchestration(
            pb::CompleteOrchestrationAction {
                orchestration_status: status as i32,
                result,
                ..Default::default()
            },
        ),
    )
}

/// The status of a call that is expected to fail.
pub fn expect_err<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
) -> tonic::Status {
    match r {
        Ok(v) => panic!("expected an error status, got OK: {v:?}"),
        Err(s) => s,
    }
}

/// The committed history of an instance's current execution (all chunks, in order).
pub async fn history(client: &Client, id: &str) -> Vec<pb::HistoryEvent> {
    let mut c = client.clone();
    within("stream history", async move {
        let mut stream = c
            .stream_instance_history(pb::StreamInstanceHistoryRequest {
                instance_id: id.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut events = Vec::new();
        while let Some(chunk) = stream.message().await.unwrap() {
            events.extend(chunk.events);
        }
        events
    })
    .await
}

/// Polls `check` every 20 ms until it yields a value; bounded like `within`.
pub async fn eventually<T, Fut>(what: &str, mut check: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// One `GetWorkItems` stream, read by hand. Health pings are skipped; items of the other
/// kind are kept for later calls.
pub struct WorkStream {
    pub client: Client,
    pub inner: tonic::Streaming<pb::WorkItem>,
    pub stash: VecDeque<pb::WorkItem>,
}

impl WorkStream {
    pub async fn open(client: Client, req: pb::GetWorkItemsRequest) -> Self {
        let mut c = client.clone();
        let inner = within("open stream", c.get_work_items(req))
            .await
            .unwrap()
            .into_inner();
        Self {
            client,
            inner,
            stash: VecDeque::new(),
        }
    }

    pub async fn raw(&mut self) -> pb::WorkItem {
        loop {
            let item = within("next work item", self.inner.message())
                .await
                .unwrap()
                .expect("stream ended");
            if !matches!(item.request, Some(pb::work_item::Request::HealthPing(_))) {
                return item;
            }
        }
    }

    pub async fn next_where(&mut self, pred: fn(&pb::WorkItem) -> bool) -> pb::WorkItem {
        if let Some(i) = self.stash.iter().position(pred) {
            return self.stash.remove(i).unwrap();
        }
        loop {
            let item = self.raw().await;
            if pred(&item) {
                return item;
            }
            self.stash.push_back(item);
        }
    }

    pub async fn orchestration(&mut self) -> (String, pb::OrchestratorRequest) {
        let item = self
            .next_where(|i| {
                matches!(
                    i.request,
                    Some(pb::work_item::Request::OrchestratorRequest(_))
                )
            })
            .await;
        match item.request {
            Some(pb::work_item::Request::OrchestratorRequest(r)) => (item.completion_token, r),
            _ => unreachable!(),
        }
    }

    pub async fn activity(&mut self) -> (String, pb::ActivityRequest) {
        let item = self
            .next_where(|i| matches!(i.request, Some(pb::work_item::Request::ActivityRequest(_))))
            .await;
        match item.request {
            Some(pb::work_item::Request::ActivityRequest(r)) => (item.completion_token, r),
            _ => unreachable!(),
        }
    }

    /// Asserts that no item matching `pred` arrives within `d`.
    pub async fn none_within(&mut self, d: Duration, pred: fn(&pb::WorkItem) -> bool, what: &str) {
        assert!(
            !self.stash.iter().any(pred),
            "unexpected {what}: {:?}",
            self.stash
        );
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(item) = tokio::time::timeout_at(deadline, self.inner.message()).await {
            let item = item.unwrap().expect("stream ended");
            assert!(!pred(&item), "unexpected {what}: {item:?}");
            if !matches!(item.request, Some(pb::work_item::Request::HealthPing(_))) {
                self.stash.push_back(item);
            }
        }
    }

    pub async fn complete(
        &self,
        token: &str,
        instance: &str,
        actions: Vec<pb::OrchestratorAction>,
    ) -> Result<(), tonic::Status> {
        let mut c = self.client.clone();
        within(
            "complete orchestration",
            c.complete_orchestrator_task(pb::OrchestratorResponse {
                instance_id: instance.into(),
                actions,
                completion_token: token.into(),
                ..Default::default()
            }),
        )
        .await
        .map(|_| ())
    }

    pub async fn complete_activity(
        &self,
        token: &str,
        req: &pb::ActivityRequest,
        result: Result<&str, pb::TaskFailureDetails>,
    ) -> Result<(), tonic::Status> {
        let (result, failure_details) = match result {
            Ok(r) => (Some(r.to_string()), None),
            Err(f) => (None, Some(f)),
        };
        let mut c = self.client.clone();
        within(
            "complete activity",
            c.complete_activity_task(pb::ActivityResponse {
                instance_id: req
                    .orchestration_instance
                    .as_ref()
                    .unwrap()
                    .instance_id
                    .clone(),
                task_id: req.task_id,
                result,
                failure_details,
                completion_token: token.into(),
            }),
        )
        .await
        .map(|_| ())
    }
}

pub fn is_orchestration(i: &pb::WorkItem) -> bool {
    matches!(
        i.request,
        Some(pb::work_item::Request::OrchestratorRequest(_))
    )
}

pub fn is_activity(i: &pb::WorkItem) -> bool {
    matches!(i.request, Some(pb::work_item::Request::ActivityRequest(_)))
}

/// Starts an instance of "Orch" (no worker needed).
pub async fn start(server: &TestServer, id: &str, input: Option<&str>) {
    within(
        "start instance",
        server.client().start_instance(pb::CreateInstanceRequest {
            instance_id: id.into(),
            name: "Orch".into(),
            input: input.map(Into::into),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
}

/// A TERMINATED instance, made without a worker (terminated before dispatch).
pub async fn terminated(server: &TestServer, id: &str) {
    start(server, id, Some("\"in\"")).await;
    within(
        "terminate",
        server.client().terminate_instance(pb::TerminateRequest {
            instance_id: id.into(),
            output: Some("\"stop\"".into()),
            recursive: false,
        }),
    )
    .await
    .unwrap();
}

/// Whether GetInstance finds the instance.
pub async fn exists(server: &TestServer, id: &str) -> bool {
    exists_on(&server.client(), id).await
}

/// Waits on `client` (its hub) until `id` has ended, and returns its state with inputs
/// and outputs; the instance must exist.
pub async fn wait_completion_on(client: &Client, id: &str) -> pb::OrchestrationState {
    let r = within(
        "wait for completion",
        client
            .clone()
            .wait_for_instance_completion(pb::GetInstanceRequest {
                instance_id: id.into(),
                get_inputs_and_outputs: true,
            }),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(r.exists, "instance {id} does not exist");
    r.orchestration_state.unwrap()
}

/// Whether GetInstance through `client` (and so its task hub) finds the instance.
pub async fn exists_on(client: &Client, id: &str) -> bool {
    within(
        "get instance",
        client.clone().get_instance(pb::GetInstanceRequest {
            instance_id: id.into(),
            get_inputs_and_outputs: false,
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .exists
}

/// Completes an entity work item as one successful operation that leaves `state`.
pub async fn complete_entity_ok(client: &Client, completion_token: String, state: Option<String>) {
    within(
        "complete entity",
        client.clone().complete_entity_task(pb::EntityBatchResult {
            results: vec![pb::OperationResult {
                result_type: Some(pb::operation_result::ResultType::Success(
                    pb::OperationResultSuccess::default(),
                )),
            }],
            entity_state: state,
            completion_token,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
}

/// The text of the server's `/metrics`.
pub async fn metrics_text(server: &TestServer) -> String {
    within(
        "scrape",
        reqwest::get(format!("{}/metrics", server.http_base())),
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap()
}
