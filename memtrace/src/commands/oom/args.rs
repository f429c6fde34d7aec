//! `memtrace oom`'s command line.
use std::{path::PathBuf, time::Duration};

use clap::Args;

use crate::commands::options::{parse_duration, TableOrJson};

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

/// OOM kills as they happen: the victim, its memory, its memory cgroup (limit, usage),
/// and whether a cgroup limit or the whole machine ran out.
#[derive(Debug, Args)]
#[command(after_help = OOM_HELP)]
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
