//! The command line's top: memtrace's name, help and global flags, its subcommands (listed
//! in `commands`, each with its own arguments) and shell completions.
use clap::{CommandFactory, Parser, Subcommand};

use crate::commands;

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
    pub command: CliCommand,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    #[command(flatten)]
    Run(commands::Command),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl CliCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Run(command) => command.run().await,
            Self::Completions { shell } => {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_after_double_dash() {
        let cli = Cli::try_parse_from(["memtrace", "faults", "--", "ls", "-l"]).unwrap();
        let CliCommand::Run(commands::Command::Faults(args)) = cli.command else {
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
        Cli::command().debug_assert();
    }
}
