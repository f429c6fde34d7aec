//! The parsers of /proc and /sys text, on arbitrary input: procfs's, called as memtrace calls
//! them, then memtrace's own. Every parser sees every input (the seeds are real files of each
//! kind); none may panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use memtrace::{
    host::{
        container::ContainerLabels,
        memcg::{MemoryCgroup, MemoryHierarchy},
        process_memory::{heap_kb, statm_rss_bytes},
    },
    kernel::{access::effective_capabilities_in, gfp::GfpNames, layout::tracepoint_offsets},
    trace::target::stat_flags,
};
use procfs::{
    process::{Limits, MemoryMaps, Stat, Status},
    FromRead, Meminfo, MemoryPressure, VmStat,
};

/// The files MemoryHierarchy::read reads in a cgroup directory, v2 and v1.
const CGROUP_FILES: [&str; 8] = [
    "memory.max",
    "memory.current",
    "memory.events",
    "memory.failcnt",
    "memory.memsw.failcnt",
    "memory.oom_control",
    "memory.limit_in_bytes",
    "memory.usage_in_bytes",
];

/// A v2 and a v1 memory hierarchy, as MemoryHierarchy::find makes them.
fn hierarchies() -> &'static [MemoryHierarchy; 2] {
    static HIERARCHIES: OnceLock<[MemoryHierarchy; 2]> = OnceLock::new();
    HIERARCHIES.get_or_init(|| {
        let mount = |line: &str| MemoryHierarchy::from_mounts(line).expect("a memory mount");
        [
            mount("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0"),
            mount("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0"),
        ]
    })
}

// Bugs of procfs 0.18 (not memtrace's), kept out of the way so the fuzzing goes on past them.
// memtrace reads these files from the kernel, whose text never has these shapes.

/// Stat::from_read slices around the comm's parentheses unchecked: it panics without a pid
/// before the first '(', with the last ')' before it, or with under 2 bytes after the ')'.
fn stat_parser_panics(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let line = text.trim();
    let (Some(open), Some(close)) = (line.find('('), line.rfind(')')) else {
        return false; // an error, not a panic
    };
    let sound = open >= 1
        && line.is_char_boundary(open - 1)
        && close > open
        && close + 2 <= line.len()
        && line.is_char_boundary(close + 2);
    !sound
}

/// Meminfo::from_read scales kB, MB and GB values to bytes unchecked (an overflow) and cuts
/// the last byte off each field name (a panic where that byte is inside a character).
fn meminfo_parser_panics(data: &[u8]) -> bool {
    String::from_utf8_lossy(data).lines().any(|line| {
        let mut words = line.split_whitespace();
        let (Some(field), Some(value)) = (words.next(), words.next()) else {
            return false;
        };
        let scale: u64 = match words.next() {
            Some("KiB" | "kiB" | "kB" | "KB") => 1 << 10,
            Some("MiB" | "miB" | "MB" | "mB") => 1 << 20,
            Some("GiB" | "giB" | "GB" | "gB") => 1 << 30,
            _ => 1,
        };
        let overflows = value
            .parse::<u64>()
            .is_ok_and(|v| v.checked_mul(scale).is_none());
        overflows || !field.is_char_boundary(field.len() - 1)
    })
}

/// MemoryPressure::from_read cuts the first 5 bytes off its two lines once they start with
/// "some" or "full": a panic if the line ends there or a character straddles byte 5.
fn pressure_parser_panics(data: &[u8]) -> bool {
    String::from_utf8_lossy(data)
        .split_inclusive('\n')
        .take(2)
        .any(|line| {
            (line.starts_with("some") || line.starts_with("full")) && !line.is_char_boundary(5)
        })
}

/// MemoryMaps::from_read scales a "Key: value kB" line to bytes unchecked (an overflow), and
/// slices the path of a mapping line unchecked: "[stack:...": its last byte, "/SYSV...":
/// bytes 5 to 13.
fn maps_parser_panics(data: &[u8]) -> bool {
    String::from_utf8_lossy(data)
        .split_inclusive('\n')
        .any(|line| {
            if line.starts_with(|c: char| c.is_ascii_uppercase()) {
                let mut words = line.split_ascii_whitespace().skip(1);
                let (Some(value), Some(_unit)) = (words.next(), words.next()) else {
                    return false;
                };
                return value
                    .parse::<u64>()
                    .is_ok_and(|v| v.checked_mul(1024).is_none());
            }
            let path = line.splitn(6, ' ').nth(5).unwrap_or_default().trim();
            (path.starts_with("[stack:") && !path.is_char_boundary(path.len() - 1))
                || (path.starts_with("/SYSV") && !path.is_char_boundary(13))
        })
}

/// Limits::from_read subtracts from each line's word count unchecked: a line of fewer than 3
/// words overflows (a panic with overflow checks, as here; an error in release builds).
fn limits_parser_overflows(data: &[u8]) -> bool {
    String::from_utf8_lossy(data)
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("Limit"))
        .any(|line| line.split_whitespace().count() < 3)
}

fuzz_target!(|data: &[u8]| {
    // procfs (host/process_memory.rs, trace/memory_maps.rs, the diagnose sampler, the agent's feed,
    // host/system_memory.rs, host/memcg.rs).
    if !stat_parser_panics(data) {
        if let Ok(stat) = Stat::from_read(data) {
            let _ = (stat.vsize / 1024, stat.comm.len(), stat.state);
        }
    }
    if let Ok(status) = Status::from_read(data) {
        let _ = (status.vmrss, status.vmswap, status.threads);
    }
    if !limits_parser_overflows(data) {
        if let Ok(limits) = Limits::from_read(data) {
            let _ = limits.max_stack_size.soft_limit;
        }
    }
    if !maps_parser_panics(data) {
        if let Ok(maps) = MemoryMaps::from_read(data) {
            let _ = heap_kb(&maps);
        }
    }
    if let Ok(vmstat) = VmStat::from_read(data) {
        let _ = vmstat.0.get("pswpin").map_or(0, |&v| v.max(0) as u64);
    }
    if !meminfo_parser_panics(data) {
        if let Ok(meminfo) = Meminfo::from_read(data) {
            let _ = (meminfo.swap_total / 1024, meminfo.swap_free / 1024);
        }
    }
    if !pressure_parser_panics(data) {
        if let Ok(psi) = MemoryPressure::from_read(data) {
            let _ = (f64::from(psi.some.avg10), f64::from(psi.full.avg10));
        }
    }

    // memtrace's own, on text (read_to_string would refuse what is not UTF-8).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = stat_flags(text);
    let _ = effective_capabilities_in(text);
    let _ = statm_rss_bytes(text);
    let _ = tracepoint_offsets(text);
    if let Ok(names) = GfpNames::from_format(text) {
        let _ = names.decode(u64::MAX);
    }
    if let Some(hierarchy) = MemoryHierarchy::from_mounts(text) {
        let _ = hierarchy.path_in(text);
    }
    for hierarchy in hierarchies() {
        if let Some(path) = hierarchy.path_in(text) {
            let _ = ContainerLabels::from_cgroup_path(&path);
        }
    }
    let _ = ContainerLabels::from_cgroup_path(text);
    // A cgroup directory's files: the text split at NULs, part i for file i (cycling).
    let parts: Vec<&str> = text.split('\0').collect();
    for v2 in [true, false] {
        let _ = MemoryCgroup::from_files(v2, |name| {
            let at = CGROUP_FILES.iter().position(|&file| file == name)?;
            Some(parts[at % parts.len()].trim().to_owned())
        });
    }
});
