//! The subcommands, one folder each: its arguments (`args.rs`, with its help), its `run`, the
//! hooks it uses (`HOOKS`), its consumer of records, its report and its table. What several
//! share sits below them (`options`, `trace`, `output`, ...), never in another subcommand. A
//! new subcommand is a folder, its `mod` line and its line in `subcommands!` below.
pub mod agent;
pub mod check;
pub mod diagnose;
pub mod faults;
pub mod malloc;
pub mod oom;
pub mod options;
pub mod pages;
pub mod stat;
pub mod swap;

use crate::kernel::hooks::CommandHooks;

/// Declares the subcommands: the CLI's list of them (each variant's help comes from its
/// arguments' doc comment), how each runs, and the hooks each uses (for `memtrace check`).
macro_rules! subcommands {
    ($($variant:ident($module:ident::$args:ident)),* $(,)?) => {
        #[derive(Debug, clap::Subcommand)]
        pub enum Command {
            $($variant(Box<$module::args::$args>),)*
        }

        impl Command {
            pub async fn run(self) -> anyhow::Result<()> {
                match self {
                    $(Self::$variant(args) => $module::run(*args).await,)*
                }
            }
        }

        /// Each subcommand's name and the hooks it uses, in the order of `--help`.
        pub const SUBCOMMANDS: &[(&str, &CommandHooks)] = &[$((stringify!($module), &$module::HOOKS),)*];
    };
}

subcommands! {
    Faults(faults::FaultsArgs),
    Swap(swap::SwapArgs),
    Malloc(malloc::MallocArgs),
    Pages(pages::PagesArgs),
    Oom(oom::OomArgs),
    Agent(agent::AgentArgs),
    Stat(stat::StatArgs),
    Diagnose(diagnose::DiagnoseArgs),
    Check(check::CheckArgs),
}
