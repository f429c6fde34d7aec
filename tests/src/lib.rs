//! Helpers for memtrace's integration tests (`tests/tests/*.rs`): the C workloads built by
//! `build.rs`, their JSON oracle lines, the memtrace binary under test, and the root check.
//!
//! Tests panic with context rather than return `Result`.

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use anyhow::{bail, Context};
use serde::Deserialize;

/// Folder holding the compiled workloads (`<workspace target>/workloads`).
pub const WORKLOADS_DIR: &str = env!("WORKLOADS_DIR");

/// The workspace's target folder (honours `CARGO_TARGET_DIR` at build time).
pub const TARGET_DIR: &str = env!("MEMTRACE_TARGET_DIR");

/// Path of the compiled workload `name` (e.g. `"fault_touch"`); panics if it is missing.
pub fn workload(name: &str) -> PathBuf {
    let path = PathBuf::from(WORKLOADS_DIR).join(name);
    assert!(
        path.is_file(),
        "workload {} not built (tests/build.rs builds it)",
        path.display()
    );
    path
}

/// The memtrace binary under test: `$MEMTRACE_BIN` if set, else
/// `<workspace target>/<debug|release>/memtrace` (same profile as the tests). Building it is the
/// caller's concern.
pub fn memtrace_bin() -> PathBuf {
    match std::env::var_os("MEMTRACE_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => PathBuf::from(TARGET_DIR)
            .join(env!("MEMTRACE_PROFILE"))
            .join("memtrace"),
    }
}

/// True when the tests run as root. Otherwise: in CI (`CI=true`) panics, since a test that lacks
/// privileges must fail there, never skip; elsewhere prints a skip note and returns false.
///
/// Use as `if !tests::require_root() { return; }`.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("this test needs root (eBPF) and CI=true: run the tests as root, CI never skips");
    }
    eprintln!("skipped: this test needs root (eBPF); run as root to include it");
    false
}

/// The JSON line a workload prints at its end. `phase_*` are the deltas of its own
/// `getrusage(RUSAGE_SELF)` around its main phase; `minflt`/`majflt` are the totals at the end.
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    pub pid: u32,
    pub minflt: u64,
    pub majflt: u64,
    pub phase_minflt: u64,
    pub phase_majflt: u64,
    pub elapsed_s: f64,
    /// Workload-specific members (`pages`, `reads`, `children`, `tids`, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    /// A workload-specific number, e.g. `report.u64("children_minflt")`; panics if absent.
    pub fn u64(&self, key: &str) -> u64 {
        self.extra
            .get(key)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("no number {key:?} in workload report {self:?}"))
    }

    /// A workload-specific list of pids, e.g. `report.pids("children")` or `report.pids("tids")`.
    pub fn pids(&self, key: &str) -> Vec<u32> {
        let list = self.extra.get(key).and_then(|v| v.as_array());
        let list = list.unwrap_or_else(|| panic!("no list {key:?} in workload report {self:?}"));
        list.iter()
            .map(|v| v.as_u64().expect("pid") as u32)
            .collect()
    }
}

/// Parses a workload's report: the last line of `stdout` that starts with `{`.
pub fn parse_report(stdout: &str) -> anyhow::Result<Report> {
    let Some(line) = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
    else {
        bail!("no JSON line in workload output: {stdout:?}");
    };
    serde_json::from_str(line).with_context(|| format!("bad workload JSON line: {line}"))
}

/// Runs workload `name` with `args` to completion (no tracer) and returns its report; panics
/// with its stderr if it fails.
pub fn run_workload(name: &str, args: &[&str]) -> Report {
    let out = Command::new(workload(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run workload {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "workload {name} {args:?} failed: {}\n{stderr}",
        out.status
    );
    parse_report(&stdout).unwrap_or_else(|e| panic!("workload {name}: {e:#}\nstderr: {stderr}"))
}

/// A workload started with `--wait` (and `--linger` by default): it has printed `ready <pid>`
/// and waits for [`Waiting::go`], so a tracer can be attached to [`Waiting::pid`] first.
pub struct Waiting {
    pub pid: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

/// Starts workload `name` with `args` plus `--wait --linger` and waits for its `ready` line.
pub fn spawn_waiting(name: &str, args: &[&str]) -> Waiting {
    let mut child = Command::new(workload(name))
        .args(args)
        .args(["--wait", "--linger"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run workload {name}: {e}"));
    let stdin = child.stdin.take();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let pid = line
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("workload {name}: expected `ready <pid>`, got {line:?}"));
    Waiting {
        pid,
        child,
        stdin,
        stdout,
    }
}

impl Waiting {
    /// Releases the workload into its main phase and returns its report, read once the phase
    /// is over; the process stays alive (lingering) until [`Waiting::finish`] or drop.
    pub fn go(&mut self) -> Report {
        self.release();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        parse_report(&line).unwrap_or_else(|e| panic!("workload {}: {e:#}", self.pid))
    }

    /// Lets the lingering workload exit and checks that it succeeded.
    pub fn finish(mut self) {
        self.release();
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "workload {} failed: {status}", self.pid);
    }

    fn release(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            // The workload may already be gone; finish() reports its status then.
            let _ = stdin.write_all(b"\n").and_then(|()| stdin.flush());
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        // A panicking test leaves no process behind (a no-op after finish()).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch file path under `<workspace target>/tmp/` (disk-backed, unlike a tmpfs /tmp, so
/// `fault_file` gets real major faults). The caller removes the file.
pub fn scratch_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(TARGET_DIR).join("tmp");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.{}", std::process::id()))
}
