//! memtrace: who pays for memory, and where. The binary (`main.rs`) only calls [`main`];
//! the library exists so the fuzz targets (`memtrace/fuzz`) can reach the record decoders and
//! the parsers of /proc and /sys text.
//!
//! The folders follow the data's way: `kernel` loads and attaches the eBPF object and knows
//! this kernel; `trace` is the pipeline every tracing subcommand shares (target, drain,
//! records, processes, stacks, symbols); `host` reads /proc and the cgroup filesystem;
//! `commands/<name>` is one subcommand (its arguments, consumer, report and table); `output`
//! holds the formats and files every subcommand shares; `report` the pieces every report has.
mod cli;
pub mod commands;
mod error;
pub mod host;
pub mod kernel;
mod output;
pub mod python;
mod report;
pub mod trace;
pub mod unwind;

use std::io::{ErrorKind, Write};

use clap::Parser;

use crate::cli::Cli;

/// Parses the command line, runs it, and exits with its code (see `error::exit`).
pub fn main() -> ! {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(problem) = cli::bare_double_dash(&args) {
        eprintln!("memtrace: {problem}");
        std::process::exit(error::exit::USAGE);
    }
    let cli = Cli::parse_from(args);
    init_logging(cli.verbose);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(cli.command.run()));
    match result {
        Ok(()) => std::process::exit(error::exit::OK),
        Err(err) if is_broken_pipe(&err) => std::process::exit(error::exit::OK),
        Err(err) => {
            eprintln!("memtrace: {err:#}");
            std::process::exit(error::exit_code(&err));
        }
    }
}

/// memtrace's one way to speak on stderr besides its progress: `log`. Its warnings read
/// `memtrace: ...`, as its errors do; -v adds its own diagnostics and its eBPF programs' log
/// (their records carry memtrace's module paths); -vv: everything, aya's loader included.
fn init_logging(verbose: u8) {
    let (ours, others) = match verbose {
        0 => (log::LevelFilter::Warn, log::LevelFilter::Warn),
        1 => (log::LevelFilter::Debug, log::LevelFilter::Warn),
        _ => (log::LevelFilter::Trace, log::LevelFilter::Trace),
    };
    env_logger::Builder::new()
        .filter_level(others)
        .filter_module("memtrace", ours)
        .format(|out, record| {
            if record.level() <= log::Level::Warn && record.target().starts_with("memtrace") {
                writeln!(out, "memtrace: {}", record.args())
            } else {
                let (level, target) = (record.level(), record.target());
                writeln!(out, "[{level:<5} {target}] {}", record.args())
            }
        })
        .parse_env("MEMTRACE_LOG")
        .init();
}

/// `memtrace ... | head` closing the pipe early is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == ErrorKind::BrokenPipe)
}
