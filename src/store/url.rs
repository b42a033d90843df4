//! `--db` parsed once into the backend it names, so no layer below the wiring compares
//! strings to pick a store.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Which database the sidecar keeps its state in.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A SQLite file, created if missing (`./state.sqlite`, `sqlite:///abs/path`).
    SqliteFile(PathBuf),
    /// A private in-memory SQLite database, lost on exit (`:memory:`).
    SqliteMemory,
    /// A PostgreSQL connection URL (`postgres://user:pass@host:5432/db?...`), kept as given.
    Postgres(String),
}

/// Why a `--db` value names no usable store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreUrlError {
    /// Nothing was given.
    #[error("--db must not be empty (a SQLite file path, :memory:, or postgres://user:pass@host:port/db)")]
    Empty,
    /// A URL scheme this sidecar has no backend for.
    #[error("--db {0:?}: unknown scheme {1:?} (use a SQLite file path, sqlite://path, :memory:, or postgres://...)")]
    UnknownScheme(String, String),
    /// `postgres://` without a host or database part.
    #[error("--db {0:?}: a PostgreSQL URL needs a host, e.g. postgres://user:pass@localhost:5432/durabletask")]
    PostgresWithoutHost(String),
}

impl StoreUrl {
    /// Whether several sidecar processes may share this database.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

impl FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(StoreUrlError::Empty);
        }
        if matches!(s, ":memory:" | "sqlite::memory:" | "sqlite://:memory:") {
            return Ok(Self::SqliteMemory);
        }
        if let Some(rest) = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"))
        {
            // Host part: after any credentials, before the path or query.
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            let host = authority.rsplit('@').next().unwrap_or_default();
            if host.is_empty() {
                return Err(StoreUrlError::PostgresWithoutHost(redact(s)));
            }
            return Ok(Self::Postgres(s.to_string()));
        }
        if let Some(path) = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(StoreUrlError::Empty);
            }
            return Ok(Self::SqliteFile(PathBuf::from(path)));
        }
        // `scheme://...` that is none of ours; a plain path may still contain ':'.
        if let Some((scheme, _)) = s.split_once("://") {
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+')
            {
                return Err(StoreUrlError::UnknownScheme(redact(s), scheme.to_string()));
            }
        }
        Ok(Self::SqliteFile(PathBuf::from(s)))
    }
}

/// The URL with any password replaced by `***`, for logs and error messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Shows the database without its password, so it can be logged.
impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SqliteFile(path) => write!(f, "{}", path.display()),
            Self::SqliteMemory => f.write_str(":memory:"),
            Self::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<StoreUrl, StoreUrlError> {
        s.parse()
    }

    #[test]
    fn paths_memory_and_postgres_urls() {
        assert_eq!(
            parse("./x.sqlite"),
            Ok(StoreUrl::SqliteFile("./x.sqlite".into()))
        );
        assert_eq!(
            parse("sqlite:///var/x.db?mode=rwc"),
            Ok(StoreUrl::SqliteFile("/var/x.db".into()))
        );
        assert_eq!(parse(":memory:"), Ok(StoreUrl::SqliteMemory));
        assert_eq!(parse("sqlite::memory:"), Ok(StoreUrl::SqliteMemory));
        let pg = "postgres://dt:secret@db.local:5432/dt?sslmode=disable";
        assert_eq!(parse(pg), Ok(StoreUrl::Postgres(pg.into())));
        assert!(parse("postgresql://localhost/dt").unwrap().is_shared());
        assert!(!parse("C:/data/x.sqlite").unwrap().is_shared());
    }

    #[test]
    fn bad_values_name_the_problem_without_the_password() {
        assert_eq!(parse("  "), Err(StoreUrlError::Empty));
        let err = parse("mysql://u:pw@h/db").unwrap_err();
        assert!(matches!(err, StoreUrlError::UnknownScheme(_, ref s) if s == "mysql"));
        assert!(!err.to_string().contains("pw@"), "{err}");
        let err = parse("postgres://u:pw@/db").unwrap_err();
        assert!(matches!(err, StoreUrlError::PostgresWithoutHost(_)));
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    #[test]
    fn display_hides_the_password() {
        let url = parse("postgres://dt:secret@h:5432/dt").unwrap();
        assert_eq!(url.to_string(), "postgres://dt:***@h:5432/dt");
        assert!(!format!("{url:?}").contains("secret"));
    }
}
