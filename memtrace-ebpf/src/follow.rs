//! New processes of traced ones (task:task_newtask fires in the parent, inside fork, before
//! the child runs a single instruction): userspace hears of each fork (the child's memory map
//! starts as a copy of the parent's), and with `--follow-children` the child joins the target
//! set.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use aya_log_ebpf::debug;
use memtrace_common::{counter, EventKind};

use crate::{
    config,
    emit::{emit, Record},
    filter,
    maps::{count, TARGET_TGIDS, UNWIND_PROCESSES},
};

const CLONE_THREAD: u64 = 0x0001_0000;
// Offsets in task:task_newtask's format (stable since the tracepoint's introduction).
const PID_OFFSET: usize = 8;
const CLONE_FLAGS_OFFSET: usize = 32;

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !filter::is_target(parent) {
        return 0;
    }
    let Ok(clone_flags) = (unsafe { ctx.read_at::<u64>(CLONE_FLAGS_OFFSET) }) else {
        return 0;
    };
    // A new thread shares its parent's tgid, which is already traced.
    if clone_flags & CLONE_THREAD != 0 {
        return 0;
    }
    let Ok(child) = (unsafe { ctx.read_at::<i32>(PID_OFFSET) }) else {
        return 0;
    };
    emit(&ctx, Record::lifecycle(EventKind::Fork, child as u64));
    if config::unwind_tables() {
        // The child runs the parent's code until it execs: its first walks need no request.
        if let Some(mappings) = UNWIND_PROCESSES.get_ptr(parent) {
            // By reference: the 4 KiB value would not fit on the 512-byte BPF stack.
            #[allow(clippy::needless_borrows_for_generic_args)]
            let _ = UNWIND_PROCESSES.insert(child as u32, unsafe { &*mappings }, 0);
        }
    }
    if !config::follow_children() {
        return 0;
    }
    if TARGET_TGIDS.insert(child as u32, 1, 0).is_err() {
        count(counter::TARGETS_FULL);
        return 0;
    }
    debug!(&ctx, "following child {} of {}", child, parent);
    0
}

/// A traced process leaves the target set when its thread-group leader exits, in the kernel,
/// before its pid can be given to another process (sched:sched_process_exit fires per thread;
/// `group_dead` is not in older kernels' format).
#[tracepoint]
pub fn process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if pid_tgid as u32 == tgid {
        filter::target_exited(tgid);
    }
    0
}
