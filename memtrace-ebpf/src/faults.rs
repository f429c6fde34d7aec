//! Page faults: perf software events minor-faults and major-faults, one program each, attached
//! on every CPU. The kernel counts them in mm_account_fault, the same place it counts getrusage's
//! ru_minflt and ru_majflt, so the two agree exactly.
use aya_ebpf::{macros::perf_event, programs::PerfEventContext};
use memtrace_common::EventKind;

use crate::emit::emit_with_file;

#[perf_event]
pub fn minor_fault(ctx: PerfEventContext) -> u32 {
    fault(&ctx, EventKind::MinorFault);
    0
}

#[perf_event]
pub fn major_fault(ctx: PerfEventContext) -> u32 {
    fault(&ctx, EventKind::MajorFault);
    0
}

#[inline(always)]
fn fault(ctx: &PerfEventContext, kind: EventKind) {
    // The faulting address is the sample's `addr` (perf_sw_event passes it).
    let addr = unsafe { (*ctx.ctx).addr };
    emit_with_file(ctx, kind, addr, 1, true, true);
}
