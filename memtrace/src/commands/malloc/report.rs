//! What `memtrace malloc` reports. Field names of the `Serialize` types are the public JSON
//! contract (issue #4): keep them, add freely.
use serde::Serialize;

pub use super::timeline::TimelineSample;
use super::{
    allocators::Kind,
    books::{OomKillSeen, StackBooks},
    lifetimes::{LifetimeBucket, Lifetimes},
    resident::ResidentSplit,
};
use crate::report::{ReportHeader, StackRow};

#[derive(Clone, Debug, Default, Serialize)]
pub struct MallocProcessRow {
    pub pid: u32,
    pub comm: String,
    pub malloc_calls: u64,
    pub calloc_calls: u64,
    pub realloc_calls: u64,
    pub reallocarray_calls: u64,
    pub posix_memalign_calls: u64,
    pub aligned_alloc_calls: u64,
    pub memalign_calls: u64,
    pub valloc_calls: u64,
    pub pvalloc_calls: u64,
    pub free_calls: u64,
    /// With --mmap: the program's own mmap and munmap calls.
    pub mmap_calls: u64,
    pub munmap_calls: u64,
    /// Bytes asked for by every allocating call.
    pub bytes_allocated: u64,
    /// Bytes of the blocks freed (known from their allocation).
    pub bytes_freed: u64,
    /// Frees of blocks allocated before tracing started.
    pub frees_of_untraced_blocks: u64,
    /// The most bytes the process had allocated at once while traced (the blocks followed),
    /// and when, in seconds since tracing started.
    pub peak_bytes: u64,
    pub peak_at_s: f64,
    /// Bytes still allocated when tracing ended.
    pub live_bytes: u64,
    /// The heap against RSS, at the last reading while the process lived (None: never
    /// read): its resident anonymous memory, and of it what the allocator keeps that no
    /// allocated block uses (see `resident` for the whole split and how it is worked out).
    pub rss_anon_bytes: Option<u64>,
    pub retained_bytes: Option<u64>,
    pub resident: Option<ResidentSplit>,
    /// The OOM killer chose this process while traced (None: it did not). Its outstanding
    /// blocks (--leaks, the profile's in-use values) are then those it held at its death.
    pub oom_kill: Option<HeapOomKill>,
}

/// A traced process's OOM kill, from the oom tracepoint, and its memory cgroup then.
#[derive(Clone, Debug, Serialize)]
pub struct HeapOomKill {
    /// When memtrace saw it, in seconds since tracing started.
    pub at_s: f64,
    /// The victim's memory cgroup ("/" for the root; "" when unknown), its limit and usage
    /// when the kill was seen.
    pub memcg: String,
    pub limit_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
    /// "cgroup" when a cgroup's limit made the kill, "system" when the machine ran out.
    pub constraint: &'static str,
    /// The victim's memory when it was chosen (the tracepoint's).
    pub anon_rss_bytes: u64,
    pub file_rss_bytes: u64,
    pub shmem_rss_bytes: u64,
    /// The bytes it had allocated then (the blocks followed).
    pub heap_bytes: u64,
}

impl HeapOomKill {
    pub fn new(seen: &OomKillSeen) -> Self {
        Self {
            at_s: seen.at.as_secs_f64(),
            memcg: seen.kill.cgroup.clone(),
            limit_bytes: seen.kill.cgroup_limit_bytes,
            usage_bytes: seen.kill.cgroup_usage_bytes,
            constraint: seen.kill.constraint,
            anon_rss_bytes: seen.kill.anon_rss_kb * 1024,
            file_rss_bytes: seen.kill.file_rss_kb * 1024,
            shmem_rss_bytes: seen.kill.shmem_rss_kb * 1024,
            heap_bytes: seen.live_bytes.round() as u64,
        }
    }
}

/// An allocator memtrace hooked.
#[derive(Clone, Debug, Serialize)]
pub struct HookedAllocator {
    /// glibc, jemalloc, tcmalloc, mimalloc, or malloc (another allocator).
    pub kind: Kind,
    /// Its file, as the traced process names it.
    pub library: String,
    /// The functions hooked (an alias as `name (= function)`).
    pub functions: Vec<String>,
}

/// Allocations made on one stack.
#[derive(Clone, Debug, Serialize)]
pub struct AllocStackRow {
    pub calls: u64,
    pub bytes: u64,
    /// Blocks freed within --temporary of their allocation.
    pub temporary: u64,
    /// The blocks freed while traced, by lifetime (log2 buckets of microseconds).
    pub lifetimes: Vec<LifetimeBucket>,
    #[serde(flatten)]
    pub stack: StackRow,
}

impl AllocStackRow {
    pub fn new(stack: StackRow, books: &StackBooks) -> Self {
        Self {
            calls: books.allocated.calls.round() as u64,
            bytes: books.allocated.bytes.round() as u64,
            temporary: books.lifetimes.temporary.round() as u64,
            lifetimes: books.lifetimes.buckets(),
            stack,
        }
    }
}

/// A stack whose blocks churn: freed within --temporary.
#[derive(Clone, Debug, Serialize)]
pub struct TemporaryStackRow {
    pub temporary: u64,
    pub calls: u64,
    /// Blocks freed while traced (temporary or not).
    pub freed: u64,
    pub bytes: u64,
    pub lifetimes: Vec<LifetimeBucket>,
    #[serde(flatten)]
    pub stack: StackRow,
}

impl TemporaryStackRow {
    pub fn new(stack: StackRow, books: &StackBooks) -> Self {
        let lifetimes: &Lifetimes = &books.lifetimes;
        Self {
            temporary: lifetimes.temporary.round() as u64,
            calls: books.allocated.calls.round() as u64,
            freed: lifetimes.freed_blocks().round() as u64,
            bytes: books.allocated.bytes.round() as u64,
            lifetimes: lifetimes.buckets(),
            stack,
        }
    }
}

/// Blocks still allocated, by the stack that allocated them.
#[derive(Clone, Debug, Serialize)]
pub struct OutstandingRow {
    pub allocations: u64,
    pub bytes: u64,
    pub oldest_age_s: f64,
    #[serde(flatten)]
    pub stack: StackRow,
}

/// The blocks a stack had allocated when its process peaked (see `MallocProcessRow`).
#[derive(Clone, Debug, Serialize)]
pub struct PeakStackRow {
    pub allocations: u64,
    pub bytes: u64,
    #[serde(flatten)]
    pub stack: StackRow,
}

/// Allocations of at most `le` bytes (and more than the previous bucket's).
#[derive(Clone, Debug, Serialize)]
pub struct SizeBucket {
    pub le: u64,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MallocReport {
    #[serde(flatten)]
    pub header: ReportHeader,
    /// True with --sample-bytes: calls and bytes are estimates (see `sample_bytes`).
    pub sampled: bool,
    /// One sample point per this many bytes allocated, on average (0: every block).
    pub sample_bytes: u64,
    /// Blocks not followed because --max-outstanding were already (their frees then count as
    /// frees of untraced blocks): when non-zero, `outstanding` is a lower bound.
    pub outstanding_dropped: u64,
    /// Blocks of processes that exited (or exec'd another program) while traced: kept as
    /// per-stack totals in `outstanding` (they were never freed), no longer one by one.
    pub exited_blocks: u64,
    /// Allocator calls not followed to their return (the kernel's per-thread table was full).
    pub calls_untracked: u64,
    /// The first allocator hooked (see `allocators` for all), and every function hooked.
    pub library: String,
    pub functions: Vec<String>,
    /// Each allocator hooked: which it is, its file, its functions.
    pub allocators: Vec<HookedAllocator>,
    pub processes: Vec<MallocProcessRow>,
    /// Stack rows in all (merged as --group-by and --by-address say); `stacks` holds the
    /// first --top.
    pub stacks_total: usize,
    pub stacks: Vec<AllocStackRow>,
    /// The stacks with the most temporary blocks (the first --top), and what temporary means:
    /// freed within this many seconds (--temporary).
    pub temporary_stacks: Vec<TemporaryStackRow>,
    pub temporary_s: f64,
    /// Only with --leaks.
    pub outstanding: Vec<OutstandingRow>,
    /// What each process had allocated at its peak, by stack (the first --top), most bytes
    /// first.
    pub peak_stacks: Vec<PeakStackRow>,
    /// Each process's bytes allocated, allocation rate and anonymous RSS over time (every
    /// --interval, or 20 ms doubling on long traces).
    pub timeline: Vec<TimelineSample>,
    pub sizes: Vec<SizeBucket>,
}
