//! The security options of both doors (TLS files, tokens file) loaded into their live
//! forms, and the task that reloads them on SIGHUP and when the files change.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, TokensError};
use crate::tls::{self, TlsError, TlsFiles, TlsReloader};

/// How often the watcher looks at the files' modification times.
pub const DEFAULT_POLL: Duration = Duration::from_secs(2);

/// `--tls-cert`/`--tls-key`/`--tls-client-ca` and `--auth-tokens-file`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityOptions {
    /// TLS on both doors; `None`: plaintext (h2c and HTTP/1.1).
    pub tls: Option<TlsFiles>,
    /// Bearer tokens; `None`: every call is allowed.
    pub tokens_file: Option<PathBuf>,
    /// How often the files' modification times are checked.
    pub poll: Duration,
}

impl Default for SecurityOptions {
    fn default() -> Self {
        Self {
            tls: None,
            tokens_file: None,
            poll: DEFAULT_POLL,
        }
    }
}

/// Why the security files could not be loaded at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A TLS file.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The tokens file.
    #[error(transparent)]
    Tokens(#[from] TokensError),
}

/// The live TLS configuration and tokens table (each `None` when not configured).
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// TLS for both doors.
    pub tls: Option<TlsReloader>,
    /// Bearer-token checks for both doors.
    pub auth: Option<Authenticator>,
}

type Stamps = Vec<Option<(SystemTime, u64)>>;

fn stamps(paths: &[&Path]) -> Stamps {
    paths.iter().map(|p| tls::stamp(p)).collect()
}

impl Security {
    /// Loads every configured file; the error names the file at fault.
    pub fn load(options: &SecurityOptions) -> Result<Self, SecurityError> {
        let tls = options.tls.clone().map(TlsReloader::load).transpose()?;
        let auth = options
            .tokens_file
            .as_deref()
            .map(Authenticator::load)
            .transpose()?;
        Ok(Self { tls, auth })
    }

    /// Reloads on SIGHUP (everything) and when a file's modification time or length
    /// changes (that file's owner), until `shutdown`. Nothing is spawned when nothing
    /// is configured, so plaintext servers keep SIGHUP's default.
    pub fn spawn_watcher(&self, poll: Duration, shutdown: CancellationToken) {
        if self.tls.is_none() && self.auth.is_none() {
            return;
        }
        // Taken now, not when the task first runs, so a change made in between counts.
        let tokens_seen = self.auth.as_ref().map(|a| tls::stamp(a.path()));
        let tls_seen = self.tls.as_ref().map(|t| stamps(&t.files().paths()));
        // Installed before returning, so a SIGHUP sent once the server answers is caught
        // (its default action would end the process).
        let hangup = hangup_signal();
        let this = self.clone();
        tokio::spawn(async move {
            this.watch(
                poll,
                hangup,
                tls_seen.unwrap_or_default(),
                tokens_seen,
                shutdown,
            )
            .await
        });
    }

    async fn watch(
        self,
        poll: Duration,
        mut hangup: Hangup,
        mut tls_seen: Stamps,
        mut tokens_seen: Option<Option<(SystemTime, u64)>>,
        shutdown: CancellationToken,
    ) {
        let tls_paths = |t: &TlsReloader| {
            t.files()
                .paths()
                .into_iter()
                .map(Path::to_owned)
                .collect::<Vec<_>>()
        };
        let tls_files: Vec<PathBuf> = self.tls.as_ref().map(tls_paths).unwrap_or_default();
        let tls_refs: Vec<&Path> = tls_files.iter().map(PathBuf::as_path).collect();
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => false,
                _ = recv(&mut hangup) => {
                    tracing::info!("SIGHUP: reloading TLS certificates and tokens");
                    true
                }
            };
            if let Some(tls) = &self.tls {
                let now = stamps(&tls_refs);
                if forced || now != tls_seen {
                    // Remember what was seen even on failure, so a bad file warns once
                    // per change rather than at every poll.
                    tls_seen = now;
                    match tls.reload() {
                        Ok(()) => {
                            tracing::info!(cert = %tls.files().cert.display(), "TLS certificate reloaded")
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "TLS reload failed; the previous certificate stays in use")
                        }
                    }
                }
            }
            if let Some(auth) = &self.auth {
                let now = tls::stamp(auth.path());
                if forced || Some(now) != tokens_seen {
                    tokens_seen = Some(now);
                    match auth.reload() {
                        Ok(count) => {
                            tracing::info!(file = %auth.path().display(), tokens = count, "tokens reloaded")
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "tokens reload failed; the previous tokens stay in force")
                        }
                    }
                }
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(sig) => Some(sig),
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGHUP; files are still polled");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {
    None
}

#[cfg(unix)]
async fn recv(hangup: &mut Hangup) {
    match hangup {
        Some(sig) => {
            if sig.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv(_: &mut Hangup) {
    std::future::pending().await
}
