//! User stacks, walked here rather than by bpf_get_stackid. The kernel's walk follows the
//! frame-pointer chain until a read fails; where the chain enters code built without frame
//! pointers (most libcs), the last saved "frame pointer" is an arbitrary value, and reading it
//! costs an in-kernel page fault and exception fixup, on every event. This walk stops where the
//! chain stops being plausible (misaligned, below the stack pointer, not moving up the stack),
//! which ends in the same place for free. Stacks are stored once, under a hash of their frames.
use aya_ebpf::{
    bindings::{pt_regs, BPF_F_USER_STACK},
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{self, bpf_get_current_task_btf, bpf_task_pt_regs},
    },
};
use memtrace_common::{counter, unwind::walk_end, UserStack, USER_STACK_DEPTH};

use crate::maps::{
    count, StackWindow, LAST_STORED_STACK, STACK_SCRATCH, STACK_WINDOW, USER_STACKS,
};

/// A frame pointer further than this above the stack pointer is not on this thread's stack.
const MAX_STACK_SPAN: u64 = 1 << 30;
/// User code lives below this (x86-64's 47-bit user half, which the kernel keeps to even with
/// 5-level paging unless asked). A "return address" above it is data: code without frame
/// pointers left something else in the frame-pointer register (text on the stack reads as
/// 0x6e69622f...).
const USER_ADDRESS_END: u64 = 1 << 47;
const BPF_NOEXIST: u64 = 1;
/// Frames the frame-pointer walk follows: its loop is unrolled for the verifier, whose work
/// grows with it (the table walk, a bpf_loop, goes to `USER_STACK_DEPTH`).
const FP_STACK_DEPTH: usize = 64;
const STACK_WINDOW_BYTES: u64 = core::mem::size_of::<StackWindow>() as u64;
const EEXIST: i32 = -17;

/// The user registers a walk starts from.
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub fp: u64,
    /// `ip` is in a leaf that made no frame (a syscall wrapper): its return address is on top
    /// of the stack, and the frame-pointer chain starts at its caller's caller.
    pub leaf: bool,
}

/// The current task's user registers, saved at its entry into the kernel; None for a kernel
/// thread. Entered by a syscall, the task is in its libc wrapper, a leaf that made no frame;
/// entered by an exception (pt_regs.orig_ax -1), anywhere.
#[inline(always)]
pub fn current_user_regs() -> Option<UserRegs> {
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
    let regs = unsafe { bpf_probe_read_kernel(regs) }.ok()?;
    (regs.cs & 3 == 3).then_some(UserRegs {
        ip: regs.rip,
        sp: regs.rsp,
        fp: regs.rbp,
        leaf: regs.orig_rax as i64 >= 0,
    })
}

/// Walks the frame-pointer chain from `regs`; returns the stack's key in `USER_STACKS`.
#[inline(always)]
pub fn walk(regs: &UserRegs) -> u64 {
    let (Some(stack), Some(window)) = (STACK_SCRATCH.get_ptr_mut(0), STACK_WINDOW.get_ptr_mut(0))
    else {
        return 0;
    };
    let frames = unsafe { &mut (*stack).frames };
    let window = unsafe { &mut *window };
    // Frames past the last are not cleared (a 512-byte clear cost more than the walk): one 0
    // ends the stack, for the hash and for userspace.
    frames[0] = regs.ip;
    frames[1] = 0;
    let mut hash = mix(SEED, regs.ip);
    let mut first = 1;
    if regs.leaf {
        if let Ok(caller) = unsafe { bpf_probe_read_user(regs.sp as *const u64) } {
            frames[1] = caller;
            frames[2] = 0;
            hash = mix(hash, caller);
            first = 2;
        }
    }
    let mut fp = regs.fp;
    // One read of the stack above the first frame record holds most records (frames are
    // small); each read costs as much as a whole window's copy.
    let base = fp;
    let windowed = plausible_frame(fp, regs.sp)
        && unsafe {
            generated::bpf_probe_read_user(
                window.as_mut_ptr().cast(),
                STACK_WINDOW_BYTES as u32,
                base as *const _,
            )
        } == 0;
    // Straight-line with one exit per frame, so the verifier's work stays small.
    for index in first..FP_STACK_DEPTH {
        let Some((next_fp, return_address)) = next_frame(fp, regs.sp, windowed, base, window)
        else {
            break;
        };
        frames[index] = return_address;
        if index + 1 < FP_STACK_DEPTH {
            frames[index + 1] = 0;
        }
        hash = mix(hash, return_address);
        // The caller's frame is higher up the stack; anything else ends the chain after this
        // frame (the caller was built without frame pointers).
        if next_fp <= fp {
            break;
        }
        fp = next_fp;
    }
    unsafe { (*stack).end = walk_end::FRAME_POINTERS };
    store(stack, hash)
}

/// Whether `fp` can be a frame record on the stack that `sp` points into.
#[inline(always)]
fn plausible_frame(fp: u64, sp: u64) -> bool {
    fp & 7 == 0 && fp >= sp && fp - sp <= MAX_STACK_SPAN
}

/// The caller's frame pointer and our return address, if `fp` plausibly is a frame: from the
/// window when it holds the record, else read.
#[inline(always)]
fn next_frame(
    fp: u64,
    sp: u64,
    windowed: bool,
    base: u64,
    window: &StackWindow,
) -> Option<(u64, u64)> {
    if !plausible_frame(fp, sp) {
        return None;
    }
    // Opaque to the compiler, which would otherwise index by the byte offset it knows is
    // aligned, and the verifier cannot tell the last word's end stays inside the window.
    let word = core::hint::black_box((fp.wrapping_sub(base) >> 3) as usize);
    let record = if windowed && word < window.len() - 1 {
        [window[word], window[word + 1]]
    } else {
        unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }.ok()?
    };
    (record[1] != 0 && record[1] < USER_ADDRESS_END).then_some((record[0], record[1]))
}

/// Stores the user stack the kernel walks (faults taken in kernel mode, where the perf
/// event's registers are the kernel's); returns its key.
#[inline(always)]
pub fn from_kernel<C: aya_ebpf::EbpfContext>(ctx: &C) -> u64 {
    let Some(stack) = STACK_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let frames = unsafe { &(*stack).frames };
    // The helper zeroes what it does not fill.
    let size = core::mem::size_of::<[u64; USER_STACK_DEPTH]>() as u32;
    let written = unsafe {
        aya_ebpf::helpers::generated::bpf_get_stack(
            ctx.as_ptr(),
            stack.cast(),
            size,
            BPF_F_USER_STACK as u64,
        )
    };
    if written <= 0 {
        return 0;
    }
    let mut hash = SEED;
    for &frame in frames.iter() {
        if frame == 0 {
            break;
        }
        hash = mix(hash, frame);
    }
    unsafe { (*stack).end = walk_end::FRAME_POINTERS };
    store(stack, hash)
}

pub const SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// One FNV-1a step over a whole frame.
#[inline(always)]
pub fn mix(hash: u64, frame: u64) -> u64 {
    (hash ^ frame).wrapping_mul(0x0000_0100_0000_01b3)
}

/// The key of the last stack this CPU stored (0 once userspace emptied the stack tables).
#[inline(always)]
pub fn last_stored() -> u64 {
    LAST_STORED_STACK.get(0).copied().unwrap_or(0)
}

/// Stores the stack in the scratch slot under `hash`; returns its key, 0 when it cannot.
#[inline(always)]
pub fn store(stack: *mut UserStack, hash: u64) -> u64 {
    store_noting_new(stack, hash).0
}

/// `store`, and whether the stack was not stored before.
#[inline(always)]
pub fn store_noting_new(stack: *mut UserStack, hash: u64) -> (u64, bool) {
    // 0 is kept for "no stack".
    let key = hash | 1;
    // A hot path repeats its stack: the last key this CPU stored needs no map lookup (stacks
    // are never deleted).
    let Some(last_stored) = LAST_STORED_STACK.get_ptr_mut(0) else {
        return (0, false);
    };
    let last_stored = unsafe { &mut *last_stored };
    if *last_stored == key || unsafe { USER_STACKS.get(key) }.is_some() {
        *last_stored = key;
        return (key, false);
    }
    // By reference: a 512-byte value would not fit on the 512-byte BPF stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let inserted = USER_STACKS.insert(key, unsafe { &*stack }, BPF_NOEXIST);
    match inserted {
        Ok(()) => {
            *last_stored = key;
            (key, true)
        }
        // EEXIST: stored meanwhile by another CPU.
        Err(err) if err == EEXIST => {
            *last_stored = key;
            (key, false)
        }
        Err(_) => {
            count(counter::STACK_ERRORS);
            (0, false)
        }
    }
}
