//! The human report, laid out like perf and the bcc tools: header and warnings, per-process
//! and per-region tables, then the top stacks with symbolized frames.
use std::io::Write;

use super::report::FaultReport;
use crate::output::text;

/// Rows shown in the process and region tables; the rest are counted in a "(N more)" line.
const MAX_ROWS: usize = 20;

/// Writes the report for a terminal, showing the first `top` stacks.
pub fn write(report: &FaultReport, top: usize, out: &mut dyn Write) -> anyhow::Result<()> {
    header(report, out)?;
    processes(report, out)?;
    regions(report, out)?;
    stacks(report, top, out)?;
    text::cost_line(&report.header.tracer, out)
}

/// "~" before estimates: counts rescaled from 1-in-N sampling are not exact.
fn approx(report: &FaultReport) -> &'static str {
    if report.sampled {
        "~"
    } else {
        ""
    }
}

fn header(report: &FaultReport, out: &mut dyn Write) -> anyhow::Result<()> {
    text::title(out, &report.header)?;
    if report.header.lost_events > 0 {
        writeln!(
            out,
            "WARNING: {} events lost (ring buffer full): all figures below are lower bounds",
            report.header.lost_events
        )?;
    }
    if report.sampled {
        writeln!(
            out,
            "NOTE: sampled 1 in {} faults: counts are estimates (marked ~)",
            report.sample_period
        )?;
    }
    if report.stack_errors > 0 {
        writeln!(
            out,
            "WARNING: {} stacks could not be stored (stack map full): those faults have no stack",
            report.stack_errors
        )?;
    }
    Ok(())
}

fn processes(report: &FaultReport, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "\nPROCESSES")?;
    if report.processes.is_empty() {
        writeln!(out, "  no faults seen")?;
        return Ok(());
    }
    let a = approx(report);
    let rows = report.processes.iter().take(MAX_ROWS).map(|p| {
        vec![
            p.pid.to_string(),
            p.comm.clone(),
            format!("{a}{}", p.minor),
            format!("{a}{}", p.major),
            format!("{a}{:.1}", p.minor_per_s),
            format!("{a}{:.1}", p.major_per_s),
        ]
    });
    let head = ["PID", "COMM", "MINOR", "MAJOR", "MINOR/s", "MAJOR/s"];
    write_table(
        out,
        &head,
        &[true, false, true, true, true, true],
        rows.collect(),
    )?;
    more(out, report.processes.len())
}

/// The "(N more)" line under a table cut at MAX_ROWS.
fn more(out: &mut dyn Write, total: usize) -> anyhow::Result<()> {
    if total > MAX_ROWS {
        writeln!(out, "  ({} more)", total - MAX_ROWS)?;
    }
    Ok(())
}

fn regions(report: &FaultReport, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "\nREGIONS")?;
    if report.regions.is_empty() {
        writeln!(out, "  no faults seen")?;
        return Ok(());
    }
    let mut sorted: Vec<_> = report.regions.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.minor + r.major));
    let a = approx(report);
    let rows = sorted.iter().take(MAX_ROWS).map(|r| {
        vec![
            r.pid.to_string(),
            r.region.clone(),
            format!("{a}{}", r.minor),
            format!("{a}{}", r.major),
        ]
    });
    write_table(
        out,
        &["PID", "REGION", "MINOR", "MAJOR"],
        &[true, false, true, true],
        rows.collect(),
    )?;
    more(out, sorted.len())
}

fn stacks(report: &FaultReport, top: usize, out: &mut dyn Write) -> anyhow::Result<()> {
    let shown = top.min(report.stacks.len());
    writeln!(out, "\nSTACKS (top {shown} of {})", report.stacks_total)?;
    if report.stacks.is_empty() {
        writeln!(out, "  no stacks recorded")?;
        return Ok(());
    }
    let a = approx(report);
    for (i, s) in report.stacks.iter().take(top).enumerate() {
        writeln!(
            out,
            "#{}  {}  {a}{} faults  pid {} ({})",
            i + 1,
            s.kind,
            s.count,
            s.pid,
            s.comm
        )?;
        for frame in &s.user_detail {
            writeln!(out, "    {}", frame.line())?;
        }
        if !s.kernel_detail.is_empty() {
            writeln!(out, "    --- kernel ---")?;
            for frame in &s.kernel_detail {
                writeln!(out, "    {}", frame.line())?;
            }
        }
        if s.user_detail.is_empty() && s.kernel_detail.is_empty() {
            writeln!(out, "    (no frames)")?;
        }
    }
    Ok(())
}

/// Columns padded to their widest cell, two spaces apart, indented by two; `right` marks the
/// numeric columns aligned right.
fn write_table(
    out: &mut dyn Write,
    head: &[&str],
    right: &[bool],
    rows: Vec<Vec<String>>,
) -> anyhow::Result<()> {
    let head: Vec<String> = head.iter().map(|h| h.to_string()).collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&head).chain(&rows) {
        let cells: Vec<String> = (row.iter().zip(&widths).zip(right))
            .map(|((cell, &width), &right)| {
                if right {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        writeln!(out, "  {}", cells.join("  ").trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::report::{testdata, RegionRow};
    use super::*;

    fn table(report: &FaultReport, top: usize) -> String {
        let mut out = Vec::new();
        write(report, top, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn shows_sections_and_frames() {
        let text = table(&testdata::report(), 10);
        for expected in [
            "pid 123",
            "exited with status 0",
            "PROCESSES",
            "REGIONS",
            "[heap]",
            "#1  minor  39000 faults  pid 123 (server)",
            "    memset+0x10 (libc.so.6)",
            "    --- kernel ---",
            "    handle_mm_fault+0x40 ([kernel])",
            "    worker+0x1234",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("lower bound"));
        assert!(!text.contains('~'));
    }

    #[test]
    fn columns_align() {
        let text = table(&testdata::report(), 10);
        let lines: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "PROCESSES")
            .skip(1)
            .take(4)
            .collect();
        // Right-aligned: every MAJOR/s cell ends in the same column.
        assert!(
            lines.iter().all(|l| l.len() == lines[0].len()),
            "{lines:#?}"
        );
        assert!(lines[1].contains("123  server  40000"), "{lines:#?}");
    }

    #[test]
    fn warns_on_loss_sampling_and_cuts_regions() {
        let mut report = testdata::report();
        report.header.lost_events = 7;
        report.sampled = true;
        report.sample_period = 10;
        report.stack_errors = 3;
        for i in 0..30 {
            report.regions.push(RegionRow {
                pid: 9,
                region: format!("/lib/{i}.so"),
                minor: 1,
                major: 0,
            });
        }
        let text = table(&report, 1);
        for expected in [
            "7 events lost",
            "lower bounds",
            "1 in 10",
            "estimates",
            "3 stacks",
            "~39000 faults",
            "(13 more)",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("#2"));
    }

    #[test]
    fn empty_sections_say_so() {
        let mut report = testdata::report();
        report.processes.clear();
        report.regions.clear();
        report.stacks.clear();
        let text = table(&report, 10);
        assert_eq!(text.matches("no faults seen").count(), 2, "{text}");
        assert!(text.contains("no stacks recorded"));
    }
}
