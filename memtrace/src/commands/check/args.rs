//! `memtrace check`'s command line.
use std::path::PathBuf;

use clap::Args;

use crate::commands::options::TableOrJson;

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

/// What this kernel offers memtrace: the features it needs, every eBPF program loaded
/// (the verifier's verdict on each, none attached), and which subcommands work here.
/// Exit 1 when the kernel refuses a program.
#[derive(Debug, Args)]
#[command(after_help = CHECK_HELP)]
pub struct CheckArgs {
    /// Report format.
    #[arg(short, long, value_enum, default_value_t = TableOrJson::Table)]
    pub format: TableOrJson,
    /// Write the report to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}
