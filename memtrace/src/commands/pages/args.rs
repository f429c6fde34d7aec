//! `memtrace pages`'s command line.
use clap::Args;

use crate::commands::options::{
    parse_stack_sample, OutputArgs, RunArgs, Stacks, TargetArgs, UnwindArgs,
};

const PAGES_HELP: &str = "\
What is counted: every allocation of physical pages by the kernel's page allocator
(kmem:mm_page_alloc): 2^order pages each, with the GFP flags (by the kernel's own names, such
as GFP_HIGHUSER_MOVABLE for a process's anonymous memory or GFP_KERNEL for the kernel's own
use) and the migratetype. It is the physical side of memory: a page fault on fresh memory
allocates one page, a huge page fault 512, a socket buffer or page cache read a few.

Context: an allocation made in an interrupt (hard, soft or NMI) or by a kernel thread is for
the kernel, not for the task that happened to be running: it is shown as [interrupt] or as
the kernel thread, never credited to a traced process.

Figures per process, order, GFP flags and migratetype are counted in the kernel: exact, even
with --sample. Stacks: user and kernel frames (which user code path made the kernel
allocate, and through which kernel path), for every allocation or, with --sample N, for 1 in
N (their figures then estimates). A kernel stack costs about 1.5 µs per allocation: use
--sample or --stacks user on busy machines; --stacks none is the cheapest, for long runs.

Examples:
  sudo memtrace pages --duration 10s                  system-wide top allocators
  sudo memtrace pages --pid 1234 --interval 1s
  sudo memtrace pages --stacks none -- ./load-test.sh
  sudo memtrace pages --flamegraph pages.svg -- ./server --once";

/// Kernel page allocations (kmem:mm_page_alloc) per process, order, GFP flags,
/// migratetype and call stack; interrupts and kernel threads reported as such.
#[derive(Debug, Args)]
#[command(after_help = PAGES_HELP)]
pub struct PagesArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Which call stacks to record per allocation.
    #[arg(short, long, value_enum, default_value_t = Stacks::Both)]
    pub stacks: Stacks,
    /// Take stacks for 1 in N allocations (stack figures rescaled and marked as estimates;
    /// the other figures stay exact).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_stack_sample)]
    pub sample: u64,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub unwind: UnwindArgs,
}
