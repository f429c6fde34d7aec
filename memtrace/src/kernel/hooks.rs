//! Every place memtrace's programs hook into the kernel, each declared once: the program's
//! name in the eBPF object, where it attaches, and the kernel structures it reads. A subcommand
//! lists the hooks it uses ([`CommandHooks`]); the pipeline attaches from such lists, and
//! `memtrace check` judges the same lists, so a tracepoint's name is written here only.
use std::path::PathBuf;

use memtrace_common::AllocFn;

/// Kernel structures a program reads, found in the kernel's BTF or tracefs at load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The mm's swap-entry counter (`SwapLayout`).
    Swap,
    /// task_struct and pt_regs fields that tell interrupts and kernel threads (`PageTracing`).
    Pages,
    /// oom:mark_victim's record and the memory cgroup chain (`OomTracing`).
    Oom,
    /// A process's lifetime fault counts (`ExitLayout`).
    Exits,
}

impl Layout {
    pub const ALL: [Layout; 4] = [Layout::Swap, Layout::Pages, Layout::Oom, Layout::Exits];
}

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// The page-fault perf software event on every CPU: minor or major faults.
    PageFaults { major: bool },
    /// A tracepoint, as tracefs's `events/CATEGORY/NAME` names it.
    Tracepoint(&'static str, &'static str),
    /// A raw tracepoint: the same event, its arguments passed as the kernel has them.
    RawTracepoint(&'static str, &'static str),
    /// Never attached: the loader runs it once on each CPU (its type is that of a raw
    /// tracepoint on this event).
    RunOnce(&'static str, &'static str),
    /// An uprobe or uretprobe: the function and library come with each use ([`UprobeSite`]).
    Uprobe,
}

/// One program of the eBPF object and where it goes.
#[derive(Debug, PartialEq, Eq)]
pub struct Hook {
    /// Its name in the object (the function's name in memtrace-ebpf).
    pub program: &'static str,
    pub point: Point,
    /// What its program reads of the kernel's structures, when it reads any.
    pub reads: Option<Layout>,
}

impl Hook {
    const fn tracepoint(program: &'static str, category: &'static str, name: &'static str) -> Self {
        Self {
            program,
            point: Point::Tracepoint(category, name),
            reads: None,
        }
    }

    const fn reading(self, layout: Layout) -> Self {
        Self {
            reads: Some(layout),
            ..self
        }
    }

    /// `category/name` under tracefs's events, for a program on a tracepoint's event.
    pub fn tracefs_event(&self) -> Option<String> {
        match self.point {
            Point::Tracepoint(category, name)
            | Point::RawTracepoint(category, name)
            | Point::RunOnce(category, name) => Some(format!("{category}/{name}")),
            Point::PageFaults { .. } | Point::Uprobe => None,
        }
    }
}

// What the pipeline hooks for every subcommand: processes' execs, forks and exits.
pub const PROCESS_EXEC: Hook = Hook::tracepoint("process_exec", "sched", "sched_process_exec");
pub const TASK_NEWTASK: Hook = Hook::tracepoint("task_newtask", "task", "task_newtask");
pub const PROCESS_EXIT: Hook = Hook::tracepoint("process_exit", "sched", "sched_process_exit");
/// Names the file each file fault was served from, in the kernel.
pub const FILEMAP_FAULT: Hook = Hook::tracepoint("filemap_fault", "filemap", "mm_filemap_fault");

pub const MINOR_FAULT: Hook = Hook {
    program: "minor_fault",
    point: Point::PageFaults { major: false },
    reads: None,
};
pub const MAJOR_FAULT: Hook = Hook {
    program: "major_fault",
    point: Point::PageFaults { major: true },
    reads: None,
};
/// A process's lifetime fault counts as it ends (the agent).
pub const EXIT_COUNTS: Hook =
    Hook::tracepoint("exit_counts", "sched", "sched_process_exit").reading(Layout::Exits);
pub const PAGE_ALLOC: Hook =
    Hook::tracepoint("page_alloc", "kmem", "mm_page_alloc").reading(Layout::Pages);
pub const OOM_KILL: Hook = Hook::tracepoint("oom_kill", "oom", "mark_victim").reading(Layout::Oom);

/// Every change of a process's swap entries.
pub const SWAP_RSS_STAT: Hook = Hook {
    program: "swap_rss_stat",
    point: Point::RawTracepoint("kmem", "rss_stat"),
    reads: Some(Layout::Swap),
};
/// Each page reclaim writes to swap.
pub const SWAP_WRITE_FOLIO: Hook =
    Hook::tracepoint("swap_write_folio", "vmscan", "mm_vmscan_write_folio").reading(Layout::Swap);
/// Learns each CPU's per-CPU offset, for the swap programs' reads of per-CPU counters.
pub const LEARN_CPU_OFFSET: Hook = Hook {
    program: "learn_cpu_offset",
    point: Point::RunOnce("raw_syscalls", "sys_enter"),
    reads: Some(Layout::Swap),
};
/// Zero-filled pages among swap-outs and swap-ins (Linux 6.16+: the kernel counts them as
/// memory cgroup events; they are written and read without I/O on 6.12+).
pub const SWAP_ZERO_EVENTS: Hook = Hook {
    program: "swap_zero_events",
    point: Point::RawTracepoint("memcg", "count_memcg_events"),
    reads: Some(Layout::Swap),
};
/// Swap traffic per owning process (the loader runs `LEARN_CPU_OFFSET` when swap is
/// counted; it is listed for `memtrace check`).
pub const SWAP: [&Hook; 3] = [&SWAP_RSS_STAT, &SWAP_WRITE_FOLIO, &LEARN_CPU_OFFSET];

/// The program's own mmap and munmap calls (`memtrace malloc --mmap`).
pub const MMAP_ENTER: Hook = Hook::tracepoint("mmap_enter", "syscalls", "sys_enter_mmap");
pub const MMAP_EXIT: Hook = Hook::tracepoint("mmap_exit", "syscalls", "sys_exit_mmap");
pub const MUNMAP_ENTER: Hook = Hook::tracepoint("munmap_enter", "syscalls", "sys_enter_munmap");
pub const MMAP: [&Hook; 3] = [&MMAP_ENTER, &MMAP_EXIT, &MUNMAP_ENTER];

const fn uprobe(program: &'static str) -> Hook {
    Hook {
        program,
        point: Point::Uprobe,
        reads: None,
    }
}

/// The entry of each allocator function, in [`AllocFn::UPROBED`]'s order.
pub const ALLOC_ENTRIES: [Hook; 10] = [
    uprobe("malloc_enter"),
    uprobe("calloc_enter"),
    uprobe("realloc_enter"),
    uprobe("reallocarray_enter"),
    uprobe("posix_memalign_enter"),
    uprobe("aligned_alloc_enter"),
    uprobe("memalign_enter"),
    uprobe("valloc_enter"),
    uprobe("pvalloc_enter"),
    uprobe("free_enter"),
];
/// The return of every allocator function but free.
pub const ALLOC_RETURN: Hook = uprobe("alloc_return");

/// The entry hook of an allocator function (None for mmap and munmap, which are syscalls).
pub fn alloc_entry(function: AllocFn) -> Option<&'static Hook> {
    (AllocFn::UPROBED.iter())
        .position(|f| *f == function)
        .map(|index| &ALLOC_ENTRIES[index])
}

/// Every hook of the object, for `memtrace check`.
pub fn all() -> impl Iterator<Item = &'static Hook> {
    const NAMED: [&Hook; 17] = [
        &PROCESS_EXEC,
        &TASK_NEWTASK,
        &PROCESS_EXIT,
        &FILEMAP_FAULT,
        &MINOR_FAULT,
        &MAJOR_FAULT,
        &EXIT_COUNTS,
        &PAGE_ALLOC,
        &OOM_KILL,
        &SWAP_RSS_STAT,
        &SWAP_WRITE_FOLIO,
        &SWAP_ZERO_EVENTS,
        &LEARN_CPU_OFFSET,
        &MMAP_ENTER,
        &MMAP_EXIT,
        &MUNMAP_ENTER,
        &ALLOC_RETURN,
    ];
    NAMED.into_iter().chain(ALLOC_ENTRIES.iter())
}

/// What a subcommand hooks: without a `needs` hook it cannot run; without an `improves`
/// hook it runs, leaves out what the hook gives, and says so.
pub struct CommandHooks {
    pub needs: &'static [&'static Hook],
    pub improves: &'static [&'static Hook],
}

impl CommandHooks {
    /// A subcommand that traces nothing.
    pub const NONE: Self = Self {
        needs: &[],
        improves: &[],
    };
}

/// One use of a hook in a trace.
#[derive(Debug, Clone)]
pub enum Attachment {
    /// A hook on a tracepoint's event (or raw tracepoint).
    Hook(&'static Hook),
    /// A page-fault hook, its program run for 1 fault in `period`.
    Sampled { hook: &'static Hook, period: u64 },
    /// Uprobes at one function of a library.
    Uprobes(UprobeSite),
}

impl Attachment {
    /// The hooks it attaches.
    pub fn hooks(&self) -> Vec<&'static Hook> {
        match self {
            Self::Hook(hook) | Self::Sampled { hook, .. } => vec![hook],
            Self::Uprobes(site) => site.probes.iter().map(|probe| probe.hook).collect(),
        }
    }
}

/// Probes at one function of a library, attached together: if one fails, the site is not
/// hooked (those attached before it stay, and see nothing the report counts as hooked).
#[derive(Debug, Clone)]
pub struct UprobeSite {
    pub symbol: String,
    pub library: PathBuf,
    pub probes: Vec<Probe>,
    /// Why the trace cannot go on without this site (said when it fails to attach); None: a
    /// site that fails is skipped, and said with -v.
    pub required: Option<String>,
}

/// One uprobe of a site: its hook, where past the function's start it breaks, and the attach
/// cookie its program reads (see `probe_site`).
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub hook: &'static Hook,
    pub offset: u64,
    pub cookie: u64,
}
