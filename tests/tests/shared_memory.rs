//! `memtrace faults` on shared memory: shared anonymous mappings (listed by the kernel as
//! `/dev/zero (deleted)`) and System V segments are regions of their own, not files. Checked
//! on a workload of ours against its own getrusage, and on Debian's postgres (whose
//! shared_buffers is such a mapping) against its backends' own /proc/PID/smaps.

use std::{process::Stdio, time::Duration};

use serde_json::Value;
use tests::{
    postgres::{smaps_pages, Postgres, SHARED_ANON_PATH},
    run_command, serial, spawn_memtrace,
    traced::{self, u64_of},
    workload, TempDir,
};

const SHARED_ANON: &str = "[shared anon]";

fn regions(report: &Value) -> &Vec<Value> {
    report["regions"]
        .as_array()
        .unwrap_or_else(|| panic!("no regions in {report}"))
}

/// Minor faults of `pid` in the region named `name` (0 without a row).
fn region_minor(report: &Value, pid: u32, name: &str) -> u64 {
    regions(report)
        .iter()
        .filter(|r| r["pid"].as_u64() == Some(u64::from(pid)) && r["region"] == name)
        .map(|r| u64_of(r, "minor"))
        .sum()
}

/// No region is named by the unlinked shmem file behind shared memory.
fn assert_no_shmem_file_names(report: &Value, context: &dyn Fn() -> String) {
    for row in regions(report) {
        let name = row["region"].as_str().unwrap_or_default();
        assert!(
            !(name.starts_with("/dev/zero") || name.starts_with("/SYSV")),
            "shared memory reported as a file: {row}\n{}",
            context()
        );
    }
}

/// `|measured - expected| <= fraction * expected`.
fn within(measured: u64, expected: u64, fraction: f64) -> bool {
    (measured as f64 - expected as f64).abs() <= fraction * expected as f64
}

/// Our workload touches a shared anonymous mapping and a SysV segment page by page: each is
/// its own region (the segment named by the shmid shmget gave it), with the faults its own
/// getrusage counted around that touch.
#[test]
fn shared_anonymous_and_sysv_memory_are_regions_of_their_own() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let program = workload("shared_anon");
    let t = traced::trace(
        "faults",
        &["--stacks", "none"],
        &[program.to_str().unwrap(), "3000"],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert_each_shared_region_has_its_faults(&t);
}

/// shared_anon's two regions: the shared anonymous mapping and the SysV segment (named by the
/// shmid shmget gave it), each with the minor faults its own getrusage counted around its
/// touch, and no region named by the unlinked shmem files behind them.
fn assert_each_shared_region_has_its_faults(t: &traced::Traced) {
    let context = || t.context();
    assert_no_shmem_file_names(&t.report, &context);
    let segment = format!(
        "[sysv shm key 0x00000000 shmid {}]",
        t.workload.u64("shmid")
    );
    for (name, oracle) in [
        (SHARED_ANON, t.workload.u64("shared_minflt")),
        (segment.as_str(), t.workload.u64("sysv_minflt")),
    ] {
        let counted = region_minor(&t.report, t.workload.pid, name);
        assert!(
            within(counted, oracle, 0.02) && oracle >= t.workload.u64("pages"),
            "{name}: memtrace counted {counted} minor faults, the workload's getrusage {oracle} \
             around its touch of {} pages\n{}",
            t.workload.u64("pages"),
            t.context()
        );
    }
}

/// The same workload run while memtrace cannot read its maps: memtrace is stopped (SIGSTOP)
/// from before the workload starts until after it has exited, as a drain busy elsewhere would
/// be. Its faults name no file (shmem faults skip filemap_fault) and its maps are gone when the
/// drain comes; the kernel's records of its mappings, kept for the command, still say what the
/// memory was.
#[test]
fn shared_memory_of_a_command_that_exited_unread_is_still_named() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let program = workload("shared_anon");
    let dir = TempDir::new("shared-unread");
    let (go, done) = (dir.join("go"), dir.join("done"));
    tests::mkfifo(&go);
    let script = format!(
        "read x < {}; {} 3000; touch {}",
        go.display(),
        program.display(),
        done.display()
    );
    let tracer =
        traced::JsonTracer::start("faults", &["--stacks", "none", "--", "sh", "-c", &script]);
    tracer.signal(libc::SIGSTOP);
    // Opening the fifo waits for the shell's read end: the workload starts after this.
    std::fs::write(&go, "\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the workload did not finish within a minute"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    tracer.signal(libc::SIGCONT);
    let t = tracer.wait_for_command();
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert_each_shared_region_has_its_faults(&t);
}

/// The pages one fault may map at most: fault-around maps up to fault_around_bytes of a file
/// (shmem included) on a read fault.
fn fault_around_pages() -> u64 {
    let bytes = std::fs::read_to_string("/sys/kernel/debug/fault_around_bytes")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        // debugfs unmounted: the kernel's default, 64 KiB.
        .unwrap_or(65536);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    (bytes / page).max(1)
}

/// Debian's postgres with shared_buffers=64MB while pgbench initialises and runs, traced from
/// the postmaster with --follow-children, and a psql session of ours traced by its pid:
/// - faults on postgres's shared memory land in `[shared anon]`, never in a file named
///   `/dev/zero (deleted)`;
/// - no process faults more often than the mapping has pages (each fault maps at least one);
/// - the session's backend, whose /proc/PID/smaps is read around its query: its faults on the
///   mapping are at most the pages its Rss there grew by, and at least that growth divided by
///   the most pages one fault maps (fault-around).
#[test]
fn postgres_shared_buffers_are_shared_anonymous_memory() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let postgres = Postgres::start("64MB");
    let postmaster = postgres.pid();
    let mapping_pages = smaps_pages(postmaster, SHARED_ANON_PATH, "Size");
    assert!(
        mapping_pages > 0,
        "postgres has no {SHARED_ANON_PATH:?} mapping (huge_pages=off)\n{}",
        std::fs::read_to_string(format!("/proc/{postmaster}/maps")).unwrap_or_default()
    );
    let mut session = postgres.session();
    let backend = session.backend_pid();

    let dir = TempDir::new("faults-postgres");
    let out = dir.join("report.json");
    let (postmaster_arg, backend_arg) = (postmaster.to_string(), backend.to_string());
    let mut tracer = spawn_memtrace(&[
        "faults",
        "--pid",
        &postmaster_arg,
        "--pid",
        &backend_arg,
        "--follow-children",
        "--stacks",
        "none",
        "--format",
        "json",
        "--output",
        out.to_str().unwrap(),
    ]);
    tracer.wait_attached();
    // From here to the report, the session's faults are counted: its Rss on the mapping is
    // read at both ends. (Idle, it may still read shared memory: catching up with the
    // invalidations pgbench's DDL sends.)
    let rss_before = smaps_pages(backend, SHARED_ANON_PATH, "Rss");
    for args in [&["-i", "-s", "5", "-q"][..], &["-T", "3", "-c", "2"][..]] {
        let run = run_command(postgres.client("pgbench").args(args).stdin(Stdio::null()));
        assert_eq!(
            run.code(),
            0,
            "pgbench {args:?}\n{}\n--- postgres log ---\n{}",
            run.describe(),
            postgres.log()
        );
    }
    // The session's backend reads many buffers: an index scan (a sequential one would go
    // through a small ring of buffers).
    let sum = session.query(
        "SET enable_seqscan = off; SET enable_bitmapscan = off; \
         SELECT sum(abalance) FROM pgbench_accounts WHERE aid <= 200000;",
    );
    let rss_after = smaps_pages(backend, SHARED_ANON_PATH, "Rss");
    assert!(sum.parse::<i64>().is_ok(), "the query answered {sum:?}");
    // Events still in the ring are drained after SIGINT.
    std::thread::sleep(Duration::from_millis(100));
    tracer.signal(libc::SIGINT);
    let run = tracer.wait();
    assert_eq!(run.code(), 0, "memtrace after SIGINT\n{}", run.describe());
    let text = std::fs::read_to_string(&out).expect("memtrace's report");
    let report: Value = serde_json::from_str(&text).expect("JSON report");
    let context = || {
        format!(
            "{}\n--- report ---\n{}",
            run.describe(),
            serde_json::to_string_pretty(&report).unwrap()
        )
    };
    assert_eq!(u64_of(&report, "lost_events"), 0, "{}", context());
    assert_no_shmem_file_names(&report, &context);

    let shared_rows: Vec<&Value> = regions(&report)
        .iter()
        .filter(|r| r["region"] == SHARED_ANON)
        .collect();
    let total: u64 = shared_rows.iter().map(|r| u64_of(r, "minor")).sum();
    eprintln!(
        "postgres: {} processes faulted {total} times on [shared anon] (mapping: {mapping_pages} \
         pages)",
        shared_rows.len()
    );
    // pgbench's backends (children of the postmaster, followed) write the tables' pages.
    assert!(
        shared_rows
            .iter()
            .any(|r| ![postmaster, backend].contains(&(u64_of(r, "pid") as u32))),
        "no backend forked while tracing has [shared anon] faults\n{}",
        context()
    );
    for row in &shared_rows {
        let minor = u64_of(row, "minor");
        assert!(
            minor <= mapping_pages,
            "pid {} faulted {minor} times on [shared anon], more than the mapping's \
             {mapping_pages} pages\n{}",
            row["pid"],
            context()
        );
    }

    let counted = region_minor(&report, backend, SHARED_ANON);
    let grown = rss_after.saturating_sub(rss_before);
    let per_fault = fault_around_pages();
    eprintln!(
        "postgres: the session's backend {backend}: memtrace {counted} faults on [shared anon]; \
         its smaps Rss there grew by {grown} pages ({rss_before} -> {rss_after}); one fault maps \
         at most {per_fault}"
    );
    assert!(
        grown > 0,
        "the query mapped no new pages of shared memory: no test"
    );
    assert!(
        counted <= grown && counted * per_fault >= grown,
        "backend {backend}: memtrace counted {counted} faults on [shared anon], its own smaps \
         says its Rss there grew by {grown} pages (so between {} and {grown} faults)\n{}",
        grown.div_ceil(per_fault),
        context()
    );
}
