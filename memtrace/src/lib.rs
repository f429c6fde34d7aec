//! memtrace: who pays for memory, and where. The binary (`main.rs`) only calls [`main`];
//! the library exists so the fuzz targets (`memtrace/fuzz`) can reach the record decoders and
//! the parsers of /proc and /sys text. See `commands/` for the subcommands.
pub mod agent_config;
mod agent_metrics;
mod agent_profile;
mod bpf;
pub mod btf;
mod cli;
pub mod commands;
pub mod container;
mod drain;
mod error;
pub mod events;
mod features;
pub mod gfp;
pub mod kernel_layout;
mod launch;
mod malloc_report;
pub mod memcg;
pub mod mmap_records;
mod oom_report;
mod output;
mod outputs;
mod pages_report;
mod pipeline;
mod probe_site;
pub mod process_memory;
mod processes;
pub mod procmaps;
mod progress;
mod report;
mod session;
mod stacks;
mod swap_report;
mod symbolize;
pub mod sysmem;
pub mod system;
pub mod target;
mod verdicts;
mod watch;

use std::io::ErrorKind;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};

/// Parses the command line, runs it, and exits with its code (see `error::exit`).
pub fn main() -> ! {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => std::process::exit(error::exit::OK),
        Err(err) if is_broken_pipe(&err) => std::process::exit(error::exit::OK),
        Err(err) => {
            eprintln!("memtrace: {err:#}");
            std::process::exit(error::exit_code(&err));
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Faults(args) => commands::faults::run(&args).await,
        Command::Swap(args) => commands::swap::run(&args).await,
        Command::Malloc(args) => commands::malloc::run(&args).await,
        Command::Pages(args) => commands::pages::run(&args).await,
        Command::Oom(args) => commands::oom::run(&args).await,
        Command::Agent(args) => commands::agent::run(&args).await,
        Command::Stat(args) => commands::stat::run(&args),
        Command::Diagnose(args) => commands::diagnose::run(&args).await,
        Command::Check(args) => commands::check::run(&args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "memtrace",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

/// -v: memtrace's own diagnostics and its eBPF programs' log (their records carry memtrace's
/// module paths); -vv: everything, aya's loader included.
fn init_logging(verbose: u8) {
    let (ours, others) = match verbose {
        0 => (log::LevelFilter::Warn, log::LevelFilter::Warn),
        1 => (log::LevelFilter::Debug, log::LevelFilter::Warn),
        _ => (log::LevelFilter::Trace, log::LevelFilter::Trace),
    };
    env_logger::Builder::new()
        .filter_level(others)
        .filter_module("memtrace", ours)
        .format_timestamp(None)
        .parse_env("MEMTRACE_LOG")
        .init();
}

/// `memtrace ... | head` closing the pipe early is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == ErrorKind::BrokenPipe)
}
