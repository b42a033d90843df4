//! Domain vocabulary shared by every layer: identifiers, statuses, instance records,
//! the clock, and the `Transition` an orchestration episode commits.
//!
//! The history itself is the wire's `HistoryEvent` message: histories are stored as
//! protobuf bytes and handed to workers unchanged, so mirroring all thirty event types in
//! a second model would only add a lossy copy. Everything else here is our own type.
//! Depends on nothing internal except the generated `crate::proto` messages.

pub mod clock;
pub mod entity;
pub mod events;
pub mod hub;
pub mod ids;
pub mod instance;
pub mod rewind;
pub mod rules;
pub mod status;
pub mod transition;

pub use clock::{Clock, SystemClock};
pub use entity::{Change, EntityFilter, EntityLock, EntityRecord, EntityTransition};
pub use hub::{TaskHubName, DEFAULT_TASK_HUB};
pub use ids::{ExecutionId, InstanceId};
pub use instance::{InstanceRecord, NewExecution, NewInstance, ReusePolicy};
pub use rewind::{ParentRelink, RewindPlan, RewoundExecution};
pub use status::RuntimeStatus;
pub use transition::{ChildCreation, NewActivity, OutboundMessage, StatusChange, Transition};
