//! The rest of the client surface (PROTOCOL.md §3.13, §1.1): Hello, task-hub
//! administration, and the health and reflection services.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not the shared helpers below.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::server::ServerOptions;
use durabletask_sidecar::service::ServiceOptions;
use tonic::Code;

// ---- Hello --------------------------------------------------------------------------

#[tokio::test]
async fn hello_is_ok() {
    let server = TestServer::start().await;
    within("hello", server.client().hello(())).await.unwrap();
}

// ---- CreateTaskHub -------------------------------------------------------------------

#[tokio::test]
async fn create_task_hub_with_recreate_wipes_every_instance() {
    let server = TestServer::start().await;
    start(&server, "hub-live", None).await;
    terminated(&server, "hub-done").await;
    within(
        "create task hub",
        server.client().create_task_hub(pb::CreateTaskHubRequest {
            recreate_if_exists: true,
        }),
    )
    .await
    .unwrap();
    assert!(!exists(&server, "hub-live").await);
    assert!(!exists(&server, "hub-done").await);
    // The hub works afterwards.
    start(&server, "hub-after", None).await;
    assert!(exists(&server, "hub-after").await);
}

#[tokio::test]
async fn create_task_hub_with_admin_disabled_is_failed_precondition_and_wipes_nothing() {
    let server = TestServer::start_with(ServerOptions {
        service: ServiceOptions {
            task_hub_admin: false,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    start(&server, "hub-keep", None).await;
    let s = within(
        "create task hub",
        server.client().create_task_hub(pb::CreateTaskHubRequest {
            recreate_if_exists: true,
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(exists(&server, "hub-keep").await);
}

// ---- Health and reflection -----------------------------------------------------------

#[tokio::test]
async fn health_check_reports_serving_overall_and_for_the_sidecar_service() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let server = TestServer::start().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_lazy();
    let mut health = HealthClient::new(channel);
    for service in ["", "TaskHubSidecarService"] {
        let r = within(
            "health check",
            health.check(HealthCheckRequest {
                service: service.into(),
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("health check for {service:?}: {e:?}"))
        .into_inner();
        assert_eq!(
            r.status,
            ServingStatus::Serving as i32,
            "service {service:?}"
        );
    }
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_sidecar_service() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = TestServer::start().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_lazy();

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut replies = within(
        "reflection v1",
        client.server_reflection_info(futures::stream::iter([request])),
    )
    .await
    .unwrap()
    .into_inner();
    let reply = within("reflection v1 reply", replies.message())
        .await
        .unwrap()
        .unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("unexpected v1 reply: {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.iter().any(|n| n == "TaskHubSidecarService"),
        "{names:?}"
    );

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut replies = within(
        "reflection v1alpha",
        client.server_reflection_info(futures::stream::iter([request])),
    )
    .await
    .unwrap()
    .into_inner();
    let reply = within("reflection v1alpha reply", replies.message())
        .await
        .unwrap()
        .unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("unexpected v1alpha reply: {reply:?}");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "TaskHubSidecarService"),
        "{list:?}"
    );
}
