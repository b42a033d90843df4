//! Durable entities (PROTOCOL.md §5): ids, the stored record, and what one entity step
//! commits.

use chrono::{DateTime, Utc};

use super::{InstanceId, NewInstance, OutboundMessage};

/// Longest entity id accepted (DTS enforces 100 characters; PROTOCOL.md §5.2).
pub const MAX_ENTITY_ID_LEN: usize = 100;

/// Checks an entity id `@name@key`: non-empty name, key split at the second `@` (the key
/// may itself contain `@`). Returns a message that says what is wrong.
pub fn validate_entity_id(id: &str) -> Result<(), String> {
    let Some(rest) = id.strip_prefix('@') else {
        return Err(format!("entity id '{id}' must have the form '@name@key'"));
    };
    let Some((name, _key)) = rest.split_once('@') else {
        return Err(format!(
            "entity id '{id}' has no key: it must have the form '@name@key'"
        ));
    };
    if name.is_empty() {
        return Err(format!("entity id '{id}' has an empty entity name"));
    }
    if id.chars().count() > MAX_ENTITY_ID_LEN {
        return Err(format!(
            "entity id is longer than {MAX_ENTITY_ID_LEN} characters"
        ));
    }
    Ok(())
}

/// Who holds an entity's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityLock {
    /// The orchestration instance that owns the critical section.
    pub owner: InstanceId,
    /// The critical section (from `EntityLockRequested.criticalSectionId`).
    pub critical_section: String,
}

/// Everything stored about an entity besides its queue.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityRecord {
    /// `@name@key`.
    pub instance_id: InstanceId,
    /// Serialized state; `None` = no state.
    pub state: Option<String>,
    /// The lock, when held.
    pub lock: Option<EntityLock>,
    /// Last committed batch (or creation).
    pub last_modified: DateTime<Utc>,
    /// Queued messages not yet processed (visible or not).
    pub backlog: u32,
    /// Optimistic guard: bumped by every change of the record.
    pub version: i64,
}

impl EntityRecord {
    /// DurableTask.Core existence: state, a lock, or a backlog (PROTOCOL.md §5.1).
    pub fn exists(&self) -> bool {
        self.state.is_some() || self.lock.is_some() || self.backlog > 0
    }
}

/// A change to one field of the record: keep it, or set it (possibly to `None`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Change<T> {
    /// Leave as stored.
    #[default]
    Keep,
    /// Store this value.
    Set(T),
}

/// Everything one entity step commits, in one transaction: consumed queue rows, the new
/// state and lock, messages to other instances and entities, and started orchestrations.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityTransition {
    /// The entity.
    pub entity: InstanceId,
    /// Guard: the record version the step read.
    pub expected_version: i64,
    /// Queue rows processed by this step.
    pub consumed: Vec<i64>,
    /// New state.
    pub state: Change<Option<String>>,
    /// New lock.
    pub lock: Change<Option<EntityLock>>,
    /// Whether `last_modified` moves to `now` (a batch ran).
    pub touch: bool,
    /// Responses, lock grants, forwarded lock requests, signals.
    pub messages: Vec<OutboundMessage>,
    /// Orchestrations started by operations (replace a terminal instance, skip a live one).
    pub starts: Vec<NewInstance>,
    /// Commit time.
    pub now: DateTime<Utc>,
}

impl EntityTransition {
    /// A transition that changes nothing yet.
    pub fn new(entity: InstanceId, expected_version: i64, now: DateTime<Utc>) -> Self {
        Self {
            entity,
            expected_version,
            consumed: Vec::new(),
            state: Change::Keep,
            lock: Change::Keep,
            touch: false,
            messages: Vec::new(),
            starts: Vec::new(),
            now,
        }
    }

    /// Whether committing it would change anything.
    pub fn is_empty(&self) -> bool {
        self.consumed.is_empty()
            && self.state == Change::Keep
            && self.lock == Change::Keep
            && !self.touch
            && self.messages.is_empty()
            && self.starts.is_empty()
    }
}

/// Filter of `QueryEntities` (PROTOCOL.md §5.2).
#[derive(Debug, Clone, Default)]
pub struct EntityFilter {
    /// Plain prefix of `@name@key`.
    pub id_prefix: Option<String>,
    /// Inclusive.
    pub modified_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub modified_to: Option<DateTime<Utc>>,
    /// Include entities without state (locked or with a backlog).
    pub include_transient: bool,
    /// Return ids strictly after this one.
    pub after: Option<String>,
    /// Maximum rows.
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_ids_need_a_name_and_a_key() {
        assert!(validate_entity_id("@counter@a").is_ok());
        assert!(validate_entity_id("@counter@").is_ok());
        assert!(validate_entity_id("@c@k@with@ats").is_ok());
        assert!(validate_entity_id("counter@a").is_err());
        assert!(validate_entity_id("@counter").is_err());
        assert!(validate_entity_id("@@key").is_err());
        assert!(validate_entity_id(&format!("@n@{}", "k".repeat(100))).is_err());
    }
}
