//! The one event path: filter, count, take stacks, write a `StackEvent` to the ring buffer.
use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    programs::tracing::StackIdContext,
};
use memtrace_common::{counter, stack_flags, EventKind, StackEvent, COMM_LEN};

use crate::{
    config, filetag, filter,
    maps::{count, EVENTS, STACKS},
};

/// -EFAULT: no stack of that kind here (a fault taken in user mode has no kernel stack in the
/// perf event's registers). Not an error worth counting.
const EFAULT: i32 = -14;

/// What a hook asks `emit` to record.
pub struct Record {
    pub kind: EventKind,
    pub addr: u64,
    pub weight: u64,
    /// Take the stacks the user asked for (`STACK_FLAGS`).
    pub stacks: bool,
    /// The kernel stack could have frames (false for a fault taken in user mode, where the
    /// registers are the user's and the walk would only fail, at a cost).
    pub kernel_frames: bool,
    /// Attach the file this fault was served from (see `filetag`).
    pub file_fault: bool,
}

#[inline(always)]
pub fn emit<C: StackIdContext>(ctx: &C, record: Record) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !filter::is_target(tgid) {
        return;
    }
    count(counter::SEEN);
    let tid = pid_tgid as u32;
    let file = if record.file_fault {
        filetag::take(tid)
    } else {
        None
    };
    let Some(mut entry) = EVENTS.reserve::<StackEvent>(0) else {
        count(counter::LOST);
        return;
    };
    let flags = if record.stacks {
        config::stack_flags()
    } else {
        0
    };
    let user_stack_id = if flags & stack_flags::USER != 0 {
        stack_id(ctx, BPF_F_USER_STACK as u64)
    } else {
        EFAULT
    };
    let kernel_stack_id = if flags & stack_flags::KERNEL != 0 && record.kernel_frames {
        stack_id(ctx, 0)
    } else {
        EFAULT
    };
    entry.write(StackEvent {
        kind: record.kind as u32,
        tgid,
        tid,
        user_stack_id,
        kernel_stack_id,
        file_dev: file.map_or(0, |f| f.dev),
        addr: record.addr,
        file_ino: file.map_or(0, |f| f.ino),
        weight: record.weight,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    });
    let wakeup = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= config::wakeup_bytes() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(wakeup as u64);
}

#[inline(always)]
fn stack_id<C: StackIdContext>(ctx: &C, flags: u64) -> i32 {
    match ctx.get_stackid(&STACKS, flags) {
        Ok(id) => id as i32,
        Err(err) => {
            if err != EFAULT {
                count(counter::STACK_ERRORS);
            }
            err
        }
    }
}
