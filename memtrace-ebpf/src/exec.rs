//! sched:sched_process_exec for traced processes: userspace drops the old memory map and comm.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use memtrace_common::EventKind;

use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use crate::{
    config,
    emit::{emit, Record},
    maps::{STACK_TOPS, UNWIND_PROCESSES},
};

#[tracepoint]
pub fn process_exec(ctx: TracePointContext) -> u32 {
    if config::unwind_tables() {
        // The old program's mappings are gone: the next walk asks the loader for the new ones.
        let pid_tgid = bpf_get_current_pid_tgid();
        let _ = UNWIND_PROCESSES.remove((pid_tgid >> 32) as u32);
        // The new program has a new stack, whose top the walk learns again.
        let _ = STACK_TOPS.remove(pid_tgid as u32);
    }
    emit(&ctx, Record::lifecycle(EventKind::Exec, 0));
    0
}
