//! Maps shared by every hook family. Sizes are defaults; the loader resizes them from options.
use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
};
use memtrace_common::{
    counter,
    python::{PythonProcess, PythonStack, MAX_PYTHON_PROCESSES, MAX_PYTHON_THREADS},
    sampler,
    unwind::{ProcessMappings, UnwindRow, UnwindTable},
    FileTag, PageCount, PageCountCache, PageKey, PendingAlloc, StagedSwapOut, SwapCounts,
    UserStack, MAX_TARGETS, PENDING_SLOTS,
};

/// Every event, of every kind, for the one userspace drain.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// User and kernel stacks; events carry ids into it, not frames.
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

/// User stacks by the hash of their frames (see `ustack`); events carry the hash.
#[map]
pub static USER_STACKS: HashMap<u64, UserStack> = HashMap::with_max_entries(16384, 0);

/// Room to assemble one user stack (too big for the 512-byte BPF stack).
#[map]
pub static STACK_SCRATCH: PerCpuArray<UserStack> = PerCpuArray::with_max_entries(1, 0);

/// The stack words above a walk's first frame record, read at once (see `ustack::walk`).
pub type StackWindow = [u64; 64];

#[map]
pub static STACK_WINDOW: PerCpuArray<StackWindow> = PerCpuArray::with_max_entries(1, 0);

/// The key of the user stack this CPU last stored or found (see `ustack::store`).
#[map]
pub static LAST_STORED_STACK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The thread whose name this CPU sent last (see `emit`).
#[map]
pub static LAST_COMM_TID: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The unwind tables' rows, of every binary (see memtrace-common's `unwind`); sized by the
/// loader, which fills them.
/// Memory-mapped by the loader, which writes a binary's rows in place (one syscall per row
/// would take longer than building them).
#[map]
pub static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Each binary's page index into its rows (u64: a mapped array's elements are 8-aligned).
#[map]
pub static UNWIND_PAGES: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Each binary's rows and pages.
#[map]
pub static UNWIND_TABLES: Array<UnwindTable> = Array::with_max_entries(1, 0);

/// Each process's executable mappings and their tables, by tgid. LRU: tracing the whole
/// system, a process not seen for a while makes room (and asks again if it comes back).
#[map]
pub static UNWIND_PROCESSES: LruHashMap<u32, ProcessMappings> = LruHashMap::with_max_entries(1, 0);

/// All zeros, never written: the placeholder a walk inserts for a process it asks about.
#[map]
pub static UNWIND_EMPTY: Array<ProcessMappings> = Array::with_max_entries(1, 0);

/// How far up each thread's stack a walk may read, by thread id, learned when a window's
/// read ran past the stack's mapping (a failed read of user memory costs microseconds, so
/// each thread pays it once). LRU: threads come and go.
#[map]
pub static STACK_TOPS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// The stack walk in progress on this CPU (see `unwind::Walk`).
#[map]
pub static WALK_STATE: PerCpuArray<crate::unwind::Walk> = PerCpuArray::with_max_entries(1, 0);

/// Python processes, by tgid: where their interpreter is and its objects' layout (see
/// `python`). LRU: tracing the whole system, one not seen for a while makes room.
#[map]
pub static PYTHON_PROCESSES: LruHashMap<u32, PythonProcess> =
    LruHashMap::with_max_entries(MAX_PYTHON_PROCESSES, 0);

/// Each Python thread's thread state, by thread id, once found (checked on each use: the
/// state's own thread id must still be the thread's). LRU: threads come and go.
#[map]
pub static PYTHON_THREADS: LruHashMap<u32, u64> =
    LruHashMap::with_max_entries(MAX_PYTHON_THREADS, 0);

/// Stacks' Python frames, by the key their native stack's last word holds (see `python`).
/// Not preallocated: only Python processes fill it.
#[map]
pub static PYTHON_STACKS: HashMap<u64, PythonStack> =
    HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

/// The Python frame walk in progress on this CPU (see `python::PythonWalk`).
#[map]
pub static PYTHON_WALK: PerCpuArray<crate::python::PythonWalk> =
    PerCpuArray::with_max_entries(1, 0);

/// The key of the Python stack this CPU last stored (see `python::store`).
#[map]
pub static LAST_PYTHON_STACK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU counters (see `memtrace_common::counter`), summed by the loader. The bpf target has
/// no atomic add, and per-CPU slots need none.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// The traced processes (tgids), when the filter mode is `TGIDS`.
#[map]
pub static TARGET_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// File faults in progress, by thread id (see `filetag`). LRU: a tag whose fault never
/// completed (the task was killed) ages out instead of filling the map.
#[map]
pub static FILE_FAULTS: LruHashMap<u32, FileTag> = LruHashMap::with_max_entries(4096, 0);

/// Swap traffic per owning process (tgid; 0: owner not known yet), see `swap`.
#[map]
pub static SWAP_COUNTS: PerCpuHashMap<u32, SwapCounts> =
    PerCpuHashMap::with_max_entries(MAX_TARGETS, 0);

/// What the swap program knows of each mm (by address), see `swap`.
#[derive(Clone, Copy)]
pub struct MmState {
    /// The process it belongs to, learnt from its own changes (0: not known yet).
    pub owner: u32,
    /// 1 when the owner was in the traced cgroup (cgroup filter only).
    pub in_cgroup: u32,
    /// Its swap entries at the last change, in pages.
    pub total: i64,
}

#[map]
pub static MM_STATE: LruHashMap<u64, MmState> = LruHashMap::with_max_entries(MAX_TARGETS, 0);

/// Allocator calls in progress, from entry to return, one slot per thread (`tid %
/// PENDING_SLOTS`): an array, because a hash insert and delete per call cost more than
/// everything else the entry does (see `malloc`).
#[map]
pub static PENDING_ALLOCS: Array<PendingAlloc> = Array::with_max_entries(PENDING_SLOTS, 0);

/// With --sample-bytes: bytes each thread allocates before its next sample point.
#[map]
pub static SAMPLE_COUNTDOWN: LruHashMap<u32, i64> = LruHashMap::with_max_entries(16384, 0);

/// A sampled block, by process and address.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SampledBlock {
    pub tgid: u32,
    pub _pad: u32,
    pub address: u64,
}

impl SampledBlock {
    #[inline(always)]
    pub fn of(pid_tgid: u64, address: u64) -> Self {
        Self {
            tgid: (pid_tgid >> 32) as u32,
            _pad: 0,
            address,
        }
    }
}

/// With --sample-bytes: the sampled blocks not freed yet, whose frees are the only ones sent.
#[map]
pub static SAMPLED_BLOCKS: LruHashMap<SampledBlock, u8> = LruHashMap::with_max_entries(65536, 0);

/// Page allocations counted in the kernel when no stacks are taken (see `pages`).
#[map]
pub static PAGE_COUNTS: PerCpuHashMap<PageKey, PageCount> =
    PerCpuHashMap::with_max_entries(16384, 0);

/// Each CPU's last page-allocation key and count (see `pages`).
#[map]
pub static PAGE_COUNT_CACHE: PerCpuArray<PageCountCache> = PerCpuArray::with_max_entries(1, 0);

/// Events left on this CPU until the next one whose stacks are taken, per sampler
/// (`memtrace_common::sampler`).
#[map]
pub static STACK_SAMPLE: PerCpuArray<u64> = PerCpuArray::with_max_entries(sampler::COUNT, 0);

/// Each CPU's per-CPU offset (0: not known), learnt by `percpu` before the swap program runs.
#[map]
pub static CPU_OFFSETS: Array<u64> = Array::with_max_entries(1, 0);

/// One per-CPU value whose address on each CPU gives away that CPU's per-CPU offset.
#[map]
pub static PERCPU_PROBE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Where `percpu` turns kernel addresses into plain numbers (see there).
#[map]
pub static ADDRESS_SCRATCH: Array<u64> = Array::with_max_entries(1, 0);

/// A reclaiming thread's last unmap to swap, by thread id, until its write.
#[map]
pub static SWAP_STAGED: LruHashMap<u32, StagedSwapOut> = LruHashMap::with_max_entries(4096, 0);

#[inline(always)]
pub fn count(index: u32) {
    add(index, 1);
}

#[inline(always)]
pub fn add(index: u32, n: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        unsafe { *slot += n };
    }
}
