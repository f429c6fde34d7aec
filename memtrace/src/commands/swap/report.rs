//! What `memtrace swap` reports. Field names of the `Serialize` types are the public JSON
//! contract (issue #3): keep them, add freely.
use serde::Serialize;

use super::figures::SwapFigures;
use crate::{
    commands::swap::args::ThrashingArgs,
    report::{ReportHeader, StackRow},
};

#[derive(Clone, Debug, Serialize)]
pub struct SwapProcessRow {
    pub pid: u32,
    pub comm: String,
    /// Its pages reclaim sent to swap, whoever ran reclaim (`swap_out_pages`: written or
    /// zero-filled), and its swap-in faults' pages (`swap_in_pages`: from disk, the swap
    /// cache or zero-filled), with the zero-filled pages among each.
    #[serde(flatten)]
    pub figures: SwapFigures,
    /// Pages unmapped to swap, written or not: out minus in minus freed follows VmSwap.
    pub swap_out_unmapped_pages: u64,
    /// Swap entries freed without coming back (memory unmapped, or the process exited).
    pub swap_freed_pages: u64,
    pub major_faults: u64,
    /// VmSwap at the end (or when last seen alive).
    pub vmswap_kb: u64,
}

/// The kernel's system-wide figures over the run.
#[derive(Clone, Debug, Serialize)]
pub struct SwapSystem {
    /// /proc/vmstat deltas over the run: pages read from swap and written to it.
    pub pswpin: u64,
    pub pswpout: u64,
    /// The same in the processes' terms: `swap_out_pages` is pswpout + swpout_zero,
    /// `swap_in_pages` pswpin + swpin_zero (zero counts null before Linux 6.12).
    #[serde(flatten)]
    pub figures: SwapFigures,
    pub swap_configured: bool,
    pub swap_total_kb: u64,
    pub swap_used_kb: u64,
    pub psi_some_avg10: f64,
    pub psi_full_avg10: f64,
}

/// One interval of the run.
#[derive(Clone, Debug, Serialize)]
pub struct SwapInterval {
    /// End of the interval, seconds since tracing started.
    pub t: f64,
    /// Traced processes' swap traffic in the interval.
    #[serde(flatten)]
    pub traced: SwapFigures,
    /// The whole system's, from /proc/vmstat.
    pub pswpin: u64,
    pub pswpout: u64,
    /// The whole system's in the processes' terms (see `SwapSystem`).
    pub system: SwapFigures,
    pub psi_some_avg10: f64,
    pub psi_full_avg10: f64,
}

/// When thrashing was first seen, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Thrashing {
    pub t: f64,
    pub reason: String,
}

/// An OOM kill of a traced process during the run.
#[derive(Clone, Debug, Serialize)]
pub struct SwapOomKill {
    pub pid: u32,
    pub comm: String,
    /// The victim's memory cgroup (v1 or v2 path), when it could be read.
    pub memcg: Option<String>,
    /// Seconds since tracing started.
    pub at_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Gate {
    pub gate: &'static str,
    pub limit: f64,
    /// The worst value seen (pages/s for rates; 1 for thrashing seen).
    pub worst: f64,
    pub failed: bool,
    /// The end of the first interval it failed in, seconds since tracing started.
    pub at_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SwapReport {
    #[serde(flatten)]
    pub header: ReportHeader,
    /// Swap-out and swap-in are counted per process (false on kernels whose counters memtrace
    /// cannot read, Linux before 6.2: processes' swap figures are then 0).
    pub per_process_swap: bool,
    /// Zero-filled pages are told apart per process (Linux 6.16+, for pages in a memory
    /// cgroup other than the root): else processes' zero counts are null.
    pub per_process_zero_pages: bool,
    pub thrashing: bool,
    pub thrashing_detail: Option<Thrashing>,
    /// The thresholds thrashing was judged by (flags --thrash-*).
    pub thrashing_thresholds: ThrashingArgs,
    pub processes: Vec<SwapProcessRow>,
    pub system: SwapSystem,
    pub intervals: Vec<SwapInterval>,
    /// Swap-in stacks: which code paths waited on pages read back from swap (major faults
    /// outside file mappings), `count` in faults.
    pub stacks: Vec<StackRow>,
    pub gates: Vec<Gate>,
    /// OOM kills of traced processes while tracing (every kill when tracing the system).
    pub oom_kills: Vec<SwapOomKill>,
}
