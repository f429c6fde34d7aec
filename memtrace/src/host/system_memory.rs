//! System-wide memory figures from /proc, sampled by the swap command each interval: the
//! kernel's own swap counters (/proc/vmstat), swap space (/proc/meminfo) and memory pressure
//! (/proc/pressure/memory, PSI).
use procfs::{Current, FromRead};
use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SystemSample {
    /// Pages read from swap since boot.
    pub pswpin: u64,
    /// Pages written to swap since boot.
    pub pswpout: u64,
    /// Zero-filled pages swapped in and out without I/O since boot (Linux 6.12+, which keeps
    /// them as a bit in the swap map); None where /proc/vmstat has no such lines.
    pub swpin_zero: Option<u64>,
    pub swpout_zero: Option<u64>,
    pub swap_total_kb: u64,
    pub swap_free_kb: u64,
    /// PSI memory: share of time some task stalled on memory, 10 s average, in percent.
    pub psi_some_avg10: f64,
    /// PSI memory: share of time all non-idle tasks stalled on memory.
    pub psi_full_avg10: f64,
}

impl SystemSample {
    /// Reads what is readable; figures the kernel does not offer stay 0.
    pub fn read() -> Self {
        let mut sample = Self::default();
        if let Ok(vmstat) = procfs::vmstat() {
            let get = |key: &str| vmstat.get(key).map(|&v| v.max(0) as u64);
            sample.pswpin = get("pswpin").unwrap_or(0);
            sample.pswpout = get("pswpout").unwrap_or(0);
            sample.swpin_zero = get("swpin_zero");
            sample.swpout_zero = get("swpout_zero");
        }
        if let Ok(meminfo) = procfs::Meminfo::current() {
            sample.swap_total_kb = meminfo.swap_total / 1024;
            sample.swap_free_kb = meminfo.swap_free / 1024;
        }
        if let Ok(psi) = procfs::MemoryPressure::from_file("/proc/pressure/memory") {
            sample.psi_some_avg10 = f64::from(psi.some.avg10);
            sample.psi_full_avg10 = f64::from(psi.full.avg10);
        }
        sample
    }
}

/// A process's swapped-out memory now (VmSwap), if it is still there.
pub fn vmswap_kb(pid: u32) -> Option<u64> {
    let process = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    process.status().ok()?.vmswap
}
