//! The HTTP API's parsing: a route of the Durable Functions API with arbitrary path
//! segments, query string and body, sent through the real router (extractors, query and
//! JSON parsing, validation, use case, SQLite store). Several requests per input, against
//! a task hub wiped first.
//!
//! Input: repeated `[route byte][flags byte][segment][segment][query][header][body]`, each
//! part a u16 LE length and bytes; flags add a JSON content type and put the header part
//! in `x-ms-continuation-token` or `Host`. Path segments are percent-encoded whole (so the route
//! matches and the handler sees the raw bytes); in the query only bytes a URI cannot
//! carry are encoded, so `&`, `=` and broken `%` escapes reach the parser.
//! Fails on a panic or a 5xx other than 504 (a wait's timeout) and the documented 500
//! of `returnInternalServerErrorOnFailure` for a Failed instance.

#![no_main]

use std::fmt::Write as _;
use std::sync::OnceLock;

use durabletask_sidecar::http::fuzzing::FuzzDoor;
use durabletask_sidecar::http::ROUTES;
use libfuzzer_sys::fuzz_target;

mod common;

const MAX_REQUESTS: usize = 8;

fn door() -> &'static FuzzDoor {
    static DOOR: OnceLock<FuzzDoor> = OnceLock::new();
    DOOR.get_or_init(|| FuzzDoor::new(common::state().clone()))
}

fn encode_all(bytes: &[u8]) -> String {
    let mut out = String::new();
    for b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(b) {
            out.push(char::from(*b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn encode_query(bytes: &[u8]) -> String {
    let mut out = String::new();
    for b in bytes {
        if b.is_ascii_graphic() && *b != b'#' {
            out.push(char::from(*b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `/a/{x}/b/{y}` with the placeholders replaced by `segments`.
fn fill(template: &str, segments: [&[u8]; 2]) -> String {
    let mut out = String::new();
    let mut next = segments.iter();
    for piece in template.split('/').skip(1) {
        out.push('/');
        if piece.starts_with('{') {
            out.push_str(&encode_all(next.next().copied().unwrap_or(b"x")));
        } else {
            out.push_str(piece);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let state = common::state();
    common::runtime().block_on(async {
        state.reset_task_hub(true).await.expect("wipe the task hub");
        let mut parts = common::Parts::new(data);
        for _ in 0..MAX_REQUESTS {
            if parts.is_empty() {
                break;
            }
            let (method, template) = ROUTES[usize::from(parts.byte()) % ROUTES.len()];
            let flags = parts.byte();
            let segments = [parts.part(), parts.part()];
            let query = parts.part();
            let header = parts.part();
            let body = parts.part().to_vec();
            let mut uri = fill(template, segments);
            if !query.is_empty() {
                uri.push('?');
                uri.push_str(&encode_query(query));
            }
            let mut headers: Vec<(&str, &[u8])> = Vec::new();
            if flags & 1 != 0 {
                headers.push(("content-type", b"application/json"));
            }
            if flags & 2 != 0 {
                headers.push(("x-ms-continuation-token", header));
            }
            if flags & 4 != 0 {
                headers.push(("host", header));
            }
            let Some((status, response)) = door().call(method, &uri, &headers, body).await else {
                continue;
            };
            let failed_status =
                String::from_utf8_lossy(&response).contains("\"runtimeStatus\":\"Failed\"");
            assert!(
                status < 500 || status == 504 || (status == 500 && failed_status),
                "{method} {uri} answered {status}: {}",
                String::from_utf8_lossy(&response)
            );
        }
    });
});
