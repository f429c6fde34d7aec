//! `memtrace malloc --html`: one self-contained page with the heap over time (bytes
//! allocated against anonymous RSS, and the allocation rate), each process's peak and what
//! its allocator retains, the stacks at the peak, the leaks, the stacks that churn, and a
//! flame graph of the heap profile.
use std::{fmt::Write as _, io::Write};

use super::report::{MallocReport, TimelineSample};
use crate::{
    output::html::{escape, flamegraph_image, line_chart, Series, STYLE},
    report::StackRow,
};

/// Frames shown of a stack in the tables (the flame graph has them all).
const FRAMES_SHOWN: usize = 8;

pub fn write(
    report: &MallocReport,
    flamegraph_svg: &[u8],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let title = format!("memtrace malloc: {}", escape(&report.header.target));
    let mut page = String::new();
    write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n\
         <p>{:.1} s traced{}.</p>\n",
        report.header.duration_s,
        if report.sampled {
            format!(
                ", sampled (one point per {} bytes): figures are estimates",
                report.sample_bytes
            )
        } else {
            String::new()
        }
    )?;
    page += &process_table(report);
    for process in &report.processes {
        let samples: Vec<&TimelineSample> = (report.timeline.iter())
            .filter(|s| s.pid == process.pid)
            .collect();
        if samples.len() < 2 {
            continue;
        }
        let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
        let over_time = |value: &dyn Fn(&TimelineSample) -> Option<f64>| -> Vec<(f64, f64)> {
            (samples.iter())
                .filter_map(|s| Some((s.t_s, value(s)?)))
                .collect()
        };
        writeln!(
            page,
            "<h2>pid {} ({}) over time</h2>",
            process.pid,
            escape(&process.comm)
        )?;
        page += &line_chart(
            &format!("heap-chart-{}", process.pid),
            "MiB",
            &[
                // RSS under the bytes allocated: where they are one, allocated shows.
                Series {
                    name: "RSS anon",
                    color: "#2ca02c",
                    points: over_time(&|s| s.rss_anon_bytes.map(|b| mib(b as f64))),
                },
                Series {
                    name: "allocated",
                    color: "#1f77b4",
                    points: over_time(&|s| Some(mib(s.live_bytes as f64))),
                },
            ],
        );
        page += &line_chart(
            &format!("rate-chart-{}", process.pid),
            "MiB/s",
            &[Series {
                name: "allocation rate",
                color: "#ff7f0e",
                points: over_time(&|s| Some(mib(s.allocated_bytes_per_s))),
            }],
        );
    }
    page += "<h2>At the peak</h2>\n";
    page += &stack_table(
        "peak-stacks",
        &["bytes", "blocks"],
        (report.peak_stacks.iter()).map(|r| (vec![r.bytes, r.allocations], &r.stack)),
    );
    if !report.outstanding.is_empty() {
        page += "<h2>Leaks (allocated, never freed)</h2>\n";
        page += &stack_table(
            "leaks",
            &["bytes", "blocks"],
            (report.outstanding.iter()).map(|r| (vec![r.bytes, r.allocations], &r.stack)),
        );
    }
    writeln!(
        page,
        "<h2>What churns (blocks freed within {} ms)</h2>",
        report.temporary_s * 1e3
    )?;
    page += &stack_table(
        "temporary-stacks",
        &["temporary", "calls", "freed"],
        (report.temporary_stacks.iter()).map(|r| (vec![r.temporary, r.calls, r.freed], &r.stack)),
    );
    page += "<h2>The heap profile</h2>\n";
    page += &flamegraph_image("flame graph of the heap profile", flamegraph_svg);
    page += "</body></html>\n";
    out.write_all(page.as_bytes())?;
    Ok(())
}

/// Each process: allocated, peak, at the end, and its heap against RSS.
fn process_table(report: &MallocReport) -> String {
    let mut html = String::from(
        "<table id=\"processes\"><tr><th>pid</th><th>command</th><th>allocated</th>\
         <th>peak</th><th>at the end</th><th>RSS anon</th><th>retained by the allocator</th>\
         </tr>\n",
    );
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0));
    for p in &report.processes {
        let (rss, retained) = match p.resident {
            Some(split) => (
                format!("{} (at {:.1} s)", mib(split.rss_anon_bytes), split.at_s),
                mib(split.retained_bytes),
            ),
            None => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} at {:.2} s</td><td>{}</td><td>{rss}</td>\
             <td>{retained}</td></tr>",
            p.pid,
            escape(&p.comm),
            mib(p.bytes_allocated),
            mib(p.peak_bytes),
            p.peak_at_s,
            mib(p.live_bytes),
        );
    }
    html + "</table>\n"
}

/// A table of stacks: each row's figures under `columns`, then its first frames.
fn stack_table<'a>(
    id: &str,
    columns: &[&str],
    rows: impl Iterator<Item = (Vec<u64>, &'a StackRow)>,
) -> String {
    let mut html = format!("<table id=\"{id}\"><tr>");
    for column in columns {
        let _ = write!(html, "<th>{column}</th>");
    }
    html += "<th>pid</th><th>stack</th></tr>\n";
    let mut any = false;
    for (figures, stack) in rows {
        any = true;
        html += "<tr>";
        for figure in figures {
            let _ = write!(html, "<td>{figure}</td>");
        }
        let frames: Vec<String> = (stack.user_detail.iter())
            .take(FRAMES_SHOWN)
            .map(|f| escape(&f.line()))
            .collect();
        let _ = writeln!(
            html,
            "<td>{} ({})</td><td>{}</td></tr>",
            stack.pid,
            escape(&stack.comm),
            frames.join("<br>")
        );
    }
    if !any {
        let _ = write!(
            html,
            "<tr><td colspan=\"{}\">none</td></tr>",
            columns.len() + 2
        );
    }
    html + "</table>\n"
}
