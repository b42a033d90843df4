//! Logging setup: one global `tracing` subscriber writing to stderr.
//!
//! The filter comes from `--log-level` when given, else `RUST_LOG`, else `info,sqlx=warn`
//! (STYLE.md §6). Called once from `main`; tests never install a global subscriber.
//! Uses `config::LogFormat` only.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Filter used when neither `--log-level` nor `RUST_LOG` says anything.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter string is not valid EnvFilter syntax.
    #[error("invalid log filter {directives:?} (from {origin}): {message}")]
    Filter {
        /// The rejected directives.
        directives: String,
        /// Where they came from: `--log-level` or `RUST_LOG`.
        origin: &'static str,
        /// The parser's complaint (kept as text: `ParseError` repeats itself in its source chain).
        message: String,
    },
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// Installs the global subscriber. `level` (from `--log-level`/`DURABLETASK_LOG_LEVEL`)
/// wins over `RUST_LOG`; both empty means [`DEFAULT_FILTER`].
pub fn init(level: Option<&str>, format: LogFormat) -> Result<(), TelemetryError> {
    let rust_log = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let (directives, origin) = choose_directives(level, rust_log.as_deref());
    let filter = EnvFilter::builder()
        .parse(directives)
        .map_err(|err| TelemetryError::Filter {
            directives: directives.to_owned(),
            origin,
            message: err.to_string(),
        })?;

    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|err| TelemetryError::Install(err.to_string()))
}

/// Picks the filter directives and names their origin, for error messages.
fn choose_directives<'a>(
    level: Option<&'a str>,
    rust_log: Option<&'a str>,
) -> (&'a str, &'static str) {
    let non_empty = |s: Option<&'a str>| s.map(str::trim).filter(|s| !s.is_empty());
    if let Some(level) = non_empty(level) {
        (level, "--log-level")
    } else if let Some(env) = non_empty(rust_log) {
        (env, "RUST_LOG")
    } else {
        (DEFAULT_FILTER, "the default")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence() {
        assert_eq!(
            choose_directives(Some("debug"), Some("trace")),
            ("debug", "--log-level")
        );
        assert_eq!(
            choose_directives(None, Some("trace")),
            ("trace", "RUST_LOG")
        );
        assert_eq!(
            choose_directives(Some("  "), Some("warn")),
            ("warn", "RUST_LOG")
        );
        assert_eq!(
            choose_directives(None, None),
            (DEFAULT_FILTER, "the default")
        );
        assert_eq!(
            choose_directives(Some(""), Some("")),
            (DEFAULT_FILTER, "the default")
        );
    }

    #[test]
    fn default_filter_parses() {
        EnvFilter::builder().parse(DEFAULT_FILTER).unwrap();
    }

    #[test]
    fn bad_level_is_reported() {
        let err = init(Some("info,durabletask_sidecar=loud"), LogFormat::Text).unwrap_err();
        assert!(
            matches!(
                err,
                TelemetryError::Filter {
                    origin: "--log-level",
                    ..
                }
            ),
            "{err}"
        );
    }
}
