//! Types shared by the eBPF programs and the userspace loader.
//!
//! Everything here is `#[repr(C)]`, `Copy`, with explicit padding and no `bool`, so both sides
//! agree on the layout byte for byte. The `user` feature adds `aya::Pod` for the loader.
#![no_std]

pub mod python;
pub mod unwind;

/// Length of a task's `comm`, as in the kernel (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// What an event records. One ring buffer carries every kind, so one drain serves every
/// subcommand; the kind says how the aggregator keys it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    MinorFault = 1,
    MajorFault = 2,
    /// A traced process called exec: its memory map and comm are new from here on.
    Exec = 3,
    /// A traced process forked a new process, whose pid is in `addr`: until it execs, the
    /// child's memory map is a copy of its parent's.
    Fork = 4,
    /// A heap block came from an allocator function (`detail`: which [`AllocFn`]): its address
    /// in `addr`, its requested size in `weight`.
    Alloc = 5,
    /// A heap block at `addr` went back (free, or the old block of a realloc).
    Free = 6,
    /// The kernel allocated 2^order pages (`kmem:mm_page_alloc`): `weight` pages, the GFP
    /// flags in `addr`, order, migratetype and context in `detail` (see [`PageDetail`]).
    PageAlloc = 7,
    /// The OOM killer chose a victim (`oom:mark_victim`): an [`OomKill`] record, not a
    /// `StackEvent`.
    OomKill = 8,
    /// A process ended: a [`ProcessExit`] record.
    ProcessExit = 9,
    /// A stack walk in process `tgid` met code outside the executable mappings the loader
    /// gave it (or the process had none yet): the loader reads its maps (see [`unwind`]).
    UnwindRequest = 10,
}

impl EventKind {
    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::MinorFault),
            2 => Some(Self::MajorFault),
            3 => Some(Self::Exec),
            4 => Some(Self::Fork),
            5 => Some(Self::Alloc),
            6 => Some(Self::Free),
            7 => Some(Self::PageAlloc),
            8 => Some(Self::OomKill),
            9 => Some(Self::ProcessExit),
            10 => Some(Self::UnwindRequest),
            _ => None,
        }
    }
}

/// One sampled kernel event with its call stacks: who (tgid/tid/comm), where (address, stack
/// ids into the `STACKS` map) and how much (`weight`: 1 per fault).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackEvent {
    /// An [`EventKind`] as u32.
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    /// Id in the `STACKS` map, or a negative errno when no kernel stack was taken.
    pub kernel_stack_id: i32,
    /// For a fault the kernel served from a file (`filemap_fault`): the file's device, as the
    /// kernel encodes it (major << 20 | minor); 0 otherwise.
    pub file_dev: u32,
    /// Kind-specific: for `Alloc` and `Free`, the [`AllocFn`] called.
    pub detail: u32,
    /// Key in the `USER_STACKS` map (a hash of the frames), or 0 when no user stack was taken.
    pub user_stack: u64,
    /// The faulting address (faults), or 0.
    pub addr: u64,
    /// The file's inode number when `file_dev` is set. Taken at fault time, so the region is
    /// right even when the mapping is gone before userspace reads the process's maps.
    pub file_ino: u64,
    /// How much this event stands for (1 per fault).
    pub weight: u64,
    /// When it happened (`bpf_ktime_get_ns`, CLOCK_MONOTONIC), for the events that need it
    /// (heap blocks, whose lifetimes are measured); 0 for the others.
    pub time_ns: u64,
    pub comm: [u8; COMM_LEN],
}

/// The allocator functions `memtrace malloc` hooks (`StackEvent::detail`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllocFn {
    Malloc = 1,
    Calloc = 2,
    Realloc = 3,
    Reallocarray = 4,
    PosixMemalign = 5,
    AlignedAlloc = 6,
    Memalign = 7,
    Valloc = 8,
    Pvalloc = 9,
    Free = 10,
    /// The program's own mmap and munmap calls (syscall tracepoints, `--mmap`); those made
    /// inside an allocator call are the allocator's business.
    Mmap = 11,
    Munmap = 12,
}

impl AllocFn {
    /// The functions hooked with uprobes, in the order their probes are attached.
    pub const UPROBED: [AllocFn; 10] = [
        Self::Malloc,
        Self::Calloc,
        Self::Realloc,
        Self::Reallocarray,
        Self::PosixMemalign,
        Self::AlignedAlloc,
        Self::Memalign,
        Self::Valloc,
        Self::Pvalloc,
        Self::Free,
    ];

    pub fn from_raw(raw: u32) -> Option<Self> {
        (Self::UPROBED.into_iter().chain([Self::Mmap, Self::Munmap])).find(|f| *f as u32 == raw)
    }

    /// The C name (before any `--symbol-prefix`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Malloc => "malloc",
            Self::Calloc => "calloc",
            Self::Realloc => "realloc",
            Self::Reallocarray => "reallocarray",
            Self::PosixMemalign => "posix_memalign",
            Self::AlignedAlloc => "aligned_alloc",
            Self::Memalign => "memalign",
            Self::Valloc => "valloc",
            Self::Pvalloc => "pvalloc",
            Self::Free => "free",
            Self::Mmap => "mmap",
            Self::Munmap => "munmap",
        }
    }
}

/// Where an allocator uprobe finds the arguments when its probe sits past instructions that
/// copied them elsewhere (mimalloc's malloc moves its size from rdi to rsi before the first
/// instruction uprobes can emulate). The attach cookie holds, for argument `i`, a register code
/// in bits `4i..4i+4`; 0 there means the argument's own register (so a cookie of 0 changes
/// nothing).
pub mod arg_register {
    pub const BITS: u32 = 4;
    pub const RDI: u8 = 1;
    pub const RSI: u8 = 2;
    pub const RDX: u8 = 3;
    pub const RCX: u8 = 4;
    pub const R8: u8 = 5;
    pub const R9: u8 = 6;
    pub const RAX: u8 = 7;
    pub const RBX: u8 = 8;
    pub const RBP: u8 = 9;
    pub const R10: u8 = 10;
    pub const R11: u8 = 11;
    pub const R12: u8 = 12;
    pub const R13: u8 = 13;
    pub const R14: u8 = 14;
    pub const R15: u8 = 15;

    /// The register code argument `index` has in `cookie` (0: its own register).
    pub const fn of(cookie: u64, index: usize) -> u8 {
        ((cookie >> (BITS as usize * index)) & 0xf) as u8
    }
}

/// Who a page allocation is made for. Interrupt handlers and kernel threads allocate for the
/// kernel, not for the task that happens to be current.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageContext {
    Process = 0,
    /// Hard or soft interrupt, or NMI.
    Interrupt = 1,
    KernelThread = 2,
}

impl PageContext {
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            1 => Self::Interrupt,
            2 => Self::KernelThread,
            _ => Self::Process,
        }
    }
}

/// A page allocation's order, migratetype and context, packed into `StackEvent::detail` and
/// [`PageKey::detail`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageDetail {
    pub order: u32,
    pub migratetype: u32,
    pub context: PageContext,
}

impl PageDetail {
    pub fn pack(self) -> u32 {
        (self.order & 0xff) | (self.migratetype & 0xff) << 8 | (self.context as u32) << 16
    }

    pub fn unpack(raw: u32) -> Self {
        Self {
            order: raw & 0xff,
            migratetype: (raw >> 8) & 0xff,
            context: PageContext::from_raw(raw >> 16),
        }
    }
}

/// Page allocations counted in the kernel (`memtrace pages --stacks none`), per process and
/// kind of allocation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub tgid: u32,
    /// A packed [`PageDetail`].
    pub detail: u32,
    pub gfp_flags: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PageCount {
    pub allocations: u64,
    pub pages: u64,
    /// The allocating task's name, when the entry was made (the process may be gone when
    /// the counts are read).
    pub comm: [u8; COMM_LEN],
}

/// A process that ended (its last thread exited), with the faults of its whole life, as
/// getrusage would have said at the end (`memtrace agent`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessExit {
    /// [`EventKind::ProcessExit`] as u32.
    pub kind: u32,
    pub tgid: u32,
    pub minor_faults: u64,
    pub major_faults: u64,
    /// When it started (ns since boot, as /proc/PID/stat's starttime in other units): tells
    /// it from another process with the same pid.
    pub start_boottime_ns: u64,
    /// Its memory cgroup (kernfs node id; 0 where unknown).
    pub memcg: u64,
    pub comm: [u8; COMM_LEN],
}

/// Per-CPU samplers (index into the programs' sample countdowns): each program samples its own
/// events, so two streams interleaved (a fault, then its page) are not sampled in step.
pub mod sampler {
    pub const PAGE_STACKS: u32 = 0;
    pub const COUNT: u32 = 1;
}

/// An OOM kill, as `oom:mark_victim` reports it (sizes in KiB), with the memory cgroup of
/// the task that ran out of memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OomKill {
    /// [`EventKind::OomKill`] as u32: the first field, as in every ring buffer record.
    pub kind: u32,
    pub pid: u32,
    pub uid: u32,
    pub oom_score_adj: i32,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    /// The memory cgroup (its kernfs node id, the directory's inode number) of the task that
    /// needed memory when the OOM killer ran; 0 when unknown.
    pub trigger_memcg: u64,
    /// The pid of that task.
    pub trigger_pid: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

/// Each CPU's last page-allocation key and its count, not yet added to the count table:
/// consecutive allocations of one kind cost no table update (see memtrace-ebpf's `pages`).
/// Userspace adds it to the table's figures.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PageCountCache {
    pub key: PageKey,
    pub count: PageCount,
    /// The tracepoint's record address for task context on this CPU, once known: a record
    /// elsewhere is an interrupt's.
    pub task_record: u64,
}

/// An allocator call in progress on a thread, from its entry to its return (see
/// memtrace-ebpf's `malloc`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingAlloc {
    /// The thread in the call; 0: the slot is free.
    pub tid: u32,
    /// The [`AllocFn`] entered first.
    pub function: u32,
    /// Allocator calls made from inside it (realloc calling malloc), whose returns are not
    /// its own.
    pub nested: u32,
    pub _pad: u32,
    /// Bytes asked for.
    pub size: u64,
    /// realloc's old block, or posix_memalign's result pointer.
    pub pointer: u64,
}

/// Slots of the per-thread table of allocator calls in progress (a thread uses slot
/// `tid % PENDING_SLOTS`; a thread finding its slot held by another is counted, not followed).
pub const PENDING_SLOTS: u32 = 65536;

/// Frames kept per user stack.
pub const USER_STACK_DEPTH: usize = 127;

/// A user stack: the instruction pointer, then return addresses, innermost first; zeros after
/// the last frame. Stored in `USER_STACKS` under a hash of its frames.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UserStack {
    pub frames: [u64; USER_STACK_DEPTH],
    /// How the walk ended: [`unwind::walk_end`].
    pub end: u64,
}

/// A file fault in progress on a thread, from `filemap:mm_filemap_fault`, picked up by the
/// perf fault event that follows on the same thread.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileTag {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// Swap traffic of one process (the owner of the pages), counted in the kernel, summed over
/// CPUs by the loader. All in pages.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SwapCounts {
    /// Pages reclaim sent to swap: written (/proc/vmstat's pswpout) or, on Linux 6.12+,
    /// zero-filled pages kept as a bit in the swap map and never written (swpout_zero).
    pub out_written: u64,
    /// Pages unmapped to swap, written or not: a clean page still in the swap cache leaves
    /// again without I/O. This minus `swapped_in` and `freed` follows VmSwap.
    pub out_unmapped: u64,
    /// Pages brought back by swap-in faults (from disk or the swap cache).
    pub swapped_in: u64,
    /// Swap entries freed without coming back (unmapped memory, exit).
    pub freed: u64,
    /// The zero-filled pages among `out_written` (swpout_zero's sense): not written.
    pub out_zero: u64,
    /// Zero-filled pages the process's swap-ins took from the swap map, not read from disk
    /// (swpin_zero's sense, readahead included).
    pub in_zero: u64,
}

/// A reclaimer's last unmap of a process's page to swap, waiting for the write that follows.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StagedSwapOut {
    pub owner: u32,
    pub pages: u32,
    /// How many of them the kernel found zero-filled as it wrote them (not written).
    pub zero: u32,
    pub _pad: u32,
}

/// How the kernel side chooses which tasks to record ([`Settings::filter_mode`]).
pub mod filter_mode {
    /// Every task on the machine.
    pub const ALL: u32 = 0;
    /// Tasks whose tgid is in the `TARGET_TGIDS` map.
    pub const TGIDS: u32 = 1;
    /// Tasks in the cgroup v2 [`Settings::cgroup_id`] (at level [`Settings::cgroup_level`])
    /// or below it.
    ///
    /// [`Settings::cgroup_id`]: super::Settings::cgroup_id
    /// [`Settings::cgroup_level`]: super::Settings::cgroup_level
    pub const CGROUP: u32 = 2;
}

/// Bits of [`Settings::stack_flags`]: which stacks to take per event.
pub mod stack_flags {
    pub const USER: u32 = 1;
    pub const KERNEL: u32 = 2;
    /// Page allocations take stacks too (`memtrace pages`; the agent counts them only).
    pub const PAGE_ALLOCS: u32 = 4;
}

/// Indices into the per-CPU `COUNTERS` array. The kernel counts what it could not deliver, so
/// the report can say exactly how much was lost.
pub mod counter {
    /// Events that passed the filter.
    pub const SEEN: u32 = 0;
    /// Events dropped because the ring buffer was full.
    pub const LOST: u32 = 1;
    /// Stacks that could not be stored (stack map full or bucket collision).
    pub const STACK_ERRORS: u32 = 2;
    /// Children that could not be added to `TARGET_TGIDS` because it was full.
    pub const TARGETS_FULL: u32 = 3;
    /// Allocator calls not followed to their return because the per-thread table was full.
    pub const ALLOC_CALLS_UNTRACKED: u32 = 4;
    /// Page allocations not counted because the in-kernel count table was full.
    pub const PAGE_COUNTS_FULL: u32 = 5;
    /// User stack walks with the unwind tables, by how they ended (`unwind::walk_end`): these
    /// are `WALKS + end - 1`.
    pub const WALKS: u32 = 6;
    /// Walks that stepped by frame pointer for some frame (code with no table).
    pub const WALKS_USED_FRAME_POINTERS: u32 = 12;
    /// Frames the table walks found, and the table searches they made.
    pub const WALK_FRAMES: u32 = 13;
    /// Processes whose mappings the walks asked the loader for (an event could not be sent).
    pub const UNWIND_REQUESTS_LOST: u32 = 14;
    /// Walks that were the same stack as the CPU's last walk, found by comparing the words it
    /// read instead of walking again (also counted in `WALKS`).
    pub const WALKS_REPLAYED: u32 = 15;
    /// Walks in Python processes that found the thread's interpreter frames, and those
    /// frames (see `python`).
    pub const PYTHON_WALKS: u32 = 16;
    pub const PYTHON_FRAMES: u32 = 17;
    /// Walks in Python processes whose thread had no thread state (a thread that never ran
    /// Python code), or whose state could not be found.
    pub const PYTHON_NO_THREAD_STATE: u32 = 18;
    /// Python frame walks that stopped early (a read failed, the depth limit).
    pub const PYTHON_INCOMPLETE: u32 = 19;
    /// Python walks that were the same frames as the CPU's last walk, found by comparing
    /// the frames' fields instead of walking again (also counted in `PYTHON_WALKS`).
    pub const PYTHON_WALKS_REPLAYED: u32 = 20;
    pub const COUNT: u32 = 21;
}

/// Default capacity of the target set: processes traced at once with `--follow-children`.
pub const MAX_TARGETS: u32 = 16384;

/// Entries of [`Settings::exp_table`].
pub const EXP_TABLE_SIZE: usize = 1024;

/// Everything the eBPF programs are told at load time, in one `.rodata` global (`SETTINGS` in
/// memtrace-ebpf's `config`) that the loader writes before the programs load. The map is
/// frozen, so the verifier sees each field as a constant and prunes the branches it switches
/// off: an unused feature costs nothing. Fields are grouped by what reads them; a layout a
/// subcommand does not use stays zero (its programs are never attached).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    // Which tasks are recorded (memtrace-ebpf's `filter` and `follow`).
    /// A [`filter_mode`] constant.
    pub filter_mode: u32,
    /// With [`filter_mode::CGROUP`]: the cgroup's depth below the root.
    pub cgroup_level: u32,
    /// With [`filter_mode::CGROUP`]: the cgroup v2 id.
    pub cgroup_id: u64,
    /// The traced process when it is the only one (no children followed): the target filter
    /// compares with it instead of looking the set up (0: a set, or not filtering by process).
    pub single_tgid: u32,
    /// memtrace's own process, never traced: its work on events would make more events.
    pub self_tgid: u32,
    /// 1: children of traced processes are traced too (added to `TARGET_TGIDS` at fork).
    pub follow_children: u32,
    /// With a set of one given process whose children are followed (a command): that
    /// process, compared before the set is looked up, since most events are its (0: none).
    pub first_tgid: u32,

    // What each event takes, and when the reader is woken (memtrace-ebpf's `emit`, `sample`).
    /// [`stack_flags`] bits: which stacks to take per event.
    pub stack_flags: u32,
    /// 1 when filemap:mm_filemap_fault tags are collected: only when every fault runs a program
    /// that takes its tag (all kinds, no sampling); otherwise a leftover tag could be taken by a
    /// later, unrelated fault of the same thread.
    pub file_tags: u32,
    /// --sample N for tracepoint programs that sample themselves (0 or 1: every event).
    pub sample_period: u64,
    /// Wake the reader only once this many bytes wait in the ring buffer (the reader also polls
    /// on a timer), so a fault storm does not wake userspace once per event.
    pub wakeup_bytes: u64,

    // Swap (memtrace-ebpf's `swap` and `percpu`): kernel struct offsets from BTF (see memtrace's
    // `kernel::layout::SwapLayout`).
    /// do_swap_page's address, from kallsyms (0 when not found): tells swap-ins from freed
    /// swap entries.
    pub do_swap_page_start: u64,
    /// The end of do_swap_page (the next symbol's address; 0 when not found).
    pub do_swap_page_end: u64,
    /// mm_struct.rss_stat[MM_SWAPENTS], a struct percpu_counter.
    pub mm_swap_counter: u64,
    /// percpu_counter.count: the shared part of the total.
    pub counter_count: u64,
    /// percpu_counter.counters: the per-CPU parts.
    pub counter_percpu: u64,
    /// task_struct.mm.
    pub task_mm: u64,
    /// bpf_array.pptrs: the per-CPU base of one of memtrace's own maps (see `percpu`).
    pub array_percpu_base: u64,
    /// pt_regs.orig_ax (x86-64 only; 0 elsewhere): see `swap::in_user_fault`.
    pub orig_ax: u64,
    /// Possible CPUs: how many per-CPU parts a counter has.
    pub nr_cpus: u32,
    /// 1: user stacks are unwound with the binaries' tables (`unwind`), frame pointers where
    /// there is none; 0: by frame pointers only (`--unwind fp`).
    pub unwind_tables: u32,
    /// enum vm_event_item's SWPIN_ZERO and SWPOUT_ZERO (Linux 6.12+, from BTF; 0: not
    /// counted): the events memcg:count_memcg_events passes for zero-filled pages swapped.
    pub swpin_zero_event: u32,
    pub swpout_zero_event: u32,

    // Page allocations (memtrace-ebpf's `pages`): offsets from BTF that tell kernel threads and
    // interrupts from processes.
    /// task_struct.flags.
    pub task_flags: u64,
    /// task_struct.stack.
    pub task_stack: u64,
    /// pt_regs.sp.
    pub regs_sp: u64,

    // OOM kills (memtrace-ebpf's `oom` and `memcg`).
    /// Offsets of oom:mark_victim's fields, from its format: pid, comm, total_vm, anon_rss,
    /// file_rss, shmem_rss, uid, pgtables, oom_score_adj (see memtrace's `OomTracing`).
    pub oom_fields: [u64; 9],
    /// task->cgroups->subsys[memory]->cgroup->kn->id: task_struct.cgroups,
    /// css_set.subsys[memory_cgrp_id], cgroup_subsys_state.cgroup, cgroup.kn, kernfs_node.id,
    /// offsets from BTF (all 0: the cgroup is not read).
    pub memcg_chain: [u64; 5],

    // Process exits (memtrace-ebpf's `exits`, for the agent).
    /// task_struct.signal, signal_struct.live, .min_flt, .maj_flt, task_struct.min_flt,
    /// .maj_flt, .group_leader, .start_boottime (from BTF).
    pub exit_layout: [u64; 8],

    // Heap allocations (memtrace-ebpf's `malloc`).
    /// memtrace malloc --sample-bytes (0: every block).
    pub sample_bytes: u64,
    /// -ln((i + 0.5) / EXP_TABLE_SIZE) in 16.16 fixed point: the sampler's exponential
    /// distances (see `malloc::interval`).
    pub exp_table: [u32; EXP_TABLE_SIZE],
}

impl Settings {
    /// Every field 0: the value compiled into the object, before the loader writes its own.
    // SAFETY: integers and arrays of integers only, for which all zeros is a valid value.
    pub const ZERO: Settings = unsafe { core::mem::zeroed() };
}

// No implicit padding: the fields' sizes add up to the struct's (8-aligned) size.
const _: () = assert!(
    core::mem::size_of::<Settings>()
        == 8 * 4 + 24 + 8 * 8 + 8 + 8 + 3 * 8 + (9 + 5 + 8) * 8 + 8 + 4 * EXP_TABLE_SIZE
);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data with explicit padding, valid for any bit pattern.
    unsafe impl aya::Pod for super::StackEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FileTag {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UserStack {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::python::PythonProcess {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::python::PythonStack {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SwapCounts {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PageKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PageCount {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PageCountCache {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OomKill {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcessExit {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Settings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::unwind::UnwindRow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::unwind::UnwindTable {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::unwind::ProcessMappings {}
}
