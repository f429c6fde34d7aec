//! Page faults: perf software events minor-faults and major-faults, one program each, attached
//! on every CPU. The kernel counts them in mm_account_fault, the same place it counts getrusage's
//! ru_minflt and ru_majflt, so the two agree exactly.
use aya_ebpf::{macros::perf_event, programs::PerfEventContext};
use memtrace_common::EventKind;

use crate::emit::{emit, Record};

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
    let record = Record {
        kind,
        addr,
        weight: 1,
        stacks: true,
        kernel_frames: !taken_in_user_mode(ctx),
        file_fault: true,
    };
    emit(ctx, record);
}

/// A fault taken by user code: the perf event carries the user's registers (CS privilege
/// level 3 on x86-64). Elsewhere, assume it may be kernel mode and let the walk decide.
#[inline(always)]
fn taken_in_user_mode(ctx: &PerfEventContext) -> bool {
    #[cfg(target_arch = "bpf")]
    {
        // The programs are built for x86-64 hosts (aya-build's bpf_target_arch follows the
        // host); `cs` is the x86-64 pt_regs field.
        unsafe { (*ctx.ctx).regs.cs & 3 == 3 }
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        let _ = ctx;
        false
    }
}
