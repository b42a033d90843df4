//! The channel to the sidecar, the wording of client errors, and `health`.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::{InterceptedService, Interceptor};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::output::Printer;
use super::{ClientArgs, Exit, Health};
use crate::domain::TaskHubName;
use crate::proto::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;

/// The generated `TaskHubSidecarService` client, naming the task hub on every call.
pub(super) type Client = TaskHubSidecarServiceClient<InterceptedService<Channel, HubHeader>>;

/// Adds `taskhub` metadata (`--task-hub-name`) to every call.
#[derive(Debug, Clone)]
pub(super) struct HubHeader(Option<MetadataValue<Ascii>>);

impl Interceptor for HubHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(hub) = &self.0 {
            request
                .metadata_mut()
                .insert(crate::grpc::TASK_HUB_METADATA, hub.clone());
        }
        Ok(request)
    }
}

/// How long to try to open the connection before reporting the server unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest message accepted from the server: the sidecar's own upper bound
/// (`--max-message-size-mb` 2048), so big histories and payloads print.
const MAX_MESSAGE_BYTES: usize = 2048 * 1024 * 1024;

/// Why a client command failed. Printed as one line after `durabletask-sidecar: error: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `--addr` is not a usable address.
    #[error("--addr {addr:?}: {reason}")]
    Address {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection could be opened.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL dialled.
        url: String,
        /// The innermost cause (e.g. `Connection refused (os error 111)`).
        reason: String,
    },
    /// The server answered a call with an error status.
    #[error("{rpc} failed: {code}: {message}")]
    Rpc {
        /// The gRPC method.
        rpc: &'static str,
        /// The status code, as gRPC spells it (`NOT_FOUND`).
        code: &'static str,
        /// The server's message.
        message: String,
    },
    /// The server says the instance or entity does not exist.
    #[error("{0}")]
    NotFound(String),
    /// `--task-hub-name` is not a task hub name.
    #[error("--task-hub-name: {0}")]
    TaskHub(String),
    /// A payload argument could not be read or is not JSON.
    #[error("{0}")]
    Input(String),
    /// Writing the result failed (e.g. a closed pipe).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// Wraps a failed call of `rpc`.
    pub(super) fn rpc(rpc: &'static str, status: tonic::Status) -> Self {
        Self::Rpc {
            rpc,
            code: code_name(status.code()),
            message: status.message().to_owned(),
        }
    }
}

/// The URL for `--addr`: `host:port` gets `http://`; `https://` is refused (this client
/// speaks plaintext h2c, as the sidecar does).
pub(super) fn url_of(addr: &str) -> Result<String, CliError> {
    let addr = addr.trim();
    let bad = |reason: &str| CliError::Address {
        addr: addr.to_owned(),
        reason: reason.to_owned(),
    };
    if addr.is_empty() {
        return Err(bad("empty address"));
    }
    if addr.starts_with("https://") {
        return Err(bad("TLS is not supported: use http://host:port"));
    }
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    if !url.starts_with("http://") {
        return Err(bad("expected host:port or http://host:port"));
    }
    Ok(url)
}

/// Opens a channel to `addr` (eagerly, so an unreachable server is reported as such).
pub(super) async fn channel(addr: &str) -> Result<Channel, CliError> {
    let url = url_of(addr)?;
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|err| CliError::Address {
        addr: addr.to_owned(),
        reason: innermost(&err),
    })?;
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|err| CliError::Connect {
            url,
            reason: innermost(&err),
        })
}

/// A `TaskHubSidecarService` client for `--addr` and `--task-hub-name`.
pub(super) async fn client(args: &ClientArgs) -> Result<Client, CliError> {
    let hub = match &args.task_hub_name {
        None => None,
        Some(raw) => {
            let name = TaskHubName::parse(raw.trim()).map_err(CliError::TaskHub)?;
            Some(
                MetadataValue::try_from(name.as_str())
                    .map_err(|err| CliError::TaskHub(err.to_string()))?,
            )
        }
    };
    Ok(
        TaskHubSidecarServiceClient::with_interceptor(channel(&args.addr).await?, HubHeader(hub))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

/// The last error in `err`'s source chain: transport errors wrap the useful part
/// ("Connection refused") under generic layers ("transport error").
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// `health`: asks `grpc.health.v1.Health/Check`. SERVING is exit 0; anything else,
/// including no answer within `--timeout`, is exit 1 with the reason on stderr.
pub(super) async fn health(args: Health) -> Result<Exit, CliError> {
    let printer = Printer::new(args.client.output);
    let check = async {
        let mut client = HealthClient::new(channel(&args.client.addr).await?);
        client
            .check(HealthCheckRequest {
                service: args.service.clone(),
            })
            .await
            .map_err(|status| CliError::rpc("Health/Check", status))
    };
    let response = tokio::time::timeout(args.timeout.0, check)
        .await
        .map_err(|_| CliError::Connect {
            url: url_of(&args.client.addr).unwrap_or_else(|_| args.client.addr.clone()),
            reason: format!("no health answer within {:?}", args.timeout.0),
        })??;
    let status = ServingStatus::try_from(response.into_inner().status)
        .unwrap_or(ServingStatus::Unknown)
        .as_str_name();
    printer.health(status)?;
    if status == ServingStatus::Serving.as_str_name() {
        Ok(Exit::Success)
    } else {
        eprintln!("durabletask-sidecar: error: the server is {status}");
        Ok(Exit::Error)
    }
}

/// A status code as gRPC names it (the `Display` of `tonic::Code` is a sentence).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(url_of("localhost:4001").unwrap(), "http://localhost:4001");
        assert_eq!(url_of("http://10.0.0.1:5").unwrap(), "http://10.0.0.1:5");
        assert!(url_of("https://x:1").is_err());
        assert!(url_of("ftp://x:1").is_err());
        assert!(url_of(" ").is_err());
    }
}
