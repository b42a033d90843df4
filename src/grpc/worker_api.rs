//! Worker RPCs: the `GetWorkItems` stream and history streaming.

use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Response;

use super::{BoxStream, Rpc};
use crate::proto as pb;
use crate::service::AppState;

/// Most events in one `HistoryChunk`.
const CHUNK_EVENTS: usize = 1000;
/// Largest encoded size of one `HistoryChunk`.
const CHUNK_BYTES: usize = 1024 * 1024;

pub(super) fn get_work_items(
    state: &AppState,
    req: pb::GetWorkItemsRequest,
) -> Rpc<BoxStream<pb::WorkItem>> {
    let rx = state.open_work_stream(&req)?;
    Ok(Response::new(Box::pin(
        ReceiverStream::new(rx).map(|item| Ok(*item)),
    )))
}

pub(super) async fn stream_instance_history(
    state: &AppState,
    req: pb::StreamInstanceHistoryRequest,
) -> Rpc<BoxStream<pb::HistoryChunk>> {
    let events = state
        .instance_history(&req.instance_id, req.execution_id.as_deref())
        .await?;
    let chunks = chunk(events);
    Ok(Response::new(Box::pin(futures::stream::iter(
        chunks.into_iter().map(Ok),
    ))))
}

/// Splits a history into chunks of at most `CHUNK_EVENTS` events and about `CHUNK_BYTES`.
fn chunk(events: Vec<pb::HistoryEvent>) -> Vec<pb::HistoryChunk> {
    use prost::Message;
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for e in events {
        let len = e.encoded_len();
        if !current.is_empty() && (current.len() >= CHUNK_EVENTS || bytes + len > CHUNK_BYTES) {
            chunks.push(pb::HistoryChunk {
                events: std::mem::take(&mut current),
            });
            bytes = 0;
        }
        bytes += len;
        current.push(e);
    }
    if !current.is_empty() {
        chunks.push(pb::HistoryChunk { events: current });
    }
    chunks
}
