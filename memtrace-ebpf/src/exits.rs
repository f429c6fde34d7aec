//! Processes ending (`memtrace agent`): when a process's last thread exits, its lifetime
//! fault counts as getrusage would give them, so the agent counts processes gone between two
//! of its /proc reads. The kernel counts faults per task already; nothing runs per fault.
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use memtrace_common::{counter, EventKind, ProcessExit, COMM_LEN};

use crate::{
    config, filter,
    maps::{count, EVENTS},
    memcg,
};

// Indices into `Settings::exit_layout`.
const SIGNAL: usize = 0;
const SIGNAL_LIVE: usize = 1;
const SIGNAL_MIN_FLT: usize = 2;
const SIGNAL_MAJ_FLT: usize = 3;
const TASK_MIN_FLT: usize = 4;
const TASK_MAJ_FLT: usize = 5;
const GROUP_LEADER: usize = 6;
const START_BOOTTIME: usize = 7;

#[inline(always)]
fn read(base: u64, field: usize) -> u64 {
    if base == 0 {
        return 0;
    }
    let at = base + config::exit_layout(field);
    unsafe { bpf_probe_read_kernel(at as *const u64) }.unwrap_or(0)
}

#[tracepoint]
pub fn exit_counts(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !filter::is_target(tgid) {
        return 0;
    }
    let task = unsafe { bpf_get_current_task() };
    let signal = read(task, SIGNAL);
    // Other threads still run: the process is not over.
    if read(signal, SIGNAL_LIVE) as u32 != 0 {
        return 0;
    }
    // Threads already gone were added to the signal struct; the leader, if another thread,
    // waits as a zombie with its own counts.
    let leader = read(task, GROUP_LEADER);
    let mut minor = read(signal, SIGNAL_MIN_FLT) + read(task, TASK_MIN_FLT);
    let mut major = read(signal, SIGNAL_MAJ_FLT) + read(task, TASK_MAJ_FLT);
    if leader != task {
        minor += read(leader, TASK_MIN_FLT);
        major += read(leader, TASK_MAJ_FLT);
    }
    let Some(mut entry) = EVENTS.reserve::<ProcessExit>(0) else {
        count(counter::LOST);
        return 0;
    };
    entry.write(ProcessExit {
        kind: EventKind::ProcessExit as u32,
        tgid,
        minor_faults: minor,
        major_faults: major,
        start_boottime_ns: read(leader, START_BOOTTIME),
        memcg: memcg::current_memcg(),
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    });
    // Read with the agent's next drain.
    entry.submit(BPF_RB_NO_WAKEUP as u64);
    0
}
