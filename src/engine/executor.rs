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
    /// with room); `None` when every stream is full or none is connected.
    /// `orchestration` names the orchestrator for streams that filter by name.
    fn reserve(&self, kind: WorkKind) -> Option<Reservation>;

    /// Pushes an item onto the reserved stream. `false` when the stream is gone; the
    /// reservation is void then.
    fn send(&self, reservation: Reservation, item: pb::WorkItem) -> bool;

    /// Gives one unit of capacity back (item completed or abandoned). Unknown streams are
    /// ignored.
    fn release(&self, reservation: Reservation);
}
