//! durabletask-sidecar: a Durable Task sidecar (`TaskHubSidecarService`) on SQLite.
//!
//! Layers, left to right: `grpc` and `http` (the doors) → `service` (use cases) → `engine` (pure
//! orchestration state machine + dispatcher) → `store` (trait + backends). Every layer may
//! use `domain`; no layer names a type from a layer to its left. `cli` is a second door
//! of a different kind: a gRPC client of any sidecar, in the same binary. `metrics` is a
//! leaf every layer records into; the HTTP door serves it.
#![warn(missing_docs)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod engine;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod otel;
pub mod proto;
pub mod security;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod tls;
