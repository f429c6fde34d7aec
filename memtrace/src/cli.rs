//! Command-line definitions only: parsing and help text. Validation that needs the system
//! (does the pid exist?) happens in `target`.
use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "Who pays for memory, and where: page faults, swap traffic and heap \
allocations per process and call stack, traced with eBPF.";

const AFTER_HELP: &str = "\
Examples:
  sudo memtrace faults --pid 1234 --duration 10s    faults of a running process for 10 s
  sudo memtrace faults -- ./server --port 8080      trace a command from its first instruction
  sudo memtrace faults --kind major --interval 1s   who waits on disk, live, system-wide
  sudo memtrace faults --pid 1234 --flamegraph faults.svg --pprof faults.pb.gz
  sudo memtrace swap -- ./load-test.sh              who swaps out and in during a load test
  sudo memtrace malloc --leaks -- ./server --once   what a command allocated and never freed
  sudo memtrace pages --duration 10s                which processes take physical pages
  sudo memtrace oom                                 OOM kills as they happen, and why
  sudo memtrace agent                               always-on counters on :9464/metrics
  memtrace stat 1234                                a process's memory basics, from /proc
  sudo memtrace diagnose --pid 1234                 what is wrong with its memory, and what next

Exit codes: 0 ok, 1 runtime failure, 2 usage or bad input, 3 a gate failed (swap) or a
verdict was raised (diagnose), 127 command not found.
memtrace needs root (or CAP_BPF and CAP_PERFMON).";

#[derive(Debug, Parser)]
#[command(name = "memtrace", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    /// Show memtrace's own diagnostics, including the eBPF programs' log (-vv for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Page faults, minor and major, per process, memory region and call stack.
    #[command(after_help = FAULTS_HELP)]
    Faults(Box<FaultsArgs>),
    /// Swap traffic per process (credited to the pages' owner), system swap and memory
    /// pressure, thrashing; gates for load-test pipelines.
    #[command(after_help = SWAP_HELP)]
    Swap(Box<SwapArgs>),
    /// Heap allocations per call stack through uprobes on the allocator (libc's malloc and
    /// friends, or --lib's), and the blocks never freed (--leaks).
    #[command(after_help = MALLOC_HELP)]
    Malloc(Box<MallocArgs>),
    /// Kernel page allocations (kmem:mm_page_alloc) per process, order, GFP flags,
    /// migratetype and call stack; interrupts and kernel threads reported as such.
    #[command(after_help = PAGES_HELP)]
    Pages(Box<PagesArgs>),
    /// OOM kills as they happen: the victim, its memory, its memory cgroup (limit, usage),
    /// and whether a cgroup limit or the whole machine ran out.
    #[command(after_help = OOM_HELP)]
    Oom(Box<OomArgs>),
    /// Always-on, system-wide: faults, swap, OOM kills, RSS (and page allocations) per
    /// process name, cgroup and container, served to Prometheus on /metrics, and sampled
    /// fault stacks as pprof.
    #[command(after_help = AGENT_HELP)]
    Agent(Box<AgentArgs>),
    /// A process's memory basics from /proc (VSZ, RSS by kind, swap, heap, stack against
    /// its limit, threads, mappings, faults, memory cgroup, pressure). No root needed for
    /// one's own processes.
    #[command(after_help = STAT_HELP)]
    Stat(StatArgs),
    /// Watches a process (eBPF and /proc samples) and says what is wrong with its memory:
    /// verdicts with their evidence and the memtrace command to run next. Exit 3 when a
    /// warning or critical verdict is raised.
    #[command(after_help = DIAGNOSE_HELP)]
    Diagnose(Box<DiagnoseArgs>),
    /// What this kernel offers memtrace: the features it needs, every eBPF program loaded
    /// (the verifier's verdict on each, none attached), and which subcommands work here.
    /// Exit 1 when the kernel refuses a program.
    #[command(after_help = CHECK_HELP)]
    Check(CheckArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

const FAULTS_HELP: &str = "\
What is counted:
  minor  a page made present without I/O (first touch of fresh memory, copy-on-write, a page
         already in the page cache). A high rate means allocation churn.
  major  the page had to be read from disk (a file or swap). Any steady rate hurts latency.
  The counts come from the kernel's own fault accounting (perf software events), the same
  place getrusage() and /proc/PID/stat count, so they agree.

Targets (choose one; default: the whole system):
  --pid PID ...       running processes, all their threads
  -- COMMAND ARGS...  start COMMAND, trace it from its first instruction, report when it exits
  --cgroup PATH       every task in a cgroup v2 directory (a container) and below it

The report: per process, per memory region ([heap], [stack], [anon], [vdso], or the mapped
file's path, named by the kernel at fault time; [anon, since unmapped] for anonymous memory
whose mapping was gone before memtrace could read the process's maps, such as freed buffers),
and the top call stacks split minor/major, with user and kernel frames.
Kernel frames appear when the fault was taken inside the kernel (for example read() copying
into untouched memory); a fault taken by user code has only user frames.

Examples:
  sudo memtrace faults --pid 1234 --duration 10s
  sudo memtrace faults --top 5 --stacks user -- ./load-test.sh
  sudo memtrace faults --cgroup /sys/fs/cgroup/system.slice/nginx.service --interval 1s
  sudo memtrace faults --sample 100 --format json --output faults.json
  sudo memtrace faults --pid 1234 --format folded | flamegraph.pl > faults.svg";

const SWAP_HELP: &str = "\
What is counted, per process that owns the pages (whoever runs reclaim: kswapd, another
process, or itself):
  out       pages written to swap (the kernel's pswpout)
  in        pages brought back by the process's swap-in faults (from disk or the swap cache)
  unmapped  pages unmapped to swap, written or not: a clean page still in the swap cache
            leaves again without I/O. unmapped - in - freed follows VmSwap.
System lines: pswpin/s and pswpout/s (/proc/vmstat), swap used, PSI memory some/full (avg10).

Thrashing: one process both swapping out (unmapped) and in at --thrash-rate pages/s or more
(default 100) for --thrash-intervals intervals in a row (default 2), or PSI memory full
avg10 at --thrash-psi-full % or more (default 10).

Gates (exit code 3 when one fails; the report says which and when):
  --max-swap-in-rate N    traced processes' swap-in above N pages/s in any interval
  --max-swap-out-rate N   traced processes' swap-out (written) above N pages/s
  --fail-on-thrashing     thrashing was seen

Examples:
  sudo memtrace swap                                   live, system-wide, every second
  sudo memtrace swap --format json -- ./load-test.sh   a load test and its children
  sudo memtrace swap --max-swap-in-rate 1000 --fail-on-thrashing -- ./load-test.sh";

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
--leaks, allocated bytes without.

The allocator: --lib PATH (jemalloc, tcmalloc, mimalloc...), with --symbol-prefix for
prefixed builds (je_malloc). By default: the libc the target maps (--pid), or the one
memtrace itself uses (a command, system-wide).

Examples:
  sudo memtrace malloc --leaks -- ./server --once
  sudo memtrace malloc --pid 1234 --leaks --min-age 5s --interval 5s
  sudo memtrace malloc --pid 1234 --lib /usr/lib/x86_64-linux-gnu/libjemalloc.so.2
  sudo memtrace malloc --format json --output allocs.json -- ./batch-job";

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

const OOM_HELP: &str = "\
Every OOM kill on the machine (oom:mark_victim), as it happens, on stderr, then the report:
the time, the victim's pid, name and uid, its total VM, anonymous, file and shmem RSS, page
tables and oom_score_adj; its memory cgroup (cgroup v1 or v2) with limit and usage; and the
constraint: cgroup when a memory cgroup's limit was reached (the victim's cgroup or an
ancestor, one with a limit whose failure count or oom events are not zero), system when the
whole machine ran out.

Examples:
  sudo memtrace oom                                   watch until Ctrl-C
  sudo memtrace oom --format json -- ./load-test.sh   the kills during a load test
  sudo memtrace oom --duration 1h --output kills.json --format json";

const STAT_HELP: &str = "\
What it shows (all from /proc/PID and the cgroup filesystem; nothing is traced):
  VSZ       everything mapped, touched or not: large is usually fine (mapped files, arenas)
  RSS       in RAM now: anonymous (heap, stacks), file-backed (code, mapped files), shmem
  swap      memory of the process out in swap (VmSwap)
  heap      resident in the [heap] mapping (brk) and private anonymous mappings
  stack     the main thread's stack mapping (VmStk) against its soft RLIMIT_STACK
  faults    minor and major since the process started
  cgroup    its memory cgroup (v1 or v2): limit, usage, headroom
  pressure  PSI memory some/full (10 s average): the cgroup's on v2, else the machine's

Examples:
  memtrace stat 1234
  memtrace stat --format json $(pidof nginx | cut -d' ' -f1)";

const DIAGNOSE_HELP: &str = "\
Verdicts (id, severity: what the evidence says):
  heap-growth       warning   resident anonymous memory rises along a line after the warm-up:
                              slope >= --heap-growth MiB/min and r2 >= --heap-growth-r2 (a
                              single big allocation is a step, which no line fits: r2 <= 0.75)
  stack-near-limit  warning / critical  the main stack at --stack-percent / --stack-critical-percent
                              of its soft RLIMIT_STACK: recursion too deep
  rss-near-limit    warning / critical  its memory cgroup's usage at --limit-percent /
                              --limit-critical-percent of the limit: an OOM kill ahead
  high-vsz          info      VSZ >= --high-vsz GiB and 10x RSS: usually fine (reserved, mapped)
  allocation-churn  warning   minor faults >= --minor-faults-per-s after the warm-up, in half
                              the intervals or more (one big allocation is a single burst)
  major-faults      warning   major faults >= --major-faults-per-s, in half the intervals or more
  swap-thrashing    critical  its pages swapped out and in, both >= --thrash-rate pages/s, for
                              --thrash-intervals intervals in a row
Each verdict names the memtrace command to run next. Exit code 3 when a warning or critical
verdict is raised (for CI), 0 otherwise.

Examples:
  sudo memtrace diagnose --pid 1234
  sudo memtrace diagnose --duration 60s --format json -- ./load-test.sh";

const AGENT_HELP: &str = "\
Runs until SIGTERM or Ctrl-C, system-wide, and serves (read-only):
  /metrics   Prometheus text. Per (comm, cgroup) series, with container_id and pod_uid
             labels read from the cgroup path:
               memtrace_page_faults_total{kind=\"minor\"|\"major\"}
               memtrace_swap_pages_total{direction=\"out\"|\"in\"}  (with swap)
               memtrace_pages_allocated_total, memtrace_page_allocations_total
                                                    (with page_allocations = true)
               memtrace_oom_kills_total
               memtrace_process_rss_bytes, memtrace_process_swap_bytes  (gauges, the
                 largest max_series series; a pid label with pid_labels = true)
             The agent's own: memtrace_lost_events_total, memtrace_bpf_run_seconds_total,
             memtrace_agent_rss_bytes, memtrace_bpf_map_entries{map},
             memtrace_uncounted_page_allocations_total, memtrace_agent_processes_held,
             memtrace_profile_stacks, memtrace_stack_table_clears_total
  /pprof/faults?seconds=N
             gzip'd pprof of the fault stacks sampled in the last N seconds (default 60;
             1 fault in stack_sample; ten minutes kept), for go tool pprof, Pyroscope, Parca
  /healthz   ok

What it costs: faults are the kernel's own per-task counts (read from /proc each second,
and at each process's exit): nothing runs per fault but 1 in stack_sample, for the
stacks. Page allocations and swap need a program on every event: page allocations are
off unless asked for; swap counting starts once the host has swap (swap = \"auto\").

Counters stay monotonic when processes exit (their counts stay in their series). Series
are bounded: the first max_series (comm, cgroup) pairs get their own, later ones add to
comm=\"other\"; a series idle for five minutes gives its place up.

Listens on 127.0.0.1:9464 unless told otherwise; another address needs --allow-remote.

Config file (TOML, every key optional; the command line wins; deploy/agent.toml):
  listen = \"127.0.0.1:9464\"
  allow_remote = false
  max_series = 200
  stack_sample = 1000
  page_allocations = false   # true: a program on every page allocation
  swap = \"auto\"              # true | false | \"auto\": once the host has swap
  bpf_stats = true           # the kernel's eBPF run-time statistics (times every
                             # eBPF program on the host while the agent runs)
  pid_labels = false         # true: the memory gauges get a pid label

Examples:
  sudo memtrace agent
  sudo memtrace agent --config /etc/memtrace/agent.toml";

/// Which processes to trace. Shared by every tracing subcommand.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Trace this process (all its threads); repeat for several.
    #[arg(short, long = "pid", value_name = "PID", value_parser = parse_pid)]
    pub pids: Vec<u32>,
    /// Trace every task in this cgroup v2 directory and below it (e.g. a container).
    #[arg(long, value_name = "PATH", conflicts_with = "pids")]
    pub cgroup: Option<PathBuf>,
    /// Also trace processes that the targets fork after tracing starts.
    #[arg(long)]
    pub follow_children: bool,
    /// The command to start and trace (after `--`).
    #[arg(last = true, value_name = "COMMAND", conflicts_with_all = ["pids", "cgroup"])]
    pub command: Vec<String>,
}

/// How long to trace and how to show progress.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Stop after this long (e.g. 500ms, 10s, 2m); default: until Ctrl-C or the target exits.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print one line per process every DURATION while tracing (e.g. 1s).
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,
}

/// Where and how to write the report.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Report format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the report to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write an interactive flame graph of the stacks (SVG).
    #[arg(long, value_name = "FILE.svg")]
    pub flamegraph: Option<PathBuf>,
    /// Also write the stacks as a gzip'd pprof profile (for go tool pprof, Pyroscope, Parca).
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,
    /// How many call stacks the table and JSON show.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
}

#[derive(Debug, Args)]
pub struct FaultsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Which faults to trace.
    #[arg(short, long, value_enum, default_value_t = Kind::All)]
    pub kind: Kind,
    /// Which call stacks to record per fault.
    #[arg(short, long, value_enum, default_value_t = Stacks::Both)]
    pub stacks: Stacks,
    /// Trace 1 in N faults (counts are rescaled by N and marked as estimates).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: u64,
    /// The kernel-to-memtrace ring buffer's size (a power of two: 64K, 8M, 64M). Larger
    /// rides out longer bursts; a full ring loses events, which the report counts.
    #[arg(long, value_name = "SIZE", default_value = "8M", value_parser = parse_ring_size)]
    pub ring_buffer: u32,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
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
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: u64,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Serve on this address (default 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// Allow an address other than loopback.
    #[arg(long)]
    pub allow_remote: bool,
    /// Settings file (TOML; see below).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Stop after this long (default: until SIGTERM or Ctrl-C).
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// The process to watch.
    #[arg(short, long, value_name = "PID", value_parser = parse_pid, required_unless_present = "command")]
    pub pid: Option<u32>,
    /// Watch for this long (or until the process exits).
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub duration: Duration,
    /// Sample /proc this often.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration, default_value = "500ms")]
    pub interval: Duration,
    /// Report format.
    #[arg(short, long, value_enum, default_value_t = TableOrJson::Table)]
    pub format: TableOrJson,
    /// Write the report to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write one self-contained HTML page: memory and fault rates over time, the
    /// verdicts, a flame graph of the faults (sampled: 1 minor fault in 100, every major).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    #[command(flatten)]
    pub thresholds: DiagnoseThresholds,
    /// Start this command and watch it (after `--`).
    #[arg(last = true, value_name = "COMMAND", conflicts_with = "pid")]
    pub command: Vec<String>,
}

/// When a verdict is raised (see `memtrace diagnose --help`).
#[derive(Debug, Clone, Args)]
pub struct DiagnoseThresholds {
    /// The first share of the window is warm-up: growth and fault rates count after it.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.25, value_parser = parse_fraction)]
    pub warmup: f64,
    /// heap-growth: resident anonymous memory rising at least this fast...
    #[arg(long, value_name = "MIB_PER_MIN", default_value_t = 1.0, value_parser = parse_positive)]
    pub heap_growth_mib_per_min: f64,
    /// ...along a line this good (r², 0-1).
    #[arg(long, value_name = "R2", default_value_t = 0.9, value_parser = parse_fraction)]
    pub heap_growth_r2: f64,
    #[arg(long, value_name = "PERCENT", default_value_t = 80.0, value_parser = parse_positive)]
    pub stack_percent: f64,
    #[arg(long, value_name = "PERCENT", default_value_t = 95.0, value_parser = parse_positive)]
    pub stack_critical_percent: f64,
    #[arg(long, value_name = "PERCENT", default_value_t = 90.0, value_parser = parse_positive)]
    pub limit_percent: f64,
    #[arg(long, value_name = "PERCENT", default_value_t = 98.0, value_parser = parse_positive)]
    pub limit_critical_percent: f64,
    #[arg(long, value_name = "GIB", default_value_t = 10.0, value_parser = parse_positive)]
    pub high_vsz_gib: f64,
    #[arg(long, value_name = "N", default_value_t = 10_000.0, value_parser = parse_positive)]
    pub minor_faults_per_s: f64,
    #[arg(long, value_name = "N", default_value_t = 5.0, value_parser = parse_positive)]
    pub major_faults_per_s: f64,
    #[arg(long, value_name = "PAGES_PER_S", default_value_t = 100.0, value_parser = parse_positive)]
    pub thrash_rate: f64,
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub thrash_intervals: u32,
}

impl Default for DiagnoseThresholds {
    /// The command line's defaults.
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            thresholds: DiagnoseThresholds,
        }
        Defaults::parse_from(["memtrace"]).thresholds
    }
}

#[derive(Debug, Args)]
pub struct StatArgs {
    /// The process to show.
    #[arg(value_name = "PID", value_parser = parse_pid)]
    pub pid: u32,
    /// Report format.
    #[arg(short, long, value_enum, default_value_t = TableOrJson::Table)]
    pub format: TableOrJson,
    /// Write the report to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Report format.
    #[arg(short, long, value_enum, default_value_t = TableOrJson::Table)]
    pub format: TableOrJson,
    /// Write the report to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

const CHECK_HELP: &str = "\
Run it first on a new kernel, or when a subcommand fails to start. It needs root (it loads
eBPF programs) and changes nothing: no program is attached, and all are unloaded on exit.

A subcommand is 'ok' when every program it uses passed the verifier, every tracepoint it
attaches to exists, and the kernel structures it reads were found in the kernel's BTF;
'ok, without: ...' when it runs but leaves out what the kernel lacks (and says so when run);
otherwise 'not here', with what is missing. memtrace supports Linux 6.1 and later (see the
README); `memtrace swap` needs 6.2+ for per-process figures.

Examples:
  sudo memtrace check
  sudo memtrace check --format json | jq '.commands[] | select(.ok | not)'";

#[derive(Debug, Args)]
pub struct OomArgs {
    /// Stop after this long (e.g. 30s); default: until Ctrl-C or the command exits.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Report format.
    #[arg(short, long, value_enum, default_value_t = TableOrJson::Table)]
    pub format: TableOrJson,
    /// Write the report to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Run this command and watch while it runs (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableOrJson {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct SwapArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Stop after this long (e.g. 30s); default: until Ctrl-C or the target exits.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print the live table every DURATION.
    #[arg(short, long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Report format.
    #[arg(short, long, value_enum, default_value_t = SwapFormat::Table)]
    pub format: SwapFormat,
    /// Write the report to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// How many swap-in stacks the report shows.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// Fail (exit 3) when the traced processes swap in faster than this in any interval.
    #[arg(long, value_name = "PAGES_PER_S")]
    pub max_swap_in_rate: Option<f64>,
    /// Fail (exit 3) when the traced processes swap out (written) faster than this.
    #[arg(long, value_name = "PAGES_PER_S")]
    pub max_swap_out_rate: Option<f64>,
    /// Fail (exit 3) when thrashing is seen.
    #[arg(long)]
    pub fail_on_thrashing: bool,
    #[command(flatten)]
    pub thrashing: ThrashingArgs,
}

/// When swapping counts as thrashing (see `memtrace swap --help`).
#[derive(Debug, Clone, Copy, Args, serde::Serialize)]
pub struct ThrashingArgs {
    /// Thrashing: one process swapping both out and in at this many pages/s or more...
    #[arg(long, value_name = "PAGES_PER_S", default_value_t = 100.0, value_parser = parse_positive)]
    pub thrash_rate: f64,
    /// ...for this many intervals in a row.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub thrash_intervals: u32,
    /// Thrashing too: PSI memory "full" avg10 (every non-idle task stalled) at this % or more.
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0, value_parser = parse_positive)]
    pub thrash_psi_full: f64,
}

#[derive(Debug, Args)]
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
    /// Also the program's own mmap and munmap calls (not the allocator's), as blocks.
    #[arg(long)]
    pub mmap: bool,
    /// Sample: one point per N bytes allocated on average (Poisson, as jemalloc samples), so
    /// a block of s bytes is seen with probability 1 - exp(-s/N); figures are estimates,
    /// weighted by the inverse. For production: e.g. 524288.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub sample_bytes: Option<u64>,
    /// Blocks followed at most (the oldest stay; newer ones past this are counted, not kept).
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_outstanding: u64,
    /// With --leaks: only blocks at least this old (e.g. 5s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub min_age: Option<Duration>,
    /// The allocator library to hook (default: the target's libc).
    #[arg(long, value_name = "PATH")]
    pub lib: Option<PathBuf>,
    /// Prefix of the allocator's function names (e.g. je_ for je_malloc).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub symbol_prefix: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SwapFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Minor,
    Major,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stacks {
    User,
    Kernel,
    Both,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Folded,
}

fn parse_positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value > 0.0 && value.is_finite() => Ok(value),
        _ => Err(format!("{text} is not a positive number")),
    }
}

fn parse_pid(text: &str) -> Result<u32, String> {
    match text.parse::<i64>() {
        Ok(pid) if pid > 0 && pid <= i64::from(i32::MAX) => Ok(pid as u32),
        Ok(_) => Err(format!("{text} is not a process id (pids are positive)")),
        Err(_) => Err(format!(
            "{text} is not a process id (expected a number, e.g. 1234)"
        )),
    }
}

/// A ring buffer size: a power of two from 4K (a page) to 1G, with an optional K, M or G.
fn parse_ring_size(text: &str) -> Result<u32, String> {
    let upper = text.trim().to_ascii_uppercase();
    let (digits, scale) = match upper.trim_end_matches('B').chars().last() {
        Some('K') => (&upper[..upper.find('K').unwrap_or(0)], 1u64 << 10),
        Some('M') => (&upper[..upper.find('M').unwrap_or(0)], 1 << 20),
        Some('G') => (&upper[..upper.find('G').unwrap_or(0)], 1 << 30),
        _ => (upper.as_str(), 1),
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&b| b.is_power_of_two() && (4096..=1 << 30).contains(&b))
        .ok_or_else(|| {
            format!("{text} is not a ring buffer size: a power of two from 4K to 1G (64K, 8M)")
        })?;
    Ok(bytes as u32)
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("{text} is not a fraction between 0 and 1")),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|err| format!("{text:?} is not a duration ({err}); try 500ms, 10s or 2m"))?;
    if duration.is_zero() {
        return Err("a duration must be more than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_must_be_positive_numbers() {
        assert_eq!(parse_pid("1234"), Ok(1234));
        assert!(parse_pid("0").is_err());
        assert!(parse_pid("-5").is_err());
        assert!(parse_pid("abc").is_err());
        assert!(parse_pid("99999999999").is_err());
    }

    #[test]
    fn ring_sizes_are_powers_of_two_in_range() {
        assert_eq!(parse_ring_size("4K"), Ok(4096));
        assert_eq!(parse_ring_size("8M"), Ok(8 << 20));
        assert_eq!(parse_ring_size("64kb"), Ok(64 << 10));
        assert_eq!(parse_ring_size("1G"), Ok(1 << 30));
        for bad in ["3K", "2K", "2G", "", "M", "-8M", "eight"] {
            assert!(parse_ring_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_are_human() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn command_after_double_dash() {
        let cli = Cli::try_parse_from(["memtrace", "faults", "--", "ls", "-l"]).unwrap();
        let Command::Faults(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.target.command, ["ls", "-l"]);
    }

    #[test]
    fn pid_and_command_conflict() {
        assert!(Cli::try_parse_from(["memtrace", "faults", "--pid", "1", "--", "ls"]).is_err());
    }

    #[test]
    fn definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
