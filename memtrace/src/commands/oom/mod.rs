//! `memtrace oom`: OOM kills as they happen, with the victim's memory and its memory cgroup.
pub mod args;
mod report;
mod table;

use std::{io::Write, time::SystemTime};

use anyhow::Result;
use memtrace_common::OomKill;

use self::{args::OomArgs, report::OomReport};
use crate::{
    commands::options::TableOrJson,
    host::memcg::MemoryHierarchy,
    kernel::hooks::{self, Attachment, CommandHooks},
    output::{files, json},
    trace::{
        consumer::Consumer,
        pipeline,
        processes::Processes,
        records::{comm_to_string, Record},
        request::{KernelOptions, TargetRequest, TraceRequest},
    },
};

pub const HOOKS: CommandHooks = CommandHooks {
    needs: &[&hooks::OOM_KILL],
    improves: &[],
};

/// Collects kills, and says each one on stderr as it comes.
struct KillLog {
    hierarchy: Option<MemoryHierarchy>,
    kills: Vec<OomKillRow>,
}

pub use self::report::OomKillRow;

/// A kill, as the report gives it: the victim's memory from the tracepoint, and its memory
/// cgroup's path, limit and usage, read now (the kill was just seen).
pub fn describe(hierarchy: Option<&MemoryHierarchy>, kill: &OomKill) -> OomKillRow {
    let comm = comm_to_string(&kill.comm);
    let cgroup_path = hierarchy.and_then(|h| h.victim_cgroup(kill));
    let cgroup = match (hierarchy, &cgroup_path) {
        (Some(h), Some(path)) => Some(h.read(path)),
        _ => None,
    };
    let limit_cgroup = match (hierarchy, &cgroup_path) {
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

impl Consumer for KillLog {
    fn on_record(&mut self, record: &Record, _processes: &mut Processes) {
        let Record::OomKill(kill) = record else {
            return;
        };
        let row = describe(self.hierarchy.as_ref(), kill);
        eprintln!("{}", table::line(&row));
        self.kills.push(row);
    }
}

pub async fn run(args: OomArgs) -> Result<()> {
    let mut out = files::report_writer(args.output.as_deref())?;
    let request = TraceRequest {
        declared: &HOOKS,
        target: TargetRequest::command_or_system(args.command.clone()),
        // Kills are watched system-wide; a command's tree is followed so that stopping
        // memtrace stops all of it.
        follow_children: !args.command.is_empty(),
        stop_after: args.duration,
        kernel: KernelOptions::default(),
        hooks: vec![Attachment::Hook(&hooks::OOM_KILL)],
    };
    let mut log = KillLog {
        hierarchy: MemoryHierarchy::find(),
        kills: Vec::new(),
    };
    let traced = pipeline::trace(request, &mut log).await?;
    let report = OomReport {
        header: traced.header("oom"),
        kills: log.kills,
    };
    match args.format {
        TableOrJson::Table => table::write(&report, &mut out)?,
        TableOrJson::Json => json::write_value(&report, &mut out)?,
    }
    out.flush()?;
    Ok(())
}
