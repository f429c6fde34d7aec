//! The command line's top: memtrace's name, help and global flags, its subcommands (listed
//! in `commands`, each with its own arguments) and shell completions.
use std::ffi::OsString;

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

/// The problem with a command line that ends in a bare `--`, if it does, for a subcommand that
/// takes `-- COMMAND`. clap reads `--` with nothing after it as no command at all, so
/// `memtrace faults --` would quietly trace the whole system (or ask for --pid, for diagnose)
/// instead of the command the user meant to give. Checked before clap's own parse, so that
/// every such subcommand says the same.
pub fn bare_double_dash(args: &[OsString]) -> Option<String> {
    let dash = args.iter().position(|arg| arg == "--")?;
    if dash + 1 != args.len() {
        return None;
    }
    // What comes before `--` names the subcommand, even when it lacks something it requires.
    let matches = (Cli::command().ignore_errors(true))
        .try_get_matches_from(&args[..dash])
        .ok()?;
    let name = matches.subcommand_name()?;
    let takes_command =
        (Cli::command().find_subcommand(name)?.get_arguments()).any(|arg| arg.is_last_set());
    takes_command.then(|| {
        format!(
            "nothing follows `--`: put the command to trace after it \
             (memtrace {name} -- ./load-test.sh), or leave `--` out"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bare(args: &[&str]) -> Option<String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        bare_double_dash(&args)
    }

    #[test]
    fn a_bare_double_dash_is_refused_where_a_command_may_follow() {
        for name in ["faults", "swap", "malloc", "pages", "oom", "diagnose"] {
            let problem = bare(&["memtrace", name, "--"])
                .unwrap_or_else(|| panic!("memtrace {name} -- was accepted"));
            assert!(
                problem.contains(&format!("memtrace {name} -- ./")),
                "{problem}"
            );
        }
        assert!(bare(&["memtrace", "-v", "faults", "--kind", "major", "--"]).is_some());
        // Diagnose needs --pid without a command: still the `--` is the problem said.
        assert!(bare(&["memtrace", "diagnose", "--duration", "1s", "--"]).is_some());
    }

    #[test]
    fn a_double_dash_with_a_command_or_none_at_all_is_fine() {
        assert_eq!(bare(&["memtrace", "faults", "--", "ls"]), None);
        assert_eq!(
            bare(&["memtrace", "faults", "--", "sh", "-c", "x", "--"]),
            None
        );
        assert_eq!(bare(&["memtrace", "faults"]), None);
        // Subcommands that take no command: clap judges their `--`.
        assert_eq!(bare(&["memtrace", "stat", "1", "--"]), None);
        assert_eq!(bare(&["memtrace", "check", "--"]), None);
    }

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
