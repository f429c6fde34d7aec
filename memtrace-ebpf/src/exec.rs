//! sched:sched_process_exec for traced processes: userspace drops the old memory map and comm.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use memtrace_common::EventKind;

use crate::emit::{emit, Record};

#[tracepoint]
pub fn process_exec(ctx: TracePointContext) -> u32 {
    emit(&ctx, Record::lifecycle(EventKind::Exec, 0));
    0
}
