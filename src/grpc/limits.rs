//! Oversized requests answer RESOURCE_EXHAUSTED (the gRPC convention for a message over
//! the receive limit) with a message naming the limit and the flag that raises it.
//! tonic rejects them while decoding, before any handler runs, so nothing is committed;
//! but it reports OUT_OF_RANGE, which clients do not treat as a size problem.

use http::header::HeaderValue;
use tower::util::MapResponseLayer;

/// tonic's decode-limit message prefix (`tonic::codec::decode`).
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// gRPC status code numbers used here.
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

/// The layer for `Server::builder().layer(..)`.
pub(super) fn layer(
) -> MapResponseLayer<fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>> {
    MapResponseLayer::new(rewrite as fn(_) -> _)
}

fn rewrite(mut res: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    let headers = res.headers();
    if headers.get("grpc-status").and_then(|v| v.to_str().ok()) != Some(OUT_OF_RANGE) {
        return res;
    }
    let Some(message) = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .filter(|m| m.starts_with(TONIC_TOO_LARGE))
    else {
        return res;
    };
    let text = match sizes(&message) {
        Some((found, limit)) => format!(
            "request message is {found} bytes, over the sidecar's limit of {limit} bytes; raise it with --max-message-size-mb (DURABLETASK_MAX_MESSAGE_SIZE_MB)"
        ),
        None => format!("request message over the sidecar's size limit: {message}"),
    };
    let headers = res.headers_mut();
    headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(&text)) {
        headers.insert("grpc-message", v);
    }
    res
}

/// `found X bytes, the limit is: Y bytes` → (X, Y).
fn sizes(message: &str) -> Option<(u64, u64)> {
    let number_after = |marker: &str| -> Option<u64> {
        let rest = &message[message.find(marker)? + marker.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    Some((number_after("found ")?, number_after("limit is: ")?))
}

/// grpc-message is percent-encoded (gRPC over HTTP/2 spec): bytes outside 0x20..0x7E and '%'.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_size_message_is_parsed_and_codes_round_trip() {
        let m = "Error, decoded message length too large: found 70000000 bytes, the limit is: 67108864 bytes";
        assert_eq!(sizes(m), Some((70_000_000, 67_108_864)));
        assert_eq!(percent_decode(&percent_encode("a%b: c\n")), "a%b: c\n");
    }
}
