//! `memtrace stat` as a short table: one line per memory basic, sizes in binary units.
use std::io::Write;

use crate::{host::process_memory::ProcessMemory, output::text::kib};

pub fn write(memory: &ProcessMemory, out: &mut dyn Write) -> anyhow::Result<()> {
    let m = memory;
    writeln!(out, "memtrace stat: pid {} ({})", m.pid, m.comm)?;
    let line = |out: &mut dyn Write, what: &str, text: String| writeln!(out, "  {what:<9} {text}");
    line(out, "VSZ", kib(m.vsz_kb))?;
    line(
        out,
        "RSS",
        format!(
            "{}  (anon {}, file {}, shmem {})",
            kib(m.rss_kb),
            kib(m.rss_anon_kb),
            kib(m.rss_file_kb),
            kib(m.rss_shmem_kb)
        ),
    )?;
    line(out, "swap", kib(m.swap_kb))?;
    line(
        out,
        "heap",
        format!(
            "{}  ([heap] {}, private anonymous mappings {})",
            kib(m.heap_kb),
            kib(m.heap_brk_kb),
            kib(m.heap_anon_mappings_kb)
        ),
    )?;
    let stack = match (m.stack_limit_kb, m.stack_used_percent()) {
        (Some(limit), Some(percent)) => {
            format!(
                "{} of its {} limit ({percent:.1}%)",
                kib(m.stack_kb),
                kib(limit)
            )
        }
        _ => format!("{} (no limit)", kib(m.stack_kb)),
    };
    line(out, "stack", stack)?;
    line(out, "threads", m.threads.to_string())?;
    line(out, "mappings", m.mappings.to_string())?;
    line(
        out,
        "faults",
        format!("minor {}, major {} since it started", m.minflt, m.majflt),
    )?;
    let cgroup = match &m.cgroup {
        None => "no memory cgroup controller".to_owned(),
        Some(c) => match (c.limit_bytes, c.usage_bytes, c.headroom_bytes) {
            (Some(limit), Some(usage), Some(headroom)) => format!(
                "{}: {} of its {} limit, {} headroom",
                c.path,
                kib(usage / 1024),
                kib(limit / 1024),
                kib(headroom / 1024)
            ),
            (None, Some(usage), _) => format!("{}: {} used, no limit", c.path, kib(usage / 1024)),
            _ => c.path.clone(),
        },
    };
    line(out, "cgroup", cgroup)?;
    let pressure = match &m.psi {
        Some(p) => format!(
            "some {:.2}%, full {:.2}% of the last 10 s ({})",
            p.some_avg10, p.full_avg10, p.scope
        ),
        None => "not available (kernel without PSI)".to_owned(),
    };
    line(out, "pressure", pressure)?;
    Ok(())
}
