//! The routing state of instances (status, execution, history length), kept in memory
//! so the writer's guard and routing checks need no SELECT: this process is the only
//! writer of the database file, so what it wrote last is what is stored.
//!
//! Only the writer task reads or changes it, inside its transaction, so entries follow
//! the uncommitted state of the current batch. When any request or batch rolls back,
//! the writer clears the whole map (rare), and entries are re-read on demand.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension};

use super::codec::{self, sq_error};
use crate::domain::{ExecutionId, InstanceId};
use crate::store::Result;

/// What the routing and guard checks need to know about an instance.
pub(super) use crate::domain::rules::InstanceFacts as State;

/// Entries kept at most; past it the map starts over (memory stays bounded).
const CAP: usize = 100_000;

/// The cache. See the module docs.
#[derive(Debug, Default)]
pub(super) struct Hot {
    map: Mutex<HashMap<InstanceId, State>>,
}

impl Hot {
    fn lock(&self) -> MutexGuard<'_, HashMap<InstanceId, State>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instance's routing state, or `None` when it does not exist.
    pub(super) fn state(&self, conn: &Connection, id: &InstanceId) -> Result<Option<State>> {
        if let Some(s) = self.lock().get(id) {
            return Ok(Some(s.clone()));
        }
        let found = read(conn, id)?;
        if let Some(s) = &found {
            // Terminal instances are rarely touched again; keep the map to live ones.
            if !s.status.is_terminal() {
                self.set(id, s.clone());
            }
        }
        Ok(found)
    }

    /// Whether the instance's state is cached (it exists, or did at its last change).
    pub(super) fn knows(&self, id: &InstanceId) -> bool {
        self.lock().contains_key(id)
    }

    /// Records a state just written.
    pub(super) fn set(&self, id: &InstanceId, state: State) {
        let mut map = self.lock();
        if map.len() >= CAP && !map.contains_key(id) {
            map.clear();
        }
        map.insert(id.clone(), state);
    }

    /// Forgets one instance (deleted, or changed by a rare path that does not update).
    pub(super) fn remove(&self, id: &InstanceId) {
        self.lock().remove(id);
    }

    /// Forgets everything (a rollback, a purge, a wipe).
    pub(super) fn clear(&self) {
        self.lock().clear();
    }
}

fn read(conn: &Connection, id: &InstanceId) -> Result<Option<State>> {
    let row = conn
        .prepare_cached(
            "SELECT status, execution_id, history_len FROM instances WHERE instance_id = ?",
        )
        .and_then(|mut s| {
            s.query_row([id.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(sq_error("instance lookup"))?;
    row.map(|(status, execution_id, history_len)| {
        Ok(State {
            status: codec::status(&status)?,
            execution_id: ExecutionId::new(execution_id),
            history_len,
        })
    })
    .transpose()
}
