//! Completion tokens: the text a worker echoes back to say which work item it completes,
//! a short memory of finished ones (so a retried completion answers OK), and the backoff
//! after repeated abandons.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

/// Prefix of orchestration work-item tokens.
pub(super) const ORCH_PREFIX: char = 'o';
/// Prefix of activity work-item tokens.
pub(super) const ACT_PREFIX: char = 'a';
/// Prefix of entity work-item tokens.
pub(super) const ENTITY_PREFIX: char = 'e';

/// The token text of `token` for a kind.
pub(super) fn format_token(prefix: char, token: u64) -> String {
    format!("{prefix}{token}")
}

/// The number inside a token of the given kind, or `None` (another kind, or garbage).
/// Whatever follows a `.` is the item's own key (see [`activity_token`]) and is ignored.
pub(super) fn parse_token(token: &str, prefix: char) -> Option<u64> {
    let rest = token.strip_prefix(prefix)?;
    rest.split_once('.').map_or(rest, |(t, _)| t).parse().ok()
}

/// An activity token also names the activity row, so a completion that reaches another
/// process sharing the store can still be applied there (`a<token>.<row>`).
pub(super) fn activity_token(token: u64, row: i64) -> String {
    format!("{ACT_PREFIX}{token}.{row}")
}

/// The activity row named by an activity token.
pub(super) fn activity_row(token: &str) -> Option<i64> {
    token
        .strip_prefix(ACT_PREFIX)?
        .split_once('.')?
        .1
        .parse()
        .ok()
}

/// Tokens of recently finished work items, so an exact duplicate completion (a retry
/// whose first reply was lost) answers OK instead of NOT_FOUND.
#[derive(Default)]
pub(super) struct RecentTokens {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl RecentTokens {
    const CAP: usize = 16_384;

    /// Remembers a finished token (the oldest is forgotten past the cap).
    pub(super) fn insert(&mut self, t: u64) {
        if self.set.insert(t) {
            self.order.push_back(t);
            if self.order.len() > Self::CAP {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    /// Whether `text` is a recently finished token of the kind.
    pub(super) fn finished(&self, text: &str, prefix: char) -> bool {
        parse_token(text, prefix).is_some_and(|t| self.set.contains(&t))
    }
}

/// 0 for the first abandon, then 1 s, 2 s, 4 s … up to `cap`.
pub(super) fn backoff(abandons: u32, cap: Duration) -> Duration {
    if abandons <= 1 {
        return Duration::ZERO;
    }
    let secs = 1u64 << (abandons - 2).min(16);
    Duration::from_secs(secs).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abandon_backoff_starts_immediate_then_doubles_to_the_cap() {
        let cap = Duration::from_secs(60);
        let got: Vec<u64> = (1..=9).map(|n| backoff(n, cap).as_secs()).collect();
        assert_eq!(got, vec![0, 1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn tokens_parse_only_with_their_kind_prefix() {
        assert_eq!(parse_token("o42", ORCH_PREFIX), Some(42));
        assert_eq!(parse_token("a42", ORCH_PREFIX), None);
        assert_eq!(parse_token("", ACT_PREFIX), None);
        assert_eq!(
            parse_token(&format_token(ENTITY_PREFIX, 7), ENTITY_PREFIX),
            Some(7)
        );
    }

    #[test]
    fn recent_tokens_answer_by_kind() {
        let mut recent = RecentTokens::default();
        recent.insert(5);
        assert!(recent.finished("o5", ORCH_PREFIX));
        assert!(!recent.finished("o6", ORCH_PREFIX));
        assert!(!recent.finished("x5", ORCH_PREFIX));
    }
}
