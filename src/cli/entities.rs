//! Durable entity commands: get, list, signal, clean.

use serde_json::json;

use super::connect::{client, CliError, Client};
use super::output::{self, Printer};
use super::{CleanEntities, Exit, GetEntity, ListEntities, Payload, SignalEntity};
use crate::proto as pb;

/// `get-entity`: the entity with its state. One without state yet (only queued operations
/// or a lock) does not exist for `GetEntity`, but an operator looking at a stuck backlog
/// wants to see it, so it is looked up among the transient entities too.
pub(super) async fn get_entity(args: GetEntity) -> Result<Exit, CliError> {
    let mut c = client(&args.client).await?;
    let r = c
        .get_entity(pb::GetEntityRequest {
            instance_id: args.id.clone(),
            include_state: true,
        })
        .await
        .map_err(|s| CliError::rpc("GetEntity", s))?
        .into_inner();
    let entity = match r.entity {
        Some(e) if r.exists => Some(e),
        _ => transient_entity(&mut c, &args.id).await?,
    };
    let Some(entity) = entity else {
        return Err(CliError::NotFound(format!(
            "no entity with id '{}'",
            args.id
        )));
    };
    Printer::new(args.client.output).one(
        &output::entity_json(&entity, true),
        &output::entity_text(&entity),
    )?;
    Ok(Exit::Success)
}

/// The entity `id` if it exists without state (QueryEntities with transient entities).
async fn transient_entity(
    c: &mut Client,
    id: &str,
) -> Result<Option<pb::EntityMetadata>, CliError> {
    let page = c
        .query_entities(pb::QueryEntitiesRequest {
            query: Some(pb::EntityQuery {
                instance_id_starts_with: Some(id.to_owned()),
                include_state: true,
                include_transient: true,
                page_size: Some(1),
                ..Default::default()
            }),
        })
        .await
        .map_err(|s| CliError::rpc("QueryEntities", s))?
        .into_inner();
    Ok(page.entities.into_iter().find(|e| e.instance_id == id))
}

/// `list-entities`: one page; the continuation token, if any, leads to the next.
pub(super) async fn list_entities(args: ListEntities) -> Result<Exit, CliError> {
    let mut c = client(&args.client).await?;
    // Entity ids are `@name@key`: let `counter` mean the ids that start with `@counter`.
    let prefix = args.id_prefix.as_ref().map(|p| {
        if p.starts_with('@') {
            p.clone()
        } else {
            format!("@{p}")
        }
    });
    let page = c
        .query_entities(pb::QueryEntitiesRequest {
            query: Some(pb::EntityQuery {
                instance_id_starts_with: prefix,
                last_modified_from: args.modified_after.map(|t| t.timestamp()),
                last_modified_to: args.modified_before.map(|t| t.timestamp()),
                include_state: args.show_state,
                // Entities with no state yet (only queued signals) are listed too: an
                // operator looking for a stuck backlog wants to see them.
                include_transient: true,
                page_size: args.top.map(i32::from),
                continuation_token: args.continuation_token.clone(),
            }),
        })
        .await
        .map_err(|s| CliError::rpc("QueryEntities", s))?
        .into_inner();
    let doc = json!({
        "entities": page
            .entities
            .iter()
            .map(|e| output::entity_json(e, args.show_state))
            .collect::<Vec<_>>(),
        "continuationToken": page.continuation_token,
    });
    let headers = if args.show_state {
        &output::ENTITY_HEADERS[..]
    } else {
        &output::ENTITY_HEADERS[..4]
    };
    let rows: Vec<_> = page
        .entities
        .iter()
        .map(|e| output::entity_row(e, args.show_state))
        .collect();
    let text = output::paged(
        output::table(headers, &rows),
        page.continuation_token.as_deref(),
    );
    Printer::new(args.client.output).one(&doc, &text)?;
    Ok(Exit::Success)
}

/// `signal-entity`: queues the operation; the entity runs it when a worker takes it.
pub(super) async fn signal_entity(args: SignalEntity) -> Result<Exit, CliError> {
    let input = Payload::resolve_opt(args.input.as_ref(), "--input")?;
    let mut c = client(&args.client).await?;
    // A request id made here, as SDK clients make theirs (the sanctioned id source is the
    // server's domain layer, which this door does not use).
    #[allow(clippy::disallowed_methods)]
    let request_id = uuid::Uuid::new_v4().to_string();
    c.signal_entity(pb::SignalEntityRequest {
        instance_id: args.id.clone(),
        name: args.operation.clone(),
        input,
        request_id: request_id.clone(),
        ..Default::default()
    })
    .await
    .map_err(|s| CliError::rpc("SignalEntity", s))?;
    Printer::new(args.client.output).one(
        &json!({ "entityId": args.id, "operation": args.operation, "requestId": request_id }),
        &format!("Signalled {} on entity {}", args.operation, args.id),
    )?;
    Ok(Exit::Success)
}

/// `clean-entities`: runs `CleanEntityStorage` page after page until the server is done.
pub(super) async fn clean_entities(args: CleanEntities) -> Result<Exit, CliError> {
    let mut c = client(&args.client).await?;
    let (mut removed, mut released) = (0_i64, 0_i64);
    let mut token = None;
    loop {
        let r = c
            .clean_entity_storage(pb::CleanEntityStorageRequest {
                continuation_token: token,
                remove_empty_entities: !args.keep_empty,
                release_orphaned_locks: !args.keep_orphaned_locks,
            })
            .await
            .map_err(|s| CliError::rpc("CleanEntityStorage", s))?
            .into_inner();
        removed += i64::from(r.empty_entities_removed);
        released += i64::from(r.orphaned_locks_released);
        token = r.continuation_token.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    Printer::new(args.client.output).one(
        &json!({ "emptyEntitiesRemoved": removed, "orphanedLocksReleased": released }),
        &output::fields(&[
            ("Empty entities removed", removed.to_string()),
            ("Orphaned locks released", released.to_string()),
        ]),
    )?;
    Ok(Exit::Success)
}
