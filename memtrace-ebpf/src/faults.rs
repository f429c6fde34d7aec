//! Page faults: perf software events minor-faults and major-faults, one program each, attached
//! on every CPU. The kernel counts them in mm_account_fault, the same place it counts getrusage's
//! ru_minflt and ru_majflt, so the two agree exactly.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::perf_event,
    programs::PerfEventContext,
};
use memtrace_common::{counter, sampler, EventKind, FaultCount, COMM_LEN};

use crate::{
    config,
    emit::{emit, Record, UserStackFrom},
    filter,
    maps::{count, FAULT_COUNTS, FAULT_COUNT_CACHE},
    sample,
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
    // The agent counts every fault here and sends the stacks of a sample only.
    if config::fault_counts()
        && (!count_fault(kind)
            || config::stack_flags() == 0
            || !sample::sampled(sampler::FAULT_STACKS))
    {
        return;
    }
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

/// Adds a fault to its process's count; false if the process is not traced. A run of faults
/// by one process adds up in the CPU's cache, and goes to the table when another comes.
#[inline(always)]
fn count_fault(kind: EventKind) -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !filter::is_target(tgid) {
        return false;
    }
    let Some(cache) = FAULT_COUNT_CACHE.get_ptr_mut(0) else {
        return true;
    };
    // Per CPU, and a program never runs nested on one CPU.
    let cache = unsafe { &mut *cache };
    if cache.tgid != tgid {
        if cache.tgid != 0 {
            add_to_table(cache.tgid, &cache.count);
        }
        cache.tgid = tgid;
        cache.count = FaultCount {
            minor: 0,
            major: 0,
            comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
        };
    }
    if kind == EventKind::MajorFault {
        cache.count.major += 1;
    } else {
        cache.count.minor += 1;
    }
    true
}

#[inline(always)]
fn add_to_table(tgid: u32, run: &FaultCount) {
    if let Some(counts) = FAULT_COUNTS.get_ptr_mut(tgid) {
        let counts = unsafe { &mut *counts };
        counts.minor += run.minor;
        counts.major += run.major;
        return;
    }
    if FAULT_COUNTS.insert(tgid, run, BPF_NOEXIST).is_err() {
        // Full: counted, never silent.
        count(counter::FAULT_COUNTS_FULL);
    }
}

const BPF_NOEXIST: u64 = 1;
