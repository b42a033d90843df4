//! `--otlp-endpoint` validation, through the real binary: a bad value stops the server
//! before it binds, with a message naming the flag and what is wrong.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_durabletask-sidecar");

/// Runs the server with `endpoint`; returns (exit success, stderr).
fn serve_with(endpoint: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--port", "0", "--http-port", "off", "--db"])
        .arg(dir.path().join("x.sqlite"))
        .args(["--otlp-endpoint", endpoint])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(feature = "otlp")]
#[test]
fn an_endpoint_that_is_not_an_http_url_is_refused() {
    for (value, reason) in [
        ("https://collector:4318", "https is not supported"),
        ("collector:4318", "expected an http:// URL"),
        ("http://", "invalid --otlp-endpoint"),
    ] {
        let (ok, stderr) = serve_with(value);
        assert!(!ok, "{value}: the server started");
        assert!(
            stderr.contains(&format!("invalid --otlp-endpoint \"{value}\""))
                && stderr.contains(reason),
            "{value}: {stderr}"
        );
    }
}

#[cfg(not(feature = "otlp"))]
#[test]
fn a_build_without_otlp_refuses_the_flag() {
    let (ok, stderr) = serve_with("http://127.0.0.1:4318");
    assert!(!ok);
    assert!(
        stderr.contains("without the `otlp` cargo feature"),
        "{stderr}"
    );
}
