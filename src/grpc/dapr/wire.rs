//! Just enough of the protobuf wire format to tell the Dapr fork's encoding of a shared
//! message from upstream's without decoding it, and to append fields to an encoded one.
//!
//! Detection looks only at fields whose type differs between the two contracts, and
//! reads a field as upstream's only if its bytes parse *strictly* as upstream's message
//! (every field known, every string valid UTF-8). The fork's values there are
//! human-readable strings (GUIDs, patch and version names), which never parse that way:
//! their first byte would have to be a control character such as `\n`.

/// One field's value as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Value<'a> {
    Varint(u64),
    Fixed64,
    Fixed32,
    Bytes(&'a [u8]),
}

/// The fields of an encoded message in wire order; `None` if it is not well formed.
/// Groups, which neither contract uses, count as malformed.
pub(super) fn fields(mut buf: &[u8]) -> Option<Vec<(u32, Value<'_>)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let tag = u32::try_from(key >> 3).ok().filter(|t| *t > 0)?;
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut buf)?),
            1 => {
                buf = buf.get(8..)?;
                Value::Fixed64
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let body = buf.get(..len)?;
                buf = &buf[len..];
                Value::Bytes(body)
            }
            5 => {
                buf = buf.get(4..)?;
                Value::Fixed32
            }
            _ => return None,
        };
        out.push((tag, value));
    }
    Some(out)
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

/// Appends a length-delimited field (string, bytes or message) to an encoded message.
pub(super) fn put_bytes_field(tag: u32, body: &[u8], buf: &mut impl prost::bytes::BufMut) {
    put_varint((u64::from(tag) << 3) | 2, buf);
    put_varint(body.len() as u64, buf);
    buf.put_slice(body);
}

fn put_varint(mut value: u64, buf: &mut impl prost::bytes::BufMut) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// Whether an `OrchestratorResponse` body uses the fork's field meanings
/// (`dapr.WorkflowResponse`): any action does (see [`is_fork_action`]), or field 6 is
/// not upstream's `OrchestrationTraceContext` (the fork's `WorkflowVersion`).
pub(super) fn is_fork_response(body: &[u8]) -> bool {
    let Some(fields) = fields(body) else {
        return false; // malformed: upstream's decoder reports it
    };
    fields.iter().any(|(tag, value)| match (tag, value) {
        (2, Value::Bytes(action)) => is_fork_action(action),
        (6, Value::Bytes(context)) => !is_orchestration_trace_context(context),
        _ => false,
    })
}

/// Whether an `OrchestratorAction` is the fork's `WorkflowAction`: it carries a
/// fork-only action type (10, 11), or field 9 next to an action type (upstream's 9 is
/// itself a member of the action oneof; the fork's is the `router` beside it), or a
/// `scheduleTask` whose field 5 is the fork's `taskExecutionId` string rather than
/// upstream's `TraceContext`.
fn is_fork_action(body: &[u8]) -> bool {
    let Some(fields) = fields(body) else {
        return false;
    };
    let has = |tag: u32| fields.iter().any(|(t, _)| *t == tag);
    has(10)
        || has(11)
        || (has(9) && (2..=8).any(has))
        || fields.iter().any(|(tag, value)| match (tag, value) {
            (2, Value::Bytes(task)) => fields_match(task, |tag, value| match (tag, value) {
                (5, Value::Bytes(context)) => is_trace_context(context),
                _ => true,
            })
            .is_some_and(|upstream| !upstream),
            _ => false,
        })
}

/// Whether a `PurgeInstancesRequest` body is the fork's: field 4 is its `force` flag
/// (a varint) rather than upstream's `instanceBatch` message. `Some(force)` if so.
pub(super) fn purge_force(body: &[u8]) -> Option<bool> {
    fields(body)?
        .into_iter()
        .find_map(|(tag, value)| match (tag, value) {
            (4, Value::Varint(v)) => Some(v != 0),
            _ => None,
        })
}

/// Parses `body` and checks every field with `ok`; `None` if it is malformed.
fn fields_match(body: &[u8], ok: impl Fn(u32, Value<'_>) -> bool) -> Option<bool> {
    Some(fields(body)?.into_iter().all(|(tag, value)| ok(tag, value)))
}

fn strictly(body: &[u8], ok: impl Fn(u32, Value<'_>) -> bool) -> bool {
    fields_match(body, ok).unwrap_or(false)
}

fn is_utf8(value: Value<'_>) -> bool {
    matches!(value, Value::Bytes(b) if std::str::from_utf8(b).is_ok())
}

/// `google.protobuf.StringValue`.
fn is_string_value(body: &[u8]) -> bool {
    strictly(body, |tag, value| tag == 1 && is_utf8(value))
}

/// `google.protobuf.Timestamp`.
fn is_timestamp(body: &[u8]) -> bool {
    strictly(body, |tag, value| {
        matches!((tag, value), (1 | 2, Value::Varint(_)))
    })
}

/// Upstream's `TraceContext { traceParent = 1; spanID = 2; StringValue traceState = 3; }`.
fn is_trace_context(body: &[u8]) -> bool {
    strictly(body, |tag, value| match (tag, value) {
        (1 | 2, v) => is_utf8(v),
        (3, Value::Bytes(b)) => is_string_value(b),
        _ => false,
    })
}

/// Upstream's `OrchestrationTraceContext { StringValue spanID = 1; Timestamp spanStartTime = 2; }`.
fn is_orchestration_trace_context(body: &[u8]) -> bool {
    strictly(body, |tag, value| match (tag, value) {
        (1, Value::Bytes(b)) => is_string_value(b),
        (2, Value::Bytes(b)) => is_timestamp(b),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto::{self as pb, dapr};

    fn upstream_response(actions: Vec<pb::OrchestratorAction>) -> pb::OrchestratorResponse {
        pb::OrchestratorResponse {
            instance_id: "i".into(),
            actions,
            completion_token: "O1".into(),
            ..Default::default()
        }
    }

    fn schedule(task: pb::ScheduleTaskAction) -> pb::OrchestratorAction {
        pb::OrchestratorAction {
            id: 1,
            orchestrator_action_type: Some(
                pb::orchestrator_action::OrchestratorActionType::ScheduleTask(task),
            ),
        }
    }

    #[test]
    fn reads_every_wire_type_and_rejects_truncation() {
        let msg = pb::TimerFiredEvent {
            fire_at: Some(prost_types::Timestamp {
                seconds: 300,
                nanos: 5,
            }),
            timer_id: 7,
        };
        let bytes = msg.encode_to_vec();
        let f = fields(&bytes).unwrap();
        assert_eq!(f.len(), 2);
        assert!(matches!(f[0], (1, Value::Bytes(b)) if is_timestamp(b)));
        assert_eq!(f[1], (2, Value::Varint(7)));
        assert!(fields(&bytes[..bytes.len() - 2]).is_some()); // ends after the timestamp
        assert!(fields(&bytes[..bytes.len() - 1]).is_none()); // a key without its value
        assert!(fields(&bytes[..3]).is_none()); // a short length-delimited body
        assert_eq!(
            fields(&[0x09, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap()[0].1,
            Value::Fixed64
        );
        assert_eq!(fields(&[0x0d, 1, 2, 3, 4]).unwrap()[0].1, Value::Fixed32);
        assert!(fields(&[0x0b]).is_none(), "groups are not accepted");
    }

    #[test]
    fn put_bytes_field_round_trips_through_prost() {
        let mut bytes = pb::EventRaisedEvent {
            name: "n".into(),
            input: None,
        }
        .encode_to_vec();
        let input = String::from("x").repeat(200).encode_to_vec(); // StringValue, 2-byte length
        put_bytes_field(2, &input, &mut bytes);
        let back = pb::EventRaisedEvent::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.input.as_deref(), Some("x".repeat(200).as_str()));
    }

    #[test]
    fn upstream_responses_are_not_taken_for_the_fork() {
        let traced = pb::ScheduleTaskAction {
            name: "a".into(),
            input: Some("1".into()),
            tags: [("k".to_string(), "v".to_string())].into(),
            parent_trace_context: Some(pb::TraceContext {
                trace_parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                trace_state: Some("a=b".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut response = upstream_response(vec![schedule(traced)]);
        response.orchestration_trace_context = Some(pb::OrchestrationTraceContext {
            span_id: Some("b7ad6b7169203331".into()),
            span_start_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 1,
            }),
        });
        assert!(!is_fork_response(&response.encode_to_vec()));
        let rewind = pb::OrchestratorAction {
            id: -1,
            orchestrator_action_type: Some(
                pb::orchestrator_action::OrchestratorActionType::RewindOrchestration(
                    pb::RewindOrchestrationAction::default(),
                ),
            ),
        };
        assert!(!is_fork_response(
            &upstream_response(vec![rewind]).encode_to_vec()
        ));
        assert!(!is_fork_response(
            &upstream_response(vec![]).encode_to_vec()
        ));
    }

    fn fork_response(
        action: dapr::workflow_action::WorkflowActionType,
        router: Option<dapr::TaskRouter>,
        version: Option<dapr::WorkflowVersion>,
    ) -> Vec<u8> {
        dapr::WorkflowResponse {
            instance_id: "i".into(),
            actions: vec![dapr::WorkflowAction {
                id: 0,
                workflow_action_type: Some(action),
                router,
            }],
            completion_token: "O1".into(),
            version,
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn fork_responses_are_recognised_by_each_differing_field() {
        use dapr::workflow_action::WorkflowActionType as Fork;
        let timer = || {
            Fork::CreateTimer(dapr::CreateTimerAction {
                fire_at: Some(prost_types::Timestamp::default()),
                name: None,
            })
        };
        // Router beside an action (what the Python SDK sends with every activity).
        assert!(is_fork_response(&fork_response(
            timer(),
            Some(dapr::TaskRouter::default()),
            None
        )));
        // taskExecutionId in scheduleTask.5, no router.
        for id in ["0f8fad5b-d9cb-469f-a165-70867728950e", "deadbeef", "x"] {
            let task = Fork::ScheduleTask(dapr::ScheduleTaskAction {
                name: "a".into(),
                task_execution_id: id.into(),
                ..Default::default()
            });
            assert!(is_fork_response(&fork_response(task, None, None)), "{id}");
        }
        // Fork-only action types.
        let stalled = Fork::WorkflowVersionNotAvailable(dapr::WorkflowVersionNotAvailableAction {});
        assert!(is_fork_response(&fork_response(stalled, None, None)));
        // WorkflowVersion in field 6.
        for version in [
            dapr::WorkflowVersion {
                patches: vec!["patch1".into()],
                name: None,
            },
            dapr::WorkflowVersion {
                patches: vec![],
                name: Some("v2".into()),
            },
        ] {
            assert!(is_fork_response(&fork_response(
                timer(),
                None,
                Some(version)
            )));
        }
        // Nothing that differs: reading it as upstream's is exact.
        assert!(!is_fork_response(&fork_response(timer(), None, None)));
    }

    #[test]
    fn purge_force_is_the_fork_field_4_varint() {
        let fork = dapr::PurgeInstancesRequest {
            request: Some(dapr::purge_instances_request::Request::InstanceId(
                "i".into(),
            )),
            recursive: true,
            force: Some(true),
        };
        assert_eq!(purge_force(&fork.encode_to_vec()), Some(true));
        let batch = pb::PurgeInstancesRequest {
            request: Some(pb::purge_instances_request::Request::InstanceBatch(
                pb::InstanceBatch {
                    instance_ids: vec!["a".into()],
                },
            )),
            ..Default::default()
        };
        assert_eq!(purge_force(&batch.encode_to_vec()), None);
    }
}
