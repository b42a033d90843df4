//! Checks of a database path before anything is created or opened: a missing directory,
//! a path that is a directory, a file that cannot be opened for writing (read-only
//! mount, immutable file, permissions) or is not a SQLite database. Each becomes a start-up
//! error naming the path and the cause, instead of SQLite's "unable to open database
//! file" after the lock file was already created. The checks open the file without
//! writing to it, so a refused database is left as it was.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read};
use std::path::Path;

use crate::store::{Result, StoreError};

/// Every SQLite 3 database file starts with these 16 bytes.
const HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Checks `path` (a file path, with any `?options` of a `sqlite:` URL).
pub(super) fn check(path: &str) -> Result<()> {
    let path = Path::new(path.split('?').next().unwrap_or(path));
    let refuse = |what: String| Err(StoreError::Unavailable(what));
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return refuse(format!(
                "cannot open the SQLite database {}: {} is not a directory",
                path.display(),
                dir.display()
            ))
        }
        Err(err) if err.kind() == ErrorKind::NotFound => {
            return refuse(format!(
                "cannot open the SQLite database {}: the directory {} does not exist; create \
                 it or choose another --db path",
                path.display(),
                dir.display()
            ))
        }
        Err(err) => {
            return refuse(format!(
                "cannot open the SQLite database {}: cannot access the directory {}: {err}",
                path.display(),
                dir.display()
            ))
        }
    }
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        // Created on open; whether the directory is writable shows when the lock file is.
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => {
            return refuse(format!(
                "cannot open the SQLite database {}: {err}",
                path.display()
            ))
        }
    };
    if meta.is_dir() {
        return refuse(format!(
            "cannot open the SQLite database {}: it is a directory",
            path.display()
        ));
    }
    // Read and write access, as SQLite will need; opening does not change the file.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|err| {
            StoreError::Unavailable(format!(
                "cannot open the SQLite database {} for reading and writing: {err}",
                path.display()
            ))
        })?;
    let mut header = Vec::with_capacity(HEADER.len());
    (&mut file)
        .take(HEADER.len() as u64)
        .read_to_end(&mut header)
        .map_err(|err| {
            StoreError::Unavailable(format!(
                "cannot read the SQLite database {}: {err}",
                path.display()
            ))
        })?;
    // An empty file is a valid, empty database (SQLite writes the header on first use).
    if !header.is_empty() && header != HEADER {
        return refuse(format!(
            "cannot open {}: it is not a SQLite database (no SQLite header)",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_path_is_named_with_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere/db.sqlite");
        let err = check(missing.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");

        let err = check(dir.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");

        let junk = dir.path().join("junk.sqlite");
        std::fs::write(&junk, b"not a database at all").unwrap();
        let err = check(junk.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("not a SQLite database"), "{err}");

        let empty = dir.path().join("empty.sqlite");
        std::fs::write(&empty, b"").unwrap();
        check(empty.to_str().unwrap()).unwrap();
        check(dir.path().join("new.sqlite").to_str().unwrap()).unwrap();
    }
}
