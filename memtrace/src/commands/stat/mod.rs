//! `memtrace stat PID`: a process's memory basics, from procfs only.
pub mod args;
mod table;

use std::io::Write;

use anyhow::Result;
use serde::Serialize;

use self::args::StatArgs;
use crate::{
    commands::options::TableOrJson,
    host::process_memory::ProcessMemory,
    kernel::hooks::CommandHooks,
    output::{files, json},
};

/// Nothing is traced: /proc only.
pub const HOOKS: CommandHooks = CommandHooks::NONE;

/// The JSON report: the reading's fields, and what follows from them.
#[derive(Serialize)]
struct StatReport<'a> {
    command: &'static str,
    #[serde(flatten)]
    memory: &'a ProcessMemory,
    /// The stack's share of its soft limit (null: unlimited).
    stack_used_percent: Option<f64>,
}

pub async fn run(args: StatArgs) -> Result<()> {
    let memory = ProcessMemory::read(args.pid)?;
    let mut out = files::report_writer(args.output.as_deref())?;
    match args.format {
        TableOrJson::Table => table::write(&memory, &mut out)?,
        TableOrJson::Json => json::write_value(
            &StatReport {
                command: "stat",
                memory: &memory,
                stack_used_percent: memory.stack_used_percent(),
            },
            &mut out,
        )?,
    }
    out.flush()?;
    Ok(())
}
