//! TLS, mutual TLS, certificate rotation and bearer tokens on both doors, against a real
//! server with certificates made by `rcgen` in the test.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the shared helpers below.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, within, Client, TestServer};
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::security::SecurityOptions;
use durabletask_sidecar::server::{self, ServerOptions};
use durabletask_sidecar::store::StoreUrl;
use durabletask_sidecar::tls::{TlsFiles, TlsReloader};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request};

// ---- Certificates -------------------------------------------------------------------

/// A test CA that signs server and client certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for `names` (DNS names or IP addresses).
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `contents` to `path` through a temporary file and a rename, as a certificate
/// manager does, so the watcher never reads half a file.
fn write_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Files {
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn new(ca: &Ca) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = Self {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            dir,
        };
        files.install(ca);
        files
    }

    /// A fresh server certificate from `ca`, written over the old one.
    fn install(&self, ca: &Ca) {
        let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
        write_atomically(&self.key, &key);
        write_atomically(&self.cert, &cert);
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        write_atomically(&path, contents);
        path
    }

    fn tls(&self, client_ca: Option<PathBuf>) -> TlsFiles {
        TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca,
        }
    }
}

// ---- A server with TLS ---------------------------------------------------------------

/// Security options with TLS from `tls` and nothing else.
fn tls_only(tls: TlsFiles) -> SecurityOptions {
    SecurityOptions {
        tls: Some(tls),
        ..SecurityOptions::default()
    }
}

/// `server::run` on ephemeral ports with `security`; `TestServer` connects in plaintext,
/// so TLS servers are started here.
struct SecureServer {
    grpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), server::ServerError>>,
}

impl SecureServer {
    async fn start(security: SecurityOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
        let options = ServerOptions {
            store: StoreUrl::SqliteFile(dir.path().join("t.sqlite")),
            security,
            ..ServerOptions::default()
        };
        let stop = CancellationToken::new();
        let listeners = server::Listeners {
            grpc,
            http: Some(http),
        };
        let task = tokio::spawn(server::run(options, listeners, stop.clone()));
        Self {
            grpc: grpc_addr,
            http: http_addr,
            _dir: dir,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        within("server shutdown", self.task).await.unwrap().unwrap();
    }

    /// A gRPC client trusting `ca`, presenting `identity` if given.
    async fn client(
        &self,
        ca: &Ca,
        identity: Option<(String, String)>,
    ) -> Result<Client, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca.pem))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let channel = Channel::from_shared(format!("https://localhost:{}", self.grpc.port()))
            .unwrap()
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10));
        Ok(common::client_of(
            within("TLS connect", channel.connect()).await?,
        ))
    }

    fn https(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.http.port())
    }
}

fn http_client(ca: &Ca, identity: Option<(String, String)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .resolve("localhost", std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .timeout(Duration::from_secs(10));
    if let Some((cert, key)) = identity {
        let pem = format!("{cert}{key}");
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

async fn hello(client: &mut Client) -> Result<(), tonic::Status> {
    within("Hello", client.hello(())).await.map(|_| ())
}

// ---- TLS -----------------------------------------------------------------------------

#[tokio::test]
async fn grpc_and_http_over_tls() {
    let ca = Ca::new("test CA");
    let files = Files::new(&ca);
    let server = SecureServer::start(tls_only(files.tls(None))).await;

    let mut client = server.client(&ca, None).await.unwrap();
    let id = within(
        "start",
        client.start_instance(pb::CreateInstanceRequest {
            instance_id: "tls-1".into(),
            name: "Orch".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .instance_id;
    assert_eq!(id, "tls-1");

    let http = http_client(&ca, None);
    let r = within(
        "GET over TLS",
        http.get(server.https("/runtime/webhooks/durabletask/instances/tls-1"))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202, "a pending instance answers 202");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["instanceId"], "tls-1");
    server.stop().await;
}

#[tokio::test]
async fn plaintext_clients_against_the_tls_ports_fail_cleanly() {
    let ca = Ca::new("test CA");
    let files = Files::new(&ca);
    let server = SecureServer::start(tls_only(files.tls(None))).await;

    // h2c against TLS: the handshake fails and the call errors instead of hanging.
    let plain = within("plaintext gRPC", async {
        let channel = Channel::from_shared(format!("http://{}", server.grpc))
            .unwrap()
            .timeout(Duration::from_secs(10));
        match channel.connect().await {
            Err(e) => Err(e.to_string()),
            Ok(ch) => common::client_of(ch)
                .hello(())
                .await
                .map(|_| ())
                .map_err(|s| s.to_string()),
        }
    })
    .await;
    assert!(plain.is_err(), "a plaintext gRPC call succeeded");

    let r = within(
        "plaintext HTTP",
        reqwest::Client::new()
            .get(format!(
                "http://{}/runtime/webhooks/durabletask/instances",
                server.http
            ))
            .timeout(Duration::from_secs(10))
            .send(),
    )
    .await;
    assert!(r.is_err(), "a plaintext HTTP request succeeded: {r:?}");

    // The server still serves TLS clients afterwards.
    let mut client = server.client(&ca, None).await.unwrap();
    hello(&mut client).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn mutual_tls_accepts_signed_clients_and_refuses_others() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let rogue_ca = Ca::new("rogue CA");
    let files = Files::new(&server_ca);
    let ca_file = files.write("clients.pem", &client_ca.pem);
    let server = SecureServer::start(tls_only(files.tls(Some(ca_file)))).await;

    let mut good = server
        .client(&server_ca, Some(client_ca.leaf(&["worker-1"])))
        .await
        .unwrap();
    hello(&mut good).await.unwrap();

    // Without a certificate, or with one from another CA: refused (at connect or at the
    // first call, depending on when TLS 1.3 reports the server's alert).
    for identity in [None, Some(rogue_ca.leaf(&["intruder"]))] {
        let who = if identity.is_some() {
            "rogue"
        } else {
            "anonymous"
        };
        let result = match server.client(&server_ca, identity).await {
            Err(e) => Err(e.to_string()),
            Ok(mut c) => hello(&mut c).await.map_err(|s| s.to_string()),
        };
        assert!(result.is_err(), "{who} client was accepted");
    }

    let http = http_client(&server_ca, Some(client_ca.leaf(&["ui"])));
    let r = within(
        "HTTP with client cert",
        http.get(server.https("/runtime/webhooks/durabletask/instances"))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = within(
        "HTTP without client cert",
        http_client(&server_ca, None)
            .get(server.https("/runtime/webhooks/durabletask/instances"))
            .send(),
    )
    .await;
    assert!(r.is_err(), "HTTP without a client certificate: {r:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let files = Files::new(&old_ca);
    let server = SecureServer::start(SecurityOptions {
        tls: Some(files.tls(None)),
        poll: Duration::from_millis(100),
        ..SecurityOptions::default()
    })
    .await;
    let mut before = server.client(&old_ca, None).await.unwrap();
    hello(&mut before).await.unwrap();
    assert!(
        server.client(&new_ca, None).await.is_err() || {
            // Some clients report the untrusted certificate at the first call.
            let mut c = server.client(&new_ca, None).await.unwrap();
            hello(&mut c).await.is_err()
        }
    );

    files.install(&new_ca);
    eventually("the new certificate picked up", || async {
        let mut c = server.client(&new_ca, None).await.ok()?;
        hello(&mut c).await.ok()
    })
    .await;
    // The HTTP door rotated too.
    let r = within(
        "HTTP after rotation",
        http_client(&new_ca, None)
            .get(server.https("/openapi.json"))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    // Connections made before the rotation keep working.
    hello(&mut before).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_failed_reload_keeps_the_old_certificate() {
    let ca = Ca::new("test CA");
    let files = Files::new(&ca);
    let tls = TlsReloader::load(files.tls(None)).unwrap();
    let before = tls.config(durabletask_sidecar::tls::Door::Grpc);
    write_atomically(&files.cert, "not a certificate\n");
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains("--tls-cert"), "{err}");
    assert!(err.contains(&files.cert.display().to_string()), "{err}");
    let after = tls.config(durabletask_sidecar::tls::Door::Grpc);
    assert!(std::sync::Arc::ptr_eq(&before, &after));
}

#[tokio::test]
async fn bad_files_at_start_up_name_the_file() {
    let ca = Ca::new("test CA");
    let other = Ca::new("other CA");
    let files = Files::new(&ca);
    let (_, wrong_key) = other.leaf(&["localhost"]);
    let wrong_key = files.write("wrong.key", &wrong_key);
    let garbage = files.write("garbage.pem", "hello\n");
    let missing = files.dir.path().join("missing.pem");
    let tokens = files.write("tokens.txt", "superuser aaaaaaaaaaaaaaaaaaaaaaaa\n");
    let cases: Vec<(SecurityOptions, String)> = vec![
        (
            tls_only(TlsFiles {
                cert: missing.clone(),
                ..files.tls(None)
            }),
            format!("--tls-cert {}", missing.display()),
        ),
        (
            tls_only(TlsFiles {
                key: garbage.clone(),
                ..files.tls(None)
            }),
            format!("--tls-key {}", garbage.display()),
        ),
        (
            tls_only(TlsFiles {
                key: wrong_key.clone(),
                ..files.tls(None)
            }),
            wrong_key.display().to_string(),
        ),
        (
            tls_only(files.tls(Some(garbage.clone()))),
            format!("--tls-client-ca {}", garbage.display()),
        ),
        (
            SecurityOptions {
                tokens_file: Some(tokens.clone()),
                ..Default::default()
            },
            format!("tokens file {}, line 1: unknown role", tokens.display()),
        ),
    ];
    for (security, want) in cases {
        let server = SecureServer::start(security).await;
        let err = within("start-up failure", server.task)
            .await
            .unwrap()
            .unwrap_err();
        let text = format!("{:#}", anyhow::Error::from(err));
        assert!(text.contains(&want), "{text}\n wanted {want}");
        assert!(!text.contains("aaaaaaaaaaaa"), "the token leaked: {text}");
    }

    // The binary: a clear message and a non-zero exit.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_durabletask-sidecar"));
    command
        .args(["--port", "0", "--http-port", "off", "--db", ":memory:"])
        .arg("--tls-cert")
        .arg(&missing)
        .arg("--tls-key")
        .arg(&files.key);
    let out = within(
        "binary start-up",
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

// ---- Tokens --------------------------------------------------------------------------

const ADMIN: &str = "admin-token-0123456789";
const WORKER: &str = "worker-token-0123456789";
const CLIENT: &str = "client-token-0123456789";
const READ: &str = "read-token-0123456789";

async fn token_server(dir: &Path) -> (TestServer, PathBuf) {
    let path = dir.join("tokens.txt");
    write_atomically(
        &path,
        &format!(
            "# roles\nadmin {ADMIN}\nworker {WORKER}\nclient {CLIENT} default,hub-a\n\nread {READ} # reads\n"
        ),
    );
    let server = tokens_file_server(&path, Duration::from_millis(100)).await;
    (server, path)
}

/// A plaintext server whose tokens come from `path`, polled for changes every `poll`.
async fn tokens_file_server(path: &Path, poll: Duration) -> TestServer {
    TestServer::start_with(ServerOptions {
        security: SecurityOptions {
            tokens_file: Some(path.to_path_buf()),
            poll,
            ..SecurityOptions::default()
        },
        ..ServerOptions::default()
    })
    .await
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(message);
    if let Some(token) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    r
}

/// Whether a call got past authentication (any answer but UNAUTHENTICATED).
fn authenticated<T>(r: &Result<T, tonic::Status>) -> bool {
    !matches!(r, Err(s) if s.code() == Code::Unauthenticated)
}

fn start_req(id: &str) -> pb::CreateInstanceRequest {
    pb::CreateInstanceRequest {
        instance_id: id.into(),
        name: "Orch".into(),
        ..Default::default()
    }
}

fn get_req(id: &str) -> pb::GetInstanceRequest {
    pb::GetInstanceRequest {
        instance_id: id.into(),
        get_inputs_and_outputs: false,
    }
}

#[tokio::test]
async fn grpc_calls_need_a_known_token_whose_role_covers_them() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = token_server(dir.path()).await;
    let mut c = server.client();

    let s = c
        .start_instance(with_token(start_req("a"), None))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains("missing bearer token"), "{s:?}");
    let wrong = "not-a-known-token-123456";
    let s = c
        .start_instance(with_token(start_req("a"), Some(wrong)))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains("not known"), "{s:?}");
    assert!(!s.message().contains(wrong), "the token was echoed: {s:?}");

    // client: writes and reads, no worker RPCs, no hub administration.
    c.start_instance(with_token(start_req("a"), Some(CLIENT)))
        .await
        .unwrap();
    c.get_instance(with_token(get_req("a"), Some(CLIENT)))
        .await
        .unwrap();
    let s = c
        .get_work_items(with_token(pb::GetWorkItemsRequest::default(), Some(CLIENT)))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("role `client`"), "{s:?}");
    assert!(s.message().contains("GetWorkItems"), "{s:?}");
    let s = c
        .delete_task_hub(with_token(pb::DeleteTaskHubRequest {}, Some(CLIENT)))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    // Its third field limits it to `default` and `hub-a`.
    let on_hub = |hub: &str| {
        let mut r = with_token(get_req("a"), Some(CLIENT));
        r.metadata_mut().insert("taskhub", hub.parse().unwrap());
        r
    };
    c.get_instance(on_hub("Hub-A")).await.unwrap();
    let s = c.get_instance(on_hub("hub-b")).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("task hub 'hub-b'"), "{s:?}");

    // read: reads only.
    c.get_instance(with_token(get_req("a"), Some(READ)))
        .await
        .unwrap();
    c.query_instances(with_token(
        pb::QueryInstancesRequest {
            query: Some(pb::InstanceQuery {
                max_instance_count: 10,
                ..Default::default()
            }),
        },
        Some(READ),
    ))
    .await
    .unwrap();
    for s in [
        c.start_instance(with_token(start_req("b"), Some(READ)))
            .await
            .unwrap_err(),
        c.raise_event(with_token(
            pb::RaiseEventRequest {
                instance_id: "a".into(),
                name: "e".into(),
                input: None,
            },
            Some(READ),
        ))
        .await
        .unwrap_err(),
    ] {
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        assert!(s.message().contains("role `read`"), "{s:?}");
    }

    // worker: worker RPCs, no client writes or reads.
    let stream = c
        .get_work_items(with_token(pb::GetWorkItemsRequest::default(), Some(WORKER)))
        .await;
    assert!(stream.is_ok(), "{stream:?}");
    drop(stream);
    c.hello(with_token((), Some(WORKER))).await.unwrap();
    let s = c
        .start_instance(with_token(start_req("w"), Some(WORKER)))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let s = c
        .get_instance(with_token(get_req("a"), Some(WORKER)))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");

    // admin: everything.
    c.start_instance(with_token(start_req("adm"), Some(ADMIN)))
        .await
        .unwrap();
    c.get_work_items(with_token(pb::GetWorkItemsRequest::default(), Some(ADMIN)))
        .await
        .unwrap();
    c.create_task_hub(with_token(
        pb::CreateTaskHubRequest {
            recreate_if_exists: false,
        },
        Some(ADMIN),
    ))
    .await
    .unwrap();

    // Health checks stay open; reflection needs a token.
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_lazy();
    let r = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().status, 1, "SERVING");
}

#[tokio::test]
async fn http_routes_need_a_known_token_whose_role_covers_them() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = token_server(dir.path()).await;
    let http = reqwest::Client::new();
    let base = format!("{}/runtime/webhooks/durabletask", server.http_base());
    let send = |method: reqwest::Method, url: String, token: Option<&str>| {
        let mut r = http.request(method, url);
        if let Some(token) = token {
            r = r.bearer_auth(token);
        }
        within("HTTP", r.send())
    };
    let status = |method: reqwest::Method, url: String, token: Option<&str>| {
        let sent = send(method, url, token);
        async move { sent.await.unwrap().status() }
    };
    use reqwest::Method;

    let r = send(Method::GET, format!("{base}/instances"), None)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer")));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "Unauthorized");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("missing bearer token"));

    assert_eq!(
        status(
            Method::GET,
            format!("{base}/instances"),
            Some("nope-nope-nope-nope-1")
        )
        .await,
        401
    );

    assert_eq!(
        status(Method::GET, format!("{base}/instances"), Some(READ)).await,
        200
    );
    let r = send(
        Method::POST,
        format!("{base}/orchestrators/Orch/h1"),
        Some(READ),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "Forbidden");
    assert!(
        body["message"].as_str().unwrap().contains("role `read`"),
        "{body}"
    );

    assert_eq!(
        status(
            Method::POST,
            format!("{base}/orchestrators/Orch/h1"),
            Some(CLIENT)
        )
        .await,
        202
    );
    assert_eq!(
        status(Method::DELETE, format!("{base}/taskhub"), Some(CLIENT)).await,
        403
    );
    assert_eq!(
        status(
            Method::GET,
            format!("{base}/instances?taskHub=hub-b"),
            Some(CLIENT)
        )
        .await,
        403,
        "a hub outside the token's list"
    );
    // The auth check and the door must read the same parameter: an encoded name or a
    // repeated one cannot make the check see `hub-a` while the door serves `hub-b`.
    for query in [
        "ta%73kHub=hub-b&taskHub=hub-a",
        "TASKHUB=hub-b&taskHub=hub-a",
        "taskHub=hub%2Db",
        "taskHub=%20hub-b%20",
    ] {
        assert_eq!(
            status(
                Method::GET,
                format!("{base}/instances?{query}"),
                Some(CLIENT)
            )
            .await,
            403,
            "{query}"
        );
    }
    assert_eq!(
        status(
            Method::GET,
            format!("{base}/instances?taskHub=%68ub-a"),
            Some(CLIENT)
        )
        .await,
        200,
        "an encoded name of a listed hub is that hub"
    );
    assert_eq!(
        status(Method::GET, format!("{base}/instances"), Some(WORKER)).await,
        403
    );

    // Metrics need a reading role; the dashboard's page and the OpenAPI document are open.
    let metrics = format!("{}/metrics", server.http_base());
    assert_eq!(status(Method::GET, metrics.clone(), None).await, 401);
    assert_eq!(status(Method::GET, metrics, Some(READ)).await, 200);
    let page = format!("{}/", server.http_base());
    assert_eq!(status(Method::GET, page, None).await, 200);
    let doc = format!("{}/openapi.json", server.http_base());
    assert_eq!(status(Method::GET, doc, None).await, 200);
}

#[tokio::test]
async fn a_changed_tokens_file_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let (server, path) = token_server(dir.path()).await;
    let mut c = server.client();
    // A first answer: the server (and its file watcher) is running.
    c.hello(with_token((), Some(READ))).await.unwrap();
    let new = "fresh-token-0123456789";
    // A new token, the client token demoted to `read`, the others gone.
    write_atomically(&path, &format!("read {new}\nread {CLIENT}\n"));
    // Any answer but UNAUTHENTICATED (the instance does not exist) means the token works.
    eventually("the new token picked up", || {
        let mut c = c.clone();
        async move {
            let r = c.get_instance(with_token(get_req("x"), Some(new))).await;
            authenticated(&r).then_some(())
        }
    })
    .await;
    let s = c
        .get_instance(with_token(get_req("x"), Some(READ)))
        .await
        .unwrap_err();
    assert_eq!(
        s.code(),
        Code::Unauthenticated,
        "the removed token still works"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_tokens_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.txt");
    write_atomically(&path, &format!("read {READ}\n"));
    // Polling effectively off: only the signal can bring the change in.
    let server = tokens_file_server(&path, Duration::from_secs(3600)).await;
    let mut c = server.client();
    // Answered: the server, and its SIGHUP handler, are installed.
    c.hello(with_token((), Some(READ))).await.unwrap();
    let new = "after-sighup-0123456789";
    write_atomically(&path, &format!("read {new}\n"));
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("SIGHUP reloading the tokens", || {
        let mut c = c.clone();
        async move {
            let r = c.hello(with_token((), Some(new))).await;
            authenticated(&r).then_some(())
        }
    })
    .await;
}
