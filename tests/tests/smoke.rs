//! The eBPF smoke tests: what must hold on every supported kernel. They run on the host with
//! the rest, and in `cargo xtask vm-test` on Debian's other kernels (in an initramfs, with
//! only memtrace, this binary and the workloads), so they use nothing else: no bpftool, no
//! cgroups, no swap.

use serde_json::Value;
use tests::{
    memtrace, serial,
    traced::{self, u64_of},
    workload, TempDir,
};

/// Every program in memtrace's eBPF object (memtrace-ebpf's `#[tracepoint]`, `#[perf_event]`,
/// `#[uprobe]`... functions).
const PROGRAMS: [&str; 27] = [
    "aligned_alloc_enter",
    "alloc_return",
    "calloc_enter",
    "exit_counts",
    "filemap_fault",
    "free_enter",
    "learn_cpu_offset",
    "major_fault",
    "malloc_enter",
    "memalign_enter",
    "minor_fault",
    "mmap_enter",
    "mmap_exit",
    "munmap_enter",
    "oom_kill",
    "page_alloc",
    "posix_memalign_enter",
    "process_exec",
    "process_exit",
    "pvalloc_enter",
    "realloc_enter",
    "reallocarray_enter",
    "swap_rss_stat",
    "swap_write_folio",
    "swap_zero_events",
    "task_newtask",
    "valloc_enter",
];

/// (major, minor) of the running kernel.
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn every_program_passes_the_verifier() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("check");
    let out = dir.join("check.json");
    let run = memtrace(&[
        "check",
        "--format",
        "json",
        "--output",
        out.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let report: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("check wrote no JSON ({e}): {text}\n{}", run.describe()));
    let context = || format!("{}\n{report:#}", run.describe());
    assert_eq!(run.code(), 0, "{}", context());
    assert_eq!(report["ok"], true, "{}", context());
    let programs = report["programs"].as_array().unwrap();
    for name in PROGRAMS {
        let program = programs
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("program {name} not in the report\n{}", context()));
        assert!(
            program["error"].is_null(),
            "the kernel refused {name}\n{}",
            context()
        );
    }
    // Each subcommand runs here. Before 6.2 swap runs without per-process swap counts, and
    // before 6.16 without zero-filled pages per process (memcg:count_memcg_events); it says so.
    for command in report["commands"].as_array().unwrap() {
        let name = command["name"].as_str().unwrap();
        assert_eq!(command["ok"], true, "{name} cannot run here\n{}", context());
        let degraded = command["degraded"].as_array().unwrap();
        if name != "swap" {
            continue;
        }
        if kernel_version() < (6, 2) {
            assert!(!degraded.is_empty(), "{}", context());
            continue;
        }
        let zero_event = "memcg/count_memcg_events";
        assert_eq!(
            degraded.is_empty(),
            tests::tracepoint_exists(zero_event),
            "{}",
            context()
        );
        assert!(
            degraded.iter().all(|problem| problem
                .as_str()
                .unwrap()
                .contains("memcg:count_memcg_events")),
            "{}",
            context()
        );
    }
}

/// `memtrace swap` runs on every kernel: per process where it can read the kernel's counters,
/// else with system figures only, and the report says which.
#[test]
fn swap_runs_and_says_whether_it_counts_per_process() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let path = workload("fault_touch");
    let t = traced::trace("swap", &[], &[path.to_str().unwrap(), "1000"]);
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert_eq!(
        t.report["per_process_swap"],
        kernel_version() >= (6, 2),
        "{}",
        t.context()
    );
    if kernel_version() < (6, 2) {
        assert!(
            t.run
                .stderr
                .contains("no per-process swap counts on this kernel"),
            "{}",
            t.context()
        );
    }
}

#[test]
fn fault_counts_match_getrusage() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let path = workload("fault_touch");
    let t = traced::trace("faults", &[], &[path.to_str().unwrap(), "20000"]);
    assert_eq!(t.run.code(), 0, "{}", t.context());
    // Kernels without filemap:mm_filemap_fault (6.1) name file faults by their mappings, and
    // memtrace says so.
    let tagger = std::path::Path::new("/sys/kernel/tracing/events/filemap/mm_filemap_fault");
    assert_eq!(
        t.run
            .stderr
            .contains("no filemap:mm_filemap_fault tracepoint"),
        !tagger.exists(),
        "{}",
        t.context()
    );
    let minor = u64_of(t.process(), "minor");
    let expected = t.workload.minflt;
    assert!(
        minor.abs_diff(expected) * 50 <= expected,
        "memtrace counted {minor} minor faults, the workload's getrusage {expected} (more than \
         2% apart)\n{}",
        t.context()
    );
    let top = t.report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "minor")
        .max_by_key(|s| u64_of(s, "count"));
    assert!(
        top.is_some_and(|s| s["frames"][0] == "touch_pages"),
        "the top minor-fault stack is not in touch_pages\n{}",
        t.context()
    );
}

/// Counted in the kernel (--stacks none): the pages the workload touched, and no stacks.
#[test]
fn page_allocations_cover_the_touched_pages() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let pages = 20_000u64;
    let path = workload("fault_touch");
    let t = traced::trace(
        "pages",
        &["--stacks", "none"],
        &[path.to_str().unwrap(), &pages.to_string()],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    let pid = u64::from(t.workload.pid);
    let credited: u64 = t.report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| u64_of(p, "pid") == pid)
        .map(|p| u64_of(p, "pages"))
        .sum();
    assert!(
        (pages * 95 / 100..=pages * 3 / 2).contains(&credited),
        "{credited} pages credited, the workload touched {pages}\n{}",
        t.context()
    );
    assert!(
        t.report["stacks"].as_array().unwrap().is_empty(),
        "--stacks none took stacks\n{}",
        t.context()
    );
}

#[test]
fn heap_allocations_are_counted_exactly() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let (leaks, size, churn) = (100u64, 1000u64, 2000u64);
    let path = workload("malloc_leak");
    // By frame pointers, which the workload keeps: it counts by the leaking function's stack
    // from the first call on, and the table walk cannot see a command's first milliseconds
    // whole (README); unwind.rs tests that walk's malloc stacks.
    let t = traced::trace(
        "malloc",
        &["--leaks", "--unwind", "fp"],
        &[
            path.to_str().unwrap(),
            &leaks.to_string(),
            &size.to_string(),
            &churn.to_string(),
        ],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    let leaked: Vec<&Value> = t.report["outstanding"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["frames"][0] == "leaky_function")
        .collect();
    assert_eq!(leaked.len(), 1, "{}", t.context());
    assert_eq!(u64_of(leaked[0], "allocations"), leaks, "{}", t.context());
    assert_eq!(u64_of(leaked[0], "bytes"), leaks * size, "{}", t.context());
}
