//! `memtrace malloc` against allocations known exactly: the workloads count their own calls and
//! the bytes they leak.

use std::fs;

use serde_json::Value;
use tests::{memtrace, parse_report, serial, workload, Report, Run, TempDir};

/// A traced command: memtrace's JSON report and the workload's own figures.
struct Traced {
    run: Run,
    report: Value,
    workload: Report,
}

impl Traced {
    fn context(&self) -> String {
        format!(
            "{}\n--- report ---\n{}",
            self.run.describe(),
            serde_json::to_string_pretty(&self.report).unwrap()
        )
    }

    fn process(&self) -> &Value {
        self.report["processes"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["pid"] == self.workload.pid))
            .unwrap_or_else(|| panic!("no row for the workload\n{}", self.context()))
    }

    /// Outstanding rows whose innermost frame is `function`.
    fn outstanding_in(&self, function: &str) -> Vec<&Value> {
        self.report["outstanding"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["frames"][0] == function)
            .collect()
    }
}

/// `memtrace malloc <extra> --format json -- <workload> <args>`.
fn trace(extra: &[&str], name: &str, args: &[&str]) -> Traced {
    let path = workload(name);
    let mut command = vec![path.to_str().unwrap()];
    command.extend_from_slice(args);
    trace_command(extra, &command)
}

/// `memtrace malloc <extra> --format json -- <command>`; the command prints a workload line.
fn trace_command(extra: &[&str], command: &[&str]) -> Traced {
    let dir = TempDir::new("malloc");
    let out = dir.join("report.json");
    let mut argv = vec![
        "malloc",
        "--format",
        "json",
        "--output",
        out.to_str().unwrap(),
    ];
    argv.extend_from_slice(extra);
    argv.push("--");
    argv.extend_from_slice(command);
    let run = memtrace(&argv);
    let text =
        fs::read_to_string(&out).unwrap_or_else(|e| panic!("no report ({e})\n{}", run.describe()));
    let report = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {text}\n{}", run.describe()));
    let workload = parse_report(&run.stdout)
        .unwrap_or_else(|e| panic!("workload line: {e:#}\n{}", run.describe()));
    Traced {
        run,
        report,
        workload,
    }
}

fn u64_of(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key:?} in {value}"))
}

/// libc allocates a few blocks of its own (stdio buffers) besides the workload's.
const LIBC_OWN_BLOCKS: u64 = 8;

#[test]
fn leaked_blocks_are_found_exactly() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let (leaks, size, churn) = (100u64, 1000u64, 20000u64);
    let t = trace(
        &["--leaks", "--top", "50"],
        "malloc_leak",
        &[&leaks.to_string(), &size.to_string(), &churn.to_string()],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    // The leak: exactly its blocks and bytes, on the stack of the function that made it.
    let leaked = t.outstanding_in("leaky_function");
    assert_eq!(leaked.len(), 1, "{}", t.context());
    assert_eq!(u64_of(leaked[0], "allocations"), leaks, "{}", t.context());
    assert_eq!(u64_of(leaked[0], "bytes"), leaks * size, "{}", t.context());
    assert_eq!(leaked[0]["frames"][1], "main", "{}", t.context());
    // Nothing the churn allocated is left, and little else is.
    assert!(t.outstanding_in("churn").is_empty(), "{}", t.context());
    let others: u64 = t.report["outstanding"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["frames"][0] != "leaky_function")
        .map(|r| u64_of(r, "allocations"))
        .sum();
    assert!(
        others <= LIBC_OWN_BLOCKS,
        "{others} other blocks outstanding\n{}",
        t.context()
    );
    // Calls: the workload's own count, plus libc's few.
    let process = t.process();
    let mallocs = t.workload.u64("mallocs");
    let counted = u64_of(process, "malloc_calls");
    assert!(
        (mallocs..=mallocs + LIBC_OWN_BLOCKS).contains(&counted),
        "{counted} malloc calls counted, the workload made {mallocs}\n{}",
        t.context()
    );
    let frees = u64_of(process, "free_calls");
    assert!(
        (churn..=churn + LIBC_OWN_BLOCKS).contains(&frees),
        "{frees} free calls counted, the workload made {churn}\n{}",
        t.context()
    );
    // Bytes: allocated minus freed is what is outstanding.
    let outstanding: u64 = t.report["outstanding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| u64_of(r, "bytes"))
        .sum();
    assert_eq!(
        u64_of(process, "bytes_allocated") - u64_of(process, "bytes_freed"),
        outstanding,
        "{}",
        t.context()
    );
}

#[test]
fn missing_lib_is_a_usage_error() {
    let _serial = serial();
    let run = memtrace(&[
        "malloc",
        "--lib",
        "/nonexistent/libjemalloc.so",
        "--",
        "true",
    ]);
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(
        run.stderr
            .contains("--lib /nonexistent/libjemalloc.so: no such file"),
        "{}",
        run.describe()
    );
}

/// The one outstanding row whose innermost frame is `function`: (allocations, bytes).
fn outstanding_of(t: &Traced, function: &str) -> (u64, u64) {
    let rows = t.outstanding_in(function);
    assert_eq!(
        rows.len(),
        1,
        "one outstanding row for {function}\n{}",
        t.context()
    );
    (u64_of(rows[0], "allocations"), u64_of(rows[0], "bytes"))
}

#[test]
fn every_allocator_function_is_exact() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let k = 50u64;
    let t = trace(
        &["--leaks", "--top", "50"],
        "malloc_kinds",
        &[&k.to_string()],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert_eq!(
        outstanding_of(&t, "calloc_leak"),
        (k, k * 1000),
        "{}",
        t.context()
    );
    assert_eq!(
        outstanding_of(&t, "posix_memalign_leak"),
        (k, k * 1000),
        "{}",
        t.context()
    );
    assert_eq!(
        outstanding_of(&t, "aligned_alloc_leak"),
        (k, k * 1024),
        "{}",
        t.context()
    );
    // Grown K times: one block of the last size.
    assert_eq!(
        outstanding_of(&t, "reallocarray_grow"),
        (1, k * 100),
        "{}",
        t.context()
    );
    assert_eq!(
        outstanding_of(&t, "realloc_from_null"),
        (1, 777),
        "{}",
        t.context()
    );
    // Grown, shrunk, then freed by realloc(p, 0).
    assert!(
        t.outstanding_in("realloc_cycle").is_empty(),
        "{}",
        t.context()
    );
    let process = t.process();
    for function in ["realloc", "reallocarray", "posix_memalign", "aligned_alloc"] {
        assert_eq!(
            u64_of(process, &format!("{function}_calls")),
            t.workload.u64(function),
            "{function} calls\n{}",
            t.context()
        );
    }
    let calloc = u64_of(process, "calloc_calls");
    assert!(
        (k..=k + LIBC_OWN_BLOCKS).contains(&calloc),
        "{calloc} calloc calls\n{}",
        t.context()
    );
}

#[test]
fn blocks_freed_by_other_threads_are_not_leaks() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let t = trace(
        &["--leaks", "--top", "50"],
        "malloc_threads",
        &["8", "20000"],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert_eq!(t.report["lost_events"], 0, "{}", t.context());
    for function in ["produce", "consume"] {
        assert!(
            t.outstanding_in(function).is_empty(),
            "blocks of {function} outstanding\n{}",
            t.context()
        );
    }
    let process = t.process();
    let (mallocs, frees) = (t.workload.u64("mallocs"), t.workload.u64("frees"));
    let counted = u64_of(process, "malloc_calls");
    assert!(
        (mallocs..=mallocs + LIBC_OWN_BLOCKS).contains(&counted),
        "{counted} malloc calls counted, the workload made {mallocs}\n{}",
        t.context()
    );
    // Thread exits free a few blocks of the C library's own as well.
    let freed = u64_of(process, "free_calls");
    assert!(
        (frees..=frees + 16 * 8).contains(&freed),
        "{freed} free calls counted, the workload made {frees}\n{}",
        t.context()
    );
}

#[test]
fn another_allocator_is_traced_with_lib() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
    assert!(
        std::path::Path::new(jemalloc).exists(),
        "{jemalloc} is missing: run `cargo xtask setup` (Debian's libjemalloc2)"
    );
    let (leaks, size) = (40u64, 3000u64);
    let preload = format!("LD_PRELOAD={jemalloc}");
    let leak = workload("malloc_leak");
    let t = trace_command(
        &["--leaks", "--lib", jemalloc],
        &[
            "env",
            &preload,
            leak.to_str().unwrap(),
            &leaks.to_string(),
            &size.to_string(),
            "5000",
        ],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert_eq!(
        outstanding_of(&t, "leaky_function"),
        (leaks, leaks * size),
        "{}",
        t.context()
    );
    assert!(t.outstanding_in("churn").is_empty(), "{}", t.context());
}

#[test]
fn outstanding_blocks_are_bounded_and_the_overflow_counted() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let t = trace(
        &["--leaks", "--max-outstanding", "50"],
        "malloc_leak",
        &["100", "1000", "1000"],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    let followed: u64 = t.report["outstanding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| u64_of(r, "allocations"))
        .sum();
    assert_eq!(followed, 50, "{}", t.context());
    // The 100 leaked blocks did not fit: the other 50 are counted, not lost silently.
    assert!(
        u64_of(&t.report, "outstanding_dropped") >= 50,
        "{}",
        t.context()
    );
    // Calls are still counted exactly.
    let mallocs = t.workload.u64("mallocs");
    let counted = u64_of(t.process(), "malloc_calls");
    assert!(
        (mallocs..=mallocs + LIBC_OWN_BLOCKS).contains(&counted),
        "{counted} malloc calls counted, the workload made {mallocs}\n{}",
        t.context()
    );
}

#[test]
fn sampled_bytes_are_estimated_within_ten_percent() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    // About 144 MB in 1M blocks; one sample point per 64 KiB gives about 2,200 samples.
    let t = trace(
        &["--sample-bytes", "65536"],
        "malloc_leak",
        &["0", "16", "1000000"],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert_eq!(t.report["sampled"], true, "{}", t.context());
    let truth = t.workload.u64("bytes");
    assert!(
        truth >= 100_000_000,
        "the workload allocated only {truth} bytes"
    );
    let estimate = u64_of(t.process(), "bytes_allocated");
    assert!(
        (estimate as f64 - truth as f64).abs() <= truth as f64 * 0.10,
        "estimated {estimate} bytes allocated, the workload asked for {truth}\n{}",
        t.context()
    );
}
