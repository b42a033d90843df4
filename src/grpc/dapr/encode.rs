//! The codec of the routes `DaprCompat` serves itself: requests stay raw bytes (the
//! handler decides which contract's message they are), replies are encoded by [`Reply`],
//! which writes the fork's `taskExecutionId` back where the fork expects it.

use std::marker::PhantomData;

use prost::bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tonic::codec::{DecodeBuf, EncodeBuf};
use tonic::Status;

use super::completion::TASK_EXECUTION_ID_TAG;
use super::wire::put_bytes_field;
use crate::proto::{self as pb, dapr};
use pb::history_event::EventType;
use pb::work_item::Request as WorkRequest;

/// A reply message.
pub(super) trait Reply: Send + 'static {
    /// Writes the message's encoding.
    fn encode_reply(self, buf: &mut impl BufMut);
}

macro_rules! prost_reply {
    ($($t:ty),* $(,)?) => {$(
        impl Reply for $t {
            fn encode_reply(self, buf: &mut impl BufMut) {
                self.encode(buf).expect("the encode buffer grows as needed");
            }
        }
    )*};
}

prost_reply!(
    pb::CompleteTaskResponse,
    pb::PurgeInstancesResponse,
    dapr::ListInstanceIDsResponse,
    dapr::RerunWorkflowFromEventResponse,
);

/// `GetInstanceHistoryResponse`, with each event encoded by [`put_history_event`].
#[derive(Debug)]
pub(super) struct History(pub(super) Vec<pb::HistoryEvent>);

impl Reply for History {
    fn encode_reply(self, buf: &mut impl BufMut) {
        for event in &self.0 {
            put_history_event(1, event, buf);
        }
    }
}

/// Work items go to every worker, Dapr's or not, through this encoder. Only items of
/// instances driven by a fork worker carry [`TASK_EXECUTION_ID_TAG`]; every other item
/// is encoded exactly as upstream's `WorkItem`.
///
/// The fork's `ActivityRequest` field 7 and `TaskScheduledEvent` field 5 are the
/// `taskExecutionId` string, where upstream has the `tags` map. The tag's value goes
/// there instead of the map (fork actions carry no other tags).
impl Reply for pb::WorkItem {
    fn encode_reply(mut self, buf: &mut impl BufMut) {
        let fork_body = match &mut self.request {
            Some(WorkRequest::ActivityRequest(a)) => {
                a.tags.remove(TASK_EXECUTION_ID_TAG).map(|execution_id| {
                    a.tags.clear();
                    let mut body = a.encode_to_vec();
                    put_bytes_field(7, execution_id.as_bytes(), &mut body);
                    (2, body)
                })
            }
            Some(WorkRequest::OrchestratorRequest(o)) if carries_execution_ids(o) => {
                Some((1, orchestrator_request(std::mem::take(o))))
            }
            _ => None,
        };
        if let Some((tag, body)) = fork_body {
            // The oneof member is written here, the other fields after it.
            self.request = None;
            put_bytes_field(tag, &body, buf);
        }
        self.encode(buf).expect("the encode buffer grows as needed");
    }
}

fn carries_execution_ids(o: &pb::OrchestratorRequest) -> bool {
    o.past_events
        .iter()
        .chain(&o.new_events)
        .any(|e| execution_id(e).is_some())
}

fn execution_id(event: &pb::HistoryEvent) -> Option<&str> {
    match &event.event_type {
        Some(EventType::TaskScheduled(t)) => t.tags.get(TASK_EXECUTION_ID_TAG).map(String::as_str),
        _ => None,
    }
}

fn orchestrator_request(mut o: pb::OrchestratorRequest) -> Vec<u8> {
    let past = std::mem::take(&mut o.past_events);
    let new = std::mem::take(&mut o.new_events);
    let mut body = o.encode_to_vec();
    for event in &past {
        put_history_event(3, event, &mut body);
    }
    for event in &new {
        put_history_event(4, event, &mut body);
    }
    body
}

/// Writes `event` as field `tag`, in the fork's shape when it is a `TaskScheduled` event
/// holding a fork worker's `taskExecutionId`.
pub(super) fn put_history_event(tag: u32, event: &pb::HistoryEvent, buf: &mut impl BufMut) {
    let Some(EventType::TaskScheduled(task)) = &event.event_type else {
        return put_bytes_field(tag, &event.encode_to_vec(), buf);
    };
    let Some(execution_id) = task.tags.get(TASK_EXECUTION_ID_TAG) else {
        return put_bytes_field(tag, &event.encode_to_vec(), buf);
    };
    let mut task_body = pb::TaskScheduledEvent {
        tags: Default::default(),
        ..task.clone()
    }
    .encode_to_vec();
    put_bytes_field(5, execution_id.as_bytes(), &mut task_body);
    let mut body = pb::HistoryEvent {
        event_id: event.event_id,
        timestamp: event.timestamp,
        event_type: None,
    }
    .encode_to_vec();
    put_bytes_field(6, &task_body, &mut body);
    put_bytes_field(tag, &body, buf);
}

/// Codec with raw-bytes requests and [`Reply`] replies.
#[derive(Debug)]
pub(super) struct Codec<R>(PhantomData<fn(R)>);

impl<R> Default for Codec<R> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<R: Reply> tonic::codec::Codec for Codec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ReplyEncoder<R>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ReplyEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

#[derive(Debug)]
pub(super) struct ReplyEncoder<R>(PhantomData<fn(R)>);

impl<R: Reply> tonic::codec::Encoder for ReplyEncoder<R> {
    type Item = R;
    type Error = Status;

    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode_reply(dst);
        Ok(())
    }
}

#[derive(Debug)]
pub(super) struct RawDecoder;

impl tonic::codec::Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Decodes a request body as `M`, failing the way tonic's own codec does.
pub(super) fn decode<M: Message + Default>(body: &[u8]) -> Result<M, Status> {
    M::decode(body).map_err(|e| Status::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fork's `ActivityRequest`, `TaskScheduledEvent` and the parts of `WorkItem`,
    /// `OrchestratorRequest` and `HistoryEvent` around them, as a fork worker decodes them.
    mod fork {
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct WorkItem {
            #[prost(message, optional, tag = "1")]
            pub(super) orchestrator_request: Option<OrchestratorRequest>,
            #[prost(message, optional, tag = "2")]
            pub(super) activity_request: Option<ActivityRequest>,
            #[prost(string, tag = "10")]
            pub(super) completion_token: String,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct ActivityRequest {
            #[prost(string, tag = "1")]
            pub(super) name: String,
            #[prost(int32, tag = "5")]
            pub(super) task_id: i32,
            #[prost(string, tag = "7")]
            pub(super) task_execution_id: String,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct OrchestratorRequest {
            #[prost(string, tag = "1")]
            pub(super) instance_id: String,
            #[prost(message, repeated, tag = "3")]
            pub(super) past_events: Vec<HistoryEvent>,
            #[prost(message, repeated, tag = "4")]
            pub(super) new_events: Vec<HistoryEvent>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct HistoryEvent {
            #[prost(int32, tag = "1")]
            pub(super) event_id: i32,
            #[prost(message, optional, tag = "6")]
            pub(super) task_scheduled: Option<TaskScheduledEvent>,
            #[prost(message, optional, tag = "17")]
            pub(super) event_raised: Option<crate::proto::EventRaisedEvent>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct TaskScheduledEvent {
            #[prost(string, tag = "1")]
            pub(super) name: String,
            #[prost(string, tag = "5")]
            pub(super) task_execution_id: String,
        }
    }

    fn scheduled(id: i32, execution_id: Option<&str>) -> pb::HistoryEvent {
        pb::HistoryEvent {
            event_id: id,
            timestamp: Some(prost_types::Timestamp::default()),
            event_type: Some(EventType::TaskScheduled(pb::TaskScheduledEvent {
                name: "act".into(),
                tags: execution_id
                    .map(|x| (TASK_EXECUTION_ID_TAG.to_string(), x.to_string()))
                    .into_iter()
                    .collect(),
                ..Default::default()
            })),
        }
    }

    fn raised() -> pb::HistoryEvent {
        pb::HistoryEvent {
            event_id: -1,
            timestamp: None,
            event_type: Some(EventType::EventRaised(pb::EventRaisedEvent {
                name: "go".into(),
                input: Some("1".into()),
            })),
        }
    }

    fn encoded(reply: impl Reply) -> Vec<u8> {
        let mut buf = Vec::new();
        reply.encode_reply(&mut buf);
        buf
    }

    #[test]
    fn work_items_without_the_tag_are_upstream_bytes() {
        let item = pb::WorkItem {
            completion_token: "A1".into(),
            request: Some(WorkRequest::ActivityRequest(pb::ActivityRequest {
                name: "act".into(),
                tags: [("user".to_string(), "tag".to_string())].into(),
                ..Default::default()
            })),
        };
        assert_eq!(encoded(item.clone()), item.encode_to_vec());
        let orch = pb::WorkItem {
            completion_token: "O1".into(),
            request: Some(WorkRequest::OrchestratorRequest(pb::OrchestratorRequest {
                instance_id: "i".into(),
                past_events: vec![scheduled(0, None)],
                new_events: vec![raised()],
                ..Default::default()
            })),
        };
        assert_eq!(encoded(orch.clone()), orch.encode_to_vec());
    }

    #[test]
    fn activity_requests_carry_the_execution_id_as_the_fork_string() {
        let item = pb::WorkItem {
            completion_token: "A9".into(),
            request: Some(WorkRequest::ActivityRequest(pb::ActivityRequest {
                name: "act".into(),
                task_id: 4,
                tags: [(TASK_EXECUTION_ID_TAG.to_string(), "guid-4".to_string())].into(),
                ..Default::default()
            })),
        };
        let back = fork::WorkItem::decode(encoded(item).as_slice()).unwrap();
        assert_eq!(back.completion_token, "A9");
        let a = back.activity_request.unwrap();
        assert_eq!((a.name.as_str(), a.task_id), ("act", 4));
        assert_eq!(a.task_execution_id, "guid-4");
    }

    #[test]
    fn histories_carry_the_execution_id_in_task_scheduled_field_5() {
        let item = pb::WorkItem {
            completion_token: "O2".into(),
            request: Some(WorkRequest::OrchestratorRequest(pb::OrchestratorRequest {
                instance_id: "i".into(),
                past_events: vec![scheduled(0, Some("g0")), raised()],
                new_events: vec![scheduled(1, Some("g1"))],
                ..Default::default()
            })),
        };
        let back = fork::WorkItem::decode(encoded(item).as_slice()).unwrap();
        assert_eq!(back.completion_token, "O2");
        let o = back.orchestrator_request.unwrap();
        assert_eq!(o.instance_id, "i");
        let ids: Vec<_> = o
            .past_events
            .iter()
            .chain(&o.new_events)
            .map(|e| {
                (
                    e.event_id,
                    e.task_scheduled
                        .as_ref()
                        .map(|t| t.task_execution_id.clone()),
                )
            })
            .collect();
        assert_eq!(
            ids,
            [(0, Some("g0".into())), (-1, None), (1, Some("g1".into()))]
        );
        assert_eq!(o.past_events[1].event_raised.as_ref().unwrap().name, "go");

        let history = encoded(History(vec![scheduled(0, Some("g0")), raised()]));
        let back = dapr_history(&history);
        assert_eq!(
            back[0].task_scheduled.as_ref().unwrap().task_execution_id,
            "g0"
        );
        assert_eq!(back[0].task_scheduled.as_ref().unwrap().name, "act");
    }

    fn dapr_history(bytes: &[u8]) -> Vec<fork::HistoryEvent> {
        #[derive(Clone, PartialEq, prost::Message)]
        struct Response {
            #[prost(message, repeated, tag = "1")]
            events: Vec<fork::HistoryEvent>,
        }
        Response::decode(bytes).unwrap().events
    }

    #[test]
    fn history_replies_without_the_tag_match_the_generated_message() {
        let events = vec![scheduled(0, None), raised()];
        assert_eq!(
            encoded(History(events.clone())),
            dapr::GetInstanceHistoryResponse { events }.encode_to_vec()
        );
    }
}
