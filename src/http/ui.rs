//! The web dashboard: the static files of `ui/` (our few ES modules and the vendored
//! libraries of `ui/vendor/`), embedded in the binary and served at `/` and `/ui/…`. The
//! page talks only to the public API under `BASE_PATH`; nothing here reads the service.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash as _, Hasher as _};
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One embedded file: its path under `ui/` and its bytes.
type Asset = (&'static str, &'static [u8]);

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $path)))),*]
    };
}

/// Every file the page loads (a test checks this matches the files in `ui/`).
const ASSETS: &[Asset] = assets![
    "index.html",
    "style.css",
    "app.js",
    "api.js",
    "util.js",
    "list.js",
    "instance.js",
    "timeline.js",
    "entities.js",
    "vendor/preact.mjs",
    "vendor/preact-hooks.mjs",
    "vendor/htm.mjs",
    "vendor/vis-timeline-graph2d.min.mjs",
    "vendor/vis-timeline-graph2d.min.css",
    "vendor/VERSIONS",
    "vendor/LICENSES/preact.txt",
    "vendor/LICENSES/htm.txt",
    "vendor/LICENSES/vis-timeline-MIT.txt",
    "vendor/LICENSES/vis-timeline-APACHE-2.0.txt",
];

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    }
}

/// A strong validator per file, computed once: the files only change with the binary.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, bytes)| {
                let mut h = DefaultHasher::new();
                bytes.hash(&mut h);
                format!("\"{:016x}\"", h.finish())
            })
            .collect()
    })
}

/// `GET /`: the dashboard's single page (views are chosen by the URL fragment).
pub(super) async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /ui/{*path}`.
pub(super) async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|(p, _)| *p == path) else {
        return (
            StatusCode::NOT_FOUND,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no dashboard file '{path}'"),
        )
            .into_response();
    };
    let etag = &etags()[i];
    // `no-cache` = the browser keeps the file but asks each time; the answer is a cheap
    // 304 until a new binary serves different bytes (so an upgrade is never stale).
    let cache = HeaderValue::from_static("no-cache");
    let tag = HeaderValue::from_str(etag).expect("a quoted hex string is a header value");
    let matches = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if matches {
        return (
            StatusCode::NOT_MODIFIED,
            [(ETAG, tag), (CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    let (_, bytes) = ASSETS[i];
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type(path))),
            (ETAG, tag),
            (CACHE_CONTROL, cache),
        ],
        bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `ui/` (but the vendoring script) is embedded, and nothing else: a
    /// new module cannot be forgotten in `ASSETS`.
    #[test]
    fn every_ui_file_is_embedded() {
        fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    let rel = path.strip_prefix(base).unwrap().to_string_lossy();
                    out.push(rel.replace('\\', "/"));
                }
            }
        }
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        let mut found = Vec::new();
        walk(&base, &base, &mut found);
        found.retain(|p| p != "vendor.sh");
        found.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|(p, _)| (*p).to_string()).collect();
        embedded.sort();
        assert_eq!(found, embedded);
    }

    #[test]
    fn scripts_and_styles_have_their_content_types() {
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(
            content_type("vendor/preact.mjs"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
    }
}
