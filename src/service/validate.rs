//! Edge rules for identifiers and names, shared by every door: what a request may name
//! before anything is looked up or stored. Messages name the field as the wire spells it.

use super::{Result, ServiceError};
use crate::domain::entity::validate_entity_id;
use crate::domain::InstanceId;

/// Longest instance id accepted (DTS rejects over 100; we allow more but not unbounded).
pub const MAX_INSTANCE_ID_LEN: usize = 256;
/// Longest orchestration, activity, event or operation name accepted.
pub const MAX_NAME_LEN: usize = 1024;

fn invalid(message: String) -> ServiceError {
    ServiceError::InvalidArgument(message)
}

/// Refuses control characters (a newline or NUL in an id breaks logs, terminals and
/// the CLI's output; no SDK generates one).
pub fn no_control_characters(field: &str, raw: &str) -> Result<()> {
    match raw.char_indices().find(|(_, c)| c.is_control()) {
        None => Ok(()),
        Some((at, c)) => Err(invalid(format!(
            "{field} contains the control character U+{:04X} at byte {at}",
            u32::from(c)
        ))),
    }
}

/// An orchestration instance id: required, at most [`MAX_INSTANCE_ID_LEN`] bytes, no
/// control characters.
pub fn instance_id(field: &str, raw: &str) -> Result<InstanceId> {
    if raw.is_empty() {
        return Err(invalid(format!("{field} is required")));
    }
    if raw.len() > MAX_INSTANCE_ID_LEN {
        return Err(invalid(format!(
            "{field} is {} bytes long; the limit is {MAX_INSTANCE_ID_LEN}",
            raw.len()
        )));
    }
    no_control_characters(field, raw)?;
    Ok(InstanceId::new(raw))
}

/// An entity id `@name@key` (PROTOCOL.md §2.3), without control characters.
pub fn entity_id(field: &str, raw: &str) -> Result<InstanceId> {
    validate_entity_id(raw).map_err(|why| invalid(format!("{field}: {why}")))?;
    no_control_characters(field, raw)?;
    Ok(InstanceId::new(raw))
}

/// A required name (orchestrator, event, operation): non-empty, at most
/// [`MAX_NAME_LEN`] bytes, no control characters. `what` says which name it is.
pub fn name(field: &str, what: &str, raw: &str) -> Result<()> {
    if raw.is_empty() {
        return Err(invalid(format!("{field} ({what}) is required")));
    }
    if raw.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "{field} ({what}) is {} bytes long; the limit is {MAX_NAME_LEN}",
            raw.len()
        )));
    }
    no_control_characters(field, raw)
}

/// An optional filter text (an id prefix): bounded like an id, no control characters.
pub fn prefix(field: &str, raw: Option<&str>) -> Result<()> {
    let Some(raw) = raw else { return Ok(()) };
    if raw.len() > MAX_INSTANCE_ID_LEN {
        return Err(invalid(format!(
            "{field} is {} bytes long; the limit is {MAX_INSTANCE_ID_LEN}",
            raw.len()
        )));
    }
    no_control_characters(field, raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_named_with_their_position() {
        let err = instance_id("instanceId", "ab\u{7}c").unwrap_err();
        assert_eq!(
            err.to_string(),
            "instanceId contains the control character U+0007 at byte 2"
        );
        assert!(
            instance_id("instanceId", "naïve-id").is_ok(),
            "non-ASCII text is fine"
        );
    }

    #[test]
    fn names_are_required_and_bounded() {
        assert!(name("name", "the orchestrator name", "")
            .unwrap_err()
            .to_string()
            .contains("name (the orchestrator name) is required"));
        assert!(name("name", "x", &"n".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(name("name", "x", &"n".repeat(MAX_NAME_LEN)).is_ok());
    }

    #[test]
    fn entity_ids_keep_their_form_rule_and_name_the_field() {
        let err = entity_id("instanceId", "counter").unwrap_err().to_string();
        assert!(err.starts_with("instanceId: entity id 'counter'"), "{err}");
        assert!(entity_id("instanceId", "@counter@k\n").is_err());
    }
}
