//! `memtrace oom`: OOM kills as they happen, with the victim's memory and its memory cgroup.
use std::{io::Write, time::SystemTime};

use anyhow::Result;
use memtrace_common::{EventKind, OomKill};

use crate::{
    bpf::Tracer,
    cli::{OomArgs, RunArgs, TableOrJson, TargetArgs},
    events::{comm_to_string, decode_record},
    memcg::MemoryHierarchy,
    oom_report::{OomKillRow, OomReport},
    output, outputs,
    pipeline::{self, KernelOptions},
    processes::Processes,
    report::TracerCost,
    session::Consumer,
};

/// Collects kills, and says each one on stderr as it comes.
struct KillLog {
    known: Processes,
    hierarchy: Option<MemoryHierarchy>,
    kills: Vec<OomKillRow>,
}

impl KillLog {
    fn row(&self, kill: &OomKill) -> OomKillRow {
        let comm = comm_to_string(&kill.comm);
        let cgroup_path = self.hierarchy.as_ref().and_then(|h| victim_cgroup(h, kill));
        let cgroup = match (&self.hierarchy, &cgroup_path) {
            (Some(h), Some(path)) => Some(h.read(path)),
            _ => None,
        };
        let limit_cgroup = match (&self.hierarchy, &cgroup_path) {
            (Some(h), Some(path)) => limiting_cgroup(h, path),
            _ => None,
        };
        OomKillRow {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            pid: kill.pid,
            comm,
            uid: kill.uid,
            total_vm_kb: kill.total_vm_kb,
            anon_rss_kb: kill.anon_rss_kb,
            file_rss_kb: kill.file_rss_kb,
            shmem_rss_kb: kill.shmem_rss_kb,
            pgtables_kb: kill.pgtables_kb,
            oom_score_adj: kill.oom_score_adj,
            cgroup: cgroup_path.unwrap_or_default(),
            cgroup_limit_bytes: cgroup.as_ref().and_then(|c| c.limit_bytes),
            cgroup_usage_bytes: cgroup.as_ref().and_then(|c| c.usage_bytes),
            constraint: if limit_cgroup.is_some() {
                "cgroup"
            } else {
                "system"
            },
            limit_cgroup,
            trigger_pid: kill.trigger_pid,
        }
    }
}

/// The victim's memory cgroup: the one the kernel side read at the kill when the victim
/// itself needed the memory; else the victim's own from /proc (an exiting task may already
/// show the root), and failing that the cgroup of the task that needed memory.
pub fn victim_cgroup(hierarchy: &MemoryHierarchy, kill: &OomKill) -> Option<String> {
    let trigger = || hierarchy.path_of_id(kill.trigger_memcg);
    if kill.trigger_pid == kill.pid {
        trigger().or_else(|| hierarchy.path_of(kill.pid))
    } else {
        hierarchy.path_of(kill.pid).or_else(trigger)
    }
}

/// The cgroup (`path` or an ancestor, not the root) whose limit was reached, if any.
fn limiting_cgroup(hierarchy: &MemoryHierarchy, path: &str) -> Option<String> {
    let mut current = path.trim_end_matches('/').to_owned();
    while !current.is_empty() && current != "/" {
        let cgroup = hierarchy.read(&current);
        if cgroup.limit_bytes.is_some() && cgroup.limit_hit {
            return Some(current);
        }
        current = match current.rfind('/') {
            Some(0) | None => String::new(),
            Some(at) => current[..at].to_owned(),
        };
    }
    None
}

/// The record, if it is an OOM kill.
pub fn decode_kill(bytes: &[u8]) -> Option<OomKill> {
    decode_record(bytes, EventKind::OomKill)
}

impl Consumer for KillLog {
    fn processes(&mut self) -> &mut Processes {
        &mut self.known
    }

    fn on_record(&mut self, bytes: &[u8]) {
        let Some(kill) = decode_kill(bytes) else {
            // Fork and exec records of the traced command.
            self.known.admit(bytes);
            return;
        };
        let row = self.row(&kill);
        eprintln!("{}", output::oom::line(&row));
        self.kills.push(row);
    }
}

pub async fn run(args: &OomArgs) -> Result<()> {
    let mut out = outputs::report_writer(args.output.as_deref())?;
    let options = KernelOptions {
        page_stacks: false,
        ring_bytes: pipeline::RING_BYTES,
        user_stacks: false,
        kernel_stacks: false,
        file_tags: false,
        swap: None,
        malloc: None,
        pages: false,
        stack_sample_period: 1,
        exits: false,
        oom: true,
    };
    let target = TargetArgs {
        pids: Vec::new(),
        cgroup: None,
        follow_children: false,
        command: args.command.clone(),
    };
    let run_args = RunArgs {
        duration: args.duration,
        interval: None,
    };
    let mut log = KillLog {
        known: Processes::default(),
        hierarchy: MemoryHierarchy::find(),
        kills: Vec::new(),
    };
    let attach = |tracer: &mut Tracer, _single: Option<u32>| {
        tracer.attach_tracepoint("oom_kill", "oom", "mark_victim")
    };
    let traced = pipeline::trace(&target, &run_args, options, &attach, &mut log).await?;
    let counters = traced.tracer.counters()?;
    let report = OomReport {
        command: "oom",
        duration_s: traced.duration.as_secs_f64(),
        lost_events: counters.lost,
        target: traced.target.clone(),
        exit: traced.exit.clone(),
        tracer: TracerCost::measure(traced.attach_ms, &traced.tracer),
        kills: log.kills,
    };
    match args.format {
        TableOrJson::Table => output::oom::write(&report, &mut out)?,
        TableOrJson::Json => output::json::write_value(&report, &mut out)?,
    }
    out.flush()?;
    Ok(())
}
