//! Entity use cases (PROTOCOL.md §5.2): signal, get, query, clean, and the worker's
//! completion and abandon of entity batches.

use chrono::{DateTime, Utc};
use pb::history_event::EventType;

use super::client::{page_size, Page};
use super::{validate, AppState, Result};
use crate::domain::events::{event, to_timestamp};
use crate::domain::{EntityFilter, EntityRecord, InstanceId};
use crate::proto as pb;

/// Entities looked at per `CleanEntityStorage` call before it answers with a token.
const CLEAN_PAGE: u32 = 500;

fn entity_id(raw: &str) -> Result<InstanceId> {
    validate::entity_id("instanceId", raw)
}

/// An entity query's or clean's continuation token: the last entity id of a page.
fn entity_token(raw: Option<String>) -> Result<Option<String>> {
    match raw.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => {
            validate::entity_id("continuationToken", &t)?;
            Ok(Some(t))
        }
    }
}

/// A `QueryEntities` request in domain terms.
#[derive(Debug, Clone, Default)]
pub struct EntityQuery {
    /// Plain id prefix.
    pub prefix: Option<String>,
    /// Inclusive.
    pub modified_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub modified_to: Option<DateTime<Utc>>,
    /// Include entities without state.
    pub include_transient: bool,
    /// Page size; 0 = default.
    pub page_size: u32,
    /// Continuation token (the last id of the previous page).
    pub token: Option<String>,
}

/// A `SignalEntity` request in domain terms.
#[derive(Debug, Clone, Default)]
pub struct EntitySignal {
    /// `@name@key`.
    pub entity_id: String,
    /// Operation name.
    pub operation: String,
    /// Operation input (serialized), if any.
    pub input: Option<String>,
    /// Deliver no earlier than this (past values mean "now").
    pub scheduled_time: Option<DateTime<Utc>>,
    /// Client-chosen request id, kept as sent.
    pub request_id: String,
}

/// What one `CleanEntityStorage` call did.
#[derive(Debug, Clone, Default)]
pub struct CleanResult {
    /// Empty entities deleted.
    pub removed: u32,
    /// Orphaned locks released.
    pub released: u32,
    /// Where to continue; `None` when done.
    pub token: Option<String>,
}

impl AppState {
    /// `SignalEntity`: queue the operation, visible at `scheduledTime` if later.
    pub async fn signal_entity(&self, req: EntitySignal) -> Result<()> {
        let id = entity_id(&req.entity_id)?;
        validate::name("name", "the operation name", &req.operation)?;
        let now = self.clock().now();
        let visible_at = req.scheduled_time.filter(|at| *at > now).unwrap_or(now);
        let signal = event(
            -1,
            now,
            EventType::EntityOperationSignaled(pb::EntityOperationSignaledEvent {
                request_id: req.request_id,
                operation: req.operation,
                scheduled_time: req.scheduled_time.map(to_timestamp),
                input: req.input,
                target_instance_id: Some(id.to_string()),
            }),
        );
        let admitted = self.admit()?;
        self.store()
            .signal_entity(&id, signal, visible_at, now)
            .await?;
        drop(admitted);
        self.engine().schedule_wakeup(&id, visible_at);
        Ok(())
    }

    /// `GetEntity`: `None` until the entity has state (the Durable Task Scheduler's rule:
    /// an entity with only a lock or a queued signal does not exist yet, and a client
    /// reading its state would get nothing).
    pub async fn get_entity(&self, id: &str) -> Result<Option<EntityRecord>> {
        let id = entity_id(id)?;
        Ok(self
            .store()
            .entity(&id)
            .await?
            .filter(|r| r.state.is_some()))
    }

    /// `QueryEntities`, ordered by id; the token is the last id of the page.
    pub async fn query_entities(&self, q: EntityQuery) -> Result<Page<EntityRecord>> {
        let limit = page_size(q.page_size);
        validate::prefix("instanceIdStartsWith", q.prefix.as_deref())?;
        let filter = EntityFilter {
            id_prefix: q.prefix.filter(|p| !p.is_empty()),
            modified_from: q.modified_from,
            modified_to: q.modified_to,
            include_transient: q.include_transient,
            after: entity_token(q.token)?,
            limit,
        };
        let items = self.store().query_entities(&filter).await?;
        let next = (items.len() as u32 >= limit)
            .then(|| items.last().map(|r| r.instance_id.to_string()))
            .flatten();
        Ok(Page { items, next })
    }

    /// `CleanEntityStorage`: one page of work; the token says where to go on.
    pub async fn clean_entity_storage(
        &self,
        token: Option<String>,
        remove_empty: bool,
        release_orphans: bool,
    ) -> Result<CleanResult> {
        let outcome = self
            .store()
            .clean_entities(
                entity_token(token)?,
                CLEAN_PAGE,
                remove_empty,
                release_orphans,
            )
            .await?;
        for id in &outcome.unblocked {
            self.engine().instance_ready(id);
        }
        Ok(CleanResult {
            removed: outcome.removed,
            released: outcome.released,
            token: outcome.next,
        })
    }

    /// Routes a `CompleteEntityTask`.
    pub async fn complete_entity_task(&self, result: pb::EntityBatchResult) -> Result<()> {
        Ok(self.engine().complete_entity(result).await?)
    }

    /// `AbandonTaskEntityWorkItem`: idempotent, unknown tokens are fine.
    pub fn abandon_entity(&self, token: &str) {
        self.engine().abandon_entity(token);
    }
}
