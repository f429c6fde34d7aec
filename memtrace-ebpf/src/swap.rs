//! Swap traffic, credited to the process that owns the pages, whoever runs reclaim.
//!
//! kmem:rss_stat reports each change of an mm's MM_SWAPENTS counter (its exact new total, with
//! a hashed mm id, and whether the mm is the current task's). Owners are learnt from changes
//! made in their own context. Then:
//! - an increase is a page unmapped to swap; the reclaimer's next vmscan:mm_vmscan_write_folio
//!   of an anonymous folio writes it (pswpout), so the write is credited to that owner;
//! - a decrease inside do_swap_page (its address range comes from kallsyms) is a swap-in, by the
//!   owner itself; any other decrease frees swap entries (munmap, exit).
//!
//! Only counters here: the stacks of swap-ins that waited on I/O come from the major-fault
//! program, whose user-stack walk is far cheaper than a walk from this tracepoint.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_stack},
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext,
};
use memtrace_common::{StagedSwapOut, SwapCounts};

use crate::{
    config, filter,
    maps::{MM_OWNERS, MM_SWAP_TOTALS, SWAP_COUNTS, SWAP_STAGED},
};

// Offsets in kmem:rss_stat's format (mm_id, curr, member, size) and mm_vmscan_write_folio's.
const MM_ID_OFFSET: usize = 8;
const CURR_OFFSET: usize = 12;
const MEMBER_OFFSET: usize = 16;
const SIZE_OFFSET: usize = 24;
const RECLAIM_FLAGS_OFFSET: usize = 16;
const MM_SWAPENTS: i32 = 2;
const RECLAIM_WB_ANON: i32 = 1;
const PAGE_SHIFT: i64 = 12;
/// Kernel frames searched for do_swap_page: the tracepoint sits in add_mm_counter, inlined
/// into it, so it is among the first few.
const FRAMES: usize = 4;

#[tracepoint]
pub fn swap_rss_stat(ctx: TracePointContext) -> u32 {
    // Every change of every RSS counter lands here: leave early for all but swap entries.
    let Ok(member) = (unsafe { ctx.read_at::<i32>(MEMBER_OFFSET) }) else {
        return 0;
    };
    if member != MM_SWAPENTS {
        return 0;
    }
    let (Ok(mm_id), Ok(curr), Ok(total)) = (
        unsafe { ctx.read_at::<u32>(MM_ID_OFFSET) },
        unsafe { ctx.read_at::<u32>(CURR_OFFSET) },
        unsafe { ctx.read_at::<i64>(SIZE_OFFSET) },
    ) else {
        return 0;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let current = (pid_tgid >> 32) as u32;
    // Map updates take a lock, lookups do not: values are updated in place, and inserted only
    // the first time a key is seen.
    let known_owner = unsafe { MM_OWNERS.get(mm_id) }.copied();
    let owner = if curr != 0 {
        if known_owner != Some(current) {
            let _ = MM_OWNERS.insert(mm_id, current, 0);
        }
        current
    } else {
        // 0: an mm never seen changing in its own context (its pages are still counted).
        known_owner.unwrap_or(0)
    };
    // The first change seen has no baseline: it only sets one.
    let Some(last) = MM_SWAP_TOTALS.get_ptr_mut(mm_id) else {
        let _ = MM_SWAP_TOTALS.insert(mm_id, total, 0);
        return 0;
    };
    let previous = unsafe { core::mem::replace(&mut *last, total) };
    if !filter::is_owner_target(owner) {
        return 0;
    }
    let pages = (total - previous) >> PAGE_SHIFT;
    if pages > 0 {
        add(owner, |c| c.out_unmapped += pages as u64);
        let staged = StagedSwapOut {
            owner,
            pages: pages as u32,
        };
        match SWAP_STAGED.get_ptr_mut(pid_tgid as u32) {
            Some(slot) => unsafe { *slot = staged },
            None => {
                let _ = SWAP_STAGED.insert(pid_tgid as u32, staged, 0);
            }
        }
    } else if pages < 0 {
        let pages = (-pages) as u64;
        if curr != 0 && in_do_swap_page(&ctx) {
            add(owner, |c| c.swapped_in += pages);
        } else {
            add(owner, |c| c.freed += pages);
        }
    }
    0
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
    let staged = unsafe { core::mem::replace(&mut *slot, StagedSwapOut { owner: 0, pages: 0 }) };
    if staged.pages > 0 {
        add(staged.owner, |c| c.out_written += u64::from(staged.pages));
    }
    0
}

/// Whether the current kernel stack passes through do_swap_page.
#[inline(always)]
fn in_do_swap_page(ctx: &TracePointContext) -> bool {
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
