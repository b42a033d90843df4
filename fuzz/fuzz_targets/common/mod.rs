//! Shared by the targets: one runtime and one sidecar state over an in-memory SQLite
//! store per fuzzing process (building them per input would cost more than the input),
//! and a reader that splits the fuzzer's bytes into length-prefixed parts.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use durabletask_sidecar::domain::SystemClock;
use durabletask_sidecar::engine::EngineConfig;
use durabletask_sidecar::server::{open_store, ServerOptions};
use durabletask_sidecar::service::{AppState, ServiceOptions};
use durabletask_sidecar::store::StoreUrl;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// A single-threaded runtime: the dispatcher runs between requests, deterministically
/// enough for a crash to replay from its input.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// The sidecar's state over `:memory:`, with its dispatcher running. Waits are capped at
/// a millisecond so a `WaitFor…` request on a live instance does not stall the fuzzer.
pub fn state() -> &'static AppState {
    static STATE: OnceLock<AppState> = OnceLock::new();
    STATE.get_or_init(|| {
        runtime().block_on(async {
            let options = ServerOptions::default();
            let store = open_store(&StoreUrl::SqliteMemory, &options)
                .await
                .expect("in-memory store");
            let service = ServiceOptions {
                max_wait: Duration::from_millis(1),
                ..ServiceOptions::default()
            };
            let shutdown = CancellationToken::new();
            let state = AppState::new(
                store,
                Arc::new(SystemClock),
                &service,
                EngineConfig::default(),
                shutdown.clone(),
            )
            .await
            .expect("sidecar state");
            tokio::spawn(Arc::clone(state.engine()).run(shutdown));
            state
        })
    })
}

/// Reads the fuzzer's bytes as a sequence of parts.
pub struct Parts<'a> {
    rest: &'a [u8],
}

impl<'a> Parts<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// One byte (0 once the input is used up).
    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((b, rest)) => {
                self.rest = rest;
                *b
            }
            None => 0,
        }
    }

    /// A part: a little-endian u16 length, then that many bytes (fewer at the end).
    pub fn part(&mut self) -> &'a [u8] {
        let len = u16::from_le_bytes([self.byte(), self.byte()]) as usize;
        let (part, rest) = self.rest.split_at(len.min(self.rest.len()));
        self.rest = rest;
        part
    }

    /// A part decoded as protobuf message `M` (its default when it does not decode).
    pub fn message<M: prost::Message + Default>(&mut self) -> M {
        M::decode(self.part()).unwrap_or_default()
    }
}
