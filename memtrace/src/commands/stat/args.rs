//! `memtrace stat`'s command line.
use std::path::PathBuf;

use clap::Args;

use crate::commands::options::{parse_pid, TableOrJson};

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

/// A process's memory basics from /proc (VSZ, RSS by kind, swap, heap, stack against
/// its limit, threads, mappings, faults, memory cgroup, pressure). No root needed for
/// one's own processes.
#[derive(Debug, Args)]
#[command(after_help = STAT_HELP)]
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
