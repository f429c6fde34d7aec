//! `memtrace stat`: a process's memory basics against the kernel's own figures for it
//! (/proc/PID/status and limits, the cgroup's files), as root and as an ordinary user.

use std::process::Command;

use serde_json::Value;
use tests::{memtrace, run_command, serial, spawn_waiting, status_kb, swap_env::MemoryCgroup};

/// `memtrace stat --format json PID`, parsed.
fn stat(pid: u32) -> Value {
    let run = memtrace(&["stat", "--format", "json", &pid.to_string()]);
    assert_eq!(run.code(), 0, "{}", run.describe());
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.describe()))
}

fn within(measured: u64, expected: u64, fraction: f64) -> bool {
    (measured as f64 - expected as f64).abs() <= expected as f64 * fraction
}

/// A process that touched 20,000 fresh anonymous pages and waits: its RSS, heap, stack,
/// limit and faults as the kernel counts them.
#[test]
fn the_basics_are_the_kernels() {
    let mut workload = spawn_waiting("fault_touch", &["20000"]);
    let report = workload.go();
    let pid = workload.pid;
    let json = stat(pid);
    let (rss, vsz, stack) = (
        status_kb(pid, "VmRSS:"),
        status_kb(pid, "VmSize:"),
        status_kb(pid, "VmStk:"),
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    workload.finish();
    let u64_of = |key: &str| {
        json[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {json}"))
    };
    assert!(within(u64_of("rss_kb"), rss, 0.05), "RSS {rss} kB\n{json}");
    assert_eq!(u64_of("vsz_kb"), vsz, "{json}");
    assert_eq!(u64_of("stack_kb"), stack, "{json}");
    // The 20,000 pages (80,000 KiB) are a private anonymous mapping: heap, resident.
    let touched_kb = 20_000 * 4;
    assert!(
        u64_of("heap_anon_mappings_kb") >= touched_kb,
        "{touched_kb} KiB touched\n{json}"
    );
    assert!(u64_of("heap_kb") <= u64_of("rss_anon_kb") + 4, "{json}");
    assert!(
        u64_of("minflt") >= report.minflt,
        "its getrusage: {}\n{json}",
        report.minflt
    );
    // The soft stack limit, as /proc/PID/limits says it.
    let soft: Option<u64> = limits
        .lines()
        .find(|l| l.starts_with("Max stack size"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok());
    assert_eq!(
        json["stack_limit_kb"].as_u64(),
        soft.map(|bytes| bytes / 1024),
        "{limits}\n{json}"
    );
    assert_eq!(json["threads"], 1, "{json}");
    assert!(json["psi"]["some_avg10"].is_number(), "{json}");
}

/// In a memory cgroup with a limit: the cgroup's path, limit and the headroom left.
#[test]
fn the_memory_cgroup_and_its_headroom() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let cgroup = MemoryCgroup::create(256);
    let mut workload = spawn_waiting("fault_touch", &["10000"]);
    std::fs::write(cgroup.procs(), workload.pid.to_string()).unwrap();
    workload.go();
    let json = stat(workload.pid);
    workload.finish();
    let name = cgroup.dir.file_name().unwrap().to_str().unwrap();
    let c = &json["cgroup"];
    assert!(c["path"].as_str().unwrap().ends_with(name), "{json}");
    let limit = 256 << 20;
    assert_eq!(c["limit_bytes"].as_u64(), Some(limit), "{json}");
    let usage = c["usage_bytes"].as_u64().unwrap();
    // The 40 MB it touched are charged to the cgroup.
    assert!(usage >= 10_000 * 4096, "{json}");
    assert_eq!(c["headroom_bytes"].as_u64(), Some(limit - usage), "{json}");
}

/// No root needed for one's own process; another user's says why and exits 2.
#[test]
fn an_ordinary_user_reads_its_own_processes_only() {
    if !tests::require_root() {
        return;
    }
    let as_nobody = |script: String| {
        run_command(
            Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "sh",
                    "-c",
                ])
                .arg(script),
        )
    };
    let bin = tests::memtrace_bin();
    // exec: memtrace's pid is the shell's.
    let own = as_nobody(format!("exec {} stat $$", bin.display()));
    assert_eq!(own.code(), 0, "{}", own.describe());
    assert!(own.stdout.contains("RSS"), "{}", own.describe());
    let root_process = std::process::id();
    let other = as_nobody(format!("{} stat {root_process}", bin.display()));
    assert_eq!(other.code(), 2, "{}", other.describe());
    assert!(
        other.stderr.contains("permission denied") && other.stderr.contains("root"),
        "{}",
        other.describe()
    );
}

#[test]
fn a_missing_process_is_bad_input() {
    let run = memtrace(&["stat", "4194303"]);
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(run.stderr.contains("no such process"), "{}", run.describe());
}
