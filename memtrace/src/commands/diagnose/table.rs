//! `memtrace diagnose` as text: the verdicts with their evidence and advice, then how the
//! process's memory moved over the window.
use std::io::Write;

use super::report::DiagnoseReport;
use crate::output::text::{self, kib};

pub fn write(report: &DiagnoseReport, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "memtrace diagnose: pid {} ({}), {:.1}s, {} samples",
        report.pid,
        report.comm,
        report.header.duration_s,
        report.samples.len()
    )?;
    writeln!(out, "\nVERDICTS")?;
    if report.verdicts.is_empty() {
        writeln!(out, "  none: nothing in its memory calls for action")?;
    }
    for verdict in &report.verdicts {
        let severity = serde_json::to_value(verdict.severity)?;
        let evidence = match &verdict.evidence {
            serde_json::Value::Object(fields) => fields
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(" "),
            other => other.to_string(),
        };
        writeln!(
            out,
            "  {:<9} {:<17} {evidence}",
            severity.as_str().unwrap_or("?"),
            verdict.id
        )?;
        writeln!(out, "  {:<9} {:<17} {}", "", "", verdict.advice)?;
    }
    if let (Some(first), Some(last)) = (report.samples.first(), report.samples.last()) {
        writeln!(
            out,
            "\nMEMORY (first sample -> last, {:.1}s apart)",
            last.t - first.t
        )?;
        let moved = |what: &str, a: u64, b: u64| format!("  {what:<10} {} -> {}", kib(a), kib(b));
        writeln!(out, "{}", moved("RSS", first.rss_kb, last.rss_kb))?;
        writeln!(
            out,
            "{}",
            moved("anonymous", first.rss_anon_kb, last.rss_anon_kb)
        )?;
        writeln!(out, "{}", moved("VSZ", first.vsz_kb, last.vsz_kb))?;
        writeln!(out, "{}", moved("swap", first.swap_kb, last.swap_kb))?;
        writeln!(out, "{}", moved("stack", first.stack_kb, last.stack_kb))?;
        writeln!(
            out,
            "  {:<10} minor {}, major {} in the window",
            "faults",
            last.minflt.saturating_sub(first.minflt),
            last.majflt.saturating_sub(first.majflt)
        )?;
    }
    if let Some(exit) = &report.header.exit {
        writeln!(out, "\n{}", text::exit_line(exit))?;
    }
    text::cost_line(&report.header.tracer, out)
}
