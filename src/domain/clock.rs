//! Time and id sources. The only place that may read the wall clock.

use std::fmt;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// A source of "now"; the engine never reads the wall clock itself.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current UTC time.
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned wall-clock read
    fn now(&self) -> DateTime<Utc> {
        // Whole microseconds: the store keeps microseconds, so "visible at now" must
        // compare equal after a round trip (sub-microsecond parts would round up).
        let now = Utc::now();
        now.duration_trunc(TimeDelta::microseconds(1))
            .unwrap_or(now)
    }
}
