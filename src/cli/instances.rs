//! Orchestration instance commands: start, inspect, list, signal, control, wait, purge.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::connect::{client, CliError, Client};
use super::output::{self, Printer, Show};
use super::{
    Exit, GetInstances, GetRuntimeStatus, InstanceFilter, Payload, Plain, PurgeHistory, RaiseEvent,
    Restart, RuntimeStatus, StartNew, Wait, WithReason,
};
use crate::proto as pb;

/// Longest single `WaitForInstanceCompletion` call; `wait` without `--timeout` makes as
/// many as it takes, so no server-side cap or proxy idle timeout ends it early.
const WAIT_SLICE: Duration = Duration::from_secs(60);

/// `start-new`.
pub(super) async fn start_new(args: StartNew) -> Result<Exit, CliError> {
    let input = Payload::resolve_opt(args.input.as_ref(), "--input")?;
    let mut c = client(&args.client).await?;
    let id = c
        .start_instance(pb::CreateInstanceRequest {
            instance_id: args.id.unwrap_or_default(),
            name: args.function_name.clone(),
            input,
            ..Default::default()
        })
        .await
        .map_err(|s| CliError::rpc("StartInstance", s))?
        .into_inner()
        .instance_id;
    Printer::new(args.client.output).one(
        &json!({ "instanceId": id, "name": args.function_name }),
        &format!("Started {} with instance id {id}", args.function_name),
    )?;
    Ok(Exit::Success)
}

/// The instance's state, or `NotFound` when the server does not know it.
pub(super) async fn instance(
    c: &mut Client,
    id: &str,
    payloads: bool,
) -> Result<pb::OrchestrationState, CliError> {
    let r = c
        .get_instance(pb::GetInstanceRequest {
            instance_id: id.to_owned(),
            get_inputs_and_outputs: payloads,
        })
        .await
        .map_err(|s| CliError::rpc("GetInstance", s))?
        .into_inner();
    match r.orchestration_state {
        Some(state) if r.exists => Ok(state),
        _ => Err(not_found(id)),
    }
}

fn not_found(id: &str) -> CliError {
    CliError::NotFound(format!("no instance with id '{id}'"))
}

/// `get-runtime-status`.
pub(super) async fn get_runtime_status(args: GetRuntimeStatus) -> Result<Exit, CliError> {
    let mut c = client(&args.client).await?;
    let show = Show {
        input: args.show_input,
        output: args.show_output,
    };
    let state = instance(&mut c, &args.id, args.show_input || args.show_output).await?;
    Printer::new(args.client.output).one(
        &output::instance_json(&state, show),
        &output::instance_text(&state, show),
    )?;
    Ok(Exit::Success)
}

/// `get-instances`: one page; the continuation token, if any, leads to the next.
pub(super) async fn get_instances(args: GetInstances) -> Result<Exit, CliError> {
    let mut c = client(&args.client).await?;
    let page = c
        .query_instances(pb::QueryInstancesRequest {
            query: Some(pb::InstanceQuery {
                runtime_status: statuses(&args.filter),
                created_time_from: args.filter.created_after.map(|t| t.timestamp()),
                created_time_to: args.filter.created_before.map(|t| t.timestamp()),
                max_instance_count: args.top.map(i32::from).unwrap_or(0),
                continuation_token: args.continuation_token.clone(),
                ..Default::default()
            }),
        })
        .await
        .map_err(|s| CliError::rpc("QueryInstances", s))?
        .into_inner();
    let none = Show {
        input: false,
        output: false,
    };
    let doc = json!({
        "instances": page
            .orchestration_state
            .iter()
            .map(|s| output::instance_json(s, none))
            .collect::<Vec<_>>(),
        "continuationToken": page.continuation_token,
    });
    let rows: Vec<_> = page
        .orchestration_state
        .iter()
        .map(output::instance_row)
        .collect();
    let text = output::paged(
        output::table(&output::INSTANCE_HEADERS, &rows),
        page.continuation_token.as_deref(),
    );
    Printer::new(args.client.output).one(&doc, &text)?;
    Ok(Exit::Success)
}

fn statuses(filter: &InstanceFilter) -> Vec<i32> {
    use pb::OrchestrationStatus as S;
    filter
        .runtime_status
        .iter()
        .map(|s| match s {
            RuntimeStatus::Running => S::Running,
            RuntimeStatus::Completed => S::Completed,
            RuntimeStatus::ContinuedAsNew => S::ContinuedAsNew,
            RuntimeStatus::Failed => S::Failed,
            RuntimeStatus::Canceled => S::Canceled,
            RuntimeStatus::Terminated => S::Terminated,
            RuntimeStatus::Pending => S::Pending,
            RuntimeStatus::Suspended => S::Suspended,
        } as i32)
        .collect()
}

/// `raise-event`.
pub(super) async fn raise_event(args: RaiseEvent) -> Result<Exit, CliError> {
    let input = Payload::resolve_opt(args.event_data.as_ref(), "--event-data")?;
    let mut c = client(&args.client).await?;
    c.raise_event(pb::RaiseEventRequest {
        instance_id: args.id.clone(),
        name: args.event_name.clone(),
        input,
    })
    .await
    .map_err(|s| CliError::rpc("RaiseEvent", s))?;
    Printer::new(args.client.output).one(
        &json!({ "instanceId": args.id, "eventName": args.event_name }),
        &format!("Raised event {} on instance {}", args.event_name, args.id),
    )?;
    Ok(Exit::Success)
}

/// The four commands that take an id and a reason.
#[derive(Debug, Clone, Copy)]
enum Control {
    Terminate,
    Rewind,
    Suspend,
    Resume,
}

pub(super) async fn terminate(args: WithReason) -> Result<Exit, CliError> {
    control(Control::Terminate, args).await
}

pub(super) async fn rewind(args: WithReason) -> Result<Exit, CliError> {
    control(Control::Rewind, args).await
}

pub(super) async fn suspend(args: WithReason) -> Result<Exit, CliError> {
    control(Control::Suspend, args).await
}

pub(super) async fn resume(args: WithReason) -> Result<Exit, CliError> {
    control(Control::Resume, args).await
}

async fn control(what: Control, args: WithReason) -> Result<Exit, CliError> {
    let mut c = client(&args.client).await?;
    let id = args.id.clone();
    let reason = args.reason.clone();
    let (rpc, result, done) = match what {
        // The reason becomes the instance's output, which SDKs read as JSON.
        Control::Terminate => (
            "TerminateInstance",
            c.terminate_instance(pb::TerminateRequest {
                instance_id: id.clone(),
                output: reason.map(|r| serde_json::Value::String(r).to_string()),
                recursive: false,
            })
            .await
            .map(drop),
            "terminated",
        ),
        Control::Rewind => (
            "RewindInstance",
            c.rewind_instance(pb::RewindInstanceRequest {
                instance_id: id.clone(),
                reason,
            })
            .await
            .map(drop),
            "rewound",
        ),
        Control::Suspend => (
            "SuspendInstance",
            c.suspend_instance(pb::SuspendRequest {
                instance_id: id.clone(),
                reason,
            })
            .await
            .map(drop),
            "suspended",
        ),
        Control::Resume => (
            "ResumeInstance",
            c.resume_instance(pb::ResumeRequest {
                instance_id: id.clone(),
                reason,
            })
            .await
            .map(drop),
            "resumed",
        ),
    };
    result.map_err(|s| CliError::rpc(rpc, s))?;
    Printer::new(args.client.output).one(
        &json!({ "instanceId": id, "action": done }),
        &format!("Instance {id} {done}"),
    )?;
    Ok(Exit::Success)
}

/// `restart`.
pub(super) async fn restart(args: Restart) -> Result<Exit, CliError> {
    let mut c = client(&args.client).await?;
    let new_id = c
        .restart_instance(pb::RestartInstanceRequest {
            instance_id: args.id.clone(),
            restart_with_new_instance_id: args.new_instance_id,
        })
        .await
        .map_err(|s| CliError::rpc("RestartInstance", s))?
        .into_inner()
        .instance_id;
    Printer::new(args.client.output).one(
        &json!({ "instanceId": new_id, "restartedFrom": args.id }),
        &format!("Restarted instance {} as {new_id}", args.id),
    )?;
    Ok(Exit::Success)
}

/// `wait`: blocks until the instance ends (woken by the server's commit, not by polling),
/// prints its final status and turns it into the exit status.
pub(super) async fn wait(args: Wait) -> Result<Exit, CliError> {
    let mut c = client(&args.client).await?;
    let printer = Printer::new(args.client.output);
    let show = Show {
        input: false,
        output: args.show_output,
    };
    let give_up = args.timeout.map(|t| Instant::now() + t.0);
    loop {
        let slice = match give_up {
            Some(at) => at.saturating_duration_since(Instant::now()).min(WAIT_SLICE),
            None => WAIT_SLICE,
        };
        if slice.is_zero() {
            let state = instance(&mut c, &args.id, false).await?;
            eprintln!(
                "durabletask-sidecar: error: instance {} did not end within {:?} (it is {})",
                args.id,
                args.timeout.map(|t| t.0).unwrap_or_default(),
                output::status_name(state.orchestration_status)
            );
            return Ok(Exit::Timeout);
        }
        let mut request = tonic::Request::new(pb::GetInstanceRequest {
            instance_id: args.id.clone(),
            get_inputs_and_outputs: args.show_output,
        });
        request.set_timeout(slice);
        // The client-side bound covers a server that ignores `grpc-timeout`.
        let answer = tokio::time::timeout(slice, c.wait_for_instance_completion(request)).await;
        let r = match answer {
            Err(_) => continue,
            // The server's DEADLINE_EXCEEDED, or tonic's own CANCELLED when its client-side
            // timer for the same deadline fires first: the slice is over either way.
            Ok(Err(status)) if slice_over(&status) => continue,
            Ok(Err(status)) => return Err(CliError::rpc("WaitForInstanceCompletion", status)),
            Ok(Ok(r)) => r.into_inner(),
        };
        let state = match r.orchestration_state {
            Some(state) if r.exists => state,
            _ => return Err(not_found(&args.id)),
        };
        printer.one(
            &output::instance_json(&state, show),
            &output::instance_text(&state, show),
        )?;
        use pb::OrchestrationStatus as S;
        return Ok(match S::try_from(state.orchestration_status) {
            Ok(S::Completed) => Exit::Success,
            Ok(S::Failed) => Exit::Failed,
            Ok(S::Terminated | S::Canceled) => Exit::Terminated,
            _ => Exit::Error,
        });
    }
}

/// Whether a deadline-bound wait ended because its deadline passed.
pub(super) fn slice_over(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    )
}

/// `purge-history`: one instance by `--id`, or every ended instance the filters match, in
/// rounds of `--round` (a second), with progress on stderr.
pub(super) async fn purge_history(args: PurgeHistory) -> Result<Exit, CliError> {
    let mut c = client(&args.client).await?;
    let printer = Printer::new(args.client.output);
    let deleted = match &args.id {
        Some(id) => {
            let r = c
                .purge_instances(pb::PurgeInstancesRequest {
                    request: Some(pb::purge_instances_request::Request::InstanceId(id.clone())),
                    recursive: false,
                    is_orchestration: true,
                })
                .await
                .map_err(|s| CliError::rpc("PurgeInstances", s))?
                .into_inner();
            if r.deleted_instance_count == 0 {
                return Err(not_found(id));
            }
            i64::from(r.deleted_instance_count)
        }
        None => {
            purge_where(
                &mut c,
                &args.filter,
                args.round.0.max(Duration::from_millis(1)),
            )
            .await?
        }
    };
    printer.one(
        &json!({ "instancesDeleted": deleted }),
        &format!("Purged {deleted} instance(s)"),
    )?;
    Ok(Exit::Success)
}

async fn purge_where(
    c: &mut Client,
    filter: &InstanceFilter,
    first_round: Duration,
) -> Result<i64, CliError> {
    if filter.is_empty() {
        eprintln!("purge-history: no filter given: purging every ended instance");
    }
    let mut total = 0_i64;
    let mut round = first_round;
    loop {
        let r = c
            .purge_instances(pb::PurgeInstancesRequest {
                request: Some(pb::purge_instances_request::Request::PurgeInstanceFilter(
                    pb::PurgeInstanceFilter {
                        created_time_from: filter.created_after.map(|t| t.timestamp()),
                        created_time_to: filter.created_before.map(|t| t.timestamp()),
                        runtime_status: statuses(filter),
                        timeout: Some(prost_types::Duration {
                            seconds: i64::try_from(round.as_secs()).unwrap_or(i64::MAX),
                            nanos: i32::try_from(round.subsec_nanos()).unwrap_or(0),
                        }),
                    },
                )),
                recursive: false,
                is_orchestration: false,
            })
            .await
            .map_err(|s| CliError::rpc("PurgeInstances", s))?
            .into_inner();
        total += i64::from(r.deleted_instance_count);
        if r.is_complete.unwrap_or(true) {
            return Ok(total);
        }
        // A round that deleted nothing gets more time, so a slow store still progresses.
        if r.deleted_instance_count == 0 {
            round = (round * 2).min(WAIT_SLICE);
        }
        eprintln!("purge-history: {total} instance(s) purged so far, continuing");
    }
}

/// `delete-task-hub`.
pub(super) async fn delete_task_hub(args: Plain) -> Result<Exit, CliError> {
    let mut c = client(&args.client).await?;
    c.delete_task_hub(pb::DeleteTaskHubRequest {})
        .await
        .map_err(|s| CliError::rpc("DeleteTaskHub", s))?;
    Printer::new(args.client.output).one(
        &json!({ "taskHubDeleted": true }),
        "Task hub deleted: every instance, history and entity is gone",
    )?;
    Ok(Exit::Success)
}
