//! Identifier newtypes and their generation.

use std::fmt;

/// An orchestration (or entity) instance id: opaque, case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(String);

impl InstanceId {
    /// Wraps an id received from a client or read from the store.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// A fresh id: 32 lower-case hex digits of a random UUID (as PYMEM and .NET do).
    #[allow(clippy::disallowed_methods)] // sanctioned id source
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Entity ids (`@name@key`) share the namespace but are not orchestrations.
    pub fn is_entity(&self) -> bool {
        self.0.starts_with('@')
    }

    /// Consumes the wrapper.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of one execution (generation) of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExecutionId(String);

impl ExecutionId {
    /// Wraps an execution id read from the store or a request.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// A fresh execution id (32 hex digits).
    #[allow(clippy::disallowed_methods)] // sanctioned id source
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
