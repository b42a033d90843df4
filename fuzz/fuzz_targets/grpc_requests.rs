//! Request decoding and validation: arbitrary bytes decoded as the request message of a
//! gRPC method and sent through the real door (conversion, edge validation, use case,
//! SQLite store). Several calls per input, against a task hub wiped first, so an input
//! can start an instance and then query, signal or purge it.
//!
//! Input: repeated `[method byte][u16 LE length][message bytes]`.
//! Fails on a panic, or on INTERNAL/UNKNOWN/UNAVAILABLE (the sidecar blaming itself
//! for what is a bad request, or a store error a request could provoke).

#![no_main]

use durabletask_sidecar::grpc::fuzzing::{call, METHODS};
use libfuzzer_sys::fuzz_target;

mod common;

const MAX_CALLS: usize = 16;
const UNKNOWN: i32 = 2;
const INTERNAL: i32 = 13;
const UNAVAILABLE: i32 = 14;

fuzz_target!(|data: &[u8]| {
    let state = common::state();
    common::runtime().block_on(async {
        state.reset_task_hub(true).await.expect("wipe the task hub");
        let mut parts = common::Parts::new(data);
        for _ in 0..MAX_CALLS {
            if parts.is_empty() {
                break;
            }
            let method = usize::from(parts.byte());
            let body = parts.part();
            let Some((code, message)) = call(state, method, body).await else {
                continue;
            };
            assert!(
                ![UNKNOWN, INTERNAL, UNAVAILABLE].contains(&code),
                "{} answered code {code}: {message}",
                METHODS[method % METHODS.len()]
            );
        }
    });
});
