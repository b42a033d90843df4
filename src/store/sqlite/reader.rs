//! Inline reads: the small hot reads (an episode's record and visible messages, an
//! instance record) run as plain SQLite calls on the calling task's own thread, over a few
//! read-only rusqlite connections kept here.
//!
//! Each of them is one indexed statement over a few pages, so running it in place costs
//! less than handing it to sqlx's worker thread for the connection and waiting to be woken
//! again (a channel and two context switches per read, 17–19 % of the sidecar's CPU in
//! profiles of W1). Reads that can be large (histories, query pages) stay on the sqlx
//! pool, off the async threads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::codec::sq_error;
use crate::store::{Result, StoreError};

/// Prepared statements kept per connection; the inline reads use a handful.
const STATEMENT_CACHE: usize = 16;

/// A pool of read-only connections to one database file, opened on demand.
pub(super) struct Reader {
    path: PathBuf,
    busy_timeout: Duration,
    /// Idle connections; at most `keep` are kept after use.
    idle: Mutex<Vec<Connection>>,
    keep: usize,
    closed: AtomicBool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("idle", &self.lock().len())
            .field("keep", &self.keep)
            .finish()
    }
}

impl Reader {
    /// A reader of `path`, which must already be in WAL mode (read-only connections
    /// cannot set it).
    pub(super) fn new(path: PathBuf, busy_timeout: Duration, keep: usize) -> Self {
        Self {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
            keep: keep.max(1),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `read` on an idle connection (a new one when none is idle). Each statement
    /// is its own snapshot, as on the sqlx pool without a transaction.
    pub(super) fn with<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("database connection closed".into()));
        }
        let popped = self.lock().pop();
        let conn = match popped {
            Some(conn) => conn,
            None => self.open()?,
        };
        let out = read(&conn);
        let mut idle = self.lock();
        if idle.len() < self.keep && !self.closed.load(Ordering::Acquire) {
            idle.push(conn);
        }
        out
    }

    /// Closes the idle connections; later reads are `Unavailable`, as on a closed pool.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.lock().clear();
    }

    fn open(&self) -> Result<Connection> {
        // NO_MUTEX: a connection is used by one thread at a time, handed out by `idle`.
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(sq_error("open"))?;
        conn.busy_timeout(self.busy_timeout)
            .map_err(sq_error("open"))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(conn: &Connection) -> Result<i64> {
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .map_err(sq_error("count"))
    }

    #[test]
    fn reads_see_each_commit_reuse_connections_and_stop_after_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sqlite");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v)")
            .unwrap();
        let reader = Reader::new(path, Duration::from_secs(1), 2);

        assert_eq!(reader.with(count).unwrap(), 0);
        writer.execute("INSERT INTO t VALUES (1)", []).unwrap();
        // A kept connection starts a new snapshot with each statement.
        assert_eq!(reader.with(count).unwrap(), 1);
        assert_eq!(reader.lock().len(), 1);

        // Read-only: a write through the reader fails and leaves the data alone.
        let err = reader
            .with(|c| {
                c.execute("INSERT INTO t VALUES (2)", [])
                    .map_err(sq_error("insert"))
            })
            .unwrap_err();
        assert!(!matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert_eq!(reader.with(count).unwrap(), 1);

        reader.close();
        assert!(reader.lock().is_empty());
        let err = reader.with(count).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }
}
