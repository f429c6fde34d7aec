//! A process's memory as the kernel accounts it, from procfs alone (no eBPF, no root for
//! one's own processes): the basics `memtrace stat` prints and `memtrace diagnose` samples.
use std::io::ErrorKind;

use anyhow::Result;
use procfs::process::{LimitValue, MMapPath, MemoryMaps, Process};
use serde::Serialize;

use crate::{error::usage, host::memcg::MemoryHierarchy};

/// One reading of a process's memory.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessMemory {
    pub pid: u32,
    pub comm: String,
    /// Virtual size: everything mapped, touched or not.
    pub vsz_kb: u64,
    /// Resident: in RAM now, split as the kernel counts it.
    pub rss_kb: u64,
    pub rss_anon_kb: u64,
    pub rss_file_kb: u64,
    pub rss_shmem_kb: u64,
    /// Out in swap (VmSwap).
    pub swap_kb: u64,
    /// Resident in the heap: the `[heap]` mapping (brk) and private anonymous mappings
    /// (large mallocs, arenas, thread stacks, anonymous mmap).
    pub heap_kb: u64,
    pub heap_brk_kb: u64,
    pub heap_anon_mappings_kb: u64,
    /// The main thread's stack mapping (VmStk)...
    pub stack_kb: u64,
    /// ...against its soft RLIMIT_STACK (None: unlimited).
    pub stack_limit_kb: Option<u64>,
    pub threads: u64,
    pub mappings: u64,
    /// Faults since the process started.
    pub minflt: u64,
    pub majflt: u64,
    /// Its memory cgroup, when the machine has a memory controller.
    pub cgroup: Option<CgroupMemory>,
    /// Memory pressure (PSI): the cgroup's on cgroup v2, else the whole machine's.
    pub psi: Option<Pressure>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CgroupMemory {
    pub path: String,
    /// None: no limit.
    pub limit_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
    /// Limit minus usage.
    pub headroom_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Pressure {
    /// "cgroup" or "system".
    pub scope: &'static str,
    /// Share of the last 10 s some task stalled on memory, in percent.
    pub some_avg10: f64,
    /// Share of the last 10 s every non-idle task stalled on memory.
    pub full_avg10: f64,
}

impl ProcessMemory {
    /// Reads `pid` now. A pid that does not exist is a usage error; one that cannot be read
    /// says who can read it.
    pub fn read(pid: u32) -> Result<Self> {
        let process = Process::new(pid as i32).map_err(|err| not_readable(pid, "", err))?;
        let stat = process
            .stat()
            .map_err(|err| not_readable(pid, "stat", err))?;
        let status = process
            .status()
            .map_err(|err| not_readable(pid, "status", err))?;
        let maps = process
            .smaps()
            .map_err(|err| not_readable(pid, "smaps", err))?;
        let (heap_brk_kb, heap_anon_mappings_kb) = heap_kb(&maps);
        let stack_limit_kb = stack_limit_kb(&process);
        let hierarchy = MemoryHierarchy::find();
        let cgroup = hierarchy.as_ref().and_then(|h| {
            let path = h.path_of(pid)?;
            let read = h.read(&path);
            Some(CgroupMemory {
                headroom_bytes: read
                    .limit_bytes
                    .zip(read.usage_bytes)
                    .map(|(limit, usage)| limit.saturating_sub(usage)),
                limit_bytes: read.limit_bytes,
                usage_bytes: read.usage_bytes,
                path,
            })
        });
        let psi = hierarchy
            .as_ref()
            .zip(cgroup.as_ref())
            .and_then(|(h, c)| h.pressure(&c.path))
            .map(|(some, full)| Pressure {
                scope: "cgroup",
                some_avg10: some,
                full_avg10: full,
            })
            .or_else(system_pressure);
        Ok(Self {
            pid,
            comm: stat.comm,
            vsz_kb: stat.vsize / 1024,
            rss_kb: status.vmrss.unwrap_or(0),
            rss_anon_kb: status.rssanon.unwrap_or(0),
            rss_file_kb: status.rssfile.unwrap_or(0),
            rss_shmem_kb: status.rssshmem.unwrap_or(0),
            swap_kb: status.vmswap.unwrap_or(0),
            heap_kb: heap_brk_kb + heap_anon_mappings_kb,
            heap_brk_kb,
            heap_anon_mappings_kb,
            stack_kb: status.vmstk.unwrap_or(0),
            stack_limit_kb,
            threads: status.threads,
            mappings: maps.len() as u64,
            minflt: stat.minflt,
            majflt: stat.majflt,
            cgroup,
            psi,
        })
    }

    /// The stack's share of its limit, in percent (None: unlimited).
    pub fn stack_used_percent(&self) -> Option<f64> {
        let limit = self.stack_limit_kb.filter(|&l| l > 0)?;
        Some(self.stack_kb as f64 / limit as f64 * 100.0)
    }
}

/// The resident heap in a process's smaps, in KiB: the `[heap]` mapping (brk), and private
/// anonymous mappings.
pub fn heap_kb(smaps: &MemoryMaps) -> (u64, u64) {
    let (mut heap_brk_kb, mut heap_anon_mappings_kb) = (0, 0);
    for map in smaps.iter() {
        let rss_kb = map.extension.map.get("Rss").copied().unwrap_or(0) / 1024;
        let private = !map.perms.contains(procfs::process::MMPermissions::SHARED);
        match &map.pathname {
            MMapPath::Heap => heap_brk_kb += rss_kb,
            MMapPath::Anonymous if private => heap_anon_mappings_kb += rss_kb,
            _ => {}
        }
    }
    (heap_brk_kb, heap_anon_mappings_kb)
}

/// The soft RLIMIT_STACK of a process (None: unlimited, or unreadable).
pub fn stack_limit_kb(process: &Process) -> Option<u64> {
    match process.limits().ok()?.max_stack_size.soft_limit {
        LimitValue::Value(bytes) => Some(bytes / 1024),
        LimitValue::Unlimited => None,
    }
}

/// The whole machine's memory pressure.
fn system_pressure() -> Option<Pressure> {
    use procfs::FromRead;
    let psi = procfs::MemoryPressure::from_file("/proc/pressure/memory").ok()?;
    Some(Pressure {
        scope: "system",
        some_avg10: f64::from(psi.some.avg10),
        full_avg10: f64::from(psi.full.avg10),
    })
}

/// Why `/proc/PID/<file>` could not be read, and what to do.
fn not_readable(pid: u32, file: &str, err: procfs::ProcError) -> anyhow::Error {
    match err {
        procfs::ProcError::NotFound(_) => {
            usage(format!("pid {pid}: no such process (is it still running?)"))
        }
        procfs::ProcError::PermissionDenied(_) => usage(format!(
            "pid {pid}: cannot read /proc/{pid}/{file}: permission denied; run memtrace as \
             the process's user or as root"
        )),
        procfs::ProcError::Io(io, _) if io.kind() == ErrorKind::NotFound => {
            usage(format!("pid {pid}: no such process (is it still running?)"))
        }
        other => anyhow::Error::new(other).context(format!("reading /proc/{pid}/{file}")),
    }
}

/// The resident memory in the text of a /proc/PID/statm file (0 if it says none).
pub fn statm_rss_bytes(statm: &str) -> u64 {
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages.saturating_mul(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_as_its_status_says() {
        let me = std::process::id();
        let memory = ProcessMemory::read(me).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{me}/status")).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| {
                    l.strip_prefix(name)?
                        .trim()
                        .strip_suffix(" kB")?
                        .parse()
                        .ok()
                })
                .unwrap()
        };
        assert!(memory.rss_kb > 0 && memory.vsz_kb >= memory.rss_kb);
        // (VSZ moves as the test harness's threads come and go: the integration test
        // compares it on a process that waits.)
        assert_eq!(memory.stack_kb, field("VmStk:"));
        assert!(memory.threads >= 1 && memory.mappings > 5);
        // The test binary's heap holds something.
        assert!(memory.heap_kb > 0);
        // Resident heap is part of resident anonymous memory. The two come from two files
        // read one after the other while the harness's other threads allocate, so a read
        // may straddle a change: one of a few reads must agree.
        let reads: Vec<(u64, u64)> = (0..5)
            .map(|_| ProcessMemory::read(me).unwrap())
            .map(|m| (m.heap_kb, m.rss_anon_kb))
            .collect();
        assert!(
            reads.iter().any(|&(heap, anon)| heap <= anon + 4),
            "heap above anonymous RSS in every read (heap kB, anon kB): {reads:?}"
        );
    }

    #[test]
    fn a_missing_pid_is_a_usage_error() {
        let err = ProcessMemory::read(i32::MAX as u32).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), crate::error::exit::USAGE);
        assert!(format!("{err:#}").contains("no such process"), "{err:#}");
    }

    #[test]
    fn rss_from_statm() {
        assert_eq!(statm_rss_bytes("2790 645 481 1 0 176 0\n"), 645 * 4096);
        assert_eq!(statm_rss_bytes(""), 0);
        // Found by fuzzing (cargo xtask fuzz proc_text): 2^52 pages overflowed the multiply.
        assert_eq!(statm_rss_bytes("0 4503599627370496 0"), u64::MAX);
    }
}
