//! Admission control for client writes: a bound on how many write requests (start,
//! raise event, terminate, suspend, resume, restart, signal entity, purge, rewind) may be
//! waiting for the store at once. Past it a request is refused at once with
//! [`ServiceError::Overloaded`] (gRPC `UNAVAILABLE`, HTTP 503 + `Retry-After`), which the
//! SDKs' retry policies treat as transient, instead of joining an unbounded line of
//! futures in front of the store's writer.
//!
//! Worker completions (`Complete*Task`) are not counted: their number is already bounded
//! by what the worker streams may hold outstanding (their concurrency hints), and refusing
//! one would only make the work run again, adding load exactly when there is too much.
//! Admitting completions and refusing new starts lets the sidecar drain.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

use super::ServiceError;

/// How often at most a refusal is logged at `warn`; the ones in between are counted and
/// reported with the next log line (the metric counts every one).
const WARN_EVERY: Duration = Duration::from_secs(5);

/// The bound on client writes in progress.
#[derive(Debug)]
pub(crate) struct Admission {
    permits: Semaphore,
    limit: usize,
    /// Refusals since the last warning, and when that warning was logged.
    unlogged: AtomicU64,
    last_warn: Mutex<Option<Instant>>,
}

impl Admission {
    /// At most `limit` writes in progress (at least 1).
    pub(crate) fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Semaphore::new(limit),
            limit,
            unlogged: AtomicU64::new(0),
            last_warn: Mutex::new(None),
        }
    }

    /// Admits one write; hold the permit until its store call has returned.
    pub(crate) fn admit(&self) -> Result<SemaphorePermit<'_>, ServiceError> {
        match self.permits.try_acquire() {
            Ok(permit) => Ok(permit),
            Err(_) => {
                self.refused();
                Err(ServiceError::Overloaded(format!(
                    "the sidecar is overloaded: {} writes are already waiting for the store (--max-pending-writes); retry later",
                    self.limit
                )))
            }
        }
    }

    fn refused(&self) {
        crate::metrics::get()
            .rejected
            .with_label_values(&["pending_writes"])
            .inc();
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = self.last_warn.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            return;
        }
        *last = Some(now);
        drop(last);
        let refused = self.unlogged.swap(0, Ordering::Relaxed);
        tracing::warn!(
            refused,
            limit = self.limit,
            "overloaded: refusing client writes (UNAVAILABLE / HTTP 503) while the pending-writes bound is full"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_past_the_limit_are_refused_until_a_permit_returns() {
        let admission = Admission::new(2);
        let a = admission.admit().unwrap();
        let _b = admission.admit().unwrap();
        let err = admission.admit().unwrap_err();
        assert!(
            matches!(&err, ServiceError::Overloaded(m) if m.contains("overloaded") && m.contains("retry"))
        );
        drop(a);
        assert!(admission.admit().is_ok());
    }
}
