//! Entity client RPCs: request conversion and response assembly (PROTOCOL.md §5.2).

use tonic::Response;

use super::convert::entity_query;
use super::Rpc;
use crate::domain::events::to_timestamp;
use crate::domain::EntityRecord;
use crate::proto as pb;
use crate::service::AppState;

fn metadata(r: EntityRecord, include_state: bool) -> pb::EntityMetadata {
    pb::EntityMetadata {
        instance_id: r.instance_id.to_string(),
        last_modified_time: Some(to_timestamp(r.last_modified)),
        backlog_queue_size: i32::try_from(r.backlog).unwrap_or(i32::MAX),
        locked_by: r.lock.map(|l| l.owner.to_string()),
        serialized_state: if include_state { r.state } else { None },
    }
}

pub(super) async fn get_entity(
    state: &AppState,
    req: pb::GetEntityRequest,
) -> Rpc<pb::GetEntityResponse> {
    let found = state.get_entity(&req.instance_id).await?;
    Ok(Response::new(pb::GetEntityResponse {
        exists: found.is_some(),
        entity: found.map(|r| metadata(r, req.include_state)),
    }))
}

pub(super) async fn query_entities(
    state: &AppState,
    req: pb::QueryEntitiesRequest,
) -> Rpc<pb::QueryEntitiesResponse> {
    let q = req.query.unwrap_or_default();
    let include_state = q.include_state;
    let page = state.query_entities(entity_query(q)?).await?;
    Ok(Response::new(pb::QueryEntitiesResponse {
        entities: page
            .items
            .into_iter()
            .map(|r| metadata(r, include_state))
            .collect(),
        continuation_token: page.next,
    }))
}

pub(super) async fn clean_entity_storage(
    state: &AppState,
    req: pb::CleanEntityStorageRequest,
) -> Rpc<pb::CleanEntityStorageResponse> {
    let done = state
        .clean_entity_storage(
            req.continuation_token,
            req.remove_empty_entities,
            req.release_orphaned_locks,
        )
        .await?;
    Ok(Response::new(pb::CleanEntityStorageResponse {
        continuation_token: done.token,
        empty_entities_removed: i32::try_from(done.removed).unwrap_or(i32::MAX),
        orphaned_locks_released: i32::try_from(done.released).unwrap_or(i32::MAX),
    }))
}
