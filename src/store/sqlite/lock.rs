//! One sidecar per SQLite file. The store keeps routing state in memory on the premise that
//! it is the file's only writer (`hot`), so a second process on the same file would commit
//! against stale guards. An exclusive advisory lock on a file next to the database, taken
//! before the database is opened, makes the second process refuse to start; the kernel
//! drops the lock when its holder exits, even by `kill -9`, so a restart never waits.
//!
//! The lock is on `<db>-sidecar.lock`, not on the database itself: SQLite's own locks are
//! POSIX record locks, which a process loses when it closes *any* descriptor of that file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Mutex;

use crate::store::{Result, StoreError};

/// The held lock (or none, for in-memory databases).
#[derive(Debug)]
pub(super) struct FileLock {
    file: Mutex<Option<File>>,
}

impl FileLock {
    /// No lock: an in-memory database is private to its connection anyway.
    pub(super) fn none() -> Self {
        Self {
            file: Mutex::new(None),
        }
    }

    /// Locks the database at `db_path` for this process, or says who holds it.
    pub(super) fn acquire(db_path: &str) -> Result<Self> {
        let db_path = db_path.split('?').next().unwrap_or(db_path);
        let lock_path = format!("{db_path}-sidecar.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|err| {
                StoreError::Unavailable(format!("cannot open lock file {lock_path}: {err}"))
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("another process ({holder})")
                };
                return Err(StoreError::Unavailable(format!(
                    "the SQLite database {db_path} is in use by {holder}; a SQLite file serves \
                     one sidecar at a time (run several sidecars on PostgreSQL: --db postgres://...)"
                )));
            }
            Err(TryLockError::Error(err)) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot lock {lock_path}: {err}"
                )));
            }
        }
        // Who holds it, for the message a second process prints. Best effort: the lock,
        // not this text, is what excludes the second process.
        let text = format!(
            "pid {} on {}",
            std::process::id(),
            crate::store::codec::hostname()
        );
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|()| file.flush());
        Ok(Self {
            file: Mutex::new(Some(file)),
        })
    }

    /// Unlocks (closing the descriptor releases the lock); idempotent.
    pub(super) fn release(&self) {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = file.take() {
            let _ = file.set_len(0);
        }
    }
}
