//! The README's HTTP API examples, run as they stand (bash + curl) against a test server,
//! so they stay true: every command must succeed (`curl --fail-with-body`).

mod common;

use common::*;

/// The first ```sh block after the "## HTTP API" heading.
fn examples() -> String {
    let readme = include_str!("../README.md");
    let section = readme
        .split_once("\n## HTTP API\n")
        .expect("README has an HTTP API section")
        .1;
    let block = section
        .split_once("```sh\n")
        .expect("the HTTP API section has a sh block")
        .1;
    block
        .split_once("```")
        .expect("the sh block ends")
        .0
        .to_string()
}

#[tokio::test]
async fn readme_http_examples_run() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let server = TestServer::start().await;
    let script = examples();
    let origin = server.http_base();
    let dir = server.dir.path().to_path_buf();
    let out = within(
        "README examples",
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("bash")
                .args(["-euo", "pipefail", "-c", &script])
                .env("H", origin)
                .current_dir(dir)
                .output()
                .expect("bash runs")
        }),
    )
    .await
    .expect("examples task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "README examples failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // Spot checks of what the examples did.
    assert!(stdout.contains("\"statusQueryGetUri\""), "{stdout}");
    assert!(stdout.contains("{\"instancesDeleted\":1}"), "{stdout}");
    assert!(!exists(&server, "demo1").await);
    assert!(!exists(&server, "demo2").await);
    assert!(server.dir.path().join("openapi.json").exists());
}
