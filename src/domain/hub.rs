//! Task hub names: the `taskhub` call metadata, the HTTP API's `taskHub` parameter, the
//! CLI's `--task-hub-name`, and the key that isolates one app's state from another's.

use std::fmt;

/// The hub of a call that names none.
pub const DEFAULT_TASK_HUB: &str = "default";

/// Longest task hub name accepted.
pub const MAX_TASK_HUB_LEN: usize = 64;

/// A valid task hub name, in canonical (lower-case) form. Hub names are
/// case-insensitive, as the Durable Task Scheduler's and Durable Functions' are, and the
/// canonical form is what the stores key on (and, on SQLite, part of a file name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskHubName(String);

impl TaskHubName {
    /// The default hub.
    pub fn default_hub() -> Self {
        Self(DEFAULT_TASK_HUB.to_owned())
    }

    /// Checks `raw`: a letter first, then letters, digits, `-` or `_`, at most
    /// [`MAX_TASK_HUB_LEN`] characters. The error says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut chars = raw.chars();
        match chars.next() {
            None => return Err("a task hub name must not be empty".into()),
            Some(c) if !c.is_ascii_alphabetic() => {
                return Err(format!(
                    "task hub name {raw:?} must start with a letter (a-z, A-Z)"
                ))
            }
            Some(_) => {}
        }
        if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))) {
            return Err(format!(
                "task hub name {raw:?} contains {bad:?}; use letters, digits, '-' and '_'"
            ));
        }
        // Only ASCII is left, so the cut below is on a character boundary.
        if raw.len() > MAX_TASK_HUB_LEN {
            return Err(format!(
                "task hub name {:?}... is longer than {MAX_TASK_HUB_LEN} characters",
                &raw[..MAX_TASK_HUB_LEN]
            ));
        }
        Ok(Self(raw.to_ascii_lowercase()))
    }

    /// The canonical name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the default hub.
    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_TASK_HUB
    }
}

impl fmt::Display for TaskHubName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_folded_to_lower_case() {
        assert_eq!(
            TaskHubName::parse("Orders-Hub_2").unwrap().as_str(),
            "orders-hub_2"
        );
        assert!(TaskHubName::parse("default").unwrap().is_default());
        assert!(TaskHubName::parse("DEFAULT").unwrap().is_default());
        for bad in ["", "1hub", "-hub", "hub.a", "hub a", "hüb", "../etc"] {
            assert!(TaskHubName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(TaskHubName::parse(&"h".repeat(MAX_TASK_HUB_LEN)).is_ok());
        assert!(TaskHubName::parse(&"h".repeat(MAX_TASK_HUB_LEN + 1)).is_err());
    }
}
