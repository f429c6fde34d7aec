//! The swap report as a table for people.
use std::io::Write;

use super::report::SwapReport;
use crate::output::text;

pub fn write(report: &SwapReport, out: &mut dyn Write) -> anyhow::Result<()> {
    text::title(out, &report.header)?;
    if !report.per_process_swap {
        writeln!(
            out,
            "NOTE: this kernel's per-process swap counters are not readable (Linux 6.2+): \
             processes show major faults only"
        )?;
    }
    if report.header.lost_events > 0 {
        writeln!(
            out,
            "WARNING: {} events lost: stacks are incomplete",
            report.header.lost_events
        )?;
    }
    let s = &report.system;
    if !s.swap_configured {
        writeln!(out, "no swap is configured: nothing can be swapped")?;
    }
    writeln!(
        out,
        "\nSYSTEM  pswpin {}  pswpout {}  swap used {} of {} KiB  PSI memory some {:.1}% full {:.1}% (avg10)",
        s.pswpin, s.pswpout, s.swap_used_kb, s.swap_total_kb, s.psi_some_avg10, s.psi_full_avg10
    )?;
    match &report.thrashing_detail {
        Some(t) => writeln!(out, "THRASHING at {:.1}s: {}", t.t, t.reason)?,
        None => writeln!(out, "no thrashing")?,
    }

    writeln!(
        out,
        "\nPROCESSES (pages; out = written to swap, unmapped = moved to swap, written or not)"
    )?;
    if report.processes.is_empty() {
        writeln!(out, "  no swap traffic or major faults seen")?;
    } else {
        writeln!(
            out,
            "  {:>7}  {:<16} {:>10} {:>10} {:>10} {:>8} {:>8} {:>10}",
            "PID", "COMM", "OUT", "IN", "UNMAPPED", "FREED", "MAJFLT", "VMSWAP KiB"
        )?;
        for p in &report.processes {
            writeln!(
                out,
                "  {:>7}  {:<16} {:>10} {:>10} {:>10} {:>8} {:>8} {:>10}",
                p.pid,
                p.comm,
                p.swap_out_pages,
                p.swap_in_pages,
                p.swap_out_unmapped_pages,
                p.swap_freed_pages,
                p.major_faults,
                p.vmswap_kb
            )?;
        }
    }

    let mut worst: Vec<_> = report.intervals.iter().collect();
    worst.sort_by_key(|i| std::cmp::Reverse(i.swap_in_pages + i.swap_out_pages));
    writeln!(
        out,
        "\nWORST INTERVALS (traced processes; system in brackets)"
    )?;
    for i in worst
        .iter()
        .take(3)
        .filter(|i| i.swap_in_pages + i.swap_out_pages > 0)
    {
        writeln!(
            out,
            "  at {:>7.1}s  in {:>8} [{}]  out {:>8} [{}]  PSI full {:.1}%",
            i.t, i.swap_in_pages, i.pswpin, i.swap_out_pages, i.pswpout, i.psi_full_avg10
        )?;
    }

    writeln!(out, "\nSWAP-IN STACKS (who waited on pages coming back)")?;
    if report.stacks.is_empty() {
        writeln!(out, "  none")?;
    }
    for (n, stack) in report.stacks.iter().enumerate() {
        writeln!(
            out,
            "#{}  {} major faults  pid {} ({})",
            n + 1,
            stack.count,
            stack.pid,
            stack.comm
        )?;
        for frame in &stack.user_detail {
            writeln!(
                out,
                "    {}+{:#x} ({})",
                frame.name(),
                frame.offset,
                frame.module.as_deref().unwrap_or("?")
            )?;
        }
    }
    for gate in &report.gates {
        writeln!(
            out,
            "\nGATE {}: limit {}, worst {:.0}: {}",
            gate.gate,
            gate.limit,
            gate.worst,
            match gate.at_s {
                Some(at) if gate.failed => format!("FAILED at {at:.1}s"),
                _ => "ok".to_owned(),
            }
        )?;
    }
    Ok(())
}
