//! Generated protobuf messages and the tonic server/client for
//! `TaskHubSidecarService` (built by `build.rs` from
//! `proto/orchestrator_service.proto`), and the Dapr fork's extra messages (`dapr`).
//!
//! Nothing but the include lives here: generated code is never edited, and
//! conversions to domain types belong in `grpc::convert`. This module depends
//! on no other module of the crate.

// Generated code carries no docs for undocumented proto items and uses the
// codegen's own style; the crate lints are not meant to apply to it.
#![allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    unused_qualifications,
    rust_2018_idioms,
    rustdoc::all,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::clone_on_ref_ptr,
    clippy::unwrap_used
)]

include!(concat!(env!("OUT_DIR"), "/durabletask.rs"));

/// The Dapr Workflow fork's messages that upstream lacks or numbers differently
/// (`proto/dapr.proto`); served by `grpc::dapr`.
pub mod dapr {
    include!(concat!(env!("OUT_DIR"), "/dapr.rs"));
}

/// Encoded `google.protobuf.FileDescriptorSet` of the contract (including the
/// imported well-known types), for registering with tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/durabletask_descriptor.bin"));
