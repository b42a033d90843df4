//! Bearer-token authentication and role-based authorisation for both doors.
//!
//! `--auth-tokens-file` lists `ROLE TOKEN [HUBS]` lines. Only SHA-256 digests of the tokens
//! are kept, and a presented token is hashed and compared with every digest in constant
//! time, so neither the comparison nor this module's `Debug` output discloses a token.
//! `rpc` decides which role each gRPC method and HTTP route needs; `layer` is the tower
//! layer the gRPC door wraps its services in, `http` the HTTP door's middleware.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::{TaskHubName, DEFAULT_TASK_HUB};

pub mod http;
pub mod layer;
pub mod rpc;

pub use rpc::Need;

/// Shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything, task hub administration included.
    Admin,
    /// The worker RPCs (work items, completions, abandons).
    Worker,
    /// The client RPCs (start, raise, terminate, purge, ...) and every read.
    Client,
    /// Only the reads (get, query, wait, history).
    Read,
}

impl Role {
    /// The name used in the tokens file and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Worker => "worker",
            Role::Client => "client",
            Role::Read => "read",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "admin" => Role::Admin,
            "worker" => Role::Worker,
            "client" => Role::Client,
            "read" => Role::Read,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the tokens file.
#[derive(Clone)]
struct Entry {
    digest: [u8; 32],
    role: Role,
    /// The task hubs the token is limited to (empty: all), canonical names.
    hubs: Vec<TaskHubName>,
}

/// A parsed tokens file.
#[derive(Clone, Default)]
pub struct TokenTable {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for TokenTable {
    // Never the tokens or their digests: only how many per role.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenTable")
            .field("tokens", &self.entries.len())
            .finish()
    }
}

/// Why a tokens file was refused. Messages name the file and line, never the token.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read.
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("tokens file {path}, line {line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The file names no token at all, which would lock every caller out.
    #[error("tokens file {path} defines no token")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl TokenTable {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of a tokens file (`path` only names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, TokensError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: String| TokensError::Line {
                path: path.to_owned(),
                line: index + 1,
                reason,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (role, token, hubs) = match fields.as_slice() {
                [role, token] => (*role, *token, None),
                [role, token, hubs] => (*role, *token, Some(*hubs)),
                _ => {
                    return Err(bad(format!(
                        "expected `ROLE TOKEN [HUBS]`, got {} fields",
                        fields.len()
                    )))
                }
            };
            let role = Role::parse(role).ok_or_else(|| {
                bad(format!(
                    "unknown role {role:?} (expected admin, worker, client or read)"
                ))
            })?;
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(format!(
                    "the token is shorter than {MIN_TOKEN_LEN} characters"
                )));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(
                    "the token must be printable ASCII (it travels in a header)".into(),
                ));
            }
            let hubs = match hubs {
                None => Vec::new(),
                Some(list) => {
                    let hubs = list.split(',').map(TaskHubName::parse);
                    hubs.collect::<Result<Vec<_>, _>>()
                        .map_err(|reason| bad(format!("in {list:?}: {reason}")))?
                }
            };
            let digest = digest(token.as_bytes());
            if entries.iter().any(|e| bool::from(e.digest.ct_eq(&digest))) {
                return Err(bad("the same token appears on an earlier line".into()));
            }
            entries.push(Entry { digest, role, hubs });
        }
        if entries.is_empty() {
            return Err(TokensError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Self { entries })
    }

    /// The role of `token`, if it is listed. Every digest is compared, in constant time.
    pub fn role_of(&self, token: &[u8]) -> Option<Role> {
        self.entry(token).map(|e| e.role)
    }

    fn entry(&self, token: &[u8]) -> Option<&Entry> {
        let presented = digest(token);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&presented)) {
                found = Some(entry);
            }
        }
        found
    }

    /// The task hubs `token` is limited to (empty: all); `None` when it is not listed.
    pub fn hubs_of(&self, token: &[u8]) -> Option<&[TaskHubName]> {
        let presented = digest(token);
        self.entries
            .iter()
            .find(|e| bool::from(e.digest.ct_eq(&presented)))
            .map(|e| e.hubs.as_slice())
    }

    /// How many tokens the file defines.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it defines none (never true of a loaded file).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `authorization: Bearer` header (or not a bearer one).
    Missing,
    /// A bearer token that is not in the file.
    Unknown,
    /// A known token whose role does not cover the call.
    Forbidden {
        /// The token's role.
        role: Role,
        /// The RPC or route, as the caller named it.
        call: String,
    },
    /// A known token limited to task hubs that do not include the one called.
    OtherHub {
        /// The hub the call named, as it named it.
        hub: String,
    },
}

impl Denied {
    /// The message sent to the caller (never the token).
    pub fn message(&self) -> String {
        match self {
            Denied::Missing => {
                "missing bearer token: send the header `authorization: Bearer <token>`".into()
            }
            Denied::Unknown => "the bearer token is not known".into(),
            Denied::Forbidden { role, call } => {
                format!("role `{role}` may not call {call}")
            }
            Denied::OtherHub { hub } => {
                format!("the bearer token may not use task hub '{hub}'")
            }
        }
    }
}

/// The live tokens table, shared by both doors and swapped whole on reload.
#[derive(Clone)]
pub struct Authenticator {
    path: PathBuf,
    table: Arc<RwLock<Arc<TokenTable>>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("path", &self.path)
            .field("table", &self.current())
            .finish()
    }
}

impl Authenticator {
    /// Loads `path`; the error names the file (and line).
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let table = TokenTable::load(path)?;
        Ok(Self {
            path: path.to_owned(),
            table: Arc::new(RwLock::new(Arc::new(table))),
        })
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file; on error the previous table stays in force.
    pub fn reload(&self) -> Result<usize, TokensError> {
        let table = TokenTable::load(&self.path)?;
        let count = table.len();
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        Ok(count)
    }

    fn current(&self) -> Arc<TokenTable> {
        Arc::clone(&self.table.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Decides a call: `authorization` is the header's value (if any), `need` what the
    /// call requires, `hub` the task hub it names (`None`: the default hub), `call` its
    /// name for the refusal message.
    pub fn check(
        &self,
        authorization: Option<&[u8]>,
        need: Need,
        hub: Option<&str>,
        call: impl FnOnce() -> String,
    ) -> Result<Option<Role>, Denied> {
        if need == Need::Open {
            return Ok(None);
        }
        let token = authorization.and_then(bearer).ok_or(Denied::Missing)?;
        let table = self.current();
        let entry = table.entry(token).ok_or(Denied::Unknown)?;
        if !need.allows(entry.role) {
            return Err(Denied::Forbidden {
                role: entry.role,
                call: call(),
            });
        }
        if !entry.hubs.is_empty() {
            let raw = hub.map(str::trim).filter(|h| !h.is_empty());
            // An invalid name is let through to the door, which says what is wrong with it.
            let allowed = match raw.map(TaskHubName::parse) {
                None => entry.hubs.iter().any(TaskHubName::is_default),
                Some(Ok(name)) => entry.hubs.contains(&name),
                Some(Err(_)) => true,
            };
            if !allowed {
                return Err(Denied::OtherHub {
                    hub: raw.unwrap_or(DEFAULT_TASK_HUB).to_owned(),
                });
            }
        }
        Ok(Some(entry.role))
    }
}

/// The token of an `authorization: Bearer <token>` value (the scheme is case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# comment line
admin  aaaaaaaaaaaaaaaaaaaa

worker wwwwwwwwwwwwwwwwwwww   # trailing comment
client cccccccccccccccccccc hub-a,hub-b
read   rrrrrrrrrrrrrrrrrrrr
";

    fn table() -> TokenTable {
        TokenTable::parse(Path::new("tokens"), FILE).unwrap()
    }

    #[test]
    fn parses_roles_comments_and_hubs() {
        let t = table();
        assert_eq!(t.len(), 4);
        assert_eq!(t.role_of(b"aaaaaaaaaaaaaaaaaaaa"), Some(Role::Admin));
        assert_eq!(t.role_of(b"wwwwwwwwwwwwwwwwwwww"), Some(Role::Worker));
        assert_eq!(t.role_of(b"cccccccccccccccccccc"), Some(Role::Client));
        assert_eq!(t.role_of(b"rrrrrrrrrrrrrrrrrrrr"), Some(Role::Read));
        assert_eq!(t.role_of(b"xxxxxxxxxxxxxxxxxxxx"), None);
        assert_eq!(
            t.hubs_of(b"cccccccccccccccccccc"),
            Some(
                &[
                    TaskHubName::parse("hub-a").unwrap(),
                    TaskHubName::parse("hub-b").unwrap()
                ][..]
            )
        );
        assert_eq!(t.hubs_of(b"aaaaaaaaaaaaaaaaaaaa"), Some(&[][..]));
        assert!(!format!("{t:?}").contains("aaaa"));
    }

    #[test]
    fn refuses_bad_lines_without_echoing_the_token() {
        let cases = [
            ("root aaaaaaaaaaaaaaaaaaaa", "line 1: unknown role \"root\""),
            ("admin short", "line 1: the token is shorter than 16"),
            (
                "admin",
                "line 1: expected `ROLE TOKEN [HUBS]`, got 1 fields",
            ),
            ("read aaaaaaaaaaaaaaaaaaaa a b", "got 4 fields"),
            (
                "read aaaaaaaaaaaaaaaaaaaa a,,b",
                "task hub name must not be empty",
            ),
            ("read aaaaaaaaaaaaaaaaaaaa a.b", "contains '.'"),
            (
                "read aaaaaaaaaaaaaaaaaaaa\nadmin aaaaaaaaaaaaaaaaaaaa",
                "line 2: the same token appears on an earlier line",
            ),
            ("# nothing\n\n", "defines no token"),
        ];
        for (text, want) in cases {
            let err = TokenTable::parse(Path::new("t.txt"), text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.contains("t.txt"), "{err}");
            assert!(!err.contains("aaaaaaaaaaaaaaaa"), "{err}");
        }
    }

    #[test]
    fn a_token_limited_to_hubs_may_use_those_only() {
        let auth = Authenticator {
            path: PathBuf::from("tokens"),
            table: Arc::new(RwLock::new(Arc::new(table()))),
        };
        let header = b"Bearer cccccccccccccccccccc";
        let check = |hub| auth.check(Some(header), Need::Client, hub, || "StartInstance".into());
        assert_eq!(check(Some("hub-a")), Ok(Some(Role::Client)));
        assert_eq!(check(Some("HUB-B")), Ok(Some(Role::Client)));
        assert_eq!(
            check(Some("hub-c")),
            Err(Denied::OtherHub {
                hub: "hub-c".into()
            })
        );
        assert_eq!(
            check(None),
            Err(Denied::OtherHub {
                hub: "default".into()
            })
        );
        // Unlimited tokens reach every hub.
        let admin = auth.check(
            Some(b"Bearer aaaaaaaaaaaaaaaaaaaa"),
            Need::Client,
            Some("anything"),
            || "StartInstance".into(),
        );
        assert_eq!(admin, Ok(Some(Role::Admin)));
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bear"), None);
    }
}
