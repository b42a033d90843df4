//! Resource use of the sidecar process under test, read from `/proc/<pid>/stat` and
//! `/proc/<pid>/status` (Linux only).
//!
//! CPU time is `utime + stime` in clock ticks. The kernel reports `/proc` times in
//! `USER_HZ`, which is 100 on every Linux ABI we run on, so no `sysconf` (and no libc
//! dependency) is needed. Peak RSS is `VmHWM`; before each workload the loadgen tries to
//! reset it by writing `5` to `/proc/<pid>/clear_refs` (allowed for the process owner or
//! root), so the figure is the peak *during* that workload, not since the sidecar started.

use anyhow::{bail, Context, Result};

/// Clock ticks per second of the `/proc` time fields (`USER_HZ`).
const USER_HZ: f64 = 100.0;

/// One reading of the sidecar's counters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcSample {
    /// User plus system CPU time consumed so far, in seconds.
    pub(crate) cpu_secs: f64,
    /// Peak resident set size (`VmHWM`) in KiB.
    pub(crate) peak_rss_kib: u64,
    /// Current resident set size (`VmRSS`) in KiB; the soak watches it for leaks.
    pub(crate) rss_kib: u64,
}

/// Reads the CPU time and peak RSS of `pid`.
pub(crate) fn sample(pid: u32) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is --sidecar-pid right?)"))?;
    // The command name (field 2) is parenthesised and may itself contain spaces or ')',
    // so split after the *last* ')'. utime and stime are fields 14 and 15 overall, i.e.
    // the 12th and 13th after the name.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc/<pid>/stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<f64> {
        let raw = fields.get(i).context("short /proc/<pid>/stat")?;
        Ok(raw.parse::<u64>().context("non-numeric CPU time")? as f64)
    };
    let cpu_secs = (tick(11)? + tick(12)?) / USER_HZ;

    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |field: &str| -> Result<u64> {
        let Some(line) = status.lines().find(|l| l.starts_with(field)) else {
            bail!("no {field} in /proc/{pid}/status");
        };
        line.split_whitespace()
            .nth(1)
            .with_context(|| format!("malformed {field} line"))?
            .parse()
            .with_context(|| format!("non-numeric {field}"))
    };
    Ok(ProcSample {
        cpu_secs,
        peak_rss_kib: kib("VmHWM:")?,
        rss_kib: kib("VmRSS:")?,
    })
}

/// Resets the peak-RSS watermark of `pid`; returns false when not permitted, in which case
/// the reported peak is the peak since the sidecar started.
pub(crate) fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}
