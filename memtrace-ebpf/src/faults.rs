//! Page faults: perf software events minor-faults and major-faults, one program each, attached
//! on every CPU. The kernel counts them in mm_account_fault, the same place it counts getrusage's
//! ru_minflt and ru_majflt, so the two agree exactly.
use aya_ebpf::{macros::perf_event, programs::PerfEventContext};
use memtrace_common::EventKind;

use crate::{
    emit::{emit, Record, UserStackFrom},
    ustack::UserRegs,
};

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
    // A fault taken by user code carries the user's registers, and has no kernel stack of
    // interest (always the same fault path).
    let (user_stack, kernel_stack) = match user_mode_regs(ctx) {
        Some(regs) => (UserStackFrom::Regs(regs), false),
        None => (UserStackFrom::Kernel, true),
    };
    let record = Record {
        kind,
        addr,
        weight: 1,
        detail: 0,
        stacks: true,
        user_stack,
        kernel_stack,
        file_fault: true,
        comm: true,
        urgent: false,
        timed: false,
    };
    emit(ctx, record);
}

/// The user's registers, for a fault taken by user code: the perf event then carries them
/// (CS privilege level 3 on x86-64, the only architecture the programs are built for).
#[inline(always)]
fn user_mode_regs(ctx: &PerfEventContext) -> Option<UserRegs> {
    let regs = unsafe { &(*ctx.ctx).regs };
    (regs.cs & 3 == 3).then_some(UserRegs {
        ip: regs.rip,
        sp: regs.rsp,
        fp: regs.rbp,
        leaf: false,
    })
}
