//! `OrchestrationState`: what the sidecar needs to know about an execution, folded from
//! its history. PURE: no async, no I/O, no clock.

use std::collections::{BTreeMap, HashMap};

use crate::proto as pb;
use pb::history_event::EventType;

use super::EngineError;

/// The facts of one execution that `apply` needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrchestrationState {
    /// The `ExecutionStarted` event's payload, once seen.
    pub started: Option<pb::ExecutionStartedEvent>,
    /// Whether the history holds `ExecutionCompleted`.
    pub completed: bool,
    /// Child instance ids created by this execution, in creation order.
    pub children: Vec<String>,
    /// The most recent `ExecutionTerminated` (its `recurse` flag drives recursive
    /// termination when the execution ends TERMINATED).
    pub terminated: Option<pb::ExecutionTerminatedEvent>,
    /// Outstanding activities by task id (scheduled, no result yet).
    pub pending_tasks: HashMap<i32, usize>,
    /// Open tasks of every kind (activities, timers, sub-orchestrations) by task id: results
    /// are matched by id, so a new task must not take the id of one still open. (An
    /// answered id may come back: the Python SDK retries a task under its first id.)
    pub open_tasks: HashMap<i32, usize>,
    /// Entity locks requested by this execution and not yet released: critical section
    /// → the entities still to unlock (PROTOCOL.md §5.4).
    pub open_locks: BTreeMap<String, Vec<String>>,
}

impl OrchestrationState {
    /// Folds events (past history followed by the new events) into the state.
    pub fn from_events<'a>(
        events: impl IntoIterator<Item = &'a pb::HistoryEvent>,
    ) -> Result<Self, EngineError> {
        let mut state = Self::default();
        for event in events {
            state.fold(event)?;
        }
        Ok(state)
    }

    fn fold(&mut self, event: &pb::HistoryEvent) -> Result<(), EngineError> {
        let Some(kind) = &event.event_type else {
            return Err(EngineError::CorruptHistory(
                "history event without a type".into(),
            ));
        };
        match kind {
            EventType::ExecutionStarted(started) => {
                if self.started.is_some() {
                    return Err(EngineError::CorruptHistory(
                        "two ExecutionStarted events in one execution".into(),
                    ));
                }
                self.started = Some(started.clone());
            }
            EventType::ExecutionCompleted(_) => self.completed = true,
            EventType::ExecutionTerminated(t) => self.terminated = Some(t.clone()),
            EventType::SubOrchestrationInstanceCreated(c) => {
                count_up(&mut self.open_tasks, event.event_id);
                if !self.children.contains(&c.instance_id) {
                    self.children.push(c.instance_id.clone());
                }
            }
            EventType::TaskScheduled(_) => {
                count_up(&mut self.open_tasks, event.event_id);
                count_up(&mut self.pending_tasks, event.event_id);
            }
            EventType::TimerCreated(_) => count_up(&mut self.open_tasks, event.event_id),
            EventType::TaskCompleted(c) => self.task_done(c.task_scheduled_id),
            EventType::TaskFailed(f) => self.task_done(f.task_scheduled_id),
            EventType::TimerFired(f) => count_down(&mut self.open_tasks, f.timer_id),
            EventType::SubOrchestrationInstanceCompleted(c) => {
                count_down(&mut self.open_tasks, c.task_scheduled_id)
            }
            EventType::SubOrchestrationInstanceFailed(f) => {
                count_down(&mut self.open_tasks, f.task_scheduled_id)
            }
            EventType::EntityLockRequested(r) => {
                self.open_locks
                    .insert(r.critical_section_id.clone(), r.lock_set.clone());
            }
            EventType::EntityUnlockSent(u) => self.unlock_sent(u),
            _ => {}
        }
        Ok(())
    }

    fn task_done(&mut self, task_id: i32) {
        count_down(&mut self.pending_tasks, task_id);
        count_down(&mut self.open_tasks, task_id);
    }

    /// Records an `EntityUnlockSent`: that entity no longer needs releasing.
    pub fn unlock_sent(&mut self, u: &pb::EntityUnlockSentEvent) {
        if let Some(set) = self.open_locks.get_mut(&u.critical_section_id) {
            set.retain(|e| Some(e) != u.target_instance_id.as_ref());
            if set.is_empty() {
                self.open_locks.remove(&u.critical_section_id);
            }
        }
    }

    /// The orchestrator name, once started.
    pub fn name(&self) -> Option<&str> {
        self.started.as_ref().map(|s| s.name.as_str())
    }
}

fn count_up(counts: &mut HashMap<i32, usize>, id: i32) {
    *counts.entry(id).or_default() += 1;
}

/// An answer to a task that is not open (a duplicate or a stray) changes nothing.
fn count_down(counts: &mut HashMap<i32, usize>, id: i32) {
    if let Some(n) = counts.get_mut(&id) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::HistoryBuilder;

    /// 1 OrchestratorStarted, 2 ExecutionStarted("greet"), 3 TaskScheduled(0),
    /// 4 TaskScheduled(1), 5 TaskCompleted(0), 6 SubOrchestrationInstanceCreated(2, "c1").
    #[test]
    fn fold_tracks_start_children_and_pending_tasks() {
        let h = HistoryBuilder::new("i1", "greet")
            .task_scheduled(0, "a")
            .task_scheduled(1, "b")
            .task_completed(0, "\"x\"")
            .child_created(2, "c1", "child")
            .build();
        let s = OrchestrationState::from_events(&h).unwrap();
        assert_eq!(s.name(), Some("greet"));
        assert_eq!(s.children, vec!["c1".to_string()]);
        assert_eq!(s.pending_tasks.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert!(!s.completed);
    }

    #[test]
    fn two_execution_started_events_are_corrupt() {
        let mut h = HistoryBuilder::new("i1", "x").build();
        h.extend(HistoryBuilder::new("i1", "x").build());
        assert!(matches!(
            OrchestrationState::from_events(&h),
            Err(EngineError::CorruptHistory(_))
        ));
    }
}
