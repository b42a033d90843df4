//! Which role each call needs: every gRPC method of `TaskHubSidecarService` (upstream's
//! and the Dapr fork's), the other gRPC services, and the HTTP routes. README's
//! "Security" section has the same table; `every_proto_rpc_is_classified` keeps this one
//! complete.

use super::Role;

/// What a call requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: no token needed (health checks, the dashboard's static files).
    Open,
    /// Any known token, whatever its role.
    AnyRole,
    /// A read: `read`, `client` or `admin`.
    Read,
    /// A read a worker also makes (history streaming): `read`, `client`, `worker`, `admin`.
    WorkerRead,
    /// A client write: `client` or `admin`.
    Client,
    /// A worker RPC: `worker` or `admin`.
    Worker,
    /// `admin` only.
    Admin,
}

impl Need {
    /// Whether `role` may make a call that needs `self`.
    pub fn allows(self, role: Role) -> bool {
        use Role::*;
        match self {
            Need::Open | Need::AnyRole => true,
            Need::Read => matches!(role, Admin | Client | Read),
            Need::WorkerRead => true,
            Need::Client => matches!(role, Admin | Client),
            Need::Worker => matches!(role, Admin | Worker),
            Need::Admin => role == Admin,
        }
    }
}

/// The `TaskHubSidecarService` methods, by name (the path's last segment), with what
/// they need. Methods not listed need `admin` (closed by default).
pub const SIDECAR_RPCS: &[(&str, Need)] = &[
    ("Hello", Need::AnyRole),
    // Client writes.
    ("StartInstance", Need::Client),
    ("RaiseEvent", Need::Client),
    ("TerminateInstance", Need::Client),
    ("SuspendInstance", Need::Client),
    ("ResumeInstance", Need::Client),
    ("PurgeInstances", Need::Client),
    ("RewindInstance", Need::Client),
    ("RestartInstance", Need::Client),
    ("SignalEntity", Need::Client),
    ("CleanEntityStorage", Need::Client),
    ("SkipGracefulOrchestrationTerminations", Need::Client),
    // Reads.
    ("GetInstance", Need::Read),
    ("WaitForInstanceStart", Need::Read),
    ("WaitForInstanceCompletion", Need::Read),
    ("QueryInstances", Need::Read),
    ("ListInstanceIds", Need::Read),
    ("GetEntity", Need::Read),
    ("QueryEntities", Need::Read),
    // Workers fetch long histories in chunks while executing an orchestration.
    ("StreamInstanceHistory", Need::WorkerRead),
    // Worker RPCs.
    ("GetWorkItems", Need::Worker),
    ("CompleteActivityTask", Need::Worker),
    ("CompleteOrchestratorTask", Need::Worker),
    ("CompleteEntityTask", Need::Worker),
    ("AbandonTaskActivityWorkItem", Need::Worker),
    ("AbandonTaskOrchestratorWorkItem", Need::Worker),
    ("AbandonTaskEntityWorkItem", Need::Worker),
    // Wipes the database.
    ("CreateTaskHub", Need::Admin),
    ("DeleteTaskHub", Need::Admin),
    // The Dapr fork's own names (src/grpc/dapr).
    ("CompleteWorkflowTask", Need::Worker),
    ("ListInstanceIDs", Need::Read),
    ("GetInstanceHistory", Need::Read),
    ("RerunWorkflowFromEvent", Need::Client),
];

/// What the gRPC `path` (`/Service/Method`) needs.
pub fn grpc(path: &str) -> Need {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match service {
        // Load balancers and orchestrators probe without credentials.
        "grpc.health.v1.Health" => Need::Open,
        // The schema is public (proto/), but only callers with a token get to browse it.
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => {
            Need::AnyRole
        }
        "TaskHubSidecarService" => SIDECAR_RPCS
            .iter()
            .find(|(name, _)| *name == method)
            .map_or(Need::Admin, |(_, need)| *need),
        _ => Need::Admin,
    }
}

/// What the HTTP request `method path` needs: under the Durable Functions base path,
/// GET is a read, DELETE /taskhub is admin and every other method a client write;
/// `/metrics` is a read; the dashboard's static files, `/openapi.json` and unknown paths
/// are open (an unknown path answers 404 whoever asks).
pub fn http(method: &http::Method, path: &str) -> Need {
    let base = crate::http::BASE_PATH;
    if let Some(rest) = path.strip_prefix(base) {
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Need::Open;
        }
        return if method == http::Method::GET || method == http::Method::HEAD {
            Need::Read
        } else if rest.trim_end_matches('/') == "/taskhub" {
            Need::Admin
        } else {
            Need::Client
        };
    }
    if path == "/metrics" {
        return Need::Read;
    }
    Need::Open
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_proto_rpc_is_classified() {
        let proto = include_str!("../../proto/orchestrator_service.proto");
        let service = proto
            .split("service TaskHubSidecarService")
            .nth(1)
            .expect("service block");
        let mut missing = Vec::new();
        for line in service.lines() {
            if let Some(rest) = line.trim().strip_prefix("rpc ") {
                let name = rest.split('(').next().unwrap_or("").trim();
                if !SIDECAR_RPCS.iter().any(|(n, _)| *n == name) {
                    missing.push(name.to_owned());
                }
            }
        }
        assert!(missing.is_empty(), "unclassified RPCs: {missing:?}");
    }

    #[test]
    fn roles_cover_what_the_table_says() {
        use Role::*;
        let s = |m: &str| grpc(&format!("/TaskHubSidecarService/{m}"));
        assert_eq!(grpc("/grpc.health.v1.Health/Check"), Need::Open);
        assert_eq!(s("Nope"), Need::Admin);
        assert!(s("GetWorkItems").allows(Worker));
        assert!(!s("GetWorkItems").allows(Client));
        assert!(s("StartInstance").allows(Client));
        assert!(!s("StartInstance").allows(Read));
        assert!(!s("StartInstance").allows(Worker));
        assert!(s("GetInstance").allows(Read));
        assert!(!s("GetInstance").allows(Worker));
        assert!(s("StreamInstanceHistory").allows(Worker));
        assert!(!s("DeleteTaskHub").allows(Client));
        assert!(s("DeleteTaskHub").allows(Admin));
    }

    #[test]
    fn http_routes() {
        use http::Method;
        let base = crate::http::BASE_PATH;
        assert_eq!(http(&Method::GET, &format!("{base}/instances")), Need::Read);
        assert_eq!(
            http(&Method::POST, &format!("{base}/orchestrators/x")),
            Need::Client
        );
        assert_eq!(
            http(&Method::DELETE, &format!("{base}/taskhub")),
            Need::Admin
        );
        assert_eq!(http(&Method::GET, "/metrics"), Need::Read);
        assert_eq!(http(&Method::GET, "/ui/app.js"), Need::Open);
        assert_eq!(http(&Method::GET, &format!("{base}x")), Need::Open);
    }
}
