//! The OOM report for people: one line per kill.
use std::io::Write;

use super::report::{OomKillRow, OomReport};
use crate::output::text;

pub fn write(report: &OomReport, out: &mut dyn Write) -> anyhow::Result<()> {
    text::title(out, &report.header)?;
    if report.kills.is_empty() {
        writeln!(out, "no OOM kills")?;
    }
    for kill in &report.kills {
        writeln!(out, "{}", line(kill))?;
    }
    Ok(())
}

/// One kill: when, who, how big, which cgroup and why.
pub fn line(kill: &OomKillRow) -> String {
    let mib = |kb: u64| kb as f64 / 1024.0;
    let limit = match (kill.cgroup_limit_bytes, kill.cgroup_usage_bytes) {
        (Some(limit), Some(usage)) => format!(
            " (limit {:.1} MiB, usage {:.1} MiB)",
            limit as f64 / (1 << 20) as f64,
            usage as f64 / (1 << 20) as f64
        ),
        _ => String::new(),
    };
    format!(
        "{}  OOM kill ({} limit): pid {} ({}) uid {}  total-vm {:.1} MiB, anon {:.1} MiB, \
         file {:.1} MiB, shmem {:.1} MiB, page tables {} KiB, oom_score_adj {}  cgroup {}{}",
        kill.time,
        kill.constraint,
        kill.pid,
        kill.comm,
        kill.uid,
        mib(kill.total_vm_kb),
        mib(kill.anon_rss_kb),
        mib(kill.file_rss_kb),
        mib(kill.shmem_rss_kb),
        kill.pgtables_kb,
        kill.oom_score_adj,
        if kill.cgroup.is_empty() {
            "?"
        } else {
            &kill.cgroup
        },
        limit
    )
}
