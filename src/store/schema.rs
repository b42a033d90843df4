//! Refusing a database whose schema this binary does not know, before any migration
//! runs: a database migrated by a newer sidecar (its `_sqlx_migrations` table records a
//! version beyond the newest embedded one) must not be opened by an older one, which
//! would read and write tables it does not understand. The check only reads, so a
//! refused database is left exactly as it was.

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{PgPool, SqliteConnection};

use super::{Result, StoreError};

/// The newest migration version embedded in this binary.
fn newest_known(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

fn newer(version: i64, newest: i64) -> StoreError {
    StoreError::Backend(format!(
        "database schema version {version} is newer than this sidecar supports (newest \
         known: {newest}); use a newer sidecar"
    ))
}

/// Fails when `applied` (the newest version recorded in the database) is newer than any
/// of `migrator`'s.
fn check(applied: Option<i64>, migrator: &Migrator) -> Result<()> {
    let newest = newest_known(migrator);
    match applied {
        Some(version) if version > newest => Err(newer(version, newest)),
        _ => Ok(()),
    }
}

/// [`check`] on a SQLite database, on the connection that will then migrate it.
pub(super) async fn check_sqlite(conn: &mut SqliteConnection, migrator: &Migrator) -> Result<()> {
    let read = |err: sqlx::Error| {
        tracing::error!(error = %err, "reading the schema version failed");
        StoreError::Backend(format!("cannot read the database schema version: {err}"))
    };
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(read)?;
    let applied = if exists {
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&mut *conn)
            .await
            .map_err(read)?
    } else {
        None
    };
    check(applied, migrator)
}

/// [`check`] on a PostgreSQL database (the migrations table in the search path, where
/// sqlx keeps it).
pub(super) async fn check_postgres(pool: &PgPool, migrator: &Migrator) -> Result<()> {
    let read = |err: sqlx::Error| {
        tracing::error!(error = %err, "reading the schema version failed");
        StoreError::Unavailable(format!("cannot read the database schema version: {err}"))
    };
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(read)?;
    let applied = if exists {
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(pool)
            .await
            .map_err(read)?
    } else {
        None
    };
    check(applied, migrator)
}

/// A failed migration run as a start-up error that says what is wrong with the schema.
pub(super) fn migration_error(err: MigrateError, migrator: &Migrator) -> StoreError {
    tracing::error!(error = %err, "database migrations failed");
    let newest = newest_known(migrator);
    StoreError::Backend(match err {
        MigrateError::VersionMissing(version) if version > newest => {
            return newer(version, newest);
        }
        MigrateError::VersionMissing(version) => format!(
            "the database records schema migration {version}, which this sidecar does not \
             know; it was migrated by a different build"
        ),
        MigrateError::VersionMismatch(version) => format!(
            "schema migration {version} recorded in the database differs from this \
             sidecar's (checksum mismatch)"
        ),
        MigrateError::Dirty(version) => format!(
            "schema migration {version} was left incomplete in the database; restore a \
             backup or repair it by hand"
        ),
        _ => "database migration failed; see the log".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");

    #[test]
    fn a_newer_version_is_refused_and_known_ones_pass() {
        let newest = newest_known(&SQLITE);
        assert!(check(None, &SQLITE).is_ok());
        assert!(check(Some(newest), &SQLITE).is_ok());
        let err = check(Some(20991231000000), &SQLITE)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "schema version 20991231000000 is newer than this sidecar supports (newest known: {newest})"
            )),
            "{err}"
        );
    }
}
