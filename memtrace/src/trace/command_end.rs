//! How a traced command ends when the trace stops first: memtrace never leaves it running. A
//! signal sent to memtrace alone (`kill -TERM`) is passed on to the command and what it
//! started; a terminal's Ctrl-C reached them already; at the end of `--duration` they get
//! SIGTERM (as `perf record -- CMD` sends its workload). Each gets GRACE to exit, then SIGKILL.
use std::time::{Duration, Instant};

use super::{
    launch::{ChildExit, RunningChild},
    session::StopReason,
};

/// How long the command has to exit after the signal, before SIGKILL.
const GRACE: Duration = Duration::from_secs(3);
/// How long a SIGKILL'd process may take to be reaped.
const REAP: Duration = Duration::from_secs(1);

/// Waits for the command (told to stop when it has to be) and returns how it ended. `tree`
/// is the command and the processes it started that the trace followed.
pub fn finish(child: &RunningChild, reason: StopReason, tree: &[u32]) -> Option<ChildExit> {
    if let Some(exit) = child.try_wait() {
        return Some(exit);
    }
    match reason {
        StopReason::Signal(signal) if signal.sent_to_memtrace_alone => {
            signal_all(tree, signal.signal)
        }
        StopReason::Signal(_) => {} // the terminal's whole process group got it
        StopReason::Deadline => signal_all(tree, libc::SIGTERM),
        StopReason::TargetsExited => return wait_for(child, REAP),
    }
    let others: Vec<u32> = tree.iter().copied().filter(|&p| p != child.pid).collect();
    if let Some(exit) = wait_for(child, GRACE) {
        // What it started and left behind goes too.
        signal_all(&others, libc::SIGKILL);
        return Some(exit);
    }
    log::warn!(
        "the command (pid {}) did not exit within {} s of being told to stop: killed it",
        child.pid,
        GRACE.as_secs()
    );
    signal_all(tree, libc::SIGKILL);
    wait_for(child, REAP)
}

/// Polls for the child's exit until `limit` has passed.
fn wait_for(child: &RunningChild, limit: Duration) -> Option<ChildExit> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(exit) = child.try_wait() {
            return Some(exit);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal_all(pids: &[u32], signal: i32) {
    for &pid in pids {
        // ESRCH for one already gone is expected.
        unsafe { libc::kill(pid as libc::pid_t, signal) };
    }
}
