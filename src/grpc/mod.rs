//! Transport: the tonic server (sidecar service, health, reflection v1 + v1alpha) and the
//! `TaskHubSidecarService` implementation, which only converts and delegates to `service`.
//! tonic types never leave this module.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::proto as pb;
use crate::service::{AppState, TaskHubs};
use pb::task_hub_sidecar_service_server::{TaskHubSidecarService, TaskHubSidecarServiceServer};

mod client_api;
mod convert;
mod dapr;
mod entity_api;
pub mod fuzzing;
mod limits;
mod metered;
mod secure;
mod status;
mod worker_api;

/// What the gRPC door needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why the gRPC door stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The transport failed.
    #[error("gRPC transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection service could not be built.
    #[error("reflection setup failed: {0}")]
    Reflection(String),
}

/// Serves until `shutdown` fires.
pub async fn serve(
    hubs: TaskHubs,
    options: &GrpcOptions,
    listener: TcpListener,
    security: &crate::security::Security,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let descriptors = dapr::descriptor_set().map_err(ServeError::Reflection)?;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_file_descriptor_set(descriptors.clone())
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<TaskHubSidecarServiceServer<Api>>()
        .await;

    let api = Api { hubs };
    let upstream = TaskHubSidecarServiceServer::new(api.clone())
        .max_decoding_message_size(options.max_message_bytes)
        .max_encoding_message_size(options.max_message_bytes);
    // Serves the Dapr fork's paths too (src/grpc/dapr), then delegates to `upstream`.
    let api = dapr::DaprCompat::new(upstream, api, options.max_message_bytes);
    let stop = shutdown.clone();
    let stopped = async move {
        stop.cancelled().await;
        health
            .set_not_serving::<TaskHubSidecarServiceServer<Api>>()
            .await;
    };
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        // Outermost, so the metrics see the status code `limits` rewrote.
        .layer(metered::MeteredLayer)
        .layer(crate::otel::rpc_layer())
        .layer(limits::layer())
        // Innermost: refusals are counted and traced like any other status.
        .layer(crate::auth::layer::AuthLayer::new(
            security.auth.clone(),
            crate::auth::layer::Door::Grpc,
            secure::refuse,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api);
    let result = match &security.tls {
        Some(tls) => {
            let incoming =
                crate::tls::incoming(listener, tls.clone(), crate::tls::Door::Grpc, shutdown);
            router
                .serve_with_incoming_shutdown(incoming.into_stream(), stopped)
                .await
        }
        None => {
            // Nagle's algorithm holds small writes (a completion ack, a work item) until the
            // peer's delayed ACK: tens of milliseconds per step at low concurrency.
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router.serve_with_incoming_shutdown(incoming, stopped).await
        }
    };
    result.map_err(ServeError::from)
}

/// The `TaskHubSidecarService` implementation.
#[derive(Debug, Clone)]
pub struct Api {
    hubs: TaskHubs,
}

/// The call metadata naming the task hub (sent by the Durable Task Scheduler SDK
/// providers on every call); absent means the default hub.
pub const TASK_HUB_METADATA: &str = "taskhub";

impl Api {
    /// The state of the task hub `r` names.
    async fn hub<T>(&self, r: &Request<T>) -> Result<AppState, Status> {
        let name = match r.metadata().get(TASK_HUB_METADATA) {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| {
                Status::invalid_argument("the taskhub metadata must be printable ASCII")
            })?),
        };
        Ok(self.hubs.get(name).await?)
    }
}

type Rpc<T> = Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The caller's deadline from the `grpc-timeout` header, if it sent one.
fn deadline<T>(req: &Request<T>) -> Option<Duration> {
    let raw = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl TaskHubSidecarService for Api {
    async fn hello(&self, _: Request<()>) -> Rpc<()> {
        Ok(Response::new(()))
    }

    async fn start_instance(
        &self,
        r: Request<pb::CreateInstanceRequest>,
    ) -> Rpc<pb::CreateInstanceResponse> {
        let state = self.hub(&r).await?;
        client_api::start_instance(&state, r.into_inner()).await
    }

    async fn get_instance(
        &self,
        r: Request<pb::GetInstanceRequest>,
    ) -> Rpc<pb::GetInstanceResponse> {
        let state = self.hub(&r).await?;
        client_api::get_instance(&state, r.into_inner()).await
    }

    async fn rewind_instance(
        &self,
        r: Request<pb::RewindInstanceRequest>,
    ) -> Rpc<pb::RewindInstanceResponse> {
        let state = self.hub(&r).await?;
        let r = r.into_inner();
        state.rewind_instance(&r.instance_id, r.reason).await?;
        Ok(Response::new(pb::RewindInstanceResponse {}))
    }

    async fn restart_instance(
        &self,
        r: Request<pb::RestartInstanceRequest>,
    ) -> Rpc<pb::RestartInstanceResponse> {
        let state = self.hub(&r).await?;
        client_api::restart_instance(&state, r.into_inner()).await
    }

    async fn wait_for_instance_start(
        &self,
        r: Request<pb::GetInstanceRequest>,
    ) -> Rpc<pb::GetInstanceResponse> {
        let state = self.hub(&r).await?;
        let limit = deadline(&r);
        client_api::wait(
            &state,
            r.into_inner(),
            crate::service::client::WaitFor::Start,
            limit,
        )
        .await
    }

    async fn wait_for_instance_completion(
        &self,
        r: Request<pb::GetInstanceRequest>,
    ) -> Rpc<pb::GetInstanceResponse> {
        let state = self.hub(&r).await?;
        let limit = deadline(&r);
        client_api::wait(
            &state,
            r.into_inner(),
            crate::service::client::WaitFor::Completion,
            limit,
        )
        .await
    }

    async fn raise_event(&self, r: Request<pb::RaiseEventRequest>) -> Rpc<pb::RaiseEventResponse> {
        let state = self.hub(&r).await?;
        let r = r.into_inner();
        state.raise_event(&r.instance_id, &r.name, r.input).await?;
        Ok(Response::new(pb::RaiseEventResponse {}))
    }

    async fn terminate_instance(
        &self,
        r: Request<pb::TerminateRequest>,
    ) -> Rpc<pb::TerminateResponse> {
        let state = self.hub(&r).await?;
        let r = r.into_inner();
        state
            .terminate_instance(&r.instance_id, r.output, r.recursive)
            .await?;
        Ok(Response::new(pb::TerminateResponse {}))
    }

    async fn suspend_instance(&self, r: Request<pb::SuspendRequest>) -> Rpc<pb::SuspendResponse> {
        let state = self.hub(&r).await?;
        let r = r.into_inner();
        state.set_suspended(&r.instance_id, true, r.reason).await?;
        Ok(Response::new(pb::SuspendResponse {}))
    }

    async fn resume_instance(&self, r: Request<pb::ResumeRequest>) -> Rpc<pb::ResumeResponse> {
        let state = self.hub(&r).await?;
        let r = r.into_inner();
        state.set_suspended(&r.instance_id, false, r.reason).await?;
        Ok(Response::new(pb::ResumeResponse {}))
    }

    async fn query_instances(
        &self,
        r: Request<pb::QueryInstancesRequest>,
    ) -> Rpc<pb::QueryInstancesResponse> {
        let state = self.hub(&r).await?;
        client_api::query_instances(&state, r.into_inner()).await
    }

    async fn list_instance_ids(
        &self,
        r: Request<pb::ListInstanceIdsRequest>,
    ) -> Rpc<pb::ListInstanceIdsResponse> {
        let state = self.hub(&r).await?;
        let query = convert::completed_query(&r.into_inner())?;
        let page = state.list_instance_ids(&query).await?;
        Ok(Response::new(pb::ListInstanceIdsResponse {
            instance_ids: page.items.into_iter().map(|i| i.into_string()).collect(),
            last_instance_key: page.next,
        }))
    }

    async fn purge_instances(
        &self,
        r: Request<pb::PurgeInstancesRequest>,
    ) -> Rpc<pb::PurgeInstancesResponse> {
        let state = self.hub(&r).await?;
        client_api::purge_instances(&state, r.into_inner()).await
    }

    type GetWorkItemsStream = BoxStream<pb::WorkItem>;

    async fn get_work_items(
        &self,
        r: Request<pb::GetWorkItemsRequest>,
    ) -> Rpc<Self::GetWorkItemsStream> {
        let state = self.hub(&r).await?;
        worker_api::get_work_items(&state, r.into_inner())
    }

    async fn complete_activity_task(
        &self,
        r: Request<pb::ActivityResponse>,
    ) -> Rpc<pb::CompleteTaskResponse> {
        let state = self.hub(&r).await?;
        state.complete_activity_task(r.into_inner()).await?;
        Ok(Response::new(pb::CompleteTaskResponse {}))
    }

    async fn complete_orchestrator_task(
        &self,
        r: Request<pb::OrchestratorResponse>,
    ) -> Rpc<pb::CompleteTaskResponse> {
        let state = self.hub(&r).await?;
        state.complete_orchestrator_task(r.into_inner()).await?;
        Ok(Response::new(pb::CompleteTaskResponse {}))
    }

    async fn complete_entity_task(
        &self,
        r: Request<pb::EntityBatchResult>,
    ) -> Rpc<pb::CompleteTaskResponse> {
        let state = self.hub(&r).await?;
        state.complete_entity_task(r.into_inner()).await?;
        Ok(Response::new(pb::CompleteTaskResponse {}))
    }

    type StreamInstanceHistoryStream = BoxStream<pb::HistoryChunk>;

    async fn stream_instance_history(
        &self,
        r: Request<pb::StreamInstanceHistoryRequest>,
    ) -> Rpc<Self::StreamInstanceHistoryStream> {
        let state = self.hub(&r).await?;
        worker_api::stream_instance_history(&state, r.into_inner()).await
    }

    async fn create_task_hub(
        &self,
        r: Request<pb::CreateTaskHubRequest>,
    ) -> Rpc<pb::CreateTaskHubResponse> {
        let state = self.hub(&r).await?;
        state
            .reset_task_hub(r.into_inner().recreate_if_exists)
            .await?;
        Ok(Response::new(pb::CreateTaskHubResponse {}))
    }

    async fn delete_task_hub(
        &self,
        r: Request<pb::DeleteTaskHubRequest>,
    ) -> Rpc<pb::DeleteTaskHubResponse> {
        let state = self.hub(&r).await?;
        state.reset_task_hub(true).await?;
        Ok(Response::new(pb::DeleteTaskHubResponse {}))
    }

    async fn signal_entity(
        &self,
        r: Request<pb::SignalEntityRequest>,
    ) -> Rpc<pb::SignalEntityResponse> {
        let state = self.hub(&r).await?;
        state
            .signal_entity(convert::entity_signal(r.into_inner())?)
            .await?;
        Ok(Response::new(pb::SignalEntityResponse {}))
    }

    async fn get_entity(&self, r: Request<pb::GetEntityRequest>) -> Rpc<pb::GetEntityResponse> {
        let state = self.hub(&r).await?;
        entity_api::get_entity(&state, r.into_inner()).await
    }

    async fn query_entities(
        &self,
        r: Request<pb::QueryEntitiesRequest>,
    ) -> Rpc<pb::QueryEntitiesResponse> {
        let state = self.hub(&r).await?;
        entity_api::query_entities(&state, r.into_inner()).await
    }

    async fn clean_entity_storage(
        &self,
        r: Request<pb::CleanEntityStorageRequest>,
    ) -> Rpc<pb::CleanEntityStorageResponse> {
        let state = self.hub(&r).await?;
        entity_api::clean_entity_storage(&state, r.into_inner()).await
    }

    async fn abandon_task_activity_work_item(
        &self,
        r: Request<pb::AbandonActivityTaskRequest>,
    ) -> Rpc<pb::AbandonActivityTaskResponse> {
        let state = self.hub(&r).await?;
        state.abandon_activity(&r.into_inner().completion_token);
        Ok(Response::new(pb::AbandonActivityTaskResponse {}))
    }

    async fn abandon_task_orchestrator_work_item(
        &self,
        r: Request<pb::AbandonOrchestrationTaskRequest>,
    ) -> Rpc<pb::AbandonOrchestrationTaskResponse> {
        let state = self.hub(&r).await?;
        state.abandon_orchestration(&r.into_inner().completion_token);
        Ok(Response::new(pb::AbandonOrchestrationTaskResponse {}))
    }

    async fn abandon_task_entity_work_item(
        &self,
        r: Request<pb::AbandonEntityTaskRequest>,
    ) -> Rpc<pb::AbandonEntityTaskResponse> {
        let state = self.hub(&r).await?;
        state.abandon_entity(&r.into_inner().completion_token);
        Ok(Response::new(pb::AbandonEntityTaskResponse {}))
    }

    async fn skip_graceful_orchestration_terminations(
        &self,
        r: Request<pb::SkipGracefulOrchestrationTerminationsRequest>,
    ) -> Rpc<pb::SkipGracefulOrchestrationTerminationsResponse> {
        let state = self.hub(&r).await?;
        let req = r.into_inner();
        let Some(batch) = req.instance_batch else {
            return Err(Status::invalid_argument(
                "SkipGracefulOrchestrationTerminationsRequest needs instanceBatch",
            ));
        };
        let unterminated = state
            .skip_graceful_terminations(&batch.instance_ids, req.reason)
            .await?;
        Ok(Response::new(
            pb::SkipGracefulOrchestrationTerminationsResponse {
                unterminated_instance_ids: unterminated,
            },
        ))
    }
}
