//! Generates the gRPC bindings for `proto/orchestrator_service.proto`, plus the messages of
//! `proto/dapr.proto` (Dapr Workflow fork, package `dapr`).
//!
//! The proto is parsed with `protox` (pure Rust, bundles the google well-known
//! types), so no system `protoc` is needed. Outputs in `OUT_DIR`:
//! * `durabletask.rs` — prost messages plus tonic server and client;
//! * `dapr.rs` — prost messages of `proto/dapr.proto` (it declares no service);
//! * `durabletask_descriptor.bin` — encoded `FileDescriptorSet` (with imports)
//!   for tonic-reflection.

use std::{env, fs, path::PathBuf};

const PROTO_DIR: &str = "proto";
const PROTO_FILE: &str = "proto/orchestrator_service.proto";
const DAPR_PROTO_FILE: &str = "proto/dapr.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    // sqlx::migrate! embeds migrations/ at compile time; make sure edits there
    // trigger a rebuild even though this script does not read them.
    println!("cargo:rerun-if-changed=migrations");

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // `compile` includes imports and source info, so reflection clients see
    // the well-known types and our comments.
    let fds = protox::compile([PROTO_FILE, DAPR_PROTO_FILE], [PROTO_DIR])?;
    fs::write(
        out_dir.join("durabletask_descriptor.bin"),
        protox::prost::Message::encode_to_vec(&fds),
    )?;

    // The proto has no `package`, so prost would name the module file `_.rs`.
    let mut config = tonic_prost_build::Config::new();
    config.default_package_filename("durabletask");

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .out_dir(&out_dir)
        .compile_fds_with_config(fds, config)?;

    Ok(())
}
