//! What loading eBPF needs from the system: root or the capabilities, a locked-memory
//! allowance, and enough open files for the symbolizer.
use std::fs;

use anyhow::{bail, Result};

const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Fails with what is missing and what to do, before any eBPF work starts.
pub fn check_privileges() -> Result<()> {
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let effective = effective_capabilities().unwrap_or(0);
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(bit, _)| effective & (1u64 << bit) == 0)
        .map(|(_, name)| name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "permission denied: tracing needs root, or the capabilities CAP_BPF and CAP_PERFMON \
         (missing: {}); run it with sudo",
        missing.join(", ")
    )
}

fn effective_capabilities() -> Option<u64> {
    effective_capabilities_in(&fs::read_to_string("/proc/self/status").ok()?)
}

/// The CapEff field of a /proc/PID/status text.
pub fn effective_capabilities_in(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so maps can be created.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!(
            "could not lift RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The symbolizer keeps every binary and library it reads open (so symbols resolve after a
/// process exits); system-wide that is many files. Use the hard limit for open files.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
