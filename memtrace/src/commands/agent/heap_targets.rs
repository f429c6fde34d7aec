//! Which processes the agent heap-profiles: those its config names (`[heap]`), found at each
//! second's pass over /proc, each given uprobes on its allocators that break in it alone;
//! detached when it ends. A process the probes cannot hook (no allocator memtrace knows, a
//! static stripped binary) is said once and not tried again. While probes are being detached
//! (this agent's, another memtrace's), attaching waits for a later pass instead of stalling
//! the agent.
use std::collections::{HashMap, HashSet};

use super::{config::HeapConfig, metrics::ProcessId};
use crate::{
    commands::malloc::probes,
    kernel::{process_uprobes::ProcessUprobes, tracer::Tracer},
};

pub struct HeapTargets {
    config: HeapConfig,
    attached: HashMap<u32, Attached>,
    /// Processes that matched and could not be hooked.
    refused: HashSet<ProcessId>,
}

struct Attached {
    process: ProcessId,
    uprobes: ProcessUprobes,
}

impl HeapTargets {
    pub fn new(config: HeapConfig) -> Self {
        Self {
            config,
            attached: HashMap::new(),
            refused: HashSet::new(),
        }
    }

    /// Whether process `pid` (started at `started`, /proc's clock ticks) is heap-profiled.
    pub fn profiles(&self, process: ProcessId) -> bool {
        (self.attached.get(&process.0)).is_some_and(|a| a.process == process)
    }

    /// Whether pid `pid` is heap-profiled.
    pub fn profiles_pid(&self, pid: u32) -> bool {
        self.attached.contains_key(&pid)
    }

    /// Processes heap-profiled now.
    pub fn count(&self) -> usize {
        self.attached.len()
    }

    /// Each second, given every living process (its id, name and memory cgroup): hooks those
    /// the config names that are not yet, and lets go of those gone (a pid reused by
    /// another process is another process); the pids let go of.
    pub fn update<'a>(
        &mut self,
        tracer: &mut Tracer,
        living: impl Iterator<Item = (ProcessId, &'a str, &'a str)>,
    ) -> Vec<u32> {
        let own = std::process::id();
        let mut alive = HashSet::new();
        let mut wanted = Vec::new();
        for (process, comm, cgroup) in living {
            alive.insert(process);
            if process.0 != own
                && !self.profiles(process)
                && !self.refused.contains(&process)
                && self.config.wants(comm, cgroup)
            {
                wanted.push((process, comm.to_owned()));
            }
        }
        let gone: Vec<u32> = (self.attached.iter())
            .filter(|(_, attached)| !alive.contains(&attached.process))
            .map(|(pid, _)| *pid)
            .collect();
        for &pid in &gone {
            self.ended(pid);
        }
        self.refused.retain(|process| alive.contains(process));
        for (process, comm) in wanted {
            self.attach(tracer, process, &comm);
        }
        gone
    }

    fn attach(&mut self, tracer: &mut Tracer, process: ProcessId, comm: &str) {
        let pid = process.0;
        let sites = probes::sites_of_process(pid);
        if sites.is_empty() {
            log::warn!(
                "heap profiling: no allocator found in pid {pid} ({comm}): a static stripped \
                 binary, or an allocator memtrace does not know"
            );
            self.refused.insert(process);
            return;
        }
        match tracer.attach_process_uprobes(&sites, pid) {
            // Probes being detached: at the next pass.
            Ok(None) => log::debug!("heap profiling: pid {pid} waits for the uprobe lock"),
            Ok(Some(uprobes)) => {
                log::info!(
                    "heap profiling pid {pid} ({comm}): {} probes on {} functions",
                    uprobes.len(),
                    sites.len() - uprobes.missed
                );
                self.attached.insert(pid, Attached { process, uprobes });
            }
            Err(err) => {
                log::warn!("heap profiling: cannot hook pid {pid} ({comm}): {err:#}");
                self.refused.insert(process);
            }
        }
    }

    /// Process `pid` ended: its probes are detached (in the background).
    pub fn ended(&mut self, pid: u32) {
        if let Some(attached) = self.attached.remove(&pid) {
            attached.uprobes.detach_in_background();
        }
    }
}
