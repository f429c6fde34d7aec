//! Heap allocations, through uprobes on the allocators' functions (libc's, jemalloc's...).
//!
//! Entry probes note what was asked for, per thread (threads allocate concurrently); one
//! return probe, shared by every allocating function, emits the block with the stack of the
//! call. At a return the registers are the caller's: the instruction pointer is the return
//! address into it, so the walk's first frame is the function that called malloc. An
//! allocator calling its own public functions (realloc calling malloc, or free) is one call:
//! entries inside a call in progress only count their nesting, and their returns are skipped.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_probe_read_user,
        generated::bpf_get_attach_cookie,
    },
    macros::{tracepoint, uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use memtrace_common::{arg_register, counter, AllocFn, EventKind, PendingAlloc, PENDING_SLOTS};

use crate::{
    config,
    emit::{emit, Record, UserStackFrom},
    filter,
    maps::{count, SampledBlock, PENDING_ALLOCS, SAMPLED_BLOCKS, SAMPLE_COUNTDOWN},
    ustack::{self, UserRegs},
};

/// Argument `n` of the probed call: in its own register, or where the code before the probe
/// copied it (the attach cookie says: see `memtrace_common::arg_register`).
#[inline(always)]
fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    let cookie = unsafe { bpf_get_attach_cookie(ctx.regs.cast()) };
    let code = arg_register::of(cookie, n);
    if code == 0 {
        return ctx.arg::<u64>(n).unwrap_or(0);
    }
    // Every register read at its own constant offset, volatile: the verifier refuses a
    // context pointer moved by a computed offset, which a chosen field would become.
    let regs = ctx.regs;
    let read = |field: *const u64| unsafe { core::ptr::read_volatile(field) };
    let values = unsafe {
        [
            read(&raw const (*regs).rdi),
            read(&raw const (*regs).rsi),
            read(&raw const (*regs).rdx),
            read(&raw const (*regs).rcx),
            read(&raw const (*regs).r8),
            read(&raw const (*regs).r9),
            read(&raw const (*regs).rax),
            read(&raw const (*regs).rbx),
            read(&raw const (*regs).rbp),
            read(&raw const (*regs).r10),
            read(&raw const (*regs).r11),
            read(&raw const (*regs).r12),
            read(&raw const (*regs).r13),
            read(&raw const (*regs).r14),
            read(&raw const (*regs).r15),
        ]
    };
    values.get(usize::from(code) - 1).copied().unwrap_or(0)
}

/// This thread's slot in the table of calls in progress.
#[inline(always)]
fn slot(tid: u32) -> Option<&'static mut PendingAlloc> {
    PENDING_ALLOCS
        .get_ptr_mut(tid % PENDING_SLOTS)
        .map(|slot| unsafe { &mut *slot })
}

/// Notes an allocator call's arguments until its return, or counts a nested call.
#[inline(always)]
fn enter(function: AllocFn, size: u64, pointer: u64) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(slot) = slot(tid) else {
        return 0;
    };
    if slot.tid == tid {
        slot.nested += 1;
    } else if slot.tid != 0 {
        // Another thread with the same slot is inside an allocator call right now.
        count(counter::ALLOC_CALLS_UNTRACKED);
    } else {
        *slot = PendingAlloc {
            tid,
            function: function as u32,
            nested: 0,
            _pad: 0,
            size,
            pointer,
        };
    }
    0
}

/// Whether this thread is inside an allocator call.
#[inline(always)]
fn in_allocator(tid: u32) -> bool {
    slot(tid).is_some_and(|slot| slot.tid == tid)
}

#[uprobe]
pub fn malloc_enter(ctx: ProbeContext) -> u32 {
    enter(AllocFn::Malloc, arg(&ctx, 0), 0)
}

#[uprobe]
pub fn calloc_enter(ctx: ProbeContext) -> u32 {
    enter(AllocFn::Calloc, arg(&ctx, 0).wrapping_mul(arg(&ctx, 1)), 0)
}

#[uprobe]
pub fn realloc_enter(ctx: ProbeContext) -> u32 {
    enter(AllocFn::Realloc, arg(&ctx, 1), arg(&ctx, 0))
}

#[uprobe]
pub fn reallocarray_enter(ctx: ProbeContext) -> u32 {
    let size = arg(&ctx, 1).wrapping_mul(arg(&ctx, 2));
    enter(AllocFn::Reallocarray, size, arg(&ctx, 0))
}

#[uprobe]
pub fn posix_memalign_enter(ctx: ProbeContext) -> u32 {
    // (void **memptr, size_t alignment, size_t size): the block comes back through memptr.
    enter(AllocFn::PosixMemalign, arg(&ctx, 2), arg(&ctx, 0))
}

#[uprobe]
pub fn aligned_alloc_enter(ctx: ProbeContext) -> u32 {
    enter(AllocFn::AlignedAlloc, arg(&ctx, 1), 0)
}

#[uprobe]
pub fn memalign_enter(ctx: ProbeContext) -> u32 {
    enter(AllocFn::Memalign, arg(&ctx, 1), 0)
}

#[uprobe]
pub fn valloc_enter(ctx: ProbeContext) -> u32 {
    enter(AllocFn::Valloc, arg(&ctx, 0), 0)
}

#[uprobe]
pub fn pvalloc_enter(ctx: ProbeContext) -> u32 {
    enter(AllocFn::Pvalloc, arg(&ctx, 0), 0)
}

#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    let pointer = arg(&ctx, 0);
    // free(NULL) does nothing; a free inside an allocator call is that call's business.
    let pid_tgid = bpf_get_current_pid_tgid();
    if pointer != 0 && !in_allocator(pid_tgid as u32) && followed_block_freed(pid_tgid, pointer) {
        emit(
            &ctx,
            block(EventKind::Free, AllocFn::Free, pointer, 0, None),
        );
    }
    0
}

// Offsets in the syscall tracepoints' formats (sys_enter_mmap: addr, len, ...; sys_exit_mmap:
// ret; sys_enter_munmap: addr, len).
const SYSCALL_ARG0: usize = 16;
const SYSCALL_ARG1: usize = 24;
const SYSCALL_RET: usize = 16;
/// Syscalls return -errno (-4095..-1) on failure.
const MAX_ERRNO: u64 = 4095;

/// Whether a syscall is the traced program's own, not made inside an allocator call (whose
/// mappings belong to its blocks).
#[inline(always)]
fn program_own_call(pid_tgid: u64) -> bool {
    filter::is_target((pid_tgid >> 32) as u32) && !in_allocator(pid_tgid as u32)
}

/// The program's own mmap: its length until the exit gives the address (`--mmap`).
#[tracepoint]
pub fn mmap_enter(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !program_own_call(pid_tgid) {
        return 0;
    }
    let length = unsafe { ctx.read_at::<u64>(SYSCALL_ARG1) }.unwrap_or(0);
    enter(AllocFn::Mmap, length, 0)
}

#[tracepoint]
pub fn mmap_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(pending) =
        slot(tid).filter(|slot| slot.tid == tid && slot.function == AllocFn::Mmap as u32)
    else {
        return 0;
    };
    let call = *pending;
    pending.tid = 0;
    let address = unsafe { ctx.read_at::<u64>(SYSCALL_RET) }.unwrap_or(0);
    if address == 0 || address > u64::MAX - MAX_ERRNO {
        return 0;
    }
    if sampled(pid_tgid, address, call.size) {
        let caller = ustack::current_user_regs();
        let record = block(EventKind::Alloc, AllocFn::Mmap, address, call.size, caller);
        emit(&ctx, record);
    }
    0
}

#[tracepoint]
pub fn munmap_enter(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !program_own_call(pid_tgid) {
        return 0;
    }
    let address = unsafe { ctx.read_at::<u64>(SYSCALL_ARG0) }.unwrap_or(0);
    let length = unsafe { ctx.read_at::<u64>(SYSCALL_ARG1) }.unwrap_or(0);
    if followed_block_freed(pid_tgid, address) {
        emit(
            &ctx,
            block(EventKind::Free, AllocFn::Munmap, address, length, None),
        );
    }
    0
}

/// The return of any allocating function.
#[uretprobe]
pub fn alloc_return(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(pending) = slot(tid).filter(|slot| slot.tid == tid) else {
        return 0; // entered before memtrace attached, or not followed
    };
    if pending.nested > 0 {
        pending.nested -= 1;
        return 0;
    }
    let call = *pending;
    pending.tid = 0;
    let Some(function) = AllocFn::from_raw(call.function) else {
        return 0;
    };
    let returned: u64 = ctx.ret();
    let block_address = match function {
        // Returns 0 on success; the block is in *memptr.
        AllocFn::PosixMemalign if returned == 0 => {
            unsafe { bpf_probe_read_user(call.pointer as *const u64) }.unwrap_or(0)
        }
        AllocFn::PosixMemalign => 0,
        _ => returned,
    };
    let regs = unsafe { &*ctx.regs };
    let caller = UserRegs {
        ip: regs.rip,
        sp: regs.rsp,
        fp: regs.rbp,
        leaf: false,
    };
    if matches!(function, AllocFn::Realloc | AllocFn::Reallocarray) && call.pointer != 0 {
        // The old block is gone when a new one came back, and when realloc(p, 0) freed it.
        // The new size rides along: 0 tells userspace this call returned no block.
        if (block_address != 0 || call.size == 0) && followed_block_freed(pid_tgid, call.pointer) {
            let freed = block(EventKind::Free, function, call.pointer, call.size, None);
            emit(&ctx, freed);
        }
    }
    if block_address != 0 && sampled(pid_tgid, block_address, call.size) {
        let record = block(
            EventKind::Alloc,
            function,
            block_address,
            call.size,
            Some(caller),
        );
        emit(&ctx, record);
    }
    0
}

/// With --sample-bytes N: whether this block is sampled. Every byte allocated is a sample
/// point with probability 1/N (a Poisson process over each thread's allocated bytes, as
/// jemalloc's sampler does), so a block of s bytes is sampled with probability
/// 1 - exp(-s/N), and userspace weighs it by the inverse. Sampled blocks are remembered so
/// their frees, and only theirs, are sent.
#[inline(always)]
fn sampled(pid_tgid: u64, address: u64, size: u64) -> bool {
    let every = config::sample_bytes();
    if every == 0 {
        return true;
    }
    let tid = pid_tgid as u32;
    let countdown = match SAMPLE_COUNTDOWN.get_ptr_mut(tid) {
        Some(countdown) => countdown,
        None => {
            // A thread's first block: its first sample point is a random distance from its
            // start (this block included: it is sampled as any other would be).
            let _ = SAMPLE_COUNTDOWN.insert(tid, interval(every) as i64, 0);
            match SAMPLE_COUNTDOWN.get_ptr_mut(tid) {
                Some(countdown) => countdown,
                None => return false,
            }
        }
    };
    let countdown = unsafe { &mut *countdown };
    *countdown -= size as i64;
    if *countdown > 0 {
        return false;
    }
    // The next point after those that fell in this block (memoryless: a fresh interval).
    for _ in 0..MAX_POINTS_PER_BLOCK {
        *countdown += interval(every) as i64;
        if *countdown > 0 {
            break;
        }
    }
    let _ = SAMPLED_BLOCKS.insert(SampledBlock::of(pid_tgid, address), 1, 0);
    true
}

/// Whether a freed block should be reported: always, unless sampling, where only sampled
/// blocks were reported (and are forgotten now).
#[inline(always)]
fn followed_block_freed(pid_tgid: u64, address: u64) -> bool {
    if config::sample_bytes() == 0 {
        return true;
    }
    SAMPLED_BLOCKS
        .remove(SampledBlock::of(pid_tgid, address))
        .is_ok()
}

/// Loop bound for huge blocks: past it the countdown is simply left positive.
const MAX_POINTS_PER_BLOCK: usize = 16;

/// An exponentially distributed distance with mean `every` bytes: -ln(u) from the loader's
/// table (16.16 fixed point), for a random u.
#[inline(always)]
fn interval(every: u64) -> u64 {
    let index = unsafe { bpf_get_prandom_u32() } as usize % config::EXP_TABLE_SIZE;
    (every * u64::from(config::exp_table(index))) >> 16
}

#[inline(always)]
fn block(
    kind: EventKind,
    function: AllocFn,
    addr: u64,
    size: u64,
    caller: Option<UserRegs>,
) -> Record {
    Record {
        kind,
        addr,
        weight: size,
        detail: function as u32,
        stacks: caller.is_some(),
        user_stack: caller.map_or(UserStackFrom::Nowhere, UserStackFrom::Regs),
        kernel_stack: false,
        file_fault: false,
        comm: false,
        urgent: false,
        timed: true,
    }
}
