//! Everything about a trace fixed when the eBPF object loads: which tasks are recorded, which
//! stacks are taken, which features' tables get their full size, the kernel layouts read.
use super::layout::{ExitLayout, OomTracing, PageTracing, SwapLayout};
use crate::unwind::store::Capacity;

/// Which tasks the kernel side records.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Every task.
    All,
    /// Tasks of these processes (more can be added while tracing).
    Tgids(Vec<u32>),
    /// Tasks in this cgroup v2 (by id, at this depth below the root) or below it.
    Cgroup { id: u64, level: u32 },
}

/// Everything fixed at load time.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    pub filter: Filter,
    pub follow_children: bool,
    /// Name the file each file fault was served from, in the kernel (see memtrace-ebpf's
    /// `filetag`). Only sound when every fault's program runs (all kinds, no sampling).
    pub file_tags: bool,
    pub user_stacks: bool,
    pub kernel_stacks: bool,
    /// Page allocations take stacks (as user_stacks and kernel_stacks say).
    pub page_stacks: bool,
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_bytes: u32,
    /// Stacks the stack map can hold.
    pub stack_entries: u32,
    /// Per-process page allocation counts the table can hold.
    pub page_count_entries: u32,
    /// Swap accounting: where the kernel keeps the counters it reads (None: not used, and its
    /// maps get one entry).
    pub swap: Option<SwapLayout>,
    /// Heap allocations through uprobes (its maps get their full size): None when not
    /// traced; Some(N) samples 1 point per N bytes (0: every block).
    pub malloc: Option<u64>,
    /// Kernel page allocations (its maps get their full size): None when not traced.
    pub pages: Option<PageTracing>,
    /// OOM kills: None when not traced.
    pub oom: Option<OomTracing>,
    /// Programs that sample themselves take stacks for 1 event in this many.
    pub stack_sample_period: u64,
    /// Processes' lifetime fault counts at their exit (the agent): None when not traced.
    pub exits: Option<ExitLayout>,
    /// User stacks are unwound with the binaries' tables, in arrays this big (None: by frame
    /// pointers only, and the arrays get one entry).
    pub unwind: Option<Capacity>,
}

impl KernelConfig {
    /// The one process the trace covers, if it is one (no children followed): uprobes then
    /// break in that process only, and the programs' filter compares with it (no lookup).
    pub fn single_process(&self) -> Option<u32> {
        match &self.filter {
            Filter::Tgids(pids) if pids.len() == 1 && !self.follow_children => Some(pids[0]),
            _ => None,
        }
    }

    /// The unwind tables' size when user stacks are walked with them (None: no user stacks,
    /// or `--unwind fp`).
    pub fn unwind_tables(&self) -> Option<Capacity> {
        self.unwind.filter(|_| self.user_stacks)
    }

    /// The one process given when its children are followed too (a command): the filter
    /// compares with it before looking the set up.
    pub fn first_process(&self) -> Option<u32> {
        match &self.filter {
            Filter::Tgids(pids) if pids.len() == 1 && self.follow_children => Some(pids[0]),
            _ => None,
        }
    }
}
