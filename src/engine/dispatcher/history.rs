//! Committed histories of running instances, kept so an episode does not re-read (and
//! re-decode) a history that only ever grows by what this process appended. The store's
//! read takes the cached (execution, length) and skips the history when it still matches,
//! so an entry made stale by another process is noticed, never trusted.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::{ExecutionId, InstanceId, StatusChange, Transition};
use crate::proto as pb;

/// Most histories kept in memory; beyond it episodes read history from the store.
const CAP: usize = 50_000;

struct Entry {
    execution_id: ExecutionId,
    events: Arc<Vec<pb::HistoryEvent>>,
}

/// The cache. See the module docs.
#[derive(Default)]
pub(super) struct HistoryCache {
    map: HashMap<InstanceId, Entry>,
}

impl HistoryCache {
    /// What the store needs to decide whether to send the history again.
    pub(super) fn key(&self, id: &InstanceId) -> Option<(ExecutionId, u32)> {
        self.map
            .get(id)
            .map(|h| (h.execution_id.clone(), h.events.len() as u32))
    }

    /// The cached events of `id`.
    pub(super) fn events(&self, id: &InstanceId) -> Option<Arc<Vec<pb::HistoryEvent>>> {
        self.map.get(id).map(|h| Arc::clone(&h.events))
    }

    /// Keeps a history just read (while there is room, or replacing an entry).
    pub(super) fn insert(
        &mut self,
        id: &InstanceId,
        execution_id: &ExecutionId,
        events: &Arc<Vec<pb::HistoryEvent>>,
    ) {
        if self.map.len() < CAP || self.map.contains_key(id) {
            let entry = Entry {
                execution_id: execution_id.clone(),
                events: Arc::clone(events),
            };
            self.map.insert(id.clone(), entry);
        }
    }

    /// Forgets one instance's history (a failed or refused commit: re-read it).
    pub(super) fn remove(&mut self, id: &InstanceId) {
        self.map.remove(id);
    }

    /// Keeps the cached history in step with a committed transition.
    pub(super) fn advance(&mut self, t: &Transition) {
        let id = &t.instance_id;
        match &t.status {
            StatusChange::Progress => {
                let current = self.map.get_mut(id).filter(|h| {
                    h.execution_id == t.expected_execution_id
                        && h.events.len() == t.expected_history_len as usize
                });
                match current {
                    Some(h) => {
                        Arc::make_mut(&mut h.events).extend(t.history_append.iter().cloned())
                    }
                    None => {
                        self.map.remove(id);
                    }
                }
            }
            StatusChange::ContinuedAsNew { execution_id, .. } => {
                self.insert(id, execution_id, &Arc::new(Vec::new()));
            }
            StatusChange::Terminal { .. } => {
                self.map.remove(id);
            }
        }
    }
}
