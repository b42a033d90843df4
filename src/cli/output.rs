//! Rendering: the JSON documents scripts read (`--output json`; field names are part of the
//! interface, see README "Command-line tool") and the tables people read.
//!
//! Payloads (inputs, outputs, custom status, event data, entity state) are JSON text on the
//! wire; in JSON output they appear as JSON values (a payload that is not valid JSON
//! appears as a string), in tables as their JSON text.

use std::io::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::{CliError, OutputFormat};
use crate::proto as pb;

/// Prints results on stdout in the chosen format.
#[derive(Debug, Clone, Copy)]
pub(super) struct Printer {
    format: OutputFormat,
}

impl Printer {
    pub(super) fn new(format: OutputFormat) -> Self {
        Self { format }
    }

    pub(super) fn json(self) -> bool {
        self.format == OutputFormat::Json
    }

    /// One result: `doc` in JSON mode, else `text` as is.
    pub(super) fn one(self, doc: &Value, text: &str) -> Result<(), CliError> {
        if self.json() {
            let pretty = serde_json::to_string_pretty(doc).unwrap_or_else(|_| doc.to_string());
            write_out(&format!("{pretty}\n"))
        } else {
            write_out(&format!("{text}\n"))
        }
    }

    /// `health`'s result.
    pub(super) fn health(self, status: &str) -> Result<(), CliError> {
        self.one(&json!({ "status": status }), status)
    }
}

/// Writes to stdout, reporting a closed pipe as an error instead of panicking.
pub(super) fn write_out(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Aligned `label  value` lines.
pub(super) fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    rows.iter()
        .map(|(k, v)| {
            format!("{:<width$} {v}", format!("{k}:"))
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Columns padded to their widest cell, with a header row.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(headers.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

/// A page's table, followed by how to ask for the next page when there is one.
pub(super) fn paged(table: String, token: Option<&str>) -> String {
    match token {
        Some(token) => format!("{table}\n\nMore: --continuation-token '{token}'"),
        None => table,
    }
}

/// A timestamp as RFC 3339 UTC with milliseconds; empty when absent.
pub(super) fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn time_json(t: Option<&prost_types::Timestamp>) -> Value {
    match time(t) {
        s if s.is_empty() => Value::Null,
        s => Value::String(s),
    }
}

/// A payload as a JSON value: parsed when it is JSON, else the raw string; null if absent.
pub(super) fn payload(p: Option<&String>) -> Value {
    match p {
        None => Value::Null,
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
    }
}

/// A payload as table text (its JSON text; empty if absent).
fn payload_text(p: Option<&String>) -> String {
    p.cloned().unwrap_or_default()
}

/// The Durable Functions spelling of a status (`Running`, `ContinuedAsNew`, ...).
pub(super) fn status_name(status: i32) -> &'static str {
    use pb::OrchestrationStatus as S;
    match S::try_from(status) {
        Ok(S::Running) => "Running",
        Ok(S::Completed) => "Completed",
        Ok(S::ContinuedAsNew) => "ContinuedAsNew",
        Ok(S::Failed) => "Failed",
        Ok(S::Canceled) => "Canceled",
        Ok(S::Terminated) => "Terminated",
        Ok(S::Pending) => "Pending",
        Ok(S::Suspended) => "Suspended",
        Err(_) => "Unknown",
    }
}

fn failure_json(f: &pb::TaskFailureDetails) -> Value {
    let mut doc = json!({
        "errorType": f.error_type,
        "errorMessage": f.error_message,
        "stackTrace": f.stack_trace,
    });
    if let Some(inner) = &f.inner_failure {
        doc["innerFailure"] = failure_json(inner);
    }
    doc
}

fn failure_text(f: &pb::TaskFailureDetails) -> String {
    format!("{}: {}", f.error_type, f.error_message)
}

/// What `get-runtime-status` and `wait` show of an instance.
#[derive(Debug, Clone, Copy)]
pub(super) struct Show {
    pub(super) input: bool,
    pub(super) output: bool,
}

/// An instance's status document: `instanceId`, `name`, `runtimeStatus`, `createdTime`,
/// `lastUpdatedTime`, `customStatus`, `executionId`, `version`, `parentInstanceId`,
/// `failureDetails` (null unless failed), and `input` / `output` when asked for.
pub(super) fn instance_json(s: &pb::OrchestrationState, show: Show) -> Value {
    let mut doc = json!({
        "instanceId": s.instance_id,
        "name": s.name,
        "runtimeStatus": status_name(s.orchestration_status),
        "createdTime": time_json(s.created_timestamp.as_ref()),
        "lastUpdatedTime": time_json(s.last_updated_timestamp.as_ref()),
        "customStatus": payload(s.custom_status.as_ref()),
        "executionId": s.execution_id,
        "version": s.version,
        "parentInstanceId": s.parent_instance_id,
        "failureDetails": s.failure_details.as_ref().map(failure_json),
    });
    if show.input {
        doc["input"] = payload(s.input.as_ref());
    }
    if show.output {
        doc["output"] = payload(s.output.as_ref());
    }
    doc
}

/// An instance as `label: value` lines.
pub(super) fn instance_text(s: &pb::OrchestrationState, show: Show) -> String {
    let mut rows = vec![
        ("Instance ID", s.instance_id.clone()),
        ("Name", s.name.clone()),
        (
            "Runtime status",
            status_name(s.orchestration_status).to_owned(),
        ),
        ("Created", time(s.created_timestamp.as_ref())),
        ("Last updated", time(s.last_updated_timestamp.as_ref())),
    ];
    if let Some(c) = &s.custom_status {
        rows.push(("Custom status", c.clone()));
    }
    if show.input {
        rows.push(("Input", payload_text(s.input.as_ref())));
    }
    if show.output {
        rows.push(("Output", payload_text(s.output.as_ref())));
    }
    if let Some(f) = &s.failure_details {
        rows.push(("Failure", failure_text(f)));
    }
    fields(&rows)
}

/// Headers of the instance list.
pub(super) const INSTANCE_HEADERS: [&str; 5] =
    ["INSTANCE ID", "NAME", "STATUS", "CREATED", "LAST UPDATED"];

/// An instance as a row of the instance list.
pub(super) fn instance_row(s: &pb::OrchestrationState) -> Vec<String> {
    vec![
        s.instance_id.clone(),
        s.name.clone(),
        status_name(s.orchestration_status).to_owned(),
        time(s.created_timestamp.as_ref()),
        time(s.last_updated_timestamp.as_ref()),
    ]
}

/// A history event: `eventId`, `eventType` (the proto's event name in PascalCase,
/// e.g. `TaskCompleted`), `timestamp`, then the event's own fields in camelCase
/// (`name`, `input`, `result`, `taskScheduledId`, `fireAt`, `failureDetails`, ...).
pub(super) fn event_json(e: &pb::HistoryEvent) -> Value {
    let (kind, details) = event_details(e);
    let mut doc = Map::new();
    doc.insert("eventId".into(), json!(e.event_id));
    doc.insert("eventType".into(), json!(kind));
    doc.insert("timestamp".into(), time_json(e.timestamp.as_ref()));
    doc.extend(details);
    Value::Object(doc)
}

/// A history event as a table row: event id, timestamp, type, `key=value` details.
pub(super) fn event_row(e: &pb::HistoryEvent) -> Vec<String> {
    let (kind, details) = event_details(e);
    let details = details
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            // Payloads keep their JSON spelling; names and ids read better bare.
            Value::String(s) if !PAYLOAD_KEYS.contains(&k.as_str()) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        e.event_id.to_string(),
        time(e.timestamp.as_ref()),
        kind.to_owned(),
        details,
    ]
}

/// Event fields that hold payloads.
const PAYLOAD_KEYS: [&str; 4] = ["input", "output", "result", "data"];

/// Headers of the history table.
pub(super) const EVENT_HEADERS: [&str; 4] = ["ID", "TIMESTAMP", "TYPE", "DETAILS"];

/// The event's type name and its fields worth showing.
fn event_details(e: &pb::HistoryEvent) -> (&'static str, Map<String, Value>) {
    use pb::history_event::EventType as E;
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    let kind = match &e.event_type {
        None => "Unknown",
        Some(E::ExecutionStarted(x)) => {
            put("name", json!(x.name));
            put("version", json!(x.version));
            put("input", payload(x.input.as_ref()));
            put(
                "executionId",
                json!(x
                    .orchestration_instance
                    .as_ref()
                    .and_then(|i| i.execution_id.clone())),
            );
            put(
                "parentInstanceId",
                json!(x
                    .parent_instance
                    .as_ref()
                    .and_then(|p| p.orchestration_instance.as_ref())
                    .map(|i| i.instance_id.clone())),
            );
            put(
                "scheduledStartTime",
                time_json(x.scheduled_start_timestamp.as_ref()),
            );
            "ExecutionStarted"
        }
        Some(E::ExecutionCompleted(x)) => {
            put(
                "orchestrationStatus",
                json!(status_name(x.orchestration_status)),
            );
            put("result", payload(x.result.as_ref()));
            put(
                "failureDetails",
                json!(x.failure_details.as_ref().map(failure_json)),
            );
            "ExecutionCompleted"
        }
        Some(E::ExecutionTerminated(x)) => {
            put("input", payload(x.input.as_ref()));
            "ExecutionTerminated"
        }
        Some(E::TaskScheduled(x)) => {
            put("name", json!(x.name));
            put("input", payload(x.input.as_ref()));
            "TaskScheduled"
        }
        Some(E::TaskCompleted(x)) => {
            put("taskScheduledId", json!(x.task_scheduled_id));
            put("result", payload(x.result.as_ref()));
            "TaskCompleted"
        }
        Some(E::TaskFailed(x)) => {
            put("taskScheduledId", json!(x.task_scheduled_id));
            put(
                "failureDetails",
                json!(x.failure_details.as_ref().map(failure_json)),
            );
            "TaskFailed"
        }
        Some(E::SubOrchestrationInstanceCreated(x)) => {
            put("instanceId", json!(x.instance_id));
            put("name", json!(x.name));
            put("input", payload(x.input.as_ref()));
            "SubOrchestrationInstanceCreated"
        }
        Some(E::SubOrchestrationInstanceCompleted(x)) => {
            put("taskScheduledId", json!(x.task_scheduled_id));
            put("result", payload(x.result.as_ref()));
            "SubOrchestrationInstanceCompleted"
        }
        Some(E::SubOrchestrationInstanceFailed(x)) => {
            put("taskScheduledId", json!(x.task_scheduled_id));
            put(
                "failureDetails",
                json!(x.failure_details.as_ref().map(failure_json)),
            );
            "SubOrchestrationInstanceFailed"
        }
        Some(E::TimerCreated(x)) => {
            put("fireAt", time_json(x.fire_at.as_ref()));
            "TimerCreated"
        }
        Some(E::TimerFired(x)) => {
            put("fireAt", time_json(x.fire_at.as_ref()));
            put("timerId", json!(x.timer_id));
            "TimerFired"
        }
        Some(E::OrchestratorStarted(_)) => "OrchestratorStarted",
        Some(E::OrchestratorCompleted(_)) => "OrchestratorCompleted",
        Some(E::EventSent(x)) => {
            put("instanceId", json!(x.instance_id));
            put("name", json!(x.name));
            put("input", payload(x.input.as_ref()));
            "EventSent"
        }
        Some(E::EventRaised(x)) => {
            put("name", json!(x.name));
            put("input", payload(x.input.as_ref()));
            "EventRaised"
        }
        Some(E::GenericEvent(x)) => {
            put("data", payload(x.data.as_ref()));
            "GenericEvent"
        }
        Some(E::HistoryState(_)) => "HistoryState",
        Some(E::ContinueAsNew(x)) => {
            put("input", payload(x.input.as_ref()));
            "ContinueAsNew"
        }
        Some(E::ExecutionSuspended(x)) => {
            put("reason", json!(x.input));
            "ExecutionSuspended"
        }
        Some(E::ExecutionResumed(x)) => {
            put("reason", json!(x.input));
            "ExecutionResumed"
        }
        Some(E::EntityOperationSignaled(x)) => {
            put("requestId", json!(x.request_id));
            put("operation", json!(x.operation));
            put("targetInstanceId", json!(x.target_instance_id));
            put("input", payload(x.input.as_ref()));
            "EntityOperationSignaled"
        }
        Some(E::EntityOperationCalled(x)) => {
            put("requestId", json!(x.request_id));
            put("operation", json!(x.operation));
            put("targetInstanceId", json!(x.target_instance_id));
            put("input", payload(x.input.as_ref()));
            "EntityOperationCalled"
        }
        Some(E::EntityOperationCompleted(x)) => {
            put("requestId", json!(x.request_id));
            put("output", payload(x.output.as_ref()));
            "EntityOperationCompleted"
        }
        Some(E::EntityOperationFailed(x)) => {
            put("requestId", json!(x.request_id));
            put(
                "failureDetails",
                json!(x.failure_details.as_ref().map(failure_json)),
            );
            "EntityOperationFailed"
        }
        Some(E::EntityLockRequested(x)) => {
            put("criticalSectionId", json!(x.critical_section_id));
            put("lockSet", json!(x.lock_set));
            "EntityLockRequested"
        }
        Some(E::EntityLockGranted(x)) => {
            put("criticalSectionId", json!(x.critical_section_id));
            "EntityLockGranted"
        }
        Some(E::EntityUnlockSent(x)) => {
            put("criticalSectionId", json!(x.critical_section_id));
            put("targetInstanceId", json!(x.target_instance_id));
            "EntityUnlockSent"
        }
        Some(E::ExecutionRewound(x)) => {
            put("reason", json!(x.reason));
            "ExecutionRewound"
        }
    };
    (kind, m)
}

/// An entity's document: `entityId`, `name`, `key`, `lastModifiedTime`, `backlogQueueSize`,
/// `lockedBy`, and `state` when it was fetched.
pub(super) fn entity_json(e: &pb::EntityMetadata, with_state: bool) -> Value {
    let (name, key) = entity_parts(&e.instance_id);
    let mut doc = json!({
        "entityId": e.instance_id,
        "name": name,
        "key": key,
        "lastModifiedTime": time_json(e.last_modified_time.as_ref()),
        "backlogQueueSize": e.backlog_queue_size,
        "lockedBy": e.locked_by,
    });
    if with_state {
        doc["state"] = payload(e.serialized_state.as_ref());
    }
    doc
}

/// Headers of the entity list (the state column only with `--show-state`).
pub(super) const ENTITY_HEADERS: [&str; 5] = [
    "ENTITY ID",
    "LAST MODIFIED",
    "BACKLOG",
    "LOCKED BY",
    "STATE",
];

/// An entity as a row of the entity list.
pub(super) fn entity_row(e: &pb::EntityMetadata, with_state: bool) -> Vec<String> {
    let mut row = vec![
        e.instance_id.clone(),
        time(e.last_modified_time.as_ref()),
        e.backlog_queue_size.to_string(),
        e.locked_by.clone().unwrap_or_default(),
    ];
    if with_state {
        row.push(payload_text(e.serialized_state.as_ref()));
    }
    row
}

/// An entity as `label: value` lines.
pub(super) fn entity_text(e: &pb::EntityMetadata) -> String {
    fields(&[
        ("Entity ID", e.instance_id.clone()),
        ("Last modified", time(e.last_modified_time.as_ref())),
        ("Backlog", e.backlog_queue_size.to_string()),
        ("Locked by", e.locked_by.clone().unwrap_or_default()),
        ("State", payload_text(e.serialized_state.as_ref())),
    ])
}

/// `@name@key` split into name and key (the key may contain `@`).
fn entity_parts(id: &str) -> (&str, &str) {
    id.strip_prefix('@')
        .and_then(|rest| rest.split_once('@'))
        .unwrap_or((id, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "BB"], &[vec!["long cell".into(), "x".into()]]);
        assert_eq!(t, "A          BB\nlong cell  x");
        assert_eq!(
            fields(&[("Id", "1".into()), ("Name", String::new())]),
            "Id:   1\nName:"
        );
    }

    #[test]
    fn payloads_parse_when_json() {
        assert_eq!(payload(Some(&"{\"a\":1}".to_owned())), json!({"a": 1}));
        assert_eq!(payload(Some(&"not json".to_owned())), json!("not json"));
        assert_eq!(payload(None), Value::Null);
    }

    #[test]
    fn entity_ids_split_at_the_second_at() {
        assert_eq!(entity_parts("@counter@a@b"), ("counter", "a@b"));
        assert_eq!(entity_parts("plain"), ("plain", ""));
    }
}
