//! JSON and query strings ⇄ domain types: the Durable Functions shapes (status object,
//! management payload, history events, entity listings), its status names and time
//! format, and request parameters parsed with messages that name what was wrong.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::{invalid, ApiError};
use crate::domain::events::{from_timestamp, kind_name};
use crate::domain::{EntityRecord, InstanceRecord, RuntimeStatus};
use crate::proto as pb;
use crate::service::client::InstanceQuery;
use pb::history_event::EventType;

/// The request/response header that carries a query's continuation token.
pub(super) const CONTINUATION_HEADER: &str = "x-ms-continuation-token";

/// A query string, looked up by case-insensitive name (as ASP.NET's
/// `NameValueCollection` does); a repeated name keeps every value.
#[derive(Debug, Default)]
pub(super) struct Params(HashMap<String, Vec<String>>);

impl Params {
    pub(super) fn new(pairs: Vec<(String, String)>) -> Self {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in pairs {
            map.entry(k.to_ascii_lowercase()).or_default().push(v);
        }
        Self(map)
    }

    /// The first value of `name`.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// `true`/`false` (any case); absent = `default`.
    pub(super) fn flag(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(invalid(format!(
                "query parameter '{name}' must be true or false, got '{v}'"
            ))),
        }
    }

    /// An ISO 8601 time; without an offset it is taken as UTC.
    pub(super) fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.get(name).map(|v| parse_time(name, v)).transpose()
    }

    /// A non-negative integer (`top`).
    pub(super) fn count(&self, name: &str) -> Result<Option<u32>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<u32>().map_err(|_| {
                    invalid(format!(
                        "query parameter '{name}' must be a non-negative integer, got '{v}'"
                    ))
                })
            })
            .transpose()
    }

    /// A number of seconds, fractions allowed (`timeout`, `pollingInterval`).
    pub(super) fn seconds(&self, name: &str) -> Result<Option<Duration>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| {
                        invalid(format!(
                            "query parameter '{name}' must be a non-negative number of seconds, got '{v}'"
                        ))
                    })
            })
            .transpose()
    }

    /// `runtimeStatus=Running,Completed` (and/or repeated): Durable Functions names, any case.
    pub(super) fn statuses(&self, name: &str) -> Result<Vec<RuntimeStatus>, ApiError> {
        let Some(values) = self.0.get(&name.to_ascii_lowercase()) else {
            return Ok(Vec::new());
        };
        values
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| {
                parse_status(v).ok_or_else(|| {
                    invalid(format!(
                        "query parameter '{name}': unknown runtime status '{v}' (one of {})",
                        RuntimeStatus::ALL.map(status_name).join(", ")
                    ))
                })
            })
            .collect()
    }
}

/// The filters of the instance list (and of `instanceCounts`): `runtimeStatus`,
/// `createdTimeFrom`, `createdTimeTo`, `instanceIdPrefix`, `name` (exact) and
/// `order=asc|desc`; paging is the caller's.
pub(super) fn instance_query(params: &Params) -> Result<InstanceQuery, ApiError> {
    let newest_first = match params.get("order") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("asc") => false,
        Some(v) if v.eq_ignore_ascii_case("desc") => true,
        Some(v) => {
            return Err(invalid(format!(
                "query parameter 'order' must be asc or desc, got '{v}'"
            )))
        }
    };
    Ok(InstanceQuery {
        statuses: params.statuses("runtimeStatus")?,
        created_from: params.time("createdTimeFrom")?,
        created_to: params.time("createdTimeTo")?,
        id_prefix: params.get("instanceIdPrefix").map(Into::into),
        name: params.get("name").map(Into::into),
        newest_first,
        ..Default::default()
    })
}

/// `{"total": n, "byStatus": {"Running": n, …}}`, every status present.
pub(super) fn status_counts(counts: &[(RuntimeStatus, u64)]) -> Value {
    let by_status: Map<String, Value> = counts
        .iter()
        .map(|(s, n)| (status_name(*s).to_owned(), json!(n)))
        .collect();
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    json!({ "total": total, "byStatus": by_status })
}

/// The `x-ms-continuation-token` request header, if sent.
pub(super) fn continuation(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get(CONTINUATION_HEADER)
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| invalid(format!("header {CONTINUATION_HEADER} is not text")))
        })
        .transpose()
}

/// The Durable Functions name of a status (`OrchestrationRuntimeStatus`).
pub(super) fn status_name(s: RuntimeStatus) -> &'static str {
    match s {
        RuntimeStatus::Running => "Running",
        RuntimeStatus::Completed => "Completed",
        RuntimeStatus::ContinuedAsNew => "ContinuedAsNew",
        RuntimeStatus::Failed => "Failed",
        RuntimeStatus::Canceled => "Canceled",
        RuntimeStatus::Terminated => "Terminated",
        RuntimeStatus::Pending => "Pending",
        RuntimeStatus::Suspended => "Suspended",
    }
}

fn parse_status(name: &str) -> Option<RuntimeStatus> {
    RuntimeStatus::ALL
        .into_iter()
        .find(|s| status_name(*s).eq_ignore_ascii_case(name))
}

fn parse_time(name: &str, v: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(t.and_utc());
    }
    if let Some(t) = NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        return Ok(t.and_utc());
    }
    Err(invalid(format!(
        "query parameter '{name}' must be an ISO 8601 time such as 2026-01-31T12:00:00Z, got '{v}'"
    )))
}

/// Status-object times: whole seconds, UTC, `Z` (as Durable Functions writes them).
fn time_seconds(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// History and entity times: full precision, UTC, `Z`.
pub(super) fn time_precise(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A stored payload as JSON: SDKs store JSON text; anything else is shown as a string.
pub(super) fn payload(raw: Option<&str>) -> Value {
    match raw {
        None => Value::Null,
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into())),
    }
}

/// A request body that must be JSON: `None` when empty, else its text as sent.
pub(super) fn json_body(body: &[u8], what: &str) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text =
        std::str::from_utf8(body).map_err(|_| invalid(format!("{what} is not UTF-8 text")))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| invalid(format!("{what} is not valid JSON: {e}")))?;
    Ok(Some(text.to_string()))
}

/// A plain string as a JSON payload (a terminate reason becomes the output, which SDKs
/// read as JSON).
pub(super) fn json_string(text: &str) -> String {
    Value::String(text.into()).to_string()
}

/// The status object of `GET instances/{id}` and of each listed instance.
pub(super) fn status_object(
    r: &InstanceRecord,
    show_input: bool,
    history: Option<Vec<Value>>,
) -> Value {
    let output = match (&r.output, r.status, &r.failure) {
        (Some(out), _, _) => payload(Some(out)),
        // Durable Functions shows a failed instance's error message as its output.
        (None, RuntimeStatus::Failed, Some(f)) => Value::String(f.error_message.clone()),
        _ => Value::Null,
    };
    let mut o = json!({
        "name": r.name,
        "instanceId": r.instance_id.as_str(),
        "runtimeStatus": status_name(r.status),
        "input": if show_input { payload(r.input.as_deref()) } else { Value::Null },
        "customStatus": payload(r.custom_status.as_deref().filter(|s| !s.is_empty())),
        "output": output,
        "createdTime": time_seconds(r.created_at),
        "lastUpdatedTime": time_seconds(r.last_updated_at),
    });
    if let Some(map) = o.as_object_mut() {
        // Not in Durable Functions' status object: the dashboard links a child to its
        // parent and shows a failure's type, stack and inner failure.
        if let Some(parent) = &r.parent_instance_id {
            map.insert("parentInstanceId".into(), parent.as_str().into());
        }
        if let Some(f) = &r.failure {
            map.insert("failureDetails".into(), failure(f, false));
        }
        if let Some(events) = history {
            map.insert("historyEvents".into(), Value::Array(events));
        }
    }
    o
}

/// Percent-encodes one path segment (RFC 3986 unreserved characters pass).
pub(super) fn path_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The management URLs of one instance, absolute, under `base` (`http://host/...`).
pub(super) fn management_urls(base: &str, id: &str, task_hub: Option<&str>) -> ManagementUrls {
    let instance = format!("{base}/instances/{}", path_segment(id));
    // A non-default hub is named in every URL, as Durable Functions does.
    let url = |path: &str, query: Option<&str>| {
        let hub = task_hub.map(|hub| format!("taskHub={}", path_segment(hub)));
        let query: Vec<&str> = query.into_iter().chain(hub.as_deref()).collect();
        if query.is_empty() {
            format!("{instance}{path}")
        } else {
            format!("{instance}{path}?{}", query.join("&"))
        }
    };
    ManagementUrls {
        status: url("", None),
        payload: json!({
            "id": id,
            "statusQueryGetUri": url("", None),
            "sendEventPostUri": url("/raiseEvent/{eventName}", None),
            "terminatePostUri": url("/terminate", Some("reason={text}")),
            "purgeHistoryDeleteUri": url("", None),
            "rewindPostUri": url("/rewind", Some("reason={text}")),
            "suspendPostUri": url("/suspend", Some("reason={text}")),
            "resumePostUri": url("/resume", Some("reason={text}")),
            "restartPostUri": url("/restart", None),
        }),
    }
}

/// The check-status payload and its status URL (for `Location`).
#[derive(Debug)]
pub(super) struct ManagementUrls {
    pub(super) status: String,
    pub(super) payload: Value,
}

/// `historyEvents` in the Durable Functions shape: PascalCase fields, `EventType` and
/// `Timestamp` on each; the scheduling events (`TaskScheduled`,
/// `SubOrchestrationInstanceCreated`) folded into their completions (name and time moved
/// onto them) and the episode markers (`OrchestratorStarted`, `OrchestratorCompleted`)
/// left out. A scheduling event without a completion yet stays, with its `Name`, as the
/// extension's `DurableClient` leaves it: it is the work still in progress.
pub(super) fn history_events(
    events: &[pb::HistoryEvent],
    show_input: bool,
    show_output: bool,
) -> Vec<Value> {
    // Scheduling event id -> (name, time, child instance id for sub-orchestrations).
    let mut scheduled: HashMap<i32, (String, Option<String>, Option<String>)> = HashMap::new();
    for e in events {
        let at = e
            .timestamp
            .as_ref()
            .map(|t| time_precise(from_timestamp(t)));
        match &e.event_type {
            Some(EventType::TaskScheduled(t)) => {
                scheduled.insert(e.event_id, (t.name.clone(), at, None));
            }
            Some(EventType::SubOrchestrationInstanceCreated(s)) => {
                scheduled.insert(
                    e.event_id,
                    (s.name.clone(), at, Some(s.instance_id.clone())),
                );
            }
            _ => {}
        }
    }
    // Scheduling event ids whose completion is in the history.
    let finished: HashSet<i32> = events
        .iter()
        .filter_map(|e| match &e.event_type {
            Some(EventType::TaskCompleted(c)) => Some(c.task_scheduled_id),
            Some(EventType::TaskFailed(f)) => Some(f.task_scheduled_id),
            Some(EventType::SubOrchestrationInstanceCompleted(c)) => Some(c.task_scheduled_id),
            Some(EventType::SubOrchestrationInstanceFailed(f)) => Some(f.task_scheduled_id),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for e in events {
        let Some(kind) = &e.event_type else { continue };
        let mut o = Map::new();
        let mut put = |k: &str, v: Value| {
            o.insert(k.into(), v);
        };
        let origin = |id: i32, put: &mut dyn FnMut(&str, Value)| {
            if let Some((name, at, child)) = scheduled.get(&id) {
                put("FunctionName", Value::String(name.clone()));
                if let Some(at) = at {
                    put("ScheduledTime", Value::String(at.clone()));
                }
                if let Some(child) = child {
                    put("InstanceId", Value::String(child.clone()));
                }
            }
        };
        match kind {
            EventType::OrchestratorStarted(_) | EventType::OrchestratorCompleted(_) => continue,
            EventType::TaskScheduled(_) | EventType::SubOrchestrationInstanceCreated(_)
                if finished.contains(&e.event_id) =>
            {
                continue
            }
            EventType::TaskScheduled(t) => {
                put("Name", Value::String(t.name.clone()));
            }
            EventType::SubOrchestrationInstanceCreated(c) => {
                put("Name", Value::String(c.name.clone()));
                put("InstanceId", Value::String(c.instance_id.clone()));
            }
            EventType::ExecutionStarted(s) => {
                put("FunctionName", Value::String(s.name.clone()));
                if show_input {
                    put("Input", payload(s.input.as_deref()));
                }
            }
            EventType::ExecutionCompleted(c) => {
                let status =
                    RuntimeStatus::from_i32(c.orchestration_status).map_or("Unknown", status_name);
                put("OrchestrationStatus", Value::String(status.into()));
                if show_output {
                    put("Result", payload(c.result.as_deref()));
                }
                if let Some(f) = &c.failure_details {
                    put("FailureDetails", failure(f, true));
                }
            }
            EventType::ExecutionTerminated(t) => {
                put("Input", payload(t.input.as_deref()));
            }
            EventType::TaskCompleted(c) => {
                origin(c.task_scheduled_id, &mut put);
                if show_output {
                    put("Result", payload(c.result.as_deref()));
                }
            }
            EventType::TaskFailed(f) => {
                origin(f.task_scheduled_id, &mut put);
                if let Some(d) = &f.failure_details {
                    put("Reason", Value::String(d.error_message.clone()));
                    put("FailureDetails", failure(d, true));
                }
            }
            EventType::SubOrchestrationInstanceCompleted(c) => {
                origin(c.task_scheduled_id, &mut put);
                if show_output {
                    put("Result", payload(c.result.as_deref()));
                }
            }
            EventType::SubOrchestrationInstanceFailed(f) => {
                origin(f.task_scheduled_id, &mut put);
                if let Some(d) = &f.failure_details {
                    put("Reason", Value::String(d.error_message.clone()));
                    put("FailureDetails", failure(d, true));
                }
            }
            EventType::TimerCreated(t) => {
                if let Some(at) = &t.fire_at {
                    put("FireAt", Value::String(time_precise(from_timestamp(at))));
                }
            }
            EventType::TimerFired(t) => {
                if let Some(at) = &t.fire_at {
                    put("FireAt", Value::String(time_precise(from_timestamp(at))));
                }
                put("TimerId", json!(t.timer_id));
            }
            EventType::EventSent(s) => {
                put("Name", Value::String(s.name.clone()));
                put("InstanceId", Value::String(s.instance_id.clone()));
                if show_input {
                    put("Input", payload(s.input.as_deref()));
                }
            }
            EventType::EventRaised(r) => {
                put("Name", Value::String(r.name.clone()));
                if show_input {
                    put("Input", payload(r.input.as_deref()));
                }
            }
            EventType::ExecutionSuspended(s) => {
                put("Reason", payload(s.input.as_deref()));
            }
            EventType::ExecutionResumed(s) => {
                put("Reason", payload(s.input.as_deref()));
            }
            _ => {}
        }
        o.insert("EventType".into(), Value::String(kind_name(e).into()));
        if let Some(t) = &e.timestamp {
            o.insert(
                "Timestamp".into(),
                Value::String(time_precise(from_timestamp(t))),
            );
        }
        out.push(Value::Object(o));
    }
    out
}

/// Failure details with their stack trace and inner failure (recursively): PascalCase in
/// history events, camelCase in the status object, as the surrounding fields.
fn failure(f: &pb::TaskFailureDetails, pascal: bool) -> Value {
    let names = if pascal {
        ["ErrorType", "ErrorMessage", "StackTrace", "InnerFailure"]
    } else {
        ["errorType", "errorMessage", "stackTrace", "innerFailure"]
    };
    let mut o = Map::new();
    o.insert(names[0].into(), f.error_type.clone().into());
    o.insert(names[1].into(), f.error_message.clone().into());
    if let Some(stack) = f.stack_trace.as_deref().filter(|s| !s.is_empty()) {
        o.insert(names[2].into(), stack.into());
    }
    if let Some(inner) = &f.inner_failure {
        o.insert(names[3].into(), failure(inner, pascal));
    }
    Value::Object(o)
}

/// `@name@key` from the route: names are case-insensitive and kept lower-case (as
/// Durable Functions' `EntityId` does); `$` stands for the empty key.
pub(super) fn entity_id(name: &str, key: &str) -> String {
    let key = if key == "$" { "" } else { key };
    format!("@{}@{key}", name.to_lowercase())
}

/// One entry of `GET entities`: `{"entityId": {"name", "key"}, "lastOperationTime"[, "state"]}`.
pub(super) fn entity_entry(r: &EntityRecord, fetch_state: bool) -> Value {
    let raw = r.instance_id.as_str();
    let (name, key) = raw
        .strip_prefix('@')
        .and_then(|rest| rest.split_once('@'))
        .unwrap_or((raw, ""));
    let mut o = json!({
        "entityId": { "name": name, "key": key },
        "lastOperationTime": time_precise(r.last_modified),
        // Not in Durable Functions' listing: who holds the lock and how many operations
        // wait, for the dashboard.
        "lockedBy": r.lock.as_ref().map(|l| l.owner.as_str()),
        "backlogQueueSize": r.backlog,
    });
    if let (true, Some(map)) = (fetch_state, o.as_object_mut()) {
        map.insert("state".into(), payload(r.state.as_deref()));
    }
    o
}

/// Path segments, as axum's `Path` extracts them, except that a malformed one (not UTF-8
/// once percent-decoded) is answered with the JSON error body like every other 400.
pub(super) struct Segments<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Segments<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|rejection| invalid(format!("malformed path: {}", rejection.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_in_any_case_and_reject_unknown_names() {
        let p = Params::new(vec![
            ("RuntimeStatus".into(), "running,COMPLETED".into()),
            ("runtimeStatus".into(), "Failed".into()),
        ]);
        assert_eq!(
            p.statuses("runtimeStatus").unwrap(),
            vec![
                RuntimeStatus::Running,
                RuntimeStatus::Completed,
                RuntimeStatus::Failed
            ]
        );
        let bad = Params::new(vec![("runtimeStatus".into(), "Done".into())]);
        assert!(bad.statuses("runtimeStatus").is_err());
    }

    #[test]
    fn times_accept_offsets_naive_and_dates() {
        let p = Params::new(vec![
            ("a".into(), "2026-01-02T03:04:05+01:00".into()),
            ("b".into(), "2026-01-02T03:04:05.5".into()),
            ("c".into(), "2026-01-02".into()),
            ("d".into(), "yesterday".into()),
        ]);
        assert_eq!(
            p.time("a").unwrap().unwrap().to_rfc3339(),
            "2026-01-02T02:04:05+00:00"
        );
        assert!(p.time("b").unwrap().is_some());
        assert!(p.time("c").unwrap().is_some());
        assert!(p.time("d").is_err());
        assert_eq!(p.time("missing").unwrap(), None);
    }

    #[test]
    fn flags_counts_and_seconds_say_what_is_wrong() {
        let p = Params::new(vec![
            ("showInput".into(), "False".into()),
            ("top".into(), "-1".into()),
            ("timeout".into(), "1.5".into()),
            ("pollingInterval".into(), "-2".into()),
        ]);
        assert!(!p.flag("showinput", true).unwrap());
        assert!(p.count("top").is_err());
        assert_eq!(
            p.seconds("timeout").unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert!(p.seconds("pollingInterval").is_err());
    }

    #[test]
    fn payloads_and_path_segments() {
        assert_eq!(payload(Some("{\"a\":1}")), json!({"a": 1}));
        assert_eq!(payload(Some("not json")), json!("not json"));
        assert_eq!(path_segment("a b/c@d"), "a%20b%2Fc%40d");
        assert_eq!(entity_id("Counter", "$"), "@counter@");
        assert!(json_body(b"  ", "input").unwrap().is_none());
        assert!(json_body(b"{nope", "input").is_err());
    }
}
