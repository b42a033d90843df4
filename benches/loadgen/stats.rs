//! Small statistics helpers: percentiles of latency samples and medians across repeats.
//!
//! Percentiles use the nearest-rank method on a sorted copy: with the sample sizes a
//! benchmark cell produces (tens to tens of thousands) interpolation would only suggest a
//! precision the measurement does not have.

use std::time::Duration;

/// Nearest-rank percentile (`p` in 0..=100) of `samples`, in milliseconds; `None` when empty.
pub(crate) fn percentile_ms(samples: &[Duration], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted: Vec<Duration> = samples.to_vec();
    sorted.sort_unstable();
    Some(ms(sorted[rank(sorted.len(), p)]))
}

/// Index of the nearest-rank percentile in a sorted slice of `len` elements.
fn rank(len: usize, p: f64) -> usize {
    // ceil(p/100 * n) is the 1-based rank; clamp so p=0 and p=100 stay in bounds.
    let r = (p / 100.0 * len as f64).ceil() as usize;
    r.clamp(1, len) - 1
}

/// Median of `values`; the mean of the two middle ones for an even count. `None` when empty.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// Mean of `values` in milliseconds; `None` when empty.
pub(crate) fn mean_ms(values: &[Duration]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    Some(values.iter().map(|d| ms(*d)).sum::<f64>() / values.len() as f64)
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `count` per second over `elapsed`; `None` when nothing was measured.
pub(crate) fn rate(count: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (secs > 0.0 && count > 0).then(|| count as f64 / secs)
}
