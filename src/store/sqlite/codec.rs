//! Column encodings of the SQLite store: times as microseconds, protobuf and JSON
//! columns, the instance column list, the typed column reads the shared row decoding
//! (`store::rows`) builds on, and the mapping of sqlx and rusqlite errors to
//! [`StoreError`].
//!
//! The encodings are documented in the header of the first migration; this is the only
//! file that knows them.

use chrono::{DateTime, Utc};
use prost::Message;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::store::codec::round_up;
pub(super) use crate::store::codec::{decode_event, encode, status, tags_json, TERMINAL_SQL};
use crate::store::rows::Columns;
use crate::store::StoreError;

/// The columns `rows::instance_record` reads, in a form ready to splice into a SELECT.
pub(super) const INSTANCE_COLUMNS: &str = "instance_id, execution_id, name, version, status, \
     created_at, last_updated_at, completed_at, scheduled_start_at, input, output, \
     custom_status, failure, parent_instance_id, tags, trace_context, history_len";

/// A time as stored: microseconds since the epoch, rounded down.
pub(super) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// A visibility time as stored: rounded *up*, so `visible_at <= micros(now)` never holds
/// before the exact instant (a timer must not fire early, PROTOCOL.md §4.6).
pub(super) fn visible_micros(t: DateTime<Utc>) -> i64 {
    round_up(t).timestamp_micros()
}

/// A stored time back to `DateTime<Utc>`.
pub(super) fn time(us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::<Utc>::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {us} out of range")))
}

/// A JSON array of the messages' protobuf encodings as hex strings: with `json_each` and
/// `unhex` one fixed (and therefore cached) statement inserts any number of rows.
pub(super) fn hex_json_array<'a, M: Message + 'a>(
    items: impl IntoIterator<Item = &'a M>,
) -> String {
    let mut out = String::from("[");
    for (i, m) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        push_hex(&mut out, &m.encode_to_vec());
        out.push('"');
    }
    out.push(']');
    out
}

/// Appends `bytes` as lower-case hex.
pub(super) fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// SQLite stores times as microseconds since the epoch (see [`micros`]).
impl Columns for SqliteRow {
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        get(self, column)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        get(self, column)
    }

    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        get(self, column)
    }

    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        get::<Option<i64>>(self, column)?.map(time).transpose()
    }
}

/// The same encodings read through rusqlite (the writer's and the inline reader's rows).
impl Columns for rusqlite::Row<'_> {
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        sq_get(self, column)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        sq_get(self, column)
    }

    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        sq_get(self, column)
    }

    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        sq_get::<Option<i64>>(self, column)?.map(time).transpose()
    }
}

fn sq_get<T: rusqlite::types::FromSql>(
    row: &rusqlite::Row<'_>,
    column: &str,
) -> Result<T, StoreError> {
    row.get(column)
        .map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

/// One typed column; a type mismatch means the file was not written by us.
pub(super) fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column)
        .map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

/// SQLite's primary result codes for "database or disk is full" and "disk I/O error".
const SQLITE_FULL: i32 = 13;
const SQLITE_IOERR: i32 = 10;

/// Maps a sqlx error to a [`StoreError`], logging the full error. The returned message
/// carries no SQL and no file paths (STYLE.md §4): clients may see it.
pub(super) fn db_error(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |err| {
        tracing::error!(error = %err, op, "sqlite store operation failed");
        match err {
            sqlx::Error::PoolTimedOut => {
                StoreError::Unavailable("database busy: no connection available".into())
            }
            sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                StoreError::Unavailable("database connection closed".into())
            }
            sqlx::Error::Io(_) => StoreError::Unavailable("database i/o failure".into()),
            sqlx::Error::Database(db) => {
                // The extended result code; its low byte is the primary one.
                let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
                sqlite_code_error(op, code, db.message())
            }
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(format!("{op}: undecodable column"))
            }
            _ => StoreError::Backend(format!("{op} failed")),
        }
    }
}

/// [`db_error`] for the writer's direct (rusqlite) statements: the same mapping.
pub(super) fn sq_error(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |err| {
        tracing::error!(error = %err, op, "sqlite store operation failed");
        match err {
            rusqlite::Error::SqliteFailure(code, message) => sqlite_code_error(
                op,
                code.extended_code,
                message.as_deref().unwrap_or("database error"),
            ),
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnIndex(_)
            | rusqlite::Error::InvalidColumnName(_) => {
                StoreError::Corrupt(format!("{op}: undecodable column"))
            }
            _ => StoreError::Backend(format!("{op} failed")),
        }
    }
}

/// The error for an SQLite result code (extended; its low byte is the primary one).
fn sqlite_code_error(op: &'static str, code: i32, message: &str) -> StoreError {
    match code & 0xff {
        SQLITE_FULL => {
            crate::metrics::get()
                .commits
                .disk_full(crate::metrics::Backend::Sqlite);
            StoreError::DiskFull
        }
        // A failed write or fsync (often ENOSPC on the WAL or -shm file, which SQLite
        // reports as an i/o error): the transaction is rolled back and a retry may
        // succeed, so this is no internal error.
        SQLITE_IOERR => StoreError::Unavailable(format!("{op}: database i/o error")),
        _ => StoreError::Backend(format!("{op}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn visibility_rounds_up_and_plain_times_round_down() {
        let t = Utc.timestamp_opt(10, 1_500).unwrap();
        assert_eq!(micros(t), 10_000_001);
        assert_eq!(visible_micros(t), 10_000_002);
        let exact = Utc.timestamp_opt(10, 2_000).unwrap();
        assert_eq!(visible_micros(exact), micros(exact));
        assert_eq!(time(micros(exact)).unwrap(), exact);
    }
}
