//! `memtrace malloc`'s command line.
use std::{path::PathBuf, time::Duration};

use clap::Args;

use crate::commands::options::{
    parse_duration, parse_sample_bytes, OutputArgs, TargetArgs, UnwindArgs,
};

const MALLOC_HELP: &str = "\
Hooked: malloc, calloc, realloc (realloc(p, 0) frees p; a failed realloc keeps it),
reallocarray, posix_memalign, aligned_alloc, memalign, valloc, pvalloc, free; with --mmap,
the program's own mmap and munmap (a munmap frees the mapping that starts where it starts;
the allocator's own mmaps belong to its blocks and are not counted twice). An allocator
calling its own functions (realloc calling malloc) counts once. A stack's first frame is the
function that called the allocator.

The report: per process, calls to each function and bytes allocated and freed; the stacks
that allocated the most bytes; a histogram of sizes (log2 buckets); with --leaks, the blocks
still allocated when tracing stopped (for a command: when it exited), grouped by stack, with
the age of the oldest. --min-age hides blocks younger than that (in flight, not leaked).
--format folded, --flamegraph and --pprof weigh stacks by bytes: outstanding bytes with
--leaks, allocated bytes without; with --at-peak, the bytes allocated at each process's peak.
The pprof profile is a Go heap profile: alloc_objects, alloc_space, inuse_objects,
inuse_space (`go tool pprof -sample_index=alloc_space`, `-base old.pb.gz` to diff).

Also in the report: each process's peak (when, and the stacks then); lifetimes of the blocks
freed, per stack (log2 buckets), and the stacks whose blocks are temporary (freed within
--temporary) ranked; the heap against RSS (what the allocator keeps resident that no block
uses); and a timeline of bytes allocated, allocation rate and RSS (JSON `timeline`).

The allocators: by default, every one the target uses: libc's, and jemalloc, tcmalloc or
mimalloc, shared (mapped by the process; for a command, among the libraries it needs) or
linked into the executable (its symbol table defines malloc and free, or je_malloc,
_rjem_malloc, mi_malloc: prefixed builds are found by their symbols). The report names each.
jemalloc's mallocx/rallocx/sdallocx, mimalloc's mi_* and C++'s new and delete, when the
allocator defines them, count as malloc, realloc and free. A traced process that maps an
allocator memtrace did not hook (a child running another program, a dlopen) is named in a
warning with the command to trace it. Whole-system traces hook memtrace's own libc.
--lib PATH hooks that library alone; --symbol-prefix overrides the prefix found.

Examples:
  sudo memtrace malloc --leaks -- ./server --once
  sudo memtrace malloc --pid 1234 --leaks --min-age 5s --interval 5s
  sudo memtrace malloc --at-peak --pprof peak.pb.gz -- ./batch-job
  sudo memtrace malloc --pid 1234 --lib /usr/lib/x86_64-linux-gnu/libjemalloc.so.2
  sudo memtrace malloc --format json --output allocs.json -- ./batch-job";

/// Heap allocations per call stack through uprobes on the target's allocators (libc's,
/// jemalloc's, tcmalloc's, mimalloc's malloc and friends), and the blocks never freed (--leaks).
#[derive(Debug, Args)]
#[command(after_help = MALLOC_HELP)]
pub struct MallocArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Stop after this long (e.g. 30s); default: until Ctrl-C or the target exits.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print the stacks holding the most outstanding bytes every DURATION while tracing.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Report the blocks still allocated at the end, by stack.
    #[arg(long)]
    pub leaks: bool,
    /// The profile (--pprof, --flamegraph, --format folded) holds what each process had
    /// allocated at its peak as the in-use values, not what was allocated at the end.
    #[arg(long)]
    pub at_peak: bool,
    /// Also the program's own mmap and munmap calls (not the allocator's), as blocks.
    #[arg(long)]
    pub mmap: bool,
    /// Sample: one point per N bytes allocated on average (Poisson, as jemalloc samples), so
    /// a block of s bytes is seen with probability 1 - exp(-s/N); figures are estimates,
    /// weighted by the inverse. For production: e.g. 524288.
    #[arg(long, value_name = "N", value_parser = parse_sample_bytes)]
    pub sample_bytes: Option<u64>,
    /// Blocks followed at most (the oldest stay; newer ones past this are counted, not kept).
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_outstanding: u64,
    /// Blocks freed within this of their allocation are temporary (counted per stack, and
    /// the stacks with the most are ranked: what churns).
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = parse_duration)]
    pub temporary: Duration,
    /// With --leaks: only blocks at least this old (e.g. 5s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub min_age: Option<Duration>,
    /// The allocator library to hook, alone (default: every allocator the target uses).
    #[arg(long, value_name = "PATH")]
    pub lib: Option<PathBuf>,
    /// Prefix of the allocator's function names (e.g. je_ for je_malloc); default: the
    /// prefix each allocator's own symbols show.
    #[arg(long, value_name = "PREFIX")]
    pub symbol_prefix: Option<String>,
    /// Also write one self-contained HTML page: the heap against RSS over time, each
    /// process's peak and what its allocator retains, the stacks at the peak, the leaks, what
    /// churns, and a flame graph of the heap profile.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub unwind: UnwindArgs,
}
