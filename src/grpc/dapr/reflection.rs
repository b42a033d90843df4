//! The descriptors server reflection serves: `TaskHubSidecarService` with the fork-only
//! methods added, since they are served at its paths.

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto};

use crate::proto as pb;

/// Fork-only methods served under `TaskHubSidecarService`: (name, request, reply).
const FORK_METHODS: [(&str, &str, &str); 4] = [
    (
        "CompleteWorkflowTask",
        ".dapr.WorkflowResponse",
        ".CompleteTaskResponse",
    ),
    (
        "ListInstanceIDs",
        ".dapr.ListInstanceIDsRequest",
        ".dapr.ListInstanceIDsResponse",
    ),
    (
        "GetInstanceHistory",
        ".dapr.GetInstanceHistoryRequest",
        ".dapr.GetInstanceHistoryResponse",
    ),
    (
        "RerunWorkflowFromEvent",
        ".dapr.RerunWorkflowFromEventRequest",
        ".dapr.RerunWorkflowFromEventResponse",
    ),
];

const CONTRACT_FILE: &str = "orchestrator_service.proto";
const SERVICE_FILE: &str = "task_hub_sidecar_service.proto";
/// `FileDescriptorProto.service` and `SourceCodeInfo.Location.path` element for it.
const SERVICE_FIELD: i32 = 6;

/// Our compiled protos, with `TaskHubSidecarService` moved from
/// `orchestrator_service.proto` into a file of its own that also declares the fork-only
/// methods. It has to move: those methods use `dapr.proto`'s messages, and `dapr.proto`
/// imports `orchestrator_service.proto`, so declaring them in place would be an import
/// cycle. The service's comments move with it.
pub(in crate::grpc) fn descriptor_set() -> Result<FileDescriptorSet, String> {
    let mut set = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())?;
    let contract = set
        .file
        .iter_mut()
        .find(|f| f.name() == CONTRACT_FILE)
        .ok_or_else(|| format!("{CONTRACT_FILE} missing from the descriptor set"))?;
    if contract.service.len() != 1 {
        return Err(format!(
            "{CONTRACT_FILE} should declare exactly one service"
        ));
    }
    let mut service = contract.service.remove(0);
    service.method.extend(
        FORK_METHODS
            .iter()
            .map(|(name, input, output)| MethodDescriptorProto {
                name: Some((*name).into()),
                input_type: Some((*input).into()),
                output_type: Some((*output).into()),
                ..Default::default()
            }),
    );
    // Locations under `service[0]` describe the service in its new file (also index 0).
    let source_code_info = contract.source_code_info.as_mut().map(|info| {
        let (moved, kept) = std::mem::take(&mut info.location)
            .into_iter()
            .partition(|l| l.path.first() == Some(&SERVICE_FIELD));
        info.location = kept;
        prost_types::SourceCodeInfo { location: moved }
    });
    let mut dependency: Vec<String> = contract
        .dependency
        .iter()
        .filter(|d| d.as_str() == "google/protobuf/empty.proto")
        .cloned()
        .collect();
    dependency.extend([CONTRACT_FILE.to_string(), "dapr.proto".to_string()]);
    set.file.push(FileDescriptorProto {
        name: Some(SERVICE_FILE.into()),
        dependency,
        service: vec![service],
        source_code_info,
        syntax: Some("proto3".into()),
        ..Default::default()
    });
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_lists_upstream_and_fork_methods_from_its_own_file() {
        let set = descriptor_set().unwrap();
        let holders: Vec<_> = set.file.iter().filter(|f| !f.service.is_empty()).collect();
        assert_eq!(holders.len(), 1);
        let file = holders[0];
        assert_eq!(file.name(), SERVICE_FILE);
        assert_eq!(file.package(), "");
        let service = &file.service[0];
        assert_eq!(service.name(), "TaskHubSidecarService");
        let methods: Vec<_> = service.method.iter().map(|m| m.name()).collect();
        for m in [
            "Hello",
            "ListInstanceIds",
            "CompleteOrchestratorTask",
            "GetWorkItems",
            "ListInstanceIDs",
            "GetInstanceHistory",
            "RerunWorkflowFromEvent",
            "CompleteWorkflowTask",
        ] {
            assert!(methods.contains(&m), "{m} missing from {methods:?}");
        }
        // Every type the service names is declared in a file it depends on.
        let declared = |t: &str| {
            set.file.iter().any(|f| {
                file.dependency.iter().any(|d| d == f.name())
                    && f.message_type.iter().any(|m| {
                        let pkg = f.package();
                        let full = if pkg.is_empty() {
                            format!(".{}", m.name())
                        } else {
                            format!(".{pkg}.{}", m.name())
                        };
                        full == t
                    })
            })
        };
        for m in &service.method {
            assert!(declared(m.input_type()), "{}", m.input_type());
            assert!(declared(m.output_type()), "{}", m.output_type());
        }
    }
}
