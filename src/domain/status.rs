//! Runtime status of an orchestration instance (PROTOCOL.md §2.2).

use std::fmt;

/// The `OrchestrationStatus` values, with our own names. Numbers match the wire enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeStatus {
    /// At least one episode committed and not finished.
    Running,
    /// Finished successfully.
    Completed,
    /// Only inside a completion action; never stored.
    ContinuedAsNew,
    /// Finished with a failure.
    Failed,
    /// Never produced; terminal if seen.
    Canceled,
    /// Terminated by request.
    Terminated,
    /// Created, no episode committed yet.
    Pending,
    /// Suspended by request.
    Suspended,
}

impl RuntimeStatus {
    /// Every status, in wire order.
    pub const ALL: [RuntimeStatus; 8] = [
        Self::Running,
        Self::Completed,
        Self::ContinuedAsNew,
        Self::Failed,
        Self::Canceled,
        Self::Terminated,
        Self::Pending,
        Self::Suspended,
    ];

    /// The terminal set T of PROTOCOL.md §2.2.
    pub const TERMINAL: [RuntimeStatus; 4] = [
        Self::Completed,
        Self::Failed,
        Self::Terminated,
        Self::Canceled,
    ];

    /// Whether the status ends the instance.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Terminated | Self::Canceled
        )
    }

    /// The wire enum number.
    pub fn as_i32(self) -> i32 {
        match self {
            Self::Running => 0,
            Self::Completed => 1,
            Self::ContinuedAsNew => 2,
            Self::Failed => 3,
            Self::Canceled => 4,
            Self::Terminated => 5,
            Self::Pending => 6,
            Self::Suspended => 7,
        }
    }

    /// From the wire enum number; `None` for unknown values.
    pub fn from_i32(value: i32) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.as_i32() == value)
    }

    /// Upper-case name as stored in the database and shown to users.
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::ContinuedAsNew => "CONTINUED_AS_NEW",
            Self::Failed => "FAILED",
            Self::Canceled => "CANCELED",
            Self::Terminated => "TERMINATED",
            Self::Pending => "PENDING",
            Self::Suspended => "SUSPENDED",
        }
    }

    /// Parses [`RuntimeStatus::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.name() == name)
    }
}

impl fmt::Display for RuntimeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_round_trip() {
        for s in RuntimeStatus::ALL {
            assert_eq!(RuntimeStatus::from_i32(s.as_i32()), Some(s));
            assert_eq!(RuntimeStatus::from_name(s.name()), Some(s));
        }
        assert_eq!(RuntimeStatus::from_i32(42), None);
    }
}
