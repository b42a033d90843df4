//! Change notifications per instance, for `WaitForInstance*` long polls: a waiting call
//! costs one registered `Notify`, never a polling task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::domain::InstanceId;

/// Registry of per-instance change signals.
#[derive(Debug, Default)]
pub struct Watchers {
    map: Mutex<HashMap<InstanceId, Arc<Notify>>>,
}

/// A registration; dropping it removes the entry once nobody else waits.
#[derive(Debug)]
pub struct Watch<'a> {
    owner: &'a Watchers,
    id: InstanceId,
    notify: Arc<Notify>,
}

impl Watchers {
    /// Registers interest in `id`. Create the `notified()` future from the returned watch
    /// *before* reading the state it guards, so no change slips between read and wait.
    pub fn watch(&self, id: &InstanceId) -> Watch<'_> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let notify = Arc::clone(map.entry(id.clone()).or_default());
        Watch {
            owner: self,
            id: id.clone(),
            notify,
        }
    }

    /// Wakes every current waiter on `id`.
    pub fn notify(&self, id: &InstanceId) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(id) {
            n.notify_waiters();
        }
    }
}

impl Watch<'_> {
    /// The signal to await.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut map = self.owner.map.lock().unwrap_or_else(|p| p.into_inner());
        // Two references left = the map's and ours: nobody else is waiting.
        if Arc::strong_count(&self.notify) <= 2 {
            map.remove(&self.id);
        }
    }
}
