//! Stopping memtrace stops what it started: a signal sent to memtrace alone reaches the command
//! and what it started, memtrace reports how they really ended, and nothing is left running.
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{running, serial, spawn_memtrace, TempDir};

/// `memtrace faults -- sh -c SCRIPT` in the background; SCRIPT prints the pid of the sleep it
/// starts. Once that line is out, memtrace gets SIGTERM. Returns memtrace's run, its report and
/// the pids of the shell (the command) and its sleep.
fn terminate_during(script: &str) -> (tests::Run, Value, u32, u32) {
    let dir = TempDir::new("stopping");
    let out = dir.join("report.json");
    let pids = dir.join("pids");
    let script = format!("{script} & echo $$ $! > {}; wait", pids.display());
    let mut tracer = spawn_memtrace(&[
        "faults",
        "--format",
        "json",
        "--output",
        out.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    tracer.wait_attached();
    let deadline = Instant::now() + Duration::from_secs(30);
    let written = loop {
        let text = std::fs::read_to_string(&pids).unwrap_or_default();
        if text.ends_with('\n') {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the command never started its sleep"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut numbers = written
        .split_whitespace()
        .map(|p| p.parse::<u32>().unwrap());
    let (shell, sleep) = (numbers.next().unwrap(), numbers.next().unwrap());
    tracer.signal(libc::SIGTERM);
    let run = tracer.wait();
    let text = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("no report ({e})\n{}", run.describe()));
    let report: Value = serde_json::from_str(&text).unwrap();
    (run, report, shell, sleep)
}

#[test]
fn sigterm_to_memtrace_reaches_the_command_and_its_children() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let (run, report, shell, sleep) = terminate_during("sleep 60");
    assert_eq!(run.code(), 0, "{}", run.describe());
    // The shell died of the signal memtrace was sent, and memtrace says so.
    assert_eq!(report["exit"]["pid"], shell, "{report}");
    assert_eq!(report["exit"]["signal"], libc::SIGTERM, "{report}");
    assert!(report["exit"]["exit_code"].is_null(), "{report}");
    assert!(!running(shell), "the command still runs");
    assert!(!running(sleep), "the command's child still runs");
}

#[test]
fn a_command_that_ignores_sigterm_is_killed() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    // Ignored signals stay ignored across fork and exec: neither sh nor sleep will go.
    let (run, report, shell, sleep) = terminate_during("trap '' TERM; sleep 60");
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert_eq!(report["exit"]["signal"], libc::SIGKILL, "{report}");
    assert!(
        run.stderr
            .contains("did not exit within 3 s of being told to stop"),
        "{}",
        run.describe()
    );
    assert!(!running(shell) && !running(sleep), "{}", run.describe());
}
