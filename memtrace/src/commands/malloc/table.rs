//! The malloc report as a table for people, and as folded stacks (bytes per stack).
use std::io::Write;

use super::{lifetimes::LifetimeBucket, report::MallocReport};
use crate::{output::text, report::StackRow};

pub fn write(report: &MallocReport, out: &mut dyn Write) -> anyhow::Result<()> {
    text::title(out, &report.header)?;
    for allocator in &report.allocators {
        // Aliases and C++'s many operator names are in the JSON; the table stays one line.
        let mut names: Vec<&str> = (allocator.functions.iter())
            .filter(|name| !name.contains(" (= ") && !name.starts_with("_Z"))
            .map(String::as_str)
            .collect();
        if allocator
            .functions
            .iter()
            .any(|name| name.starts_with("_Z"))
        {
            names.push("C++ new and delete");
        }
        writeln!(
            out,
            "allocator: {} {} ({})",
            allocator.kind.name(),
            allocator.library,
            names.join(", ")
        )?;
    }
    if report.sampled {
        writeln!(
            out,
            "sampled: one point per {} bytes allocated on average; calls and bytes are estimates",
            report.sample_bytes
        )?;
    }
    if report.header.lost_events > 0 {
        writeln!(
            out,
            "WARNING: {} events lost: every figure is a lower bound",
            report.header.lost_events
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
    for p in &report.processes {
        let Some(kill) = &p.oom_kill else {
            continue;
        };
        let mib = |bytes: u64| text::kib(bytes / 1024);
        let limit = kill
            .limit_bytes
            .map_or("no limit".into(), |b| format!("limit {}", mib(b)));
        let usage = kill
            .usage_bytes
            .map_or(String::new(), |b| format!(", usage {}", mib(b)));
        writeln!(
            out,
            "\nOOM KILLED: pid {} ({}) at {:.2}s, memcg {} ({limit}{usage}, {} constraint), \
             RSS anon {}, {} allocated; its outstanding blocks are those it held at its death",
            p.pid,
            p.comm,
            kill.at_s,
            if kill.memcg.is_empty() {
                "?"
            } else {
                &kill.memcg
            },
            kill.constraint,
            mib(kill.anon_rss_bytes),
            mib(kill.heap_bytes),
        )?;
    }
    writeln!(
        out,
        "\nTOP ALLOCATING STACKS (by bytes; top {} of {})",
        report.stacks.len(),
        report.stacks_total
    )?;
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
        write_frames(out, &row.stack)?;
    }
    if !report.temporary_stacks.is_empty() {
        writeln!(
            out,
            "\nTEMPORARY (blocks freed within {}; the stacks that churn most)",
            text::seconds(report.temporary_s)
        )?;
        for (n, row) in report.temporary_stacks.iter().enumerate() {
            writeln!(
                out,
                "#{}  {} temporary of {} calls ({:.0}%), {} freed  pid {} ({})",
                n + 1,
                row.temporary,
                row.calls,
                100.0 * row.temporary as f64 / row.calls.max(1) as f64,
                row.freed,
                row.stack.pid,
                row.stack.comm
            )?;
            writeln!(out, "    lifetimes: {}", lifetimes_line(&row.lifetimes))?;
            write_frames(out, &row.stack)?;
        }
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
            write_frames(out, &row.stack)?;
        }
    }
    if !report.peak_stacks.is_empty() {
        writeln!(
            out,
            "\nPEAK (the most bytes allocated at once, and what was allocated then)"
        )?;
        for p in report.processes.iter().filter(|p| p.peak_bytes > 0) {
            writeln!(
                out,
                "  pid {} ({}): {} bytes at {:.2}s; {} bytes allocated at the end",
                p.pid, p.comm, p.peak_bytes, p.peak_at_s, p.live_bytes
            )?;
        }
        for (n, row) in report.peak_stacks.iter().enumerate() {
            writeln!(
                out,
                "#{}  {} bytes in {} blocks  pid {} ({})",
                n + 1,
                row.bytes,
                row.allocations,
                row.stack.pid,
                row.stack.comm
            )?;
            write_frames(out, &row.stack)?;
        }
    }
    let resident: Vec<_> = (report.processes.iter())
        .filter_map(|p| Some((p, p.resident?)))
        .collect();
    if !resident.is_empty() {
        writeln!(
            out,
            "\nHEAP AGAINST RSS (retained: resident in the allocator's mappings, not allocated)"
        )?;
        for (p, split) in resident {
            let mib = |bytes: u64| text::kib(bytes / 1024);
            writeln!(
                out,
                "  pid {} ({}) at {:.1}s: RSS anon {} = allocator {} ({} allocated, {} \
                 retained) + other anon {}; RSS file {}, shmem {}",
                p.pid,
                p.comm,
                split.at_s,
                mib(split.rss_anon_bytes),
                mib(split.allocator_rss_bytes),
                mib(split
                    .allocator_rss_bytes
                    .saturating_sub(split.retained_bytes)),
                mib(split.retained_bytes),
                mib(split.other_anon_bytes),
                mib(split.rss_file_bytes),
                mib(split.rss_shmem_bytes),
            )?;
            if split.retained_bytes > split.rss_anon_bytes / 4 && split.retained_bytes > 1 << 24 {
                writeln!(
                    out,
                    "    the allocator keeps {} that no block uses: memory freed, not given \
                     back (glibc: malloc_trim, or M_TRIM_THRESHOLD / M_MMAP_THRESHOLD)",
                    mib(split.retained_bytes)
                )?;
            }
        }
    }
    writeln!(out, "\nSIZES (bytes: calls)")?;
    for bucket in &report.sizes {
        writeln!(out, "  <= {:>12}: {}", bucket.le, bucket.count)?;
    }
    Ok(())
}

/// `<= 4us: 120, <= 2ms: 8`: each bucket that holds blocks.
fn lifetimes_line(buckets: &[LifetimeBucket]) -> String {
    (buckets.iter())
        .map(|b| format!("<= {}: {}", text::seconds(b.le_s), b.count))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_frames(out: &mut dyn Write, stack: &StackRow) -> anyhow::Result<()> {
    for frame in &stack.user_detail {
        writeln!(out, "    {}", frame.line())?;
    }
    Ok(())
}
