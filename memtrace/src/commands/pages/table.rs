//! The pages report as a table for people.
use std::io::Write;

use super::report::PagesReport;
use crate::output::text;

/// Processes shown in the table (the JSON has them all).
const TABLE_PROCESSES: usize = 20;

pub fn write(report: &PagesReport, top: usize, out: &mut dyn Write) -> anyhow::Result<()> {
    text::title(out, &report.header)?;
    if report.sampled {
        writeln!(
            out,
            "stacks sampled 1 in {}: pages per stack are estimates; the other figures are exact",
            report.sample_period
        )?;
    }
    if report.header.lost_events > 0 || report.counts_full > 0 {
        writeln!(
            out,
            "WARNING: {} events lost and {} allocations not counted (table full): every figure \
             is a lower bound",
            report.header.lost_events, report.counts_full
        )?;
    }
    let total: u64 = report.processes.iter().map(|p| p.pages).sum();
    writeln!(
        out,
        "{total} pages ({:.1} MiB) allocated",
        total as f64 * 4096.0 / (1 << 20) as f64
    )?;
    writeln!(out, "\nWHO ALLOCATES")?;
    writeln!(
        out,
        "  {:>7}  {:<16} {:<13} {:>10} {:>12} {:>10}",
        "PID", "COMM", "CONTEXT", "PAGES", "ALLOCATIONS", "PAGES/S"
    )?;
    for p in report.processes.iter().take(TABLE_PROCESSES) {
        writeln!(
            out,
            "  {:>7}  {:<16} {:<13} {:>10} {:>12} {:>10.0}",
            p.pid, p.comm, p.context, p.pages, p.allocations, p.pages_per_s
        )?;
    }
    writeln!(out, "\nORDERS (2^order pages each)")?;
    for o in &report.orders {
        writeln!(
            out,
            "  order {:>2}: {:>10} allocations, {:>10} pages",
            o.order, o.allocations, o.pages
        )?;
    }
    writeln!(out, "\nGFP FLAGS")?;
    for g in &report.gfp {
        writeln!(out, "  {:>10} pages  {}", g.pages, g.flags)?;
    }
    writeln!(out, "\nMIGRATETYPES")?;
    for m in &report.migratetypes {
        writeln!(out, "  {:>10} pages  {}", m.pages, m.migratetype)?;
    }
    let shown = top.min(report.stacks.len());
    writeln!(
        out,
        "\nTOP STACKS (by pages; top {shown} of {})",
        report.stacks_total
    )?;
    if report.stacks.is_empty() {
        writeln!(out, "  none recorded (--stacks none)")?;
    }
    for (n, row) in report.stacks.iter().take(top).enumerate() {
        writeln!(
            out,
            "#{}  {} pages in {} allocations  pid {} ({}, {})",
            n + 1,
            row.pages,
            row.stack.count,
            row.stack.pid,
            row.stack.comm,
            row.context
        )?;
        for frame in &row.stack.user_detail {
            writeln!(out, "    {}", frame.line())?;
        }
        for frame in &row.stack.kernel_detail {
            writeln!(out, "    [k] {}", frame.line())?;
        }
    }
    Ok(())
}
