//! The swap report as a table for people.
use std::io::Write;

use super::{
    figures::{cell, SwapFigures},
    report::{SwapInterval, SwapReport},
};
use crate::output::text;

/// Intervals shown as the worst, by traffic (plus any a gate failed in).
const WORST: usize = 3;

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
    let f = &s.figures;
    writeln!(
        out,
        "\nSYSTEM  out {}  in {}  (pswpout {}, pswpin {})  swap used {} of {} KiB  PSI memory \
         some {:.1}% full {:.1}% (avg10)",
        split(f.swap_out_pages, f.swap_out_zero_pages, "written"),
        split(f.swap_in_pages, f.swap_in_zero_pages, "read"),
        s.pswpout,
        s.pswpin,
        s.swap_used_kb,
        s.swap_total_kb,
        s.psi_some_avg10,
        s.psi_full_avg10
    )?;
    match &report.thrashing_detail {
        Some(t) => writeln!(out, "THRASHING at {:.1}s: {}", t.t, t.reason)?,
        None => writeln!(out, "no thrashing")?,
    }

    writeln!(
        out,
        "\nPROCESSES (pages, credited to their owner; out = written + zero; in = read (from \
         disk or the swap cache) + zero;\n  zero: zero-filled pages the kernel marks in the swap \
         map, neither written nor read (Linux 6.12+); unmapped: moved to swap, written or not)"
    )?;
    if report.per_process_swap && !report.per_process_zero_pages {
        writeln!(
            out,
            "  (zero pages are not told apart per process on this kernel: \"-\", and out and in \
             include any)"
        )?;
    }
    if report.processes.is_empty() {
        writeln!(out, "  no swap traffic or major faults seen")?;
    } else {
        writeln!(
            out,
            "  {:>7}  {:<16} {:>9} {:>9} {:>8} {:>9} {:>9} {:>8} {:>9} {:>8} {:>8} {:>10}",
            "PID",
            "COMM",
            "OUT",
            "WRITTEN",
            "ZERO",
            "IN",
            "READ",
            "ZERO",
            "UNMAPPED",
            "FREED",
            "MAJFLT",
            "VMSWAP KiB"
        )?;
        for p in &report.processes {
            let f = &p.figures;
            writeln!(
                out,
                "  {:>7}  {:<16} {:>9} {:>9} {:>8} {:>9} {:>9} {:>8} {:>9} {:>8} {:>8} {:>10}",
                p.pid,
                p.comm,
                f.swap_out_pages,
                cell(f.written()),
                cell(f.swap_out_zero_pages),
                f.swap_in_pages,
                cell(f.read()),
                cell(f.swap_in_zero_pages),
                p.swap_out_unmapped_pages,
                p.swap_freed_pages,
                p.major_faults,
                p.vmswap_kb
            )?;
        }
    }

    writeln!(
        out,
        "\nWORST INTERVALS (traced processes; the system's in brackets; zero pages after /)"
    )?;
    for (i, gates) in worst_intervals(report) {
        let (t, s) = (&i.traced, &i.system);
        let failed: Vec<String> = gates.iter().map(|g| format!("  <- {g} failed")).collect();
        writeln!(
            out,
            "  at {:>7.1}s  out {:>8}/{} [{}/{}]  in {:>8}/{} [{}/{}]  PSI full {:.1}%{}",
            i.t,
            t.swap_out_pages,
            cell(t.swap_out_zero_pages),
            s.swap_out_pages,
            cell(s.swap_out_zero_pages),
            t.swap_in_pages,
            cell(t.swap_in_zero_pages),
            s.swap_in_pages,
            cell(s.swap_in_zero_pages),
            i.psi_full_avg10,
            failed.concat()
        )?;
    }

    writeln!(out, "\nOOM KILLS (traced processes)")?;
    if report.oom_kills.is_empty() {
        writeln!(out, "  none")?;
    }
    for kill in &report.oom_kills {
        writeln!(
            out,
            "  at {:>7.1}s  pid {} ({})  memory cgroup {}",
            kill.at_s,
            kill.pid,
            kill.comm,
            kill.memcg.as_deref().unwrap_or("unknown")
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
            writeln!(out, "    {}", frame.line())?;
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

/// "total (written N + zero M)", or the total alone where zero pages are not counted.
fn split(total: u64, zero: Option<u64>, other: &str) -> String {
    match zero {
        Some(zero) => format!("{total} ({other} {} + zero {zero})", total - zero),
        None => total.to_string(),
    }
}

/// The intervals with the most traffic, and every one a gate failed in (with those gates),
/// busiest first.
fn worst_intervals(report: &SwapReport) -> Vec<(&SwapInterval, Vec<&str>)> {
    let traffic = |f: &SwapFigures| f.swap_in_pages + f.swap_out_pages;
    let mut busiest: Vec<&SwapInterval> = report
        .intervals
        .iter()
        .filter(|i| traffic(&i.traced) > 0)
        .collect();
    busiest.sort_by_key(|i| std::cmp::Reverse(traffic(&i.traced)));
    busiest.truncate(WORST);
    let mut shown: Vec<(&SwapInterval, Vec<&str>)> = report
        .intervals
        .iter()
        .filter_map(|i| {
            let gates: Vec<&str> = (report.gates.iter())
                .filter(|g| g.failed && g.at_s == Some(i.t))
                .map(|g| g.gate)
                .collect();
            let busy = busiest.iter().any(|b| std::ptr::eq(*b, i));
            (busy || !gates.is_empty()).then_some((i, gates))
        })
        .collect();
    shown.sort_by_key(|(i, _)| std::cmp::Reverse(traffic(&i.traced)));
    shown
}
