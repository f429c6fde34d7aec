//! OOM kills of traced processes during a swap run: when swap cannot keep up, the OOM killer
//! ends the story the swap figures tell, and the report says so. The kernel side reports
//! every kill on the machine; which victims are traced is decided here.
use std::{collections::HashSet, path::PathBuf};

use memtrace_common::OomKill;

use super::report::SwapOomKill;
use crate::{
    host::{cgroup_mounts, memcg::MemoryHierarchy},
    trace::{processes::Processes, records::comm_to_string, request::TargetRequest},
};

/// Whose kills a run reports.
enum Scope {
    /// Every kill on the machine.
    System,
    /// Processes given by pid or started as the command, and their children.
    Processes,
    /// Tasks in this cgroup v2 directory or below.
    Cgroup(PathBuf),
}

pub struct Kills {
    scope: Scope,
    /// The processes given by pid, or the command.
    targets: HashSet<u32>,
    hierarchy: Option<MemoryHierarchy>,
    pub rows: Vec<SwapOomKill>,
}

impl Kills {
    pub fn new(target: &TargetRequest) -> Self {
        let scope = match target {
            TargetRequest::System => Scope::System,
            TargetRequest::Cgroup(dir) => Scope::Cgroup(dir.canonicalize().unwrap_or(dir.clone())),
            TargetRequest::Pids(_) | TargetRequest::Command(_) => Scope::Processes,
        };
        Self {
            scope,
            targets: HashSet::new(),
            hierarchy: MemoryHierarchy::find(),
            rows: Vec::new(),
        }
    }

    pub fn on_targets(&mut self, pids: &[u32]) {
        self.targets.extend(pids);
    }

    /// A kill at `at_s`; `owns_swap`: the kernel counted swap traffic for the victim, which
    /// its filter only does for traced processes.
    pub fn on_kill(&mut self, kill: &OomKill, processes: &Processes, owns_swap: bool, at_s: f64) {
        let traced = owns_swap
            || match &self.scope {
                Scope::System => true,
                // Children come in by their fork events, which only traced processes make.
                Scope::Processes => {
                    self.targets.contains(&kill.pid) || processes.maps.pids().contains(&kill.pid)
                }
                Scope::Cgroup(dir) => cgroup_mounts::cgroup2_mount()
                    .and_then(|mount| cgroup_mounts::cgroup2_dir_of(kill.pid, &mount))
                    .is_some_and(|own| own.starts_with(dir)),
            };
        if !traced {
            return;
        }
        let memcg = self.hierarchy.as_ref().and_then(|h| h.victim_cgroup(kill));
        let comm = comm_to_string(&kill.comm);
        eprintln!(
            "memtrace: OOM kill at {at_s:.1}s: pid {} ({comm}), memory cgroup {}",
            kill.pid,
            memcg.as_deref().unwrap_or("unknown")
        );
        self.rows.push(SwapOomKill {
            pid: kill.pid,
            comm,
            memcg,
            at_s,
        });
    }
}
