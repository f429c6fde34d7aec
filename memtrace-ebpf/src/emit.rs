//! The one event path: filter, count, take stacks, write a `StackEvent` to the ring buffer.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::tracing::StackIdContext,
};
use memtrace_common::{counter, stack_flags, EventKind, StackEvent, COMM_LEN};

use crate::{
    config, filetag, filter,
    maps::{count, EVENTS, LAST_COMM_TID, STACKS},
    unwind::{self, Walked},
    ustack::{self, UserRegs},
};

/// -EFAULT: no stack of that kind here (a fault taken in user mode has no kernel stack in the
/// perf event's registers). Not an error worth counting.
const EFAULT: i32 = -14;

/// Where an event's user stack comes from.
pub enum UserStackFrom {
    /// Walked from these user registers (memtrace's own walk).
    Regs(UserRegs),
    /// Walked by the kernel (`bpf_get_stack`), for events whose registers are the kernel's.
    Kernel,
    /// None: interrupts and kernel threads have no user stack of their own.
    Nowhere,
}

/// What a hook asks `emit` to record.
pub struct Record {
    pub kind: EventKind,
    pub addr: u64,
    pub weight: u64,
    /// Kind-specific (`StackEvent::detail`).
    pub detail: u32,
    /// Take the stacks the user asked for (`Settings::stack_flags`).
    pub stacks: bool,
    /// Where the user stack comes from (when stacks are taken).
    pub user_stack: UserStackFrom,
    /// The event happened in the kernel: take its kernel stack (when stacks are taken).
    pub kernel_stack: bool,
    /// Attach the file this fault was served from (see `filetag`).
    pub file_fault: bool,
    /// Send the task's name (userspace reads it from /proc at a process's first event; the
    /// event's is the fallback for a process already gone): with an urgent event, or the
    /// first of a run of one thread's events on a CPU (see `name_not_sent`). Allocator
    /// events, the most frequent of all, go without.
    pub comm: bool,
    /// Wake the reader now, not when the batch fills: for rare events userspace must act on
    /// while the process still lives (an exec: read the new memory map).
    pub urgent: bool,
    /// Stamp the event with the time (`StackEvent::time_ns`): heap blocks, whose lifetimes
    /// userspace measures. Faults go without (~20 ns saved of each).
    pub timed: bool,
}

impl Record {
    /// A process's life event (fork, exec): no stacks, no weight, read by userspace at once.
    #[inline(always)]
    pub fn lifecycle(kind: EventKind, addr: u64) -> Self {
        Self {
            kind,
            addr,
            weight: 0,
            detail: 0,
            stacks: false,
            user_stack: UserStackFrom::Nowhere,
            kernel_stack: false,
            file_fault: false,
            comm: true,
            urgent: true,
            timed: false,
        }
    }
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
    let file = if record.file_fault && config::file_tags() {
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
    let walked = match &record.user_stack {
        _ if flags & stack_flags::USER == 0 => Walked::default(),
        // The table walk starts from the user registers wherever the event happened (the
        // task's saved ones for an event in the kernel).
        UserStackFrom::Regs(regs) if config::unwind_tables() => unwind::walk(regs, tgid, tid),
        UserStackFrom::Kernel if config::unwind_tables() => match ustack::current_user_regs() {
            Some(regs) => unwind::walk(&regs, tgid, tid),
            None => Walked::default(),
        },
        UserStackFrom::Regs(regs) => Walked::of(ustack::walk(regs)),
        UserStackFrom::Kernel => Walked::of(ustack::from_kernel(ctx)),
        UserStackFrom::Nowhere => Walked::default(),
    };
    let (user_stack, ask_for_tables) = (walked.key, walked.ask_for_tables);
    let kernel_stack_id = if flags & stack_flags::KERNEL != 0 && record.kernel_stack {
        stack_id(ctx, 0)
    } else {
        EFAULT
    };
    entry.write(StackEvent {
        kind: record.kind as u32,
        tgid,
        tid,
        kernel_stack_id,
        file_dev: file.map_or(0, |f| f.dev),
        detail: record.detail,
        user_stack,
        addr: record.addr,
        file_ino: file.map_or(0, |f| f.ino),
        weight: record.weight,
        // SAFETY: a helper without arguments, callable from every program type.
        time_ns: if record.timed {
            unsafe { bpf_ktime_get_ns() }
        } else {
            0
        },
        comm: if record.comm && (record.urgent || name_not_sent(tid)) {
            bpf_get_current_comm().unwrap_or([0; COMM_LEN])
        } else {
            [0; COMM_LEN]
        },
    });
    let wakeup = if record.urgent
        || walked.new_python_stack
        || EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= config::wakeup_bytes()
    {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(wakeup as u64);
    if ask_for_tables {
        ask_for_unwind_tables(tgid, tid);
    }
}

/// Whether this CPU's last event with a name was another thread's (then this one sends it):
/// userspace needs a process's name from its first event only, and the helper costs ~50 ns
/// of a fault's ~200 (a storm of one thread's faults sends it once per CPU).
#[inline(always)]
fn name_not_sent(tid: u32) -> bool {
    let Some(last) = LAST_COMM_TID.get_ptr_mut(0) else {
        return true;
    };
    let last = unsafe { &mut *last };
    if *last == tid {
        return false;
    }
    *last = tid;
    true
}

/// Tells the loader that a walk in `tgid` found code it has no mapping for: it reads the
/// process's maps and loads their tables (see `unwind`). Sent at once: the process's next
/// stacks wait on it.
#[inline(always)]
fn ask_for_unwind_tables(tgid: u32, tid: u32) {
    let Some(mut entry) = EVENTS.reserve::<StackEvent>(0) else {
        count(counter::UNWIND_REQUESTS_LOST);
        return;
    };
    entry.write(StackEvent {
        kind: EventKind::UnwindRequest as u32,
        tgid,
        tid,
        kernel_stack_id: EFAULT,
        file_dev: 0,
        detail: 0,
        user_stack: 0,
        addr: 0,
        file_ino: 0,
        weight: 0,
        time_ns: 0,
        comm: [0; COMM_LEN],
    });
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
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
