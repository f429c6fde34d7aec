//! Kernel page allocations: the kmem:mm_page_alloc tracepoint, 2^order pages each.
//!
//! An allocation made in an interrupt (hard, soft or NMI) or by a kernel thread is marked as
//! such: userspace never credits it to the task that happened to be current. Every
//! allocation is counted here, per process and kind (exact, no event leaves the kernel); with
//! stacks, an event carries the stacks of every allocation, or of 1 in N with --sample N.
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::bpf_get_current_task_btf,
    },
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext,
};
use memtrace_common::{
    counter, sampler, stack_flags, EventKind, PageContext, PageCount, PageCountCache, PageDetail,
    PageKey, COMM_LEN,
};

use crate::{
    config,
    emit::{emit, Record, UserStackFrom},
    filter,
    maps::{count, PAGE_COUNTS, PAGE_COUNT_CACHE},
    sample, ustack,
};

// Offsets in kmem:mm_page_alloc's format: pfn, order, gfp_flags, migratetype. For eBPF
// programs the common header's first 8 bytes hold a pointer to the registers at the
// tracepoint instead.
const REGS: usize = 0;
const ORDER: usize = 16;
const GFP_FLAGS: usize = 24;
const MIGRATETYPE: usize = 32;
/// task_struct.flags: a kernel thread.
const PF_KTHREAD: u32 = 0x0020_0000;
/// The largest task stack (THREAD_SIZE: 16 KiB on x86-64, 32 KiB with KASAN).
const MAX_THREAD_SIZE: u64 = 32 << 10;
const BPF_NOEXIST: u64 = 1;

#[tracepoint]
pub fn page_alloc(ctx: TracePointContext) -> u32 {
    let Some(cache) = PAGE_COUNT_CACHE.get_ptr_mut(0) else {
        return 0;
    };
    // Per CPU, and a program never runs nested on one CPU: nothing else touches it meanwhile.
    let cache = unsafe { &mut *cache };
    let read_u32 = |offset| unsafe { ctx.read_at::<u32>(offset) }.unwrap_or(0);
    let detail = PageDetail {
        order: read_u32(ORDER),
        migratetype: read_u32(MIGRATETYPE),
        context: context(&ctx, cache),
    };
    let gfp_flags = unsafe { ctx.read_at::<u64>(GFP_FLAGS) }.unwrap_or(0);
    let pages = 1u64 << (detail.order & 31);
    if !count_in_kernel(cache, detail, gfp_flags, pages)
        || config::stack_flags() & stack_flags::PAGE_ALLOCS == 0
        || config::stack_flags() & (stack_flags::USER | stack_flags::KERNEL) == 0
        || !sample::sampled(sampler::PAGE_STACKS)
    {
        return 0;
    }
    let record = Record {
        kind: EventKind::PageAlloc,
        addr: gfp_flags,
        weight: pages,
        detail: detail.pack(),
        stacks: true,
        // The user code that made the kernel allocate; interrupts and kernel threads have none.
        user_stack: match detail.context {
            PageContext::Process => {
                ustack::current_user_regs().map_or(UserStackFrom::Nowhere, UserStackFrom::Regs)
            }
            _ => UserStackFrom::Nowhere,
        },
        kernel_stack: true,
        file_fault: false,
        comm: true,
        urgent: false,
        timed: false,
    };
    emit(&ctx, record);
    0
}

/// Whom the allocation is for: an interrupt, a kernel thread, or the current process.
/// Interrupts (hard, soft, NMI) run on stacks of their own, never on the task's: the stack
/// pointer at the tracepoint tells. (Not the program's own frame: eBPF programs may run on a
/// private stack.) They also get their own tracepoint record buffer: once this CPU's task
/// record address is known, the stack check is needed only for records elsewhere.
#[inline(always)]
fn context(ctx: &TracePointContext, cache: &mut PageCountCache) -> PageContext {
    // A BTF pointer: the verifier checks each load against task_struct's layout, and loads
    // cost no helper call.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let field = |offset: u64| unsafe { *(task.wrapping_add(offset as usize) as *const u64) };
    let record = ctx.as_ptr() as u64;
    if record != cache.task_record {
        let regs = unsafe { ctx.read_at::<u64>(REGS) }.unwrap_or(0) as *const u8;
        let sp = unsafe {
            bpf_probe_read_kernel(regs.wrapping_add(config::regs_sp() as usize) as *const u64)
        }
        .unwrap_or(0);
        if sp.wrapping_sub(field(config::task_stack())) >= MAX_THREAD_SIZE {
            return PageContext::Interrupt;
        }
        cache.task_record = record;
    }
    let task_flags = unsafe { *(task.wrapping_add(config::task_flags() as usize) as *const u32) };
    if task_flags & PF_KTHREAD != 0 {
        PageContext::KernelThread
    } else {
        PageContext::Process
    }
}

/// Adds one allocation to its process's count; false if the process is not traced. Runs of
/// one kind add up in the CPU's cache, and go to the table when another kind comes.
#[inline(always)]
fn count_in_kernel(
    cache: &mut PageCountCache,
    detail: PageDetail,
    gfp_flags: u64,
    pages: u64,
) -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !filter::is_target(tgid) {
        return false;
    }
    let key = PageKey {
        tgid,
        detail: detail.pack(),
        gfp_flags,
    };
    if cache.count.allocations > 0 && cache.key == key {
        cache.count.allocations += 1;
        cache.count.pages += pages;
        return true;
    }
    if cache.count.allocations > 0 {
        add_to_table(&cache.key, &cache.count);
    }
    cache.key = key;
    cache.count = PageCount {
        allocations: 1,
        pages,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    };
    true
}

#[inline(always)]
fn add_to_table(key: &PageKey, run: &PageCount) {
    if let Some(counts) = PAGE_COUNTS.get_ptr_mut(key) {
        let counts = unsafe { &mut *counts };
        counts.allocations += run.allocations;
        counts.pages += run.pages;
        return;
    }
    if PAGE_COUNTS.insert(key, run, BPF_NOEXIST).is_err() {
        // Full: counted, never silent.
        count(counter::PAGE_COUNTS_FULL);
    }
}
