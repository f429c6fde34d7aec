//! The malloc report as a table for people, and as folded stacks (bytes per stack).
use std::io::Write;

use super::profile::StackProfile;
use crate::{malloc_report::MallocReport, report::StackRow};

pub fn write(report: &MallocReport, out: &mut dyn Write) -> anyhow::Result<()> {
    super::title(
        out,
        report.command,
        &report.target,
        report.duration_s,
        report.exit.as_ref(),
    )?;
    writeln!(
        out,
        "allocator: {} ({})",
        report.library,
        report.functions.join(", ")
    )?;
    if report.sampled {
        writeln!(
            out,
            "sampled: one point per {} bytes allocated on average; calls and bytes are estimates",
            report.sample_bytes
        )?;
    }
    if report.lost_events > 0 {
        writeln!(
            out,
            "WARNING: {} events lost: every figure is a lower bound",
            report.lost_events
        )?;
    }
    if report.outstanding_dropped > 0 || report.calls_untracked > 0 {
        writeln!(
            out,
            "WARNING: {} blocks past --max-outstanding and {} calls not followed to their return: \
             outstanding figures are lower bounds",
            report.outstanding_dropped, report.calls_untracked
        )?;
    }
    writeln!(out, "\nPROCESSES")?;
    if report.processes.is_empty() {
        writeln!(out, "  no allocations seen")?;
    } else {
        writeln!(
            out,
            "  {:>7}  {:<16} {:>10} {:>10} {:>10} {:>10} {:>14} {:>14}",
            "PID", "COMM", "MALLOC", "CALLOC", "REALLOC", "FREE", "ALLOCATED B", "FREED B"
        )?;
        for p in &report.processes {
            writeln!(
                out,
                "  {:>7}  {:<16} {:>10} {:>10} {:>10} {:>10} {:>14} {:>14}",
                p.pid,
                p.comm,
                p.malloc_calls,
                p.calloc_calls,
                p.realloc_calls,
                p.free_calls,
                p.bytes_allocated,
                p.bytes_freed
            )?;
        }
    }
    writeln!(out, "\nTOP ALLOCATING STACKS (by bytes)")?;
    for (n, row) in report.stacks.iter().enumerate() {
        writeln!(
            out,
            "#{}  {} bytes in {} calls  pid {} ({})",
            n + 1,
            row.bytes,
            row.calls,
            row.stack.pid,
            row.stack.comm
        )?;
        write_frames(out, &row.stack.frames)?;
    }
    if !report.outstanding.is_empty() {
        writeln!(out, "\nOUTSTANDING (allocated, never freed)")?;
        for (n, row) in report.outstanding.iter().enumerate() {
            writeln!(
                out,
                "#{}  {} bytes in {} blocks, oldest {:.1}s  pid {} ({})",
                n + 1,
                row.bytes,
                row.allocations,
                row.oldest_age_s,
                row.stack.pid,
                row.stack.comm
            )?;
            write_frames(out, &row.stack.frames)?;
        }
    }
    writeln!(out, "\nSIZES (bytes: calls)")?;
    for bucket in &report.sizes {
        writeln!(out, "  <= {:>12}: {}", bucket.le, bucket.count)?;
    }
    Ok(())
}

fn write_frames(out: &mut dyn Write, frames: &[String]) -> anyhow::Result<()> {
    for frame in frames {
        writeln!(out, "    {frame}")?;
    }
    Ok(())
}

/// The report's stacks weighed by bytes, for the stack sinks (folded, flame graph, pprof):
/// outstanding bytes when looking for leaks, allocated bytes otherwise.
pub struct ByteStacks<'a> {
    report: &'a MallocReport,
    rows: Vec<StackRow>,
}

impl<'a> ByteStacks<'a> {
    pub fn of(report: &'a MallocReport, leaks: bool) -> Self {
        let rows = if leaks {
            (report.outstanding.iter())
                .map(|r| with_count(&r.stack, r.bytes))
                .collect()
        } else {
            (report.stacks.iter())
                .map(|r| with_count(&r.stack, r.bytes))
                .collect()
        };
        Self { report, rows }
    }
}

fn with_count(row: &StackRow, count: u64) -> StackRow {
    StackRow {
        count,
        ..row.clone()
    }
}

impl StackProfile for ByteStacks<'_> {
    fn command(&self) -> &str {
        self.report.command
    }
    fn target(&self) -> &str {
        &self.report.target
    }
    fn duration_s(&self) -> f64 {
        self.report.duration_s
    }
    fn lost_events(&self) -> u64 {
        self.report.lost_events
    }
    fn stacks(&self) -> &[StackRow] {
        &self.rows
    }
    fn sample_type(&self) -> (&'static str, &'static str) {
        ("space", "bytes")
    }
    fn period(&self) -> u64 {
        self.report.sample_bytes.max(1)
    }
    fn sampling_note(&self) -> Option<String> {
        self.report.sampled.then(|| {
            format!(
                "sampled: one point per {} bytes on average; bytes are estimates",
                self.report.sample_bytes
            )
        })
    }
}
