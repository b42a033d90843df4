//! A completion in the fork's shape (`dapr.WorkflowResponse`) → upstream's
//! `OrchestratorResponse`, which the engine applies as usual.

use crate::proto::{self as pb, dapr};
use dapr::workflow_action::WorkflowActionType as Fork;
use pb::orchestrator_action::OrchestratorActionType as Action;

/// Tag under which a fork worker's `ScheduleTaskAction.taskExecutionId` is kept in
/// upstream's `ScheduleTaskAction.tags`. The engine copies those tags into the
/// `TaskScheduledEvent` (history) and the `ActivityRequest` (work item), and the encoder
/// (`super::encode`) moves the value back to the fork's string fields there.
pub(super) const TASK_EXECUTION_ID_TAG: &str = "__dapr.taskExecutionId";

/// The `TaskFailureDetails.errorType` of workflows failed for using a fork feature that
/// this sidecar cannot honour.
pub(super) const UNSUPPORTED_ERROR_TYPE: &str = "UnsupportedDaprFeature";

/// What to do with a fork-shaped completion.
#[derive(Debug)]
pub(super) enum Completion {
    /// Apply this response.
    Apply(pb::OrchestratorResponse),
    /// The worker has no orchestrator of the instance's version
    /// (`workflowVersionNotAvailable`). Dapr parks such a workflow as STALLED until a
    /// worker that has it connects; handing the work item back does the same here
    /// (it is redelivered with the abandon back-off), minus the STALLED status.
    Abandon { completion_token: String },
}

/// Converts a fork-shaped completion. Features the engine cannot honour fail the
/// workflow with a message naming them, rather than being dropped silently.
pub(super) fn from_fork(response: dapr::WorkflowResponse) -> Completion {
    let dapr::WorkflowResponse {
        instance_id,
        actions: fork_actions,
        custom_status,
        completion_token,
        num_events_processed,
        version,
    } = response;
    let mut actions = Vec::with_capacity(fork_actions.len());
    let mut unsupported = None;
    for action in fork_actions {
        match convert(action) {
            Ok(a) => actions.push(a),
            Err(NotApplied::VersionNotAvailable) => {
                return Completion::Abandon { completion_token }
            }
            Err(NotApplied::Unsupported(why)) => unsupported = unsupported.or(Some(why)),
        }
    }
    // Patches must be replayed from history (Dapr stores them in the episode's
    // OrchestratorStarted event): without them `is_patched` answers true on first run
    // and false on replay, so the workflow would silently take the other branch.
    // `version.name` (the orchestrator version that ran) is dropped: replays use the
    // worker's current version, as they would after a restart without it.
    if version.is_some_and(|v| !v.patches.is_empty()) {
        unsupported = Some(
            "workflow patching (is_patched): the patches a workflow applied are stored in \
             Dapr's OrchestratorStarted history event, which this sidecar does not keep, so \
             replays could not take the same branch"
                .into(),
        );
    }
    if let Some(why) = unsupported {
        actions = vec![fail(why)];
    }
    Completion::Apply(pb::OrchestratorResponse {
        instance_id,
        actions,
        custom_status,
        completion_token,
        num_events_processed,
        ..Default::default()
    })
}

/// Why a fork action has no upstream equivalent.
enum NotApplied {
    VersionNotAvailable,
    Unsupported(String),
}

/// One action. `router` (cross-app routing) is dropped: any connected worker runs
/// everything.
fn convert(action: dapr::WorkflowAction) -> Result<pb::OrchestratorAction, NotApplied> {
    let kind = match action.workflow_action_type {
        None => None, // the engine rejects it with its usual message
        Some(Fork::ScheduleTask(t)) => Some(Action::ScheduleTask(pb::ScheduleTaskAction {
            name: t.name,
            version: t.version,
            input: t.input,
            tags: if t.task_execution_id.is_empty() {
                Default::default()
            } else {
                [(TASK_EXECUTION_ID_TAG.to_string(), t.task_execution_id)].into()
            },
            parent_trace_context: None,
        })),
        Some(Fork::CreateChildWorkflow(c)) => Some(Action::CreateSubOrchestration(
            pb::CreateSubOrchestrationAction {
                instance_id: c.instance_id,
                name: c.name,
                version: c.version,
                input: c.input,
                ..Default::default()
            },
        )),
        // The timer's name is not kept: upstream's TimerCreatedEvent has no field for it.
        Some(Fork::CreateTimer(t)) => Some(Action::CreateTimer(pb::CreateTimerAction {
            fire_at: t.fire_at,
        })),
        Some(Fork::SendEvent(e)) => Some(Action::SendEvent(e)),
        Some(Fork::CompleteWorkflow(c)) => Some(Action::CompleteOrchestration(c)),
        Some(Fork::TerminateWorkflow(t)) => Some(Action::TerminateOrchestration(t)),
        Some(Fork::SendEntityMessage(m)) => Some(Action::SendEntityMessage(m)),
        Some(Fork::WorkflowVersionNotAvailable(_)) => return Err(NotApplied::VersionNotAvailable),
        Some(Fork::CreateDetachedWorkflow(d)) => {
            return Err(NotApplied::Unsupported(format!(
                "detached workflows (createDetachedWorkflow '{}' as '{}'): the engine has no \
                 action that starts an unrelated instance within an episode's commit",
                d.name, d.instance_id
            )))
        }
    };
    Ok(pb::OrchestratorAction {
        id: action.id,
        orchestrator_action_type: kind,
    })
}

fn fail(why: String) -> pb::OrchestratorAction {
    pb::OrchestratorAction {
        id: -1,
        orchestrator_action_type: Some(Action::CompleteOrchestration(
            pb::CompleteOrchestrationAction {
                orchestration_status: pb::OrchestrationStatus::Failed as i32,
                failure_details: Some(pb::TaskFailureDetails {
                    error_type: UNSUPPORTED_ERROR_TYPE.into(),
                    error_message: format!("not supported by this sidecar: {why}"),
                    is_non_retriable: true,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(actions: Vec<dapr::WorkflowAction>) -> dapr::WorkflowResponse {
        dapr::WorkflowResponse {
            instance_id: "wf".into(),
            actions,
            custom_status: Some("\"busy\"".into()),
            completion_token: "O7".into(),
            num_events_processed: None,
            version: None,
        }
    }

    fn action(id: i32, kind: Fork) -> dapr::WorkflowAction {
        dapr::WorkflowAction {
            id,
            workflow_action_type: Some(kind),
            router: Some(dapr::TaskRouter {
                source_app_id: "app".into(),
                target_app_id: Some("other".into()),
                target_app_namespace: None,
            }),
        }
    }

    fn applied(c: Completion) -> pb::OrchestratorResponse {
        match c {
            Completion::Apply(r) => r,
            other => panic!("expected Apply, got {other:?}"),
        }
    }

    #[test]
    fn actions_keep_their_meaning_and_drop_routing() {
        let task = Fork::ScheduleTask(dapr::ScheduleTaskAction {
            name: "greet".into(),
            version: None,
            input: Some("\"x\"".into()),
            router: Some(dapr::TaskRouter::default()),
            task_execution_id: "guid-1".into(),
        });
        let child = Fork::CreateChildWorkflow(dapr::CreateChildWorkflowAction {
            instance_id: "wf:0001".into(),
            name: "child".into(),
            version: None,
            input: None,
            router: Some(dapr::TaskRouter::default()),
        });
        let timer = Fork::CreateTimer(dapr::CreateTimerAction {
            fire_at: Some(prost_types::Timestamp {
                seconds: 5,
                nanos: 0,
            }),
            name: Some("nap".into()),
        });
        let r = applied(from_fork(response(vec![
            action(0, task),
            action(1, child),
            action(2, timer),
        ])));
        assert_eq!(r.instance_id, "wf");
        assert_eq!(r.completion_token, "O7");
        assert_eq!(r.custom_status.as_deref(), Some("\"busy\""));
        assert!(r.orchestration_trace_context.is_none());
        let [a, b, c] = r.actions.as_slice() else {
            panic!("three actions expected: {:?}", r.actions)
        };
        let Some(Action::ScheduleTask(t)) = &a.orchestrator_action_type else {
            panic!("{a:?}")
        };
        assert_eq!((a.id, t.name.as_str()), (0, "greet"));
        assert_eq!(
            t.tags.get(TASK_EXECUTION_ID_TAG).map(String::as_str),
            Some("guid-1")
        );
        assert!(t.parent_trace_context.is_none());
        let Some(Action::CreateSubOrchestration(s)) = &b.orchestrator_action_type else {
            panic!("{b:?}")
        };
        assert_eq!(
            (s.instance_id.as_str(), s.name.as_str()),
            ("wf:0001", "child")
        );
        assert!(s.parent_trace_context.is_none() && s.tags.is_empty());
        let Some(Action::CreateTimer(t)) = &c.orchestrator_action_type else {
            panic!("{c:?}")
        };
        assert_eq!(t.fire_at.map(|f| f.seconds), Some(5));
    }

    #[test]
    fn version_not_available_hands_the_work_item_back() {
        let stalled = Fork::WorkflowVersionNotAvailable(dapr::WorkflowVersionNotAvailableAction {});
        match from_fork(response(vec![action(0, stalled)])) {
            Completion::Abandon { completion_token } => assert_eq!(completion_token, "O7"),
            other => panic!("expected Abandon, got {other:?}"),
        }
    }

    #[test]
    fn patches_and_detached_workflows_fail_the_workflow_with_a_reason() {
        let mut patched = response(vec![action(
            0,
            Fork::CreateTimer(dapr::CreateTimerAction::default()),
        )]);
        patched.version = Some(dapr::WorkflowVersion {
            patches: vec!["p1".into()],
            name: Some("v1".into()),
        });
        let detached = response(vec![action(
            3,
            Fork::CreateDetachedWorkflow(dapr::CreateDetachedWorkflowAction {
                instance_id: "d1".into(),
                name: "other".into(),
            }),
        )]);
        for (r, needle) in [(patched, "is_patched"), (detached, "detached")] {
            let r = applied(from_fork(r));
            let [only] = r.actions.as_slice() else {
                panic!("{:?}", r.actions)
            };
            let Some(Action::CompleteOrchestration(done)) = &only.orchestrator_action_type else {
                panic!("{only:?}")
            };
            assert_eq!(
                done.orchestration_status,
                pb::OrchestrationStatus::Failed as i32
            );
            let failure = done.failure_details.as_ref().unwrap();
            assert_eq!(failure.error_type, UNSUPPORTED_ERROR_TYPE);
            assert!(failure.error_message.contains(needle), "{failure:?}");
        }
    }

    #[test]
    fn a_version_name_alone_is_accepted() {
        let mut r = response(vec![]);
        r.version = Some(dapr::WorkflowVersion {
            patches: vec![],
            name: Some("v2".into()),
        });
        assert!(applied(from_fork(r)).actions.is_empty());
    }
}
