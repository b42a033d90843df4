//! Where each task hub's state lives, so the rest of the server opens a hub by name.
//!
//! - SQLite: one database file per hub, so hubs share nothing (not even the writer): the
//!   default hub is the `--db` file itself (a single-hub sidecar is unchanged), hub `h` is
//!   `<db>.hubs/h.sqlite` next to it. In memory, each hub is its own private database.
//! - PostgreSQL: one database for all hubs (every key starts with the hub), one pool of
//!   calls and one of leases shared by the hubs' stores.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::postgres::{PostgresOptions, PostgresPools};
use super::sqlite::{SqliteOptions, SqliteStore};
use super::{Result, Store, StoreError, StoreUrl};
use crate::domain::TaskHubName;

/// Opens the store of any task hub of one database (`--db`).
#[derive(Debug)]
pub enum HubStores {
    /// One SQLite file per hub, the default hub's at this path.
    SqliteFile(PathBuf),
    /// One private in-memory SQLite database per hub.
    SqliteMemory,
    /// One PostgreSQL database, its pools shared by every hub.
    Postgres(Arc<PostgresPools>),
}

impl HubStores {
    /// Prepares the backend `url` names; for PostgreSQL this connects and migrates.
    pub async fn connect(url: &StoreUrl, postgres: PostgresOptions) -> Result<Self> {
        Ok(match url {
            StoreUrl::SqliteFile(path) => Self::SqliteFile(path.clone()),
            StoreUrl::SqliteMemory => Self::SqliteMemory,
            StoreUrl::Postgres(url) => Self::Postgres(PostgresPools::connect(url, postgres).await?),
        })
    }

    /// Opens (creating if needed) the store of `hub`.
    pub async fn open(&self, hub: &TaskHubName) -> Result<Arc<dyn Store>> {
        Ok(match self {
            Self::SqliteFile(_) => {
                let path = self.sqlite_path(hub).unwrap_or_default();
                if let Some(dir) = path.parent().filter(|_| !hub.is_default()) {
                    std::fs::create_dir_all(dir).map_err(|err| {
                        StoreError::Unavailable(format!(
                            "cannot create the task hub directory {}: {err}",
                            dir.display()
                        ))
                    })?;
                }
                let path = path.to_string_lossy();
                Arc::new(SqliteStore::open_with(&path, SqliteOptions::default()).await?)
            }
            Self::SqliteMemory => {
                Arc::new(SqliteStore::open_with(":memory:", SqliteOptions::default()).await?)
            }
            Self::Postgres(pools) => Arc::new(pools.hub(hub.as_str())),
        })
    }

    /// The SQLite file of `hub` (file-backed SQLite only).
    pub fn sqlite_path(&self, hub: &TaskHubName) -> Option<PathBuf> {
        let Self::SqliteFile(db) = self else {
            return None;
        };
        if hub.is_default() {
            return Some(db.clone());
        }
        Some(hubs_dir(db).join(format!("{hub}.sqlite")))
    }

    /// The hubs that already hold state, besides the default one (which always exists).
    pub async fn existing(&self) -> Result<Vec<TaskHubName>> {
        let names = match self {
            Self::SqliteMemory => Vec::new(),
            Self::SqliteFile(db) => match std::fs::read_dir(hubs_dir(db)) {
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(err) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot list the task hubs in {}: {err}",
                        hubs_dir(db).display()
                    )))
                }
                Ok(entries) => entries
                    .filter_map(|entry| {
                        let name = entry.ok()?.file_name().into_string().ok()?;
                        name.strip_suffix(".sqlite").map(str::to_owned)
                    })
                    .collect(),
            },
            Self::Postgres(pools) => pools.hubs().await?,
        };
        let mut hubs: Vec<TaskHubName> = names
            .iter()
            .filter_map(|name| TaskHubName::parse(name).ok())
            // A name only counts in its canonical form (no case twins of one hub).
            .filter(|hub| names.iter().any(|n| n == hub.as_str()))
            .filter(|hub| !hub.is_default())
            .collect();
        hubs.sort();
        hubs.dedup();
        Ok(hubs)
    }
}

/// `<db>.hubs`: the directory of the non-default hubs' files.
fn hubs_dir(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".hubs");
    db.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hub_has_its_own_file_next_to_the_default_one() {
        let stores = HubStores::SqliteFile("/data/durabletask.sqlite".into());
        let hub = |name| TaskHubName::parse(name).unwrap();
        assert_eq!(
            stores.sqlite_path(&hub("Default")).unwrap(),
            PathBuf::from("/data/durabletask.sqlite")
        );
        assert_eq!(
            stores.sqlite_path(&hub("Orders")).unwrap(),
            PathBuf::from("/data/durabletask.sqlite.hubs/orders.sqlite")
        );
        assert_eq!(HubStores::SqliteMemory.sqlite_path(&hub("a")), None);
    }
}
