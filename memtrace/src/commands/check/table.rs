//! `memtrace check` as a table: the kernel's features, each program's verdict and hook, and
//! what each subcommand can do here.
use std::io::Write;

use anyhow::Result;

use super::CheckReport;

pub fn write(report: &CheckReport, out: &mut dyn Write) -> Result<()> {
    let mark = |ok: bool| if ok { "ok" } else { "MISSING" };
    writeln!(out, "memtrace check: Linux {}", report.kernel)?;
    writeln!(out, "kernel features")?;
    for feature in &report.features {
        writeln!(out, "  {:<8} {}", mark(feature.ok), feature.name)?;
    }
    writeln!(
        out,
        "eBPF programs (loaded so the verifier judges each; none attached)"
    )?;
    for program in &report.programs {
        let verdict = match program.problem() {
            None => "ok".to_string(),
            Some(problem) => problem,
        };
        let hook = (program.tracepoint.as_ref())
            .map(|tp| tp.replacen('/', ":", 1))
            .unwrap_or_default();
        writeln!(
            out,
            "  {:<20} {:<15} {:<32} {verdict}",
            program.load.name, program.load.kind, hook
        )?;
    }
    writeln!(out, "subcommands")?;
    for command in &report.commands {
        let verdict = if !command.ok {
            format!("not here: {}", command.problems.join("; "))
        } else if command.degraded.is_empty() {
            "ok".to_string()
        } else {
            format!("ok, without: {}", command.degraded.join("; "))
        };
        writeln!(out, "  {:<9} {verdict}", command.name)?;
    }
    writeln!(out, "  {:<9} ok (reads /proc only)", "stat")?;
    Ok(())
}
