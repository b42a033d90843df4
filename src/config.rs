//! Command-line and environment configuration.
//!
//! One clap `Config`, parsed once in `main`, then validated into the typed values the rest
//! of the crate takes by value (`SocketAddr`, `server::ServerOptions` with one part per
//! layer). Its optional subcommand turns the binary into a client (`cli`); without one it
//! serves, and only then are the serve flags validated. This is the only module that reads `DURABLETASK_*` environment variables (clap
//! does it for us via `env`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::domain::TaskHubName;
use crate::engine::EngineConfig;
use crate::grpc::GrpcOptions;
use crate::http::HttpOptions;
use crate::security::SecurityOptions;
use crate::server::ServerOptions;
use crate::service::{HubPolicy, RetentionPolicy, ServiceOptions};
use crate::store::postgres::PostgresOptions;
use crate::store::{StoreUrl, StoreUrlError};
use crate::tls::TlsFiles;

/// Default value of `--db`.
pub const DEFAULT_DB: &str = "./durabletask.sqlite";
/// The `--db` value that selects a private in-memory database (lost on exit).
pub const IN_MEMORY_DB: &str = ":memory:";
/// Accepted range of `--max-message-size-mb`.
pub const MAX_MESSAGE_SIZE_MB_RANGE: std::ops::RangeInclusive<u32> = 1..=2048;

/// Durable Task sidecar: serves `TaskHubSidecarService` over gRPC (h2c), backed by SQLite
/// or PostgreSQL. Given a COMMAND, it is instead a client of a running sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "durabletask-sidecar",
    version,
    about,
    long_about = None,
    subcommand_value_name = "COMMAND",
    subcommand_help_heading = "Client commands (talk to a running sidecar at --addr; no command = serve)"
)]
pub struct Config {
    /// A client command; none = serve.
    #[command(subcommand)]
    pub command: Option<crate::cli::Command>,

    /// Interface to listen on: an IP address (`0.0.0.0`, `::`, `::1`) or a host name (`localhost`).
    #[arg(long, env = "DURABLETASK_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// TCP port to listen on (0 picks a free port).
    #[arg(long, env = "DURABLETASK_PORT", default_value_t = 4001)]
    pub port: u16,

    /// TCP port of the HTTP management API (Durable Functions' routes), on the same
    /// `--host`: a number (0 picks a free port) or `off` to serve no HTTP.
    #[arg(long, env = "DURABLETASK_HTTP_PORT", default_value = "4002", value_parser = parse_http_port)]
    pub http_port: HttpPort,

    /// Where state is kept: a SQLite database file (created if missing), `:memory:` for a
    /// throw-away database, or a PostgreSQL URL (`postgres://user:pass@host:5432/db`).
    #[arg(long, env = "DURABLETASK_DB", default_value = DEFAULT_DB)]
    pub db: String,

    /// Log filter in `tracing` EnvFilter syntax (e.g. `debug`, `info,durabletask_sidecar=trace`).
    /// When unset, `RUST_LOG` is used, and failing that `info,sqlx=warn`.
    #[arg(long, env = "DURABLETASK_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// OTLP collector to export traces to, over HTTP/protobuf: a base URL such as
    /// `http://localhost:4318` (`/v1/traces` is appended). When unset, the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is used; with neither, no spans are exported.
    /// `OTEL_SERVICE_NAME` names the service (default `durabletask-sidecar`).
    #[arg(long, env = "DURABLETASK_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Log output format (always written to stderr).
    #[arg(long, env = "DURABLETASK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Largest gRPC message received or sent, in MiB (1..=2048). SDK workers never split
    /// their responses, so this must exceed the biggest orchestration history you expect.
    #[arg(long, env = "DURABLETASK_MAX_MESSAGE_SIZE_MB", default_value_t = 64)]
    pub max_message_size_mb: u32,

    /// Make CreateTaskHub/DeleteTaskHub no-ops instead of wiping the database.
    #[arg(long, env = "DURABLETASK_DISABLE_TASK_HUB_ADMIN")]
    pub disable_task_hub_admin: bool,

    /// Seconds between keep-alive `HealthPing` work items on idle GetWorkItems streams (>= 1).
    #[arg(long, env = "DURABLETASK_HEALTH_PING_SECONDS", default_value_t = 30)]
    pub health_ping_seconds: u64,

    /// Longest, in seconds, a WaitForInstanceStart/Completion call blocks when the client
    /// sent no deadline (>= 1).
    #[arg(long, env = "DURABLETASK_MAX_WAIT_SECONDS", default_value_t = 3600)]
    pub max_wait_seconds: u64,

    /// Most client writes (start, raise event, terminate, suspend, resume, restart, signal
    /// entity) waiting for the store at once (1..=1000000). Past it they are refused with
    /// gRPC UNAVAILABLE / HTTP 503 + Retry-After, which clients retry; worker completions
    /// are never refused.
    #[arg(long, env = "DURABLETASK_MAX_PENDING_WRITES", default_value_t = crate::service::DEFAULT_MAX_PENDING_WRITES)]
    pub max_pending_writes: usize,

    /// Seconds an orchestration or entity work item may stay with a worker without being
    /// completed before it is taken back and dispatched again (0 = never). A late
    /// completion with the old token is then refused as stale (NOT_FOUND).
    #[arg(
        long,
        env = "DURABLETASK_WORK_ITEM_TIMEOUT_SECONDS",
        default_value_t = 600
    )]
    pub work_item_timeout_seconds: u64,

    /// The same for activities (0 = never, the default: an activity may run for hours and
    /// the protocol has no heartbeat). A late activity result is still accepted once.
    #[arg(
        long,
        env = "DURABLETASK_ACTIVITY_TIMEOUT_SECONDS",
        default_value_t = 0
    )]
    pub activity_timeout_seconds: u64,

    /// Seconds a GetWorkItems stream may leave its queued work items unread before the
    /// sidecar closes it and redelivers its outstanding work to other streams (0 = never).
    #[arg(
        long,
        env = "DURABLETASK_STALLED_STREAM_SECONDS",
        default_value_t = 300
    )]
    pub stalled_stream_seconds: u64,

    /// PostgreSQL only: seconds a sidecar's claim on work lasts without renewal (1..=300).
    /// When a sidecar dies, the others take its work over within about this time plus a
    /// quarter of it (the sweep); a sidecar paused longer than this loses its work and
    /// can no longer commit it.
    #[arg(long, env = "DURABLETASK_LEASE_SECONDS", default_value_t = 10)]
    pub lease_seconds: u64,

    /// PostgreSQL only: most database connections for calls (1..=1000). The sidecar opens
    /// up to 1.5 times this many (half again for claims and releases) plus two (listening
    /// to and notifying other sidecars); keep the sum over all sidecars under the
    /// server's `max_connections`.
    #[arg(long, env = "DURABLETASK_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// PEM certificate chain to serve TLS with on both ports (needs --tls-key). Reloaded
    /// on SIGHUP and when the file changes.
    #[arg(long, env = "DURABLETASK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "DURABLETASK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// PEM CA bundle: clients must present a certificate signed by it (mutual TLS;
    /// needs --tls-cert).
    #[arg(long, env = "DURABLETASK_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// Serve only these task hubs (comma-separated, e.g. `orders,billing`; add `default`
    /// to keep serving calls that name no hub). A call naming another gets NOT_FOUND.
    /// Without it, any valid hub name is served, its state created on first use.
    #[arg(long, env = "DURABLETASK_TASK_HUBS", value_delimiter = ',')]
    pub task_hubs: Vec<String>,

    /// Most task hubs served at once when they are created on first use (>= 1); a call
    /// naming one more new hub gets RESOURCE_EXHAUSTED. Hubs that already hold state are
    /// always served.
    #[arg(long, env = "DURABLETASK_MAX_TASK_HUBS", default_value_t = 100)]
    pub max_task_hubs: usize,

    /// Bearer tokens, one `ROLE TOKEN [HUBS]` per line (roles: admin, worker, client,
    /// read); every call except health checks then needs `authorization: Bearer TOKEN`.
    /// Reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "DURABLETASK_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<std::path::PathBuf>,

    /// Purge ended instances (with their sub-orchestrations) this long after they ended,
    /// in the background: comma-separated `[HUB:]STATUS=AGE`, e.g.
    /// `completed=7d,failed=30d,terminated=7d,orders:completed=1d` (statuses completed,
    /// failed, terminated, canceled; ages like 90s, 15m, 12h, 7d, or `off`). A hub's own
    /// entry overrides the global one for that status. Hubs with a rule also have empty
    /// entities removed and orphaned entity locks released.
    #[arg(long, env = "DURABLETASK_RETENTION")]
    pub retention: Option<String>,
}

/// `--http-port`: a port, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpPort(pub Option<u16>);

fn parse_http_port(raw: &str) -> Result<HttpPort, String> {
    if raw.trim().eq_ignore_ascii_case("off") {
        return Ok(HttpPort(None));
    }
    raw.trim()
        .parse::<u16>()
        .map(|p| HttpPort(Some(p)))
        .map_err(|_| format!("expected a port number (0-65535) or `off`, got {raw:?}"))
}

/// How log lines are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A configuration value that parsed but is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--host` is neither an IP address nor a resolvable name.
    #[error("cannot resolve --host {host:?}: {reason}")]
    HostResolution {
        /// The host as given.
        host: String,
        /// The resolver's complaint (as text: `io::Error` repeats itself in its source chain).
        reason: String,
    },
    /// `--host` resolved to no address at all.
    #[error("--host {host:?} resolved to no address")]
    NoAddress {
        /// The host as given.
        host: String,
    },
    /// `--db` names no usable store.
    #[error(transparent)]
    Db(#[from] StoreUrlError),
    /// `--max-message-size-mb` is outside 1..=2048.
    #[error("--max-message-size-mb must be between 1 and 2048, got {0}")]
    MessageSize(u32),
    /// `--health-ping-seconds` is 0.
    #[error("--health-ping-seconds must be at least 1")]
    HealthPing,
    /// `--max-wait-seconds` is 0.
    #[error("--max-wait-seconds must be at least 1")]
    MaxWait,
    /// `--max-pending-writes` is outside 1..=1000000.
    #[error("--max-pending-writes must be between 1 and 1000000, got {0}")]
    PendingWrites(usize),
    /// `--lease-seconds` is outside 1..=300.
    #[error("--lease-seconds must be between 1 and 300, got {0}")]
    Lease(u64),
    /// `--db-max-connections` is outside 1..=1000.
    #[error("--db-max-connections must be between 1 and 1000, got {0}")]
    DbConnections(u32),
    /// A `--task-hubs` name is not a valid task hub name.
    #[error("--task-hubs: {0}")]
    TaskHubs(String),
    /// `--max-task-hubs` is 0.
    #[error("--max-task-hubs must be at least 1")]
    MaxTaskHubs,
    /// `--retention` does not parse, or names a hub `--task-hubs` does not serve.
    #[error("--retention: {0}")]
    Retention(String),
}

/// A duration flag where 0 means "never".
fn seconds(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n))
}

impl Config {
    /// The address to bind: `--host` (IP literal, `[v6]` literal or DNS name) plus `--port`.
    ///
    /// A name that resolves to both families binds the IPv4 address, because SDKs dial
    /// `localhost:4001` and most try `127.0.0.1` first.
    pub fn socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.resolve(self.port)
    }

    /// The HTTP API's address (`--host` plus `--http-port`); `None` when it is `off`.
    pub fn http_socket_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        self.http_port.0.map(|port| self.resolve(port)).transpose()
    }

    fn resolve(&self, port: u16) -> Result<SocketAddr, ConfigError> {
        let host = self.host.trim();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|err| ConfigError::HostResolution {
                host: self.host.clone(),
                reason: err.to_string(),
            })?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| ConfigError::NoAddress {
                host: self.host.clone(),
            })
    }

    /// The TLS and token files (read, and checked, when the server starts).
    pub fn security_options(&self) -> SecurityOptions {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            // clap's `requires` makes the flags come in pairs.
            _ => None,
        };
        SecurityOptions {
            tls,
            tokens_file: self.auth_tokens_file.clone(),
            ..SecurityOptions::default()
        }
    }

    /// Validates everything except the listen address into `ServerOptions`.
    pub fn server_options(&self) -> Result<ServerOptions, ConfigError> {
        let store: StoreUrl = self.db.parse()?;
        if !MAX_MESSAGE_SIZE_MB_RANGE.contains(&self.max_message_size_mb) {
            return Err(ConfigError::MessageSize(self.max_message_size_mb));
        }
        if self.health_ping_seconds == 0 {
            return Err(ConfigError::HealthPing);
        }
        if self.max_wait_seconds == 0 {
            return Err(ConfigError::MaxWait);
        }
        if !(1..=1_000_000).contains(&self.max_pending_writes) {
            return Err(ConfigError::PendingWrites(self.max_pending_writes));
        }
        if !(1..=300).contains(&self.lease_seconds) {
            return Err(ConfigError::Lease(self.lease_seconds));
        }
        let lease = Duration::from_secs(self.lease_seconds);
        if !(1..=1000).contains(&self.db_max_connections) {
            return Err(ConfigError::DbConnections(self.db_max_connections));
        }
        let only: Option<std::collections::BTreeSet<TaskHubName>> = if self.task_hubs.is_empty() {
            None
        } else {
            let names = self
                .task_hubs
                .iter()
                .map(|raw| TaskHubName::parse(raw.trim()));
            Some(
                names
                    .collect::<Result<_, _>>()
                    .map_err(ConfigError::TaskHubs)?,
            )
        };
        if self.max_task_hubs == 0 {
            return Err(ConfigError::MaxTaskHubs);
        }
        let retention = RetentionPolicy::parse(self.retention.as_deref().unwrap_or_default())
            .map_err(ConfigError::Retention)?;
        if let Some(only) = &only {
            if let Some(hub) = retention.named_hubs().find(|h| !only.contains(*h)) {
                return Err(ConfigError::Retention(format!(
                    "task hub '{hub}' is not served here (--task-hubs)"
                )));
            }
        }
        // 2048 MiB = 2^31 bytes: fits `usize` on every 64-bit target we build for.
        let max_message_bytes = usize::try_from(u64::from(self.max_message_size_mb) * 1024 * 1024)
            .map_err(|_| ConfigError::MessageSize(self.max_message_size_mb))?;
        Ok(ServerOptions {
            store,
            grpc: GrpcOptions { max_message_bytes },
            http: HttpOptions {
                max_body_bytes: max_message_bytes,
            },
            service: ServiceOptions {
                task_hub_admin: !self.disable_task_hub_admin,
                health_ping_interval: Duration::from_secs(self.health_ping_seconds),
                max_wait: Duration::from_secs(self.max_wait_seconds),
                max_pending_writes: self.max_pending_writes,
                stalled_stream_timeout: seconds(self.stalled_stream_seconds),
            },
            postgres: PostgresOptions {
                lease,
                max_connections: self.db_max_connections,
                ..PostgresOptions::default()
            },
            hubs: HubPolicy {
                only,
                max_open: self.max_task_hubs,
            },
            security: self.security_options(),
            retention,
            engine: EngineConfig {
                // Renew three times per lease, so one missed renewal loses nothing; sweep
                // four times, so a dead sidecar's work moves within 1.25 leases.
                lease_renewal: lease / 3,
                sweep: lease / 4,
                work_item_timeout: seconds(self.work_item_timeout_seconds),
                activity_timeout: seconds(self.activity_timeout_seconds),
                ..EngineConfig::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;

    fn parse(args: &[&str]) -> Config {
        let argv = std::iter::once("durabletask-sidecar").chain(args.iter().copied());
        Config::try_parse_from(argv).unwrap()
    }

    fn parse_err(args: &[&str]) -> clap::Error {
        let argv = std::iter::once("durabletask-sidecar").chain(args.iter().copied());
        Config::try_parse_from(argv).unwrap_err()
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }

    // Defaults are only checked for flags whose env twin the test environment cannot set;
    // a CI machine exporting DURABLETASK_* would still be caught by the explicit-flag tests.
    #[test]
    fn defaults() {
        let c = parse(&[]);
        // Only the variables the configuration reads can override a default (the test
        // scripts set others, such as DURABLETASK_TEST_POSTGRES).
        let command = <Config as clap::CommandFactory>::command();
        let overridden = command
            .get_arguments()
            .filter_map(|a| a.get_env())
            .find(|name| std::env::var_os(name).is_some());
        if let Some(name) = overridden {
            eprintln!("defaults not checked: {name:?} is set");
            return;
        }
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 4001);
        assert_eq!(c.http_port, HttpPort(Some(4002)));
        assert_eq!(c.db, DEFAULT_DB);
        assert_eq!(c.log_level, None);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.max_message_size_mb, 64);
        assert!(!c.disable_task_hub_admin);
        assert_eq!(c.health_ping_seconds, 30);
        assert_eq!(c.max_wait_seconds, 3600);
        assert_eq!(c.lease_seconds, 10);

        let o = c.server_options().unwrap();
        assert_eq!(o.store, StoreUrl::SqliteFile(DEFAULT_DB.into()));
        assert_eq!(o.grpc.max_message_bytes, 64 * 1024 * 1024);
        assert!(o.service.task_hub_admin);
        assert_eq!(o.service.health_ping_interval, Duration::from_secs(30));
        assert_eq!(o.service.max_wait, Duration::from_secs(3600));
        assert_eq!(o.service.max_pending_writes, 4096);
        assert_eq!(
            o.service.stalled_stream_timeout,
            Some(Duration::from_secs(300))
        );
        assert_eq!(o.engine.work_item_timeout, Some(Duration::from_secs(600)));
        assert_eq!(o.engine.activity_timeout, None);
        assert_eq!(
            c.socket_addr().unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 4001))
        );
    }

    #[test]
    fn all_flags() {
        let c = parse(&[
            "--host",
            "0.0.0.0",
            "--port",
            "5001",
            "--db",
            ":memory:",
            "--log-level",
            "debug,sqlx=info",
            "--log-format",
            "json",
            "--max-message-size-mb",
            "2048",
            "--disable-task-hub-admin",
            "--health-ping-seconds",
            "5",
            "--max-wait-seconds",
            "10",
            "--lease-seconds",
            "6",
            "--max-pending-writes",
            "10",
            "--stalled-stream-seconds",
            "0",
            "--work-item-timeout-seconds",
            "0",
            "--activity-timeout-seconds",
            "120",
        ]);
        assert_eq!(c.log_level.as_deref(), Some("debug,sqlx=info"));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(
            c.socket_addr().unwrap(),
            SocketAddr::from(([0, 0, 0, 0], 5001))
        );

        let o = c.server_options().unwrap();
        assert_eq!(o.store, StoreUrl::SqliteMemory);
        assert_eq!(o.grpc.max_message_bytes, 2048 * 1024 * 1024);
        assert!(!o.service.task_hub_admin);
        assert_eq!(o.service.health_ping_interval, Duration::from_secs(5));
        assert_eq!(o.service.max_wait, Duration::from_secs(10));
        assert_eq!(o.service.max_pending_writes, 10);
        assert_eq!(o.service.stalled_stream_timeout, None);
        assert_eq!(o.engine.work_item_timeout, None);
        assert_eq!(o.engine.activity_timeout, Some(Duration::from_secs(120)));
        assert_eq!(o.postgres.lease, Duration::from_secs(6));
        assert_eq!(o.engine.lease_renewal, Duration::from_secs(2));
        assert_eq!(o.engine.sweep, Duration::from_millis(1500));
    }

    #[test]
    fn a_command_makes_a_client_and_no_command_serves() {
        assert_eq!(parse(&["--port", "4101", "--db", ":memory:"]).command, None);
        let c = parse(&["get-instances", "--top", "5", "--addr", "h:1", "-o", "json"]);
        match c.command {
            Some(crate::cli::Command::GetInstances(args)) => assert_eq!(args.top, Some(5)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_err(&["start-new"]).kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn http_port_is_a_number_or_off_on_the_same_host() {
        let c = parse(&["--host", "0.0.0.0", "--http-port", "5002"]);
        assert_eq!(
            c.http_socket_addr().unwrap(),
            Some(SocketAddr::from(([0, 0, 0, 0], 5002)))
        );
        assert_eq!(
            parse(&["--http-port", "OFF"]).http_socket_addr().unwrap(),
            None
        );
        assert_eq!(parse(&["--http-port=0"]).http_port, HttpPort(Some(0)));
        assert_eq!(
            parse_err(&["--http-port", "70000"]).kind(),
            clap::error::ErrorKind::ValueValidation
        );
        assert_eq!(
            parse(&["--max-message-size-mb", "3"])
                .server_options()
                .unwrap()
                .http
                .max_body_bytes,
            3 * 1024 * 1024
        );
    }

    #[test]
    fn tls_and_token_flags() {
        let c = parse(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
            "--auth-tokens-file",
            "t.txt",
        ]);
        let s = c.server_options().unwrap().security;
        let tls = s.tls.unwrap();
        assert_eq!(tls.cert, std::path::PathBuf::from("c.pem"));
        assert_eq!(tls.key, std::path::PathBuf::from("k.pem"));
        assert_eq!(tls.client_ca, Some("ca.pem".into()));
        assert_eq!(s.tokens_file, Some("t.txt".into()));
        assert_eq!(
            parse_err(&["--tls-cert", "c.pem"]).kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse_err(&["--tls-client-ca", "ca.pem"]).kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn equals_syntax_and_port_zero() {
        let c = parse(&["--port=0", "--db=/tmp/x.sqlite", "--log-format=text"]);
        assert_eq!(c.port, 0);
        assert_eq!(
            c.server_options().unwrap().store,
            StoreUrl::SqliteFile("/tmp/x.sqlite".into())
        );
        let pg = parse(&["--db", "postgres://dt@localhost:5432/dt"]);
        assert!(pg.server_options().unwrap().store.is_shared());
        assert_eq!(c.socket_addr().unwrap().port(), 0);
    }

    #[test]
    fn ipv6_hosts() {
        for host in ["::1", "[::1]"] {
            let c = parse(&["--host", host, "--port", "4001"]);
            assert_eq!(
                c.socket_addr().unwrap(),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 4001),
                "{host}"
            );
        }
        let c = parse(&["--host", "::"]);
        assert_eq!(
            c.socket_addr().unwrap().ip(),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        );
    }

    #[test]
    fn localhost_resolves_to_loopback() {
        let c = parse(&["--host", "localhost", "--port", "4001"]);
        let addr = c.socket_addr().unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(addr.port(), 4001);
        if let IpAddr::V4(v4) = addr.ip() {
            assert_eq!(v4, Ipv4Addr::LOCALHOST);
        }
    }

    #[test]
    fn unresolvable_host_is_an_error() {
        let c = parse(&["--host", "no such host!"]);
        assert!(matches!(
            c.socket_addr(),
            Err(ConfigError::HostResolution { .. })
        ));
    }

    #[test]
    fn rejects_bad_values_at_parse_time() {
        assert_eq!(
            parse_err(&["--port", "70000"]).kind(),
            clap::error::ErrorKind::ValueValidation
        );
        assert_eq!(
            parse_err(&["--port", "-1"]).kind(),
            clap::error::ErrorKind::UnknownArgument
        );
        assert_eq!(
            parse_err(&["--log-format", "xml"]).kind(),
            clap::error::ErrorKind::InvalidValue
        );
        assert_eq!(
            parse_err(&["--max-wait-seconds", "soon"]).kind(),
            clap::error::ErrorKind::ValueValidation
        );
        assert_eq!(
            parse_err(&["--bogus"]).kind(),
            clap::error::ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn rejects_bad_values_at_validation() {
        assert!(matches!(
            parse(&["--max-message-size-mb", "0"]).server_options(),
            Err(ConfigError::MessageSize(0))
        ));
        assert!(matches!(
            parse(&["--max-message-size-mb", "2049"]).server_options(),
            Err(ConfigError::MessageSize(2049))
        ));
        assert!(matches!(
            parse(&["--health-ping-seconds", "0"]).server_options(),
            Err(ConfigError::HealthPing)
        ));
        assert!(matches!(
            parse(&["--max-wait-seconds", "0"]).server_options(),
            Err(ConfigError::MaxWait)
        ));
        assert!(matches!(
            parse(&["--max-pending-writes", "0"]).server_options(),
            Err(ConfigError::PendingWrites(0))
        ));
        assert!(matches!(
            parse(&["--lease-seconds", "0"]).server_options(),
            Err(ConfigError::Lease(0))
        ));
        assert!(matches!(
            parse(&["--db", " "]).server_options(),
            Err(ConfigError::Db(StoreUrlError::Empty))
        ));
        assert!(matches!(
            parse(&["--db", "redis://localhost"]).server_options(),
            Err(ConfigError::Db(StoreUrlError::UnknownScheme(..)))
        ));
    }

    #[test]
    fn retention_flag() {
        let o = parse(&["--retention", "completed=7d,orders:failed=1h"])
            .server_options()
            .unwrap();
        assert_eq!(o.retention.to_string(), "completed=7days,orders:failed=1h");
        match parse(&["--retention", "completed=7"]).server_options() {
            Err(ConfigError::Retention(msg)) => assert!(msg.contains("\"completed=7\""), "{msg}"),
            other => panic!("{other:?}"),
        }
        let err = parse(&["--task-hubs", "a", "--retention", "b:completed=1d"])
            .server_options()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--retention: task hub 'b' is not served here (--task-hubs)"
        );
    }

    #[test]
    fn message_size_bounds_are_inclusive() {
        assert_eq!(
            parse(&["--max-message-size-mb", "1"])
                .server_options()
                .unwrap()
                .grpc
                .max_message_bytes,
            1024 * 1024
        );
    }
}
