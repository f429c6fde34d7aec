//! Swap traffic, credited to the process that owns the pages, whoever runs reclaim.
//!
//! The raw `rss_stat` tracepoint fires on each change of an mm's RSS counters, with the mm and
//! which counter changed. For the swap-entry counter the program reads the mm's new total and
//! whether the mm is the current task's; owners are learnt from changes made in their own
//! context. Then:
//! - an increase is a page unmapped to swap; the reclaimer's next vmscan:mm_vmscan_write_folio
//!   of an anonymous folio writes it (pswpout), so the write is credited to that owner;
//! - a decrease inside do_swap_page (its address range comes from kallsyms) is a swap-in, by the
//!   owner itself; any other decrease frees swap entries (munmap, exit).
//! - On Linux 6.12+ the kernel writes no zero-filled page: it marks its swap entry as zero
//!   (swpout_zero) and fills the page with zeros when it comes back (swpin_zero). Where the
//!   kernel traces memcg:count_memcg_events (6.16+), those two counts tell them apart: the
//!   swap-out's count comes in the reclaimer's thread between the unmap and the write, the
//!   swap-in's in the thread that brings the page back.
//!
//! Only counters here: the stacks of swap-ins that waited on I/O come from the major-fault
//! program, whose user-stack walk is far cheaper than a walk from this tracepoint.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_get_stack, bpf_task_pt_regs},
    },
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};
use memtrace_common::{filter_mode, StagedSwapOut, SwapCounts};

use crate::{
    config, filter,
    maps::{MmState, CPU_OFFSETS, MM_STATE, SWAP_COUNTS, SWAP_STAGED},
};

// Offset in vmscan:mm_vmscan_write_folio's format.
const RECLAIM_FLAGS_OFFSET: usize = 16;
const MM_SWAPENTS: u64 = 2;
const RECLAIM_WB_ANON: i32 = 1;
/// Bound for the verifier; the loop stops at the machine's possible CPUs.
const MAX_CPUS: u32 = 4096;

#[raw_tracepoint(tracepoint = "rss_stat")]
pub fn swap_rss_stat(ctx: RawTracePointContext) -> i32 {
    // Every change of every RSS counter lands here: leave early for all but swap entries.
    let member: u64 = ctx.arg(1);
    if member != MM_SWAPENTS {
        return 0;
    }
    let mm: u64 = ctx.arg(0);
    let layout = config::swap_layout();
    let Some(total) = swap_entries(mm, &layout) else {
        return 0;
    };
    let task = unsafe { bpf_get_current_task() };
    let current_mm =
        unsafe { bpf_probe_read_kernel((task + layout.task_mm) as *const u64) }.unwrap_or(0);
    let own = current_mm == mm;
    let pid_tgid = bpf_get_current_pid_tgid();
    let current = (pid_tgid >> 32) as u32;
    // Whether the owner is in the traced cgroup can only be asked in its own context.
    let in_cgroup = u32::from(
        own && config::filter_mode() == filter_mode::CGROUP && filter::is_target(current),
    );
    // Map updates take a lock, lookups do not: the state is updated in place, and inserted only
    // the first time an mm is seen, which only sets a baseline (its total before any change).
    let Some(state) = MM_STATE.get_ptr_mut(mm) else {
        let state = MmState {
            // 0: an mm not seen changing in its own context yet (its pages are still counted)
            owner: if own { current } else { 0 },
            in_cgroup,
            total,
        };
        let _ = MM_STATE.insert(mm, state, 0);
        return 0;
    };
    let state = unsafe { &mut *state };
    if own {
        state.owner = current;
        state.in_cgroup = in_cgroup;
    }
    let previous = core::mem::replace(&mut state.total, total);
    let owner = state.owner;
    if !filter::is_owner_target(owner, state.in_cgroup != 0) {
        return 0;
    }
    let pages = total - previous;
    if pages > 0 {
        add(owner, |c| c.out_unmapped += pages as u64);
        let staged = StagedSwapOut {
            owner,
            pages: pages as u32,
            zero: 0,
            _pad: 0,
        };
        match SWAP_STAGED.get_ptr_mut(pid_tgid as u32) {
            Some(slot) => unsafe { *slot = staged },
            None => {
                let _ = SWAP_STAGED.insert(pid_tgid as u32, staged, 0);
            }
        }
    } else if pages < 0 {
        let pages = (-pages) as u64;
        if own && (in_user_fault() || in_do_swap_page(&ctx)) {
            add(owner, |c| c.swapped_in += pages);
        } else {
            add(owner, |c| c.freed += pages);
        }
    }
    0
}

/// The mm's swap entries now, in pages: what percpu_counter_sum computes (the shared count
/// plus each CPU's part), read without its lock. A racing fold can be seen twice or not at all
/// for one event; the next event's total is right again, so only that change is off.
#[inline(always)]
fn swap_entries(mm: u64, layout: &config::SwapLayout) -> Option<i64> {
    let counter = mm + layout.swap_counter;
    let read = |address: u64| unsafe { bpf_probe_read_kernel(address as *const i64) }.ok();
    let mut total = read(counter + layout.counter_count)?;
    let per_cpu = read(counter + layout.counter_percpu)? as u64;
    let cpus = config::nr_cpus();
    for cpu in 0..MAX_CPUS {
        if cpu >= cpus {
            break;
        }
        let offset = CPU_OFFSETS.get(cpu).copied().unwrap_or(0);
        if offset == 0 {
            continue; // a CPU that was offline when the offsets were learnt: its part is 0
        }
        let part = unsafe { bpf_probe_read_kernel(per_cpu.wrapping_add(offset) as *const i32) };
        total += i64::from(part.unwrap_or(0));
    }
    Some(total.max(0))
}

#[tracepoint]
pub fn swap_write_folio(ctx: TracePointContext) -> u32 {
    let Ok(flags) = (unsafe { ctx.read_at::<i32>(RECLAIM_FLAGS_OFFSET) }) else {
        return 0;
    };
    if flags & RECLAIM_WB_ANON == 0 {
        return 0;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(slot) = SWAP_STAGED.get_ptr_mut(tid) else {
        return 0;
    };
    // Taken: pages 0 marks the slot empty until the thread's next unmap to swap.
    let empty = StagedSwapOut {
        owner: 0,
        pages: 0,
        zero: 0,
        _pad: 0,
    };
    let staged = unsafe { core::mem::replace(&mut *slot, empty) };
    if staged.pages > 0 {
        add(staged.owner, |c| {
            c.out_written += u64::from(staged.pages);
            c.out_zero += u64::from(staged.zero.min(staged.pages));
        });
    }
    0
}

/// memcg:count_memcg_events, on every event any memory cgroup counts (each page fault's
/// among them): leave at once for all but the two zero-page swap events. The kernel counts
/// them only for pages charged to a memory cgroup other than the root.
#[raw_tracepoint(tracepoint = "count_memcg_events")]
pub fn swap_zero_events(ctx: RawTracePointContext) -> i32 {
    let (swpin_zero, swpout_zero) = config::zero_events();
    if swpin_zero == 0 {
        return 0; // this kernel has no such events (the program is not attached then)
    }
    let event = ctx.arg::<u64>(1) as u32;
    if event != swpin_zero && event != swpout_zero {
        return 0;
    }
    let pages = ctx.arg::<u64>(2);
    let pid_tgid = bpf_get_current_pid_tgid();
    if event == swpout_zero {
        // Inside the write of the folio this thread just unmapped (see swap_write_folio).
        if let Some(slot) = SWAP_STAGED.get_ptr_mut(pid_tgid as u32) {
            let staged = unsafe { &mut *slot };
            if staged.pages > 0 {
                staged.zero = staged.zero.saturating_add(pages as u32);
            }
        }
        return 0;
    }
    // A swap-in reads in the context of the process that faults (or reads ahead) its own
    // pages, so its filter can be asked here.
    let tgid = (pid_tgid >> 32) as u32;
    if filter::is_target(tgid) {
        add(tgid, |c| c.in_zero += pages);
    }
    0
}

/// Whether the current task entered the kernel through an exception (a page fault) rather
/// than a syscall. On x86-64, pt_regs.orig_ax at the top of the task's kernel stack holds the
/// syscall number for a syscall and -1 for an exception or interrupt. A swap-entry drop in the
/// owner's context outside any syscall can only be do_swap_page's: munmap, madvise and the
/// like are syscalls, and exit runs without the mm. This spares the kernel-stack walk for
/// almost every swap-in; the walk stays for faults taken inside syscalls (read() into
/// swapped-out memory, for example).
#[inline(always)]
fn in_user_fault() -> bool {
    let offset = config::orig_ax_offset();
    if offset == 0 {
        return false; // not x86-64
    }
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    let Ok(orig_ax) = (unsafe { bpf_probe_read_kernel((regs + offset) as *const i64) }) else {
        return false;
    };
    orig_ax == -1
}

/// Kernel frames searched for do_swap_page: the program's own frames (bpf_trace_run2,
/// __traceiter_rss_stat, mm_trace_rss_stat) come first.
const FRAMES: usize = 4;

/// Whether the current kernel stack passes through do_swap_page.
#[inline(always)]
fn in_do_swap_page(ctx: &RawTracePointContext) -> bool {
    let (start, end) = config::do_swap_page();
    if start == 0 {
        return true; // not found in kallsyms: a decrease in the owner's context counts
    }
    let mut frames = [0u64; FRAMES];
    let size = core::mem::size_of_val(&frames) as u32;
    let written = unsafe { bpf_get_stack(ctx.as_ptr(), frames.as_mut_ptr().cast(), size, 0) };
    if written <= 0 {
        return false;
    }
    frames.iter().any(|&ip| ip >= start && ip < end)
}

#[inline(always)]
fn add(owner: u32, update: impl FnOnce(&mut SwapCounts)) {
    if let Some(counts) = SWAP_COUNTS.get_ptr_mut(owner) {
        update(unsafe { &mut *counts });
        return;
    }
    let mut counts = SwapCounts::default();
    update(&mut counts);
    let _ = SWAP_COUNTS.insert(owner, counts, 0);
}
