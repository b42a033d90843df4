//! The engine: a pure orchestration state machine (`state`, `plan`, `apply`) inside an
//! async shell (`dispatcher`) that leases work, hands it to workers through
//! [`WorkExecutor`], and commits each episode with one store call.
//! Depends on `store` and `domain`; never on `service` or `grpc`.

pub mod apply;
pub mod dispatcher;
pub mod entity;
pub mod executor;
pub mod plan;
pub mod rewind;
pub mod state;
pub mod watch;

#[cfg(test)]
pub(crate) mod testing;

pub use dispatcher::{CompletionError, Engine, EngineConfig, SkipOutcome};
pub use executor::{Reservation, StreamId, Unavailable, WorkExecutor, WorkKind, WorkTarget};
pub use rewind::RewindError;
pub use watch::Watchers;

/// Failures of the pure core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// A worker's action cannot be applied.
    #[error("invalid action {id}: {reason}")]
    InvalidAction {
        /// The action id.
        id: i32,
        /// What is wrong with it.
        reason: String,
    },
    /// The stored history is not a valid execution.
    #[error("corrupt history: {0}")]
    CorruptHistory(String),
}

#[cfg(test)]
mod tests {
    /// The pure core must stay free of runtimes, databases and transports (STYLE.md §7).
    #[test]
    fn pure_core_files_use_no_async_runtime_database_or_transport() {
        for (name, text) in [
            ("state.rs", include_str!("state.rs")),
            ("plan.rs", include_str!("plan.rs")),
            ("apply.rs", include_str!("apply.rs")),
            ("entity.rs", include_str!("entity.rs")),
            ("rewind.rs", include_str!("rewind.rs")),
        ] {
            for banned in ["tokio", "sqlx", "tonic", "Utc::now", "new_v4", "async fn"] {
                assert!(!text.contains(banned), "{name} mentions {banned}");
            }
        }
    }
}
