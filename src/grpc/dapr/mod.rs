//! Dapr Workflow SDKs: serves the Dapr fork of the contract (`dapr/durabletask-protobuf`)
//! next to upstream's, so a Dapr SDK runs workflows against this sidecar without daprd.
//! Transport only, like the rest of `grpc`: it converts and delegates to `service`.
//!
//! # How the fork differs from upstream (`proto/orchestrator_service.proto`)
//!
//! Compared at fork commit `889781b` (2026-01-14: the revision `durabletask-dapr` 0.17.4,
//! the current Python SDK, is generated from) and at its head `1555e20` (2026-06-30),
//! which splits the file, renames `Orchestration*`/`Orchestrator*` messages to
//! `Workflow*` and drops what Dapr does not use (entities, `QueryInstances`,
//! `StreamInstanceHistory`, `RewindInstance`, the Abandon* RPCs, task hub RPCs).
//!
//! * Service: the same `TaskHubSidecarService` with no package, so shared RPCs share
//!   their paths. Message names are not on the wire; renames are free.
//! * Fork-only RPCs: `ListInstanceIDs` (every instance, any status; upstream's
//!   `ListInstanceIds` has other messages and lists terminal instances only),
//!   `GetInstanceHistory`, `RerunWorkflowFromEvent`, and (head only)
//!   `CompleteWorkflowTask`, the new name of `CompleteOrchestratorTask`, which it keeps
//!   as deprecated. The 0.17.4 Python and 1.0.0 JS SDKs call none of them: they complete
//!   through `CompleteOrchestratorTask`.
//! * Same field number, different meaning (wire-incompatible), in messages the worker
//!   sends:
//!   - `OrchestratorResponse.6`: upstream `OrchestrationTraceContext`, fork
//!     `WorkflowVersion { repeated string patches = 1; optional string name = 2; }`;
//!   - `OrchestratorAction.9`: upstream the oneof member `rewindOrchestration`, fork
//!     `optional TaskRouter router` beside the action; fork-only action types 10
//!     `workflowVersionNotAvailable`, 11 `createDetachedWorkflow` (head); 8 (entity
//!     messages) is reserved at head;
//!   - `ScheduleTaskAction.4`: upstream `map tags`, fork `TaskRouter router`;
//!     `.5`: upstream `TraceContext parentTraceContext`, fork `string taskExecutionId`;
//!   - `CreateSubOrchestrationAction.5`: upstream `TraceContext`, fork `TaskRouter`;
//!     `.6`: upstream `map tags`, fork `historyPropagationScope` (head);
//!   - `CreateTimerAction.2`: fork-only `optional string name` (3-6: timer origin, head);
//!   - `PurgeInstancesRequest.4`: upstream `InstanceBatch instanceBatch` (oneof), fork
//!     `optional bool force`;
//!   - `CreateInstanceRequest.6`: the pre-2025 reuse policy shape at `889781b`
//!     (PROTOCOL.md §1.7.1), reserved at head.
//! * ... and in messages the sidecar sends:
//!   - `ActivityRequest.7` and `TaskScheduledEvent.5`: upstream `map tags`, fork
//!     `string taskExecutionId`;
//!   - `OrchestratorRequest.7`: upstream `properties` map, fork `TaskRouter`; `.8`:
//!     upstream `OrchestrationTraceContext`, fork `PropagatedHistory` (head);
//!   - `HistoryEvent.30`: upstream `executionRewound`, fork `optional TaskRouter router`
//!     beside the event; fork-only events 31 `executionStalled`, 32
//!     `detachedWorkflowInstanceCreated`; 18, 19 (generic, history state) reserved;
//!   - `OrchestratorStartedEvent.1`: fork-only `WorkflowVersion version`;
//!   - `SubOrchestrationInstanceCreatedEvent.6`: upstream `map tags`, fork
//!     `RerunParentInstanceInfo`;
//!   - `GetWorkItemsRequest`: at head the fork moved `capabilities` from 10 to 4 and
//!     reuses value 2 for `STATEFUL_HISTORY` (upstream: `SCHEDULED_TASKS`), and drops
//!     1-3; `WorkItem.4` (`healthPing`) is reserved at head.
//! * Fork-only fields that upstream readers skip: `TaskCompletedEvent`/`TaskFailedEvent.3`
//!   `taskExecutionId`, attestations (4, 5), `ParentInstanceInfo.5-6` app id/namespace,
//!   `TimerCreatedEvent.2-7`, `TaskScheduledEvent.6-7`, `OrchestrationState.16-17`,
//!   `ActivityRequest.8`, `OrchestratorRequest.9`; `OrchestrationStatus` 8 `STALLED`.
//!
//! # What is served, and how
//!
//! [`DaprCompat`] wraps the generated upstream service under the same name and serves
//! these paths itself; everything else goes to the upstream service untouched:
//!
//! * `CompleteOrchestratorTask`: the body is read as the fork's `WorkflowResponse` if a
//!   field that differs is in the fork's shape (`wire::is_fork_response`), else exactly
//!   as before. `CompleteWorkflowTask` is always the fork's. A fork completion is
//!   converted (`completion`): `taskExecutionId` is kept as a reserved tag and written
//!   back into `ActivityRequest.7` / `TaskScheduledEvent.5` when encoding; routers and
//!   timer names are dropped; `workflowVersionNotAvailable` hands the work item back;
//!   patches and detached workflows fail the workflow with a reason.
//! * `GetWorkItems`: upstream's handler, encoded by `encode` (unchanged bytes unless an
//!   item carries the reserved tag).
//! * `PurgeInstances`: the fork's `force` is read; forcing the purge of a live instance
//!   answers FAILED_PRECONDITION.
//! * `ListInstanceIDs`, `GetInstanceHistory`: implemented; `RerunWorkflowFromEvent`
//!   answers UNIMPLEMENTED with the reason.
//!
//! Not handled: nothing else the sidecar sends uses the clashing upstream fields for a
//! fork worker's instances (no tags, properties, trace context or rewind events arise
//! from them), so the fork reads those messages correctly. `OrchestratorStartedEvent.version`
//! is never filled in (see `completion`). Health pings (`WorkItem.4`) go to every worker:
//! 0.17.4 knows them, a worker built from the fork's head sees an empty work item. The
//! head's `STATEFUL_HISTORY` capability is not read, so full histories are always sent,
//! which is what the fork does for workers it does not know to be warm.

use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Poll};

use prost::bytes::Bytes;
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::{Request, Response, Status};

use super::Api;
use crate::proto as pb;
use encode::{Codec, Reply};
use pb::task_hub_sidecar_service_server::TaskHubSidecarServiceServer;

mod completion;
mod encode;
mod reflection;
mod rpcs;
mod wire;

pub(super) use reflection::descriptor_set;

/// Paths served by [`DaprCompat`] itself.
mod path {
    pub(super) const COMPLETE_ORCHESTRATOR_TASK: &str =
        "/TaskHubSidecarService/CompleteOrchestratorTask";
    pub(super) const COMPLETE_WORKFLOW_TASK: &str = "/TaskHubSidecarService/CompleteWorkflowTask";
    pub(super) const GET_WORK_ITEMS: &str = "/TaskHubSidecarService/GetWorkItems";
    pub(super) const PURGE_INSTANCES: &str = "/TaskHubSidecarService/PurgeInstances";
    pub(super) const LIST_INSTANCE_IDS: &str = "/TaskHubSidecarService/ListInstanceIDs";
    pub(super) const GET_INSTANCE_HISTORY: &str = "/TaskHubSidecarService/GetInstanceHistory";
    pub(super) const RERUN_WORKFLOW_FROM_EVENT: &str =
        "/TaskHubSidecarService/RerunWorkflowFromEvent";
}

/// `TaskHubSidecarService` for both contracts: the paths whose messages differ are
/// served here, every other path by the wrapped upstream service.
#[derive(Debug, Clone)]
pub(super) struct DaprCompat {
    upstream: TaskHubSidecarServiceServer<Api>,
    api: Api,
    max_message_bytes: usize,
}

impl DaprCompat {
    /// Wraps `upstream`, which must serve `api` with `max_message_bytes` limits.
    pub(super) fn new(
        upstream: TaskHubSidecarServiceServer<Api>,
        api: Api,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            upstream,
            api,
            max_message_bytes,
        }
    }

    fn unary<B, R, F, Fut>(
        &self,
        req: http::Request<B>,
        handler: F,
    ) -> BoxFuture<http::Response<tonic::body::Body>, Infallible>
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
        R: Reply,
        F: FnMut(Api, Request<Bytes>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Response<R>, Status>> + Send + 'static,
    {
        let mut grpc = self.grpc::<R>();
        let handler = Handler {
            api: self.api.clone(),
            handler,
        };
        Box::pin(async move { Ok(grpc.unary(handler, req).await) })
    }

    fn grpc<R: Reply>(&self) -> tonic::server::Grpc<Codec<R>> {
        tonic::server::Grpc::new(Codec::default()).apply_max_message_size_config(
            Some(self.max_message_bytes),
            Some(self.max_message_bytes),
        )
    }
}

impl<B> Service<http::Request<B>> for DaprCompat
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            path::COMPLETE_ORCHESTRATOR_TASK => {
                self.unary(req, |api, r| rpcs::complete(api, r, false))
            }
            path::COMPLETE_WORKFLOW_TASK => self.unary(req, |api, r| rpcs::complete(api, r, true)),
            path::PURGE_INSTANCES => self.unary(req, rpcs::purge_instances),
            path::LIST_INSTANCE_IDS => self.unary(req, rpcs::list_instance_ids),
            path::GET_INSTANCE_HISTORY => self.unary(req, rpcs::get_instance_history),
            path::RERUN_WORKFLOW_FROM_EVENT => {
                self.unary(req, |_, r| rpcs::rerun_workflow_from_event(r))
            }
            path::GET_WORK_ITEMS => {
                let mut grpc = self.grpc::<pb::WorkItem>();
                let handler = Handler {
                    api: self.api.clone(),
                    handler: rpcs::get_work_items,
                };
                Box::pin(async move { Ok(grpc.server_streaming(handler, req).await) })
            }
            _ => self.upstream.call(req),
        }
    }
}

impl tonic::server::NamedService for DaprCompat {
    const NAME: &'static str = pb::task_hub_sidecar_service_server::SERVICE_NAME;
}

/// A handler as the `tower::Service` that `tonic::server::Grpc` drives.
struct Handler<F> {
    api: Api,
    handler: F,
}

impl<F, Fut, T> Service<Request<Bytes>> for Handler<F>
where
    F: FnMut(Api, Request<Bytes>) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    type Response = Response<T>;
    type Error = Status;
    type Future = Fut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> Fut {
        (self.handler)(self.api.clone(), req)
    }
}
