//! Faults (issue 11 §5): a full disk, bad database paths, a schema newer than the binary,
//! and SIGKILL during start-up recovery and during a purge.
//!
//! The disk-full and read-only cases mount a small tmpfs, which needs root (CI runs as
//! root). Without it they say that they skip and pass, except in CI (`CI` set), where
//! they fail: those runs must not go missing silently.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{eventually, finish, wait_completion_on, within, Client, ScriptedWorker, TestServer};
use durabletask_sidecar::proto as pb;
use futures::StreamExt;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_durabletask-sidecar");

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A tmpfs of a given size mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one, or returns `None` after saying why the test skips (panics in CI).
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Self { dir }),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    Err(err) => err.to_string(),
                };
                assert!(
                    !common::postgres::in_ci(),
                    "cannot mount a tmpfs ({why}), and CI is set: the fault tests must run \
                     in CI, as root"
                );
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: this test mounts a tmpfs, which needs root ({why})"
                );
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Makes the mount read-only: permissions do not stop root, a read-only mount does.
    fn remount_read_only(&self) {
        let out = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file there: detach it now, freed when released.
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }
}

/// Writes zeros to `path` until the disk is full, then frees `room` bytes of it, so some
/// commits still succeed before the disk is full.
fn fill_leaving(path: &Path, room: u64) {
    fill(path);
    let full = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(full.saturating_sub(room))
        .unwrap();
}

/// Writes zeros to `path` until the disk is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) => {
                assert_eq!(err.raw_os_error(), Some(28), "expected ENOSPC: {err}");
                break;
            }
        }
    }
    // Whatever the page cache holds must hit the tmpfs too.
    let _ = file.sync_all();
}

/// A connection of the test's own to a database file the sidecar has released.
async fn open_file(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

async fn integrity_ok(conn: &mut SqliteConnection) {
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(rows, ["ok"], "integrity_check");
    let fk: Vec<(String,)> = sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert!(fk.is_empty(), "foreign key violations in {fk:?}");
}

async fn count(conn: &mut SqliteConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&mut *conn).await.unwrap()
}

/// No row of an instance's tables outlives its instance row.
async fn no_orphans(conn: &mut SqliteConnection) {
    for table in ["history", "inbox", "activities"] {
        let orphans = count(
            conn,
            &format!(
                "SELECT COUNT(*) FROM {table} t WHERE NOT EXISTS \
                 (SELECT 1 FROM instances i WHERE i.instance_id = t.instance_id)"
            ),
        )
        .await;
        assert_eq!(orphans, 0, "{table} rows without their instance");
    }
}

fn start_request(id: &str, input: Option<&str>) -> pb::CreateInstanceRequest {
    pb::CreateInstanceRequest {
        instance_id: id.into(),
        name: "Faulty".into(),
        input: input.map(Into::into),
        ..Default::default()
    }
}

/// A worker that completes every orchestration at once.
async fn completing_worker(client: Client) -> ScriptedWorker {
    ScriptedWorker::start(
        client,
        |_| {
            vec![finish(
                0,
                pb::OrchestrationStatus::Completed,
                Some("\"done\"".into()),
            )]
        },
        |_| Ok(None),
    )
    .await
}

/// Ten instances started while there is room, their ids.
async fn start_before(client: &Client) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..10 {
        let id = format!("before-{i}");
        client
            .clone()
            .start_instance(start_request(&id, None))
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// Starts instances in waves of eight concurrent calls (so the writer batches them: a
/// failed batch must fail each of its callers the same way) until a wave has a refusal.
/// Acknowledged ids go to `acknowledged`; the refused ones are returned, each checked to
/// be a retryable disk-full refusal.
async fn start_until_refused(
    client: &Client,
    label: &str,
    waves: u64,
    input: impl Fn(u64) -> String,
    acknowledged: &mut Vec<String>,
) -> Vec<String> {
    let mut refused = Vec::new();
    // Ids carry the label so that calls for different phases never reuse one.
    let prefix: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    for wave in 0..waves {
        let outcomes = futures::future::join_all((0..8).map(|i| {
            let mut client = client.clone();
            let id = format!("{prefix}-{wave}-{i}");
            let input = input(wave * 8 + i);
            async move {
                let r = client
                    .start_instance(start_request(&id, Some(&input)))
                    .await;
                (id, r)
            }
        }))
        .await;
        for (id, r) in outcomes {
            match r {
                Ok(_) => acknowledged.push(id),
                Err(status) => refused.push((id, status)),
            }
        }
        if !refused.is_empty() {
            break;
        }
    }
    eprintln!(
        "{label}: {} starts acknowledged, {} refused, first: {:?}",
        acknowledged.len(),
        refused.len(),
        refused.first()
    );
    assert!(
        !refused.is_empty(),
        "commits kept succeeding on a full disk"
    );
    for (id, status) in &refused {
        assert_eq!(status.code(), Code::Unavailable, "{id}: {status:?}");
        assert!(
            status.message().contains("disk is full"),
            "{id}: {status:?}"
        );
    }
    refused.into_iter().map(|(id, _)| id).collect()
}

/// Waits for each instance to complete, and checks it completed.
async fn all_complete(client: &Client, ids: &[String]) {
    for id in ids {
        assert_eq!(
            wait_completion_on(client, id).await.orchestration_status,
            pb::OrchestrationStatus::Completed as i32,
            "{id}"
        );
    }
}

/// Once the filler is gone, waits until a start (`after-0`) succeeds again, without a
/// restart, and returns its id.
async fn start_after_space_returns(client: &Client) -> String {
    eventually("a start after space returned", || {
        let mut client = client.clone();
        async move {
            client
                .start_instance(start_request("after-0", None))
                .await
                .ok()
        }
    })
    .await;
    "after-0".into()
}

/// The sidecar binary run to its exit on `db`.
fn run_to_exit(db: &str) -> Output {
    Command::new(BIN)
        .args(["--port", "0", "--http-port", "off", "--db", db])
        .args(["--log-level", "warn"])
        .output()
        .unwrap()
}

/// The bytes and modification time of a file, to show it was not touched.
fn snapshot(path: &Path) -> (Vec<u8>, std::time::SystemTime) {
    (
        std::fs::read(path).unwrap(),
        std::fs::metadata(path).unwrap().modified().unwrap(),
    )
}

fn assert_refused(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the sidecar started: {stderr}");
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in: {stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// Disk full
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_commits_retryably_and_service_resumes_when_space_returns() {
    let Some(disk) = Tmpfs::mount("6m") else {
        return;
    };
    let mut server = TestServer::start_in(tempfile::tempdir_in(disk.path()).unwrap()).await;
    let db = PathBuf::from(&server.db);
    let mut client = server.client();
    let mut acknowledged = start_before(&client).await;

    // A worker throughout: its completions fail on the full disk too, and must be
    // delivered again once space returns.
    let worker = completing_worker(server.client()).await;
    let filler = disk.path().join("filler");
    fill_leaving(&filler, 512 * 1024);
    // Large inputs use up whatever room is left (free WAL pages, the last free blocks).
    let input = format!("\"{}\"", "x".repeat(16 * 1024));
    // The second phase checks that the writer survived: later writes fail the same way.
    // A write may still fit now and then (a checkpoint lets SQLite reuse the WAL from its
    // start without a new block), so each phase asks for a refusal, not that every write
    // is refused. Reads still work throughout.
    for (phase, waves) in [("disk full", 250), ("still full", 50)] {
        let refused =
            start_until_refused(&client, phase, waves, |_| input.clone(), &mut acknowledged).await;
        for id in &refused {
            assert!(
                server.get(id).await.is_none(),
                "refused start {id} was stored"
            );
        }
    }
    for id in &acknowledged {
        assert!(
            server.get(id).await.is_some(),
            "{id} unreadable on a full disk"
        );
    }

    // The HTTP door answers 503 with Retry-After (again allowing for a start that fits).
    let http = reqwest::Client::new();
    let mut r = None;
    for attempt in 0..50 {
        let id = format!("http-full-{attempt}");
        let response = http
            .post(format!(
                "{}/runtime/webhooks/durabletask/orchestrators/Faulty?instanceId={id}",
                server.http_base()
            ))
            .header("content-type", "application/json")
            .body(input.clone())
            .send()
            .await
            .unwrap();
        if response.status().is_success() {
            acknowledged.push(id);
        } else {
            r = Some(response);
            break;
        }
    }
    let r = r.expect("HTTP starts kept succeeding on a full disk");
    assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("disk is full"),
        "{body}"
    );

    let metrics = durabletask_sidecar::metrics::render(&[]);
    let full: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("durabletask_store_disk_full_total{backend=\"sqlite\"} "))
        .expect("disk-full counter")
        .parse()
        .unwrap();
    assert!(full >= 2.0, "disk-full counter {full}");

    // Space returns: writes succeed again without a restart.
    std::fs::remove_file(&filler).unwrap();
    acknowledged.push(start_after_space_returns(&client).await);
    for i in 1..5 {
        let id = format!("after-{i}");
        client
            .start_instance(start_request(&id, None))
            .await
            .unwrap();
        acknowledged.push(id);
    }

    // Nothing acknowledged was lost, and all of it runs to completion.
    for id in &acknowledged {
        let state = server.wait_completion(id).await;
        assert_eq!(
            state.orchestration_status,
            pb::OrchestrationStatus::Completed as i32,
            "{id}"
        );
    }
    worker.stop().await;
    server.stop().await;

    let mut conn = open_file(&db).await;
    integrity_ok(&mut conn).await;
    let stored = count(&mut conn, "SELECT COUNT(*) FROM instances").await;
    assert_eq!(stored, acknowledged.len() as i64);
    conn.close().await.unwrap();
    drop(server);
    drop(disk);
}

/// A throwaway PostgreSQL server (tests/postgres/start.sh) with its data directory in
/// `dir`, stopped and deleted on drop.
struct PgServer {
    dir: PathBuf,
    url: String,
}

impl PgServer {
    fn start(dir: PathBuf) -> Self {
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/postgres");
        let out = Command::new(scripts.join("start.sh"))
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "start.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Self { dir, url }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/postgres");
        let _ = Command::new(scripts.join("stop.sh"))
            .arg(&self.dir)
            .status();
    }
}

/// `len` bytes of hex that compress badly (PostgreSQL compresses large values).
fn incompressible(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = String::with_capacity(len + 2);
    out.push('"');
    while out.len() <= len {
        // xorshift64: cheap noise, not cryptography.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out.push('"');
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_postgres_fails_commits_retryably_and_service_resumes() {
    // Runs where the PostgreSQL suites run (and must in CI), on a server of its own whose
    // data directory is on a small tmpfs.
    if common::postgres::admin_url().is_none() {
        return;
    }
    let Some(disk) = Tmpfs::mount("128m") else {
        return;
    };
    let pg = PgServer::start(disk.path().join("pg"));
    let sidecar = Sidecar::spawn_on(&pg.url);
    let client = sidecar.ready().await;
    let mut acknowledged = start_before(&client).await;
    let worker = completing_worker(client.clone()).await;

    let filler = disk.path().join("filler");
    fill_leaving(&filler, 1024 * 1024);
    let refused = start_until_refused(
        &client,
        "postgres disk full",
        2_000,
        |n| incompressible(n, 32 * 1024),
        &mut acknowledged,
    )
    .await;
    for id in acknowledged.iter().chain(&refused) {
        let r = client
            .clone()
            .get_instance(pb::GetInstanceRequest {
                instance_id: id.clone(),
                get_inputs_and_outputs: false,
            })
            .await
            .unwrap()
            .into_inner();
        let refused = refused.contains(id);
        assert_eq!(r.exists, !refused, "{id}: read on a full disk");
    }

    std::fs::remove_file(&filler).unwrap();
    acknowledged.push(start_after_space_returns(&client).await);
    all_complete(&client, &acknowledged).await;
    worker.stop().await;
    sidecar.kill();
    drop(pg);
    drop(disk);
}

// ---------------------------------------------------------------------------------------
// Start-up refusals
// ---------------------------------------------------------------------------------------

#[test]
fn start_up_refuses_bad_paths_with_a_clear_error_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("no-such-dir/db.sqlite");
    let out = run_to_exit(missing.to_str().unwrap());
    assert_refused(&out, "does not exist");
    assert!(
        !dir.path().join("no-such-dir").exists(),
        "the directory was created"
    );

    let out = run_to_exit(dir.path().to_str().unwrap());
    assert_refused(&out, "is a directory");

    let junk = dir.path().join("junk.sqlite");
    std::fs::write(&junk, b"these bytes are not a SQLite database").unwrap();
    let before = snapshot(&junk);
    let out = run_to_exit(junk.to_str().unwrap());
    assert_refused(&out, "not a SQLite database");
    assert_eq!(snapshot(&junk), before, "the file was modified");
    assert!(
        !dir.path().join("junk.sqlite-sidecar.lock").exists(),
        "a lock file was created"
    );
}

/// A database made by this sidecar, then stamped as migrated by a newer one.
async fn newer_schema_database(db: &Path) {
    let store = durabletask_sidecar::store::SqliteStore::open(db.to_str().unwrap())
        .await
        .unwrap();
    durabletask_sidecar::store::Store::close(&store).await;
    let mut conn = open_file(db).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (20991231000000, 'from the future', TRUE, X'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    // The last connection's close checkpoints the WAL into the file.
    conn.close().await.unwrap();
}

#[tokio::test]
async fn start_up_refuses_a_database_of_a_newer_schema_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("future.sqlite");
    newer_schema_database(&db).await;
    let before = snapshot(&db);
    let out = run_to_exit(db.to_str().unwrap());
    assert_refused(
        &out,
        "database schema version 20991231000000 is newer than this sidecar supports (newest known: ",
    );
    assert_refused(&out, "use a newer sidecar");
    assert_eq!(snapshot(&db), before, "the database was modified");
}

#[tokio::test]
async fn start_up_refuses_a_database_on_a_read_only_mount_and_touches_nothing() {
    let Some(disk) = Tmpfs::mount("8m") else {
        return;
    };
    let db = disk.path().join("ro.sqlite");
    let store = durabletask_sidecar::store::SqliteStore::open(db.to_str().unwrap())
        .await
        .unwrap();
    durabletask_sidecar::store::Store::close(&store).await;
    drop(store);
    let before = snapshot(&db);
    disk.remount_read_only();
    let out = run_to_exit(db.to_str().unwrap());
    assert_refused(&out, "for reading and writing: Read-only file system");
    assert_eq!(snapshot(&db), before, "the database was modified");
}

#[tokio::test]
async fn start_up_refuses_a_postgres_database_of_a_newer_schema_and_touches_nothing() {
    let Some(pg) = common::postgres::fresh_database().await else {
        return;
    };
    let store = durabletask_sidecar::store::PostgresStore::open(&pg.url)
        .await
        .unwrap();
    durabletask_sidecar::store::Store::close(&store).await;
    drop(store);
    let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (20991231000000, 'from the future', TRUE, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let rows =
        "SELECT string_agg(version::text || ':' || encode(checksum, 'hex'), ',' ORDER BY version) \
                FROM _sqlx_migrations";
    let before: String = sqlx::query_scalar(rows).fetch_one(&mut conn).await.unwrap();
    let out = run_to_exit(&pg.url);
    assert_refused(
        &out,
        "database schema version 20991231000000 is newer than this sidecar supports",
    );
    let after: String = sqlx::query_scalar(rows).fetch_one(&mut conn).await.unwrap();
    assert_eq!(after, before, "the migrations table changed");
    conn.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// SIGKILL during start-up recovery and during a purge
// ---------------------------------------------------------------------------------------

/// The sidecar binary as a child process, its log lines delivered through a channel.
struct Sidecar {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<String>,
}

impl Sidecar {
    fn spawn(db: &Path) -> Self {
        Self::spawn_on(db.as_os_str())
    }

    fn spawn_on(db: impl AsRef<std::ffi::OsStr>) -> Self {
        let port = common::free_port();
        let mut child = Command::new(BIN)
            .args(["--port", &port.to_string(), "--http-port", "off", "--db"])
            .arg(db)
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, port, lines }
    }

    /// Waits for a log line containing `text`; panics if the process exits first.
    fn wait_for_line(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(err) => panic!("no log line with {text:?}: {err}"),
            }
        }
    }

    /// Waits until the server has recovered and listens, then connects.
    async fn ready(&self) -> Client {
        self.wait_for_line("durabletask-sidecar listening");
        let channel = within(
            "connect",
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", self.port))
                .unwrap()
                .connect(),
        )
        .await
        .unwrap();
        common::client_of(channel)
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const INSTANCES: usize = 2_000;

/// A read-only connection beside a running sidecar (WAL lets it read while it writes).
async fn read_only(db: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .unwrap()
}

/// PurgeInstances of every completed instance.
fn purge_completed() -> pb::PurgeInstancesRequest {
    pb::PurgeInstancesRequest {
        request: Some(pb::purge_instances_request::Request::PurgeInstanceFilter(
            pb::PurgeInstanceFilter {
                runtime_status: vec![pb::OrchestrationStatus::Completed as i32],
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// Starts `INSTANCES` instances, 32 at a time.
async fn start_many(client: &Client) -> Vec<String> {
    let ids: Vec<String> = (0..INSTANCES).map(|i| format!("kill-{i:05}")).collect();
    futures::stream::iter(ids.clone())
        .for_each_concurrent(32, |id| {
            let mut client = client.clone();
            async move {
                client
                    .start_instance(start_request(&id, Some("\"payload\"")))
                    .await
                    .unwrap();
            }
        })
        .await;
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_start_up_recovery_and_during_a_purge_leaves_a_clean_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kill.sqlite");

    // Thousands of pending instances, then SIGKILL: the WAL holds commits the next start
    // must recover.
    let first = Sidecar::spawn(&db);
    let client = first.ready().await;
    let ids = start_many(&client).await;
    drop(client);
    first.kill();

    // Killed at three points of start-up: at once (before or while opening the file),
    // once it holds the file lock (opening, WAL recovery, rebuilding the dispatch state
    // from thousands of instances), and as it starts listening (the dispatcher starting).
    Sidecar::spawn(&db).kill();
    let second = Sidecar::spawn(&db);
    let lock = PathBuf::from(format!("{}-sidecar.lock", db.display()));
    let pid = format!("pid {} ", second.child.id());
    eventually("the second sidecar takes the lock", || {
        let text = std::fs::read_to_string(&lock).unwrap_or_default();
        let mine = text.contains(&pid);
        async move { mine.then_some(()) }
    })
    .await;
    second.kill();
    let third = Sidecar::spawn(&db);
    third.wait_for_line("durabletask-sidecar listening");
    third.kill();

    {
        let mut conn = open_file(&db).await;
        integrity_ok(&mut conn).await;
        no_orphans(&mut conn).await;
        let n = count(&mut conn, "SELECT COUNT(*) FROM instances").await;
        assert_eq!(n, INSTANCES as i64, "acknowledged instances lost");
        conn.close().await.unwrap();
    }

    // The next start serves, and every pending orchestration runs to completion.
    let fourth = Sidecar::spawn(&db);
    let client = fourth.ready().await;
    let worker = completing_worker(client.clone()).await;
    all_complete(&client, &ids).await;
    worker.stop().await;

    // Every instance ran the same script, so has the same history.
    let mut watcher = read_only(&db).await;
    let per_instance = "SELECT COUNT(*) AS n FROM history GROUP BY instance_id";
    let history_len = count(
        &mut watcher,
        &format!("SELECT MIN(n) FROM ({per_instance})"),
    )
    .await;
    assert!(history_len > 0);
    assert_eq!(
        count(
            &mut watcher,
            &format!("SELECT MAX(n) FROM ({per_instance})")
        )
        .await,
        history_len
    );

    watcher.close().await.unwrap();

    // Purges of all of them, killed at two points: once the first batch is gone, and
    // past the middle (on a restarted sidecar, which resumes the purge from scratch).
    let (mut sidecar, mut client) = (fourth, client);
    let mut left = INSTANCES as i64;
    for below in [INSTANCES as i64, INSTANCES as i64 / 2] {
        let purge = {
            let mut client = client.clone();
            tokio::spawn(async move { client.purge_instances(purge_completed()).await })
        };
        let mut watcher = read_only(&db).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let left_at_kill = loop {
            let n = count(&mut watcher, "SELECT COUNT(*) FROM instances").await;
            if n < below {
                break n;
            }
            assert!(Instant::now() < deadline, "the purge made no progress");
            tokio::task::yield_now().await;
        };
        sidecar.kill();
        eprintln!("purge killed with {left_at_kill} of {INSTANCES} instances left");
        watcher.close().await.unwrap();
        let _ = purge.await;
        assert!(
            left_at_kill > 0,
            "the purge finished before the kill; make it longer (more instances)"
        );

        let mut conn = open_file(&db).await;
        integrity_ok(&mut conn).await;
        no_orphans(&mut conn).await;
        // Every instance left is whole: its history is all there.
        let partial = count(
            &mut conn,
            &format!(
                "SELECT COUNT(*) FROM instances i WHERE (SELECT COUNT(*) FROM history h \
                 WHERE h.instance_id = i.instance_id) <> {history_len}"
            ),
        )
        .await;
        assert_eq!(partial, 0, "instances left without their history");
        left = count(&mut conn, "SELECT COUNT(*) FROM instances").await;
        conn.close().await.unwrap();
        assert!(left > 0 && left < below, "{left} left");

        sidecar = Sidecar::spawn(&db);
        client = sidecar.ready().await;
    }

    // Restarted, the purge finishes what the killed ones left.
    let purged = client
        .purge_instances(purge_completed())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(i64::from(purged.deleted_instance_count), left);
    drop(client);
    sidecar.kill();
    let mut conn = open_file(&db).await;
    integrity_ok(&mut conn).await;
    assert_eq!(count(&mut conn, "SELECT COUNT(*) FROM instances").await, 0);
    assert_eq!(count(&mut conn, "SELECT COUNT(*) FROM history").await, 0);
    conn.close().await.unwrap();
}
