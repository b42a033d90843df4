//! The seam through which the engine hands work to connected workers. Declared here,
//! implemented by the service layer's worker hub (the engine never names a stream type).

use std::fmt;

use crate::proto as pb;

/// Identifies one `GetWorkItems` stream.
pub type StreamId = u64;

/// Kinds of work with separate concurrency limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkKind {
    /// Orchestration episodes.
    Orchestration,
    /// Activity executions.
    Activity,
    /// Entity operation batches.
    Entity,
}

/// What a work item is, for streams that filter by name and version (PROTOCOL.md §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkTarget<'a> {
    /// Orchestrator or activity name, or the lower-cased entity name (the `name` of
    /// `@name@key`).
    pub name: &'a str,
    /// The version, if any (compares as `""` when absent).
    pub version: Option<&'a str>,
}

/// Why no capacity could be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Streams that would take the item are full (or none is connected).
    Busy,
    /// Streams are connected, but every one filters the item out.
    NoMatch,
}

/// One unit of capacity taken on a stream; given back by `send` failing or by `release`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The stream that will receive the item.
    pub stream: StreamId,
    /// What kind of item.
    pub kind: WorkKind,
}

/// Connected workers, as the engine sees them.
pub trait WorkExecutor: Send + Sync + fmt::Debug + 'static {
    /// Takes one unit of capacity for `kind` on some stream (round-robin over streams
    /// with room) whose filters accept `target`; `None` accepts any stream (the item is
    /// not known yet: check it with [`WorkExecutor::accepts`] once it is).
    fn reserve(
        &self,
        kind: WorkKind,
        target: Option<WorkTarget<'_>>,
    ) -> Result<Reservation, Unavailable>;

    /// Whether the stream's filters accept the item.
    fn accepts(&self, stream: StreamId, kind: WorkKind, target: WorkTarget<'_>) -> bool;

    /// Pushes an item onto the reserved stream. `false` when the stream is gone; the
    /// reservation is void then.
    fn send(&self, reservation: Reservation, item: pb::WorkItem) -> bool;

    /// Gives one unit of capacity back (item completed or abandoned). Unknown streams are
    /// ignored.
    fn release(&self, reservation: Reservation);

    /// Takes the reservation's unit of capacity once more, whether or not the stream has
    /// room: for an item taken back from a worker that may still be working on it, so
    /// the stream gets no new work in its place. Unknown streams are ignored.
    fn hold(&self, reservation: Reservation);
}
