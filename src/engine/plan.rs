//! Which inbox messages an episode delivers (PROTOCOL.md §4.2, §4.5). PURE.

use pb::history_event::EventType;

use crate::domain::InstanceRecord;
use crate::domain::RuntimeStatus;
use crate::proto as pb;
use crate::store::InboxMessage;

/// The decision for a fetched instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Run an episode with these messages (in this order); delete the stale ones with
    /// the commit.
    Dispatch {
        /// Messages delivered as `newEvents` (after a fresh `OrchestratorStarted`).
        deliver: Vec<InboxMessage>,
        /// Rows consumed with the commit without being delivered: undeliverable ones, and
        /// wake-up triggers.
        stale: Vec<i64>,
    },
    /// Nothing to run now; delete the stale rows (if any) and wait for more messages.
    Wait {
        /// Undeliverable rows to delete.
        stale: Vec<i64>,
    },
}

/// Decides an episode for `record` with the visible `messages` (inbox order).
pub fn plan_episode(
    record: &InstanceRecord,
    history: &[pb::HistoryEvent],
    messages: Vec<InboxMessage>,
) -> Plan {
    let started = history
        .iter()
        .any(|e| matches!(e.event_type, Some(EventType::ExecutionStarted(_))));
    let mut stale = Vec::new();
    let mut wake = Vec::new();
    let mut deliver = Vec::with_capacity(messages.len());
    let mut start_index = None;
    for m in messages {
        let wrong_execution = m
            .target_execution
            .as_ref()
            .is_some_and(|e| e != &record.execution_id);
        let is_start = matches!(m.event.event_type, Some(EventType::ExecutionStarted(_)));
        // A second ExecutionStarted can only be a leftover; the execution already began.
        if wrong_execution || (is_start && (started || start_index.is_some())) {
            stale.push(m.seq);
            continue;
        }
        // A rewind's wake-up (PROTOCOL.md §4.10): it makes the instance run an episode but
        // is never delivered, so that episode is just [OrchestratorStarted] plus whatever
        // else arrived (Java and Go workers cannot replay ExecutionRewound).
        if matches!(m.event.event_type, Some(EventType::ExecutionRewound(_))) {
            wake.push(m.seq);
            continue;
        }
        if is_start {
            start_index = Some(deliver.len());
        }
        deliver.push(m);
    }
    if !started {
        // Nothing can run before ExecutionStarted is visible (scheduled start); the early
        // messages wait for it. It must lead the first episode's newEvents.
        match start_index {
            None => return Plan::Wait { stale },
            Some(i) if i > 0 => {
                let start = deliver.remove(i);
                deliver.insert(0, start);
            }
            Some(_) => {}
        }
    }
    if deliver.is_empty() && wake.is_empty() {
        return Plan::Wait { stale };
    }
    if record.status == RuntimeStatus::Suspended {
        // Held while suspended; released together with the resume (§4.2 suspension rule).
        // Before its first episode an instance waits for resume or terminate: SDKs run
        // the orchestrator's first step before they apply a suspension in the same batch.
        let releases = |m: &InboxMessage| {
            is_lifecycle_marker(m)
                && (started
                    || !matches!(m.event.event_type, Some(EventType::ExecutionSuspended(_))))
        };
        if !deliver.iter().any(releases) {
            return Plan::Wait { stale };
        }
    }
    stale.extend(wake);
    Plan::Dispatch { deliver, stale }
}

fn is_lifecycle_marker(m: &InboxMessage) -> bool {
    matches!(
        m.event.event_type,
        Some(
            EventType::ExecutionSuspended(_)
                | EventType::ExecutionResumed(_)
                | EventType::ExecutionTerminated(_)
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ExecutionId;
    use crate::engine::testing::{inbox, record, HistoryBuilder};

    fn seqs(p: &Plan) -> (Vec<i64>, Vec<i64>) {
        match p {
            Plan::Dispatch { deliver, stale } => {
                (deliver.iter().map(|m| m.seq).collect(), stale.clone())
            }
            Plan::Wait { stale } => (vec![], stale.clone()),
        }
    }

    #[test]
    fn first_episode_puts_execution_started_first() {
        let r = record("i", RuntimeStatus::Pending);
        let msgs = vec![
            inbox(1, HistoryBuilder::raised("e", None), None),
            HistoryBuilder::start_message(2, &r),
        ];
        assert_eq!(seqs(&plan_episode(&r, &[], msgs)), (vec![2, 1], vec![]));
    }

    #[test]
    fn events_before_a_scheduled_start_wait() {
        let r = record("i", RuntimeStatus::Pending);
        let msgs = vec![inbox(1, HistoryBuilder::raised("e", None), None)];
        assert_eq!(plan_episode(&r, &[], msgs), Plan::Wait { stale: vec![] });
    }

    #[test]
    fn messages_for_an_old_execution_are_stale() {
        let r = record("i", RuntimeStatus::Running);
        let h = HistoryBuilder::new("i", "o").build();
        let old = Some(ExecutionId::new("old"));
        let msgs = vec![
            inbox(5, HistoryBuilder::timer_fired(1), old),
            inbox(6, HistoryBuilder::raised("e", None), None),
        ];
        assert_eq!(seqs(&plan_episode(&r, &h, msgs)), (vec![6], vec![5]));
    }

    #[test]
    fn suspended_before_its_first_episode_waits_for_resume_or_terminate() {
        let r = record("i", RuntimeStatus::Suspended);
        let start = HistoryBuilder::start_message(1, &r);
        let suspended = inbox(
            2,
            crate::domain::events::event(
                -1,
                crate::engine::testing::at(0),
                EventType::ExecutionSuspended(pb::ExecutionSuspendedEvent::default()),
            ),
            None,
        );
        let resumed = inbox(3, HistoryBuilder::resumed(), None);
        assert!(matches!(
            plan_episode(&r, &[], vec![start.clone(), suspended.clone()]),
            Plan::Wait { .. }
        ));
        assert_eq!(
            seqs(&plan_episode(&r, &[], vec![start, suspended, resumed])).0,
            vec![1, 2, 3]
        );
    }

    #[test]
    fn a_rewind_trigger_dispatches_an_episode_without_being_delivered() {
        let r = record("i", RuntimeStatus::Running);
        let h = HistoryBuilder::new("i", "o").build();
        let trigger = crate::domain::events::event(
            -1,
            crate::engine::testing::at(5),
            EventType::ExecutionRewound(pb::ExecutionRewoundEvent::default()),
        );
        let msgs = vec![inbox(4, trigger, Some(ExecutionId::new("e1")))];
        assert_eq!(
            plan_episode(&r, &h, msgs.clone()),
            Plan::Dispatch {
                deliver: vec![],
                stale: vec![4]
            }
        );
        let mut suspended = r;
        suspended.status = RuntimeStatus::Suspended;
        assert_eq!(
            plan_episode(&suspended, &h, msgs),
            Plan::Wait { stale: vec![] },
            "a suspended instance keeps its trigger for later"
        );
    }

    #[test]
    fn suspended_instance_holds_events_until_a_marker_arrives() {
        let r = record("i", RuntimeStatus::Suspended);
        let h = HistoryBuilder::new("i", "o").build();
        let held = vec![inbox(1, HistoryBuilder::raised("e", None), None)];
        assert_eq!(
            plan_episode(&r, &h, held.clone()),
            Plan::Wait { stale: vec![] }
        );
        let mut with_resume = held;
        with_resume.push(inbox(2, HistoryBuilder::resumed(), None));
        assert_eq!(
            seqs(&plan_episode(&r, &h, with_resume)),
            (vec![1, 2], vec![])
        );
    }
}
