//! `memtrace diagnose`'s command line, and the thresholds its verdicts use.
use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser};

use crate::commands::options::{
    parse_duration, parse_fraction, parse_pid, parse_positive, TableOrJson, UnwindArgs,
};

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
A command is watched with every process it starts (--no-follow-children: alone): figures
are the tree's sums (stack and VSZ: its largest member's), and each verdict names the
member with the most resident memory and advises on it. Each verdict names the memtrace
command to run next. Exit code 3 when a warning or critical
verdict is raised (for CI), 0 otherwise.

Examples:
  sudo memtrace diagnose --pid 1234
  sudo memtrace diagnose --duration 60s --format json -- ./load-test.sh";

/// Watches a process (eBPF and /proc samples) and says what is wrong with its memory:
/// verdicts with their evidence and the memtrace command to run next. Exit 3 when a
/// warning or critical verdict is raised.
#[derive(Debug, Args)]
#[command(after_help = DIAGNOSE_HELP)]
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
    /// Watch the command alone, not the processes it starts.
    #[arg(long, conflicts_with = "pid")]
    pub no_follow_children: bool,
    #[command(flatten)]
    pub unwind: UnwindArgs,
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
