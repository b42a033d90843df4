//! The protocol rules a store applies inside its write transactions: which messages an
//! inbox admits, when a terminate ends an instance in place, how suspend and resume flip
//! the status, what a child-id collision does, which status an episode leaves behind.
//!
//! Each backend reads the facts (a target's status, execution, history length) in its own
//! transaction and asks these functions what to do, so the rules are written once and every
//! backend enforces the same ones. Pure: no I/O, no clock.

use super::{ExecutionId, OutboundMessage, RuntimeStatus};
use crate::proto as pb;
use pb::history_event::EventType;

/// What a store knows about an orchestration instance when it routes or guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFacts {
    /// Stored status.
    pub status: RuntimeStatus,
    /// Current execution.
    pub execution_id: ExecutionId,
    /// Committed history length of the current execution.
    pub history_len: i64,
}

/// Whether an inbox accepts a message (PROTOCOL.md §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Store it as addressed.
    Deliver,
    /// Store it addressed to this execution instead: a rewind replaced the one it names
    /// and the current execution continues it (§4.10).
    Readdress(ExecutionId),
    /// Do not store it: the target is unknown, ended, or runs another execution.
    Drop,
    /// The target runs another execution; deliver to the current one only if a rewind
    /// replaced the named one. The store answers with [`admit_after_rewind_check`].
    AskRewound,
}

/// First step of §4.5: decided from the target's facts alone. Most messages stop here; a
/// message for another execution needs the rewind record, which stores read only then.
pub fn admit(target: Option<&InstanceFacts>, message: &OutboundMessage) -> Admission {
    let Some(target) = target else {
        return Admission::Drop;
    };
    if target.status.is_terminal() {
        return Admission::Drop;
    }
    match &message.target_execution {
        Some(wanted) if *wanted != target.execution_id => Admission::AskRewound,
        _ => Admission::Deliver,
    }
}

/// Second step of §4.5 for [`Admission::AskRewound`]: `rewound` = the named execution is
/// one the target's rewinds replaced.
pub fn admit_after_rewind_check(target: &InstanceFacts, rewound: bool) -> Admission {
    if rewound {
        Admission::Readdress(target.execution_id.clone())
    } else {
        Admission::Drop
    }
}

/// When a message is not delivered, whether it was an entity lock grant whose entities
/// must be released (§4.5: nobody is left to release them). Returns the critical section.
pub fn undeliverable_grant(message: &OutboundMessage) -> Option<&str> {
    match &message.event.event_type {
        Some(EventType::EntityLockGranted(g)) => Some(&g.critical_section_id),
        _ => None,
    }
}

/// What a terminate request does (PROTOCOL.md §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminateAction {
    /// Already ended: nothing.
    AlreadyTerminal,
    /// Nothing committed yet and no parent to tell: end it here (status TERMINATED,
    /// output = reason, inbox dropped) rather than wait for a worker that may never come.
    InPlace,
    /// Put `ExecutionTerminated` in the inbox; the next episode ends it.
    Enqueue,
}

/// Decides a terminate. A not-yet-started instance counts as such while PENDING, or
/// SUSPENDED before its first episode (suspending does not start it). Children always go
/// through their inbox, so the parent hears of it from the usual episode.
pub fn terminate_action(target: &InstanceFacts, has_parent: bool) -> TerminateAction {
    if target.status.is_terminal() {
        return TerminateAction::AlreadyTerminal;
    }
    let unstarted = matches!(
        target.status,
        RuntimeStatus::Pending | RuntimeStatus::Suspended
    ) && target.history_len == 0;
    if unstarted && !has_parent {
        TerminateAction::InPlace
    } else {
        TerminateAction::Enqueue
    }
}

/// The status after a suspend (`suspend = true`) or resume request, or `None` when it
/// changes nothing (terminal, or already so). The flip happens at request time
/// (PROTOCOL.md §3.6); the marker event goes to the inbox.
pub fn suspend_flip(status: RuntimeStatus, suspend: bool) -> Option<RuntimeStatus> {
    if status.is_terminal() || (status == RuntimeStatus::Suspended) == suspend {
        return None;
    }
    Some(if suspend {
        RuntimeStatus::Suspended
    } else {
        RuntimeStatus::Running
    })
}

/// What creating a sub-orchestration does when its id may be taken (PROTOCOL.md §4.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildAction {
    /// The id is free: create it.
    Create,
    /// A terminal instance has the id: replace it (retries reuse child ids).
    Replace,
    /// A live instance has the id: tell the parent instead (`on_conflict`).
    Conflict,
}

/// Decides a child creation from the status of whatever holds the id now.
pub fn child_action(existing: Option<RuntimeStatus>) -> ChildAction {
    match existing {
        None => ChildAction::Create,
        Some(status) if status.is_terminal() => ChildAction::Replace,
        Some(_) => ChildAction::Conflict,
    }
}

/// The status an episode that goes on leaves: its first commit makes PENDING RUNNING,
/// and RUNNING or SUSPENDED stay as the suspend/resume requests left them.
pub fn status_after_progress(current: RuntimeStatus) -> RuntimeStatus {
    match current {
        RuntimeStatus::Pending => RuntimeStatus::Running,
        other => other,
    }
}

/// The status of the new execution after continue-as-new: suspension survives it.
pub fn status_after_continue(current: RuntimeStatus) -> RuntimeStatus {
    match current {
        RuntimeStatus::Suspended => RuntimeStatus::Suspended,
        _ => RuntimeStatus::Running,
    }
}

/// The commit guard (PROTOCOL.md §4.4.2 step 1): the episode ran against the current
/// execution and history of a live instance.
pub fn episode_guard_holds(
    current: Option<&InstanceFacts>,
    expected_execution: &ExecutionId,
    expected_history_len: u32,
) -> bool {
    current.is_some_and(|s| {
        s.execution_id == *expected_execution
            && s.history_len == i64::from(expected_history_len)
            && !s.status.is_terminal()
    })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::domain::events::event;
    use crate::domain::InstanceId;

    fn facts(status: RuntimeStatus, execution: &str, history_len: i64) -> InstanceFacts {
        InstanceFacts {
            status,
            execution_id: ExecutionId::new(execution),
            history_len,
        }
    }

    fn message(execution: Option<&str>, kind: EventType) -> OutboundMessage {
        let when = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        OutboundMessage {
            target: InstanceId::new("t"),
            target_execution: execution.map(ExecutionId::new),
            event: event(-1, when, kind),
            visible_at: when,
        }
    }

    fn raised() -> EventType {
        EventType::EventRaised(pb::EventRaisedEvent::default())
    }

    #[test]
    fn inbox_admits_live_targets_and_checks_the_execution() {
        let live = facts(RuntimeStatus::Running, "e2", 3);
        let ended = facts(RuntimeStatus::Completed, "e2", 3);
        assert_eq!(admit(None, &message(None, raised())), Admission::Drop);
        assert_eq!(
            admit(Some(&ended), &message(None, raised())),
            Admission::Drop
        );
        assert_eq!(
            admit(Some(&live), &message(None, raised())),
            Admission::Deliver
        );
        assert_eq!(
            admit(Some(&live), &message(Some("e2"), raised())),
            Admission::Deliver
        );
        assert_eq!(
            admit(Some(&live), &message(Some("e1"), raised())),
            Admission::AskRewound
        );
        assert_eq!(
            admit_after_rewind_check(&live, true),
            Admission::Readdress(ExecutionId::new("e2"))
        );
        assert_eq!(admit_after_rewind_check(&live, false), Admission::Drop);
    }

    #[test]
    fn only_lock_grants_need_a_release_when_undeliverable() {
        let grant = message(
            None,
            EventType::EntityLockGranted(pb::EntityLockGrantedEvent {
                critical_section_id: "cs".into(),
            }),
        );
        assert_eq!(undeliverable_grant(&grant), Some("cs"));
        assert_eq!(undeliverable_grant(&message(None, raised())), None);
    }

    #[test]
    fn terminate_in_place_only_before_the_first_episode_of_a_top_level_instance() {
        use RuntimeStatus::*;
        let cases = [
            (facts(Pending, "e", 0), false, TerminateAction::InPlace),
            (facts(Suspended, "e", 0), false, TerminateAction::InPlace),
            (facts(Pending, "e", 0), true, TerminateAction::Enqueue),
            (facts(Running, "e", 0), false, TerminateAction::Enqueue),
            (facts(Suspended, "e", 4), false, TerminateAction::Enqueue),
            (
                facts(Failed, "e", 4),
                false,
                TerminateAction::AlreadyTerminal,
            ),
        ];
        for (target, has_parent, want) in cases {
            assert_eq!(terminate_action(&target, has_parent), want, "{target:?}");
        }
    }

    #[test]
    fn suspend_and_resume_flip_once() {
        use RuntimeStatus::*;
        assert_eq!(suspend_flip(Running, true), Some(Suspended));
        assert_eq!(suspend_flip(Pending, true), Some(Suspended));
        assert_eq!(suspend_flip(Suspended, true), None);
        assert_eq!(suspend_flip(Suspended, false), Some(Running));
        assert_eq!(suspend_flip(Running, false), None);
        assert_eq!(suspend_flip(Completed, true), None);
    }

    #[test]
    fn children_create_replace_or_conflict() {
        assert_eq!(child_action(None), ChildAction::Create);
        assert_eq!(
            child_action(Some(RuntimeStatus::Failed)),
            ChildAction::Replace
        );
        assert_eq!(
            child_action(Some(RuntimeStatus::Suspended)),
            ChildAction::Conflict
        );
    }

    #[test]
    fn statuses_after_an_episode() {
        use RuntimeStatus::*;
        assert_eq!(status_after_progress(Pending), Running);
        assert_eq!(status_after_progress(Suspended), Suspended);
        assert_eq!(status_after_continue(Suspended), Suspended);
        assert_eq!(status_after_continue(Pending), Running);
    }

    #[test]
    fn the_guard_wants_the_same_execution_and_length_of_a_live_instance() {
        let e = ExecutionId::new("e");
        let live = facts(RuntimeStatus::Running, "e", 5);
        assert!(episode_guard_holds(Some(&live), &e, 5));
        assert!(!episode_guard_holds(Some(&live), &e, 4));
        assert!(!episode_guard_holds(Some(&live), &ExecutionId::new("x"), 5));
        let ended = facts(RuntimeStatus::Completed, "e", 5);
        assert!(!episode_guard_holds(Some(&ended), &e, 5));
        assert!(!episode_guard_holds(None, &e, 5));
    }
}
