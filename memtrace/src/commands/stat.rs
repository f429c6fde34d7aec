//! `memtrace stat PID`: a process's memory basics, from procfs only.
use std::io::Write;

use anyhow::Result;
use serde::Serialize;

use crate::{
    cli::{StatArgs, TableOrJson},
    output, outputs,
    process_memory::ProcessMemory,
};

/// The JSON report: the reading's fields, and what follows from them.
#[derive(Serialize)]
struct StatReport<'a> {
    command: &'static str,
    #[serde(flatten)]
    memory: &'a ProcessMemory,
    /// The stack's share of its soft limit (null: unlimited).
    stack_used_percent: Option<f64>,
}

pub fn run(args: &StatArgs) -> Result<()> {
    let memory = ProcessMemory::read(args.pid)?;
    let mut out = outputs::report_writer(args.output.as_deref())?;
    match args.format {
        TableOrJson::Table => output::stat::write(&memory, &mut out)?,
        TableOrJson::Json => output::json::write_value(
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
