//! One sidecar per SQLite file: a second process on a file in use refuses to start and
//! says who holds it; after the holder closes, the file opens again.

use std::process::Command;

use durabletask_sidecar::store::{SqliteStore, Store};

#[tokio::test]
async fn a_second_sidecar_on_the_same_file_refuses_to_start_and_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.sqlite");
    let db = db.to_str().unwrap();
    let holder = SqliteStore::open(db).await.unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_durabletask-sidecar"))
        .args([
            "--port",
            "0",
            "--http-port",
            "0",
            "--db",
            db,
            "--log-level",
            "warn",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the second sidecar started");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "in use by another process (pid {}",
            std::process::id()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("postgres://"), "{stderr}");

    // A second store in this process is refused the same way.
    let err = SqliteStore::open(db).await.unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");

    holder.close().await;
    let again = SqliteStore::open(db).await.unwrap();
    again.close().await;
}
