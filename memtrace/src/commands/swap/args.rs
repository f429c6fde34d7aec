//! `memtrace swap`'s command line, and when swapping counts as thrashing.
use std::{path::PathBuf, time::Duration};

use clap::Args;

use crate::commands::options::{
    parse_duration, parse_positive, TableOrJson, TargetArgs, UnwindArgs,
};

const SWAP_HELP: &str = "\
What is counted, per process that owns the pages (whoever runs reclaim: kswapd, another
process, or itself), in pages:
  out       pages reclaim sent to swap: written + zero
  written   pages written to swap (the kernel's pswpout)
  zero      zero-filled pages: since Linux 6.12 the kernel marks them in the swap map and
            neither writes nor reads them (swpout_zero, swpin_zero). Told apart per process
            on 6.16+ for pages in a memory cgroup other than the root; \"-\" where not.
  in        pages brought back by the process's swap-in faults: read + zero
  read      pages read back, from disk or still in the swap cache (pswpin counts disk reads)
  unmapped  pages unmapped to swap, written or not: a clean page still in the swap cache
            leaves again without I/O. unmapped - in - freed follows VmSwap.
System figures in the same terms: out = pswpout + swpout_zero, in = pswpin + swpin_zero
(/proc/vmstat), so a process's figure and the system's on one line compare; swap used; PSI
memory some/full (avg10). OOM kills of the traced processes are listed.

Thrashing: one process both swapping out (unmapped) and in at --thrash-rate pages/s or more
(default 100) for --thrash-intervals intervals in a row (default 2), or PSI memory full
avg10 at --thrash-psi-full % or more (default 10).

Gates (exit code 3 when one fails; the report says which and when):
  --max-swap-in-rate N    traced processes' swap-in above N pages/s in any interval
  --max-swap-out-rate N   traced processes' swap-out (out: written + zero) above N pages/s
  --fail-on-thrashing     thrashing was seen

Examples:
  sudo memtrace swap                                   live, system-wide, every second
  sudo memtrace swap --format json -- ./load-test.sh   a load test and its children
  sudo memtrace swap --max-swap-in-rate 1000 --fail-on-thrashing -- ./load-test.sh";

/// Swap traffic per process (credited to the pages' owner), system swap and memory
/// pressure, thrashing; gates for load-test pipelines.
#[derive(Debug, Args)]
#[command(after_help = SWAP_HELP)]
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
    #[arg(short, long, value_enum, default_value_t = TableOrJson::Table)]
    pub format: TableOrJson,
    /// Write the report to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// How many swap-in stacks the report shows.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// Fail (exit 3) when the traced processes swap in faster than this in any interval.
    #[arg(long, value_name = "PAGES_PER_S")]
    pub max_swap_in_rate: Option<f64>,
    /// Fail (exit 3) when the traced processes swap out (out: written + zero) faster than this.
    #[arg(long, value_name = "PAGES_PER_S")]
    pub max_swap_out_rate: Option<f64>,
    /// Fail (exit 3) when thrashing is seen.
    #[arg(long)]
    pub fail_on_thrashing: bool,
    #[command(flatten)]
    pub thrashing: ThrashingArgs,
    #[command(flatten)]
    pub unwind: UnwindArgs,
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
