//! The agent's Prometheus metrics: counters per (comm, cgroup), fed each second from the
//! kernel's per-process counts as deltas, so they stay monotonic when processes exit (the
//! kernel keeps an exited process's count, which simply stops growing). Series
//! are bounded: the first `max_series` pairs seen keep their own, later ones add to "other".
use std::collections::{HashMap, HashSet};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessLabels {
    pub comm: String,
    pub cgroup: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub kind: String,
    pub comm: String,
    pub cgroup: String,
}

/// A process's cumulative figures as the kernel counts them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub minor: u64,
    pub major: u64,
    pub pages: u64,
    pub allocations: u64,
}

/// A process: its pid and start time (clock ticks after boot), which tell it from a later
/// process with the same pid.
pub type ProcessId = (u32, u64);

/// Faults are followed per process (from /proc and exits), pages per pid (the kernel's
/// table keeps a pid's count).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Faults(ProcessId),
    Pages(u32),
}

pub struct AgentMetrics {
    registry: Registry,
    faults: Family<FaultLabels, Counter>,
    pages: Family<ProcessLabels, Counter>,
    allocations: Family<ProcessLabels, Counter>,
    oom_kills: Family<ProcessLabels, Counter>,
    lost_events: Counter,
    bpf_run_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    agent_rss: Gauge,
    /// What each process had at the last update, with its series.
    last: HashMap<Key, (ProcessLabels, Totals)>,
    series: HashSet<ProcessLabels>,
    max_series: usize,
    /// Kernel-side figures at the last update, for deltas.
    last_lost: u64,
    last_bpf_seconds: f64,
}

impl AgentMetrics {
    pub fn new(max_series: usize) -> Self {
        let mut registry = Registry::with_prefix("memtrace");
        let faults = Family::<FaultLabels, Counter>::default();
        registry.register(
            "page_faults",
            "Page faults, minor and major, counted in the kernel",
            faults.clone(),
        );
        let pages = Family::<ProcessLabels, Counter>::default();
        registry.register(
            "pages_allocated",
            "Pages the kernel's page allocator gave (2^order per allocation)",
            pages.clone(),
        );
        let allocations = Family::<ProcessLabels, Counter>::default();
        registry.register(
            "page_allocations",
            "Calls to the kernel's page allocator (kmem:mm_page_alloc)",
            allocations.clone(),
        );
        let oom_kills = Family::<ProcessLabels, Counter>::default();
        registry.register(
            "oom_kills",
            "Processes killed by the OOM killer",
            oom_kills.clone(),
        );
        let lost_events = Counter::default();
        registry.register(
            "lost_events",
            "Events the kernel could not deliver to the agent",
            lost_events.clone(),
        );
        let bpf_run_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "bpf_run_seconds",
            "Time the kernel spent in the agent's eBPF programs (kernel.bpf_stats_enabled)",
            bpf_run_seconds.clone(),
        );
        let agent_rss = Gauge::default();
        registry.register(
            "agent_rss_bytes",
            "The agent's own resident memory",
            agent_rss.clone(),
        );
        Self {
            registry,
            faults,
            pages,
            allocations,
            oom_kills,
            lost_events,
            bpf_run_seconds,
            agent_rss,
            last: HashMap::new(),
            series: HashSet::new(),
            max_series,
            last_lost: 0,
            last_bpf_seconds: 0.0,
        }
    }

    /// The series a process's figures go to: its own while there is room, else "other".
    fn series_for(&mut self, labels: ProcessLabels) -> ProcessLabels {
        if self.series.contains(&labels) {
            return labels;
        }
        if self.series.len() < self.max_series {
            self.series.insert(labels.clone());
            return labels;
        }
        ProcessLabels {
            comm: "other".to_owned(),
            cgroup: "other".to_owned(),
        }
    }

    /// The series a process's new figures go to (its labels now: an exec renames it), and
    /// its figures at the last update.
    fn series_of(&mut self, key: Key, labels: ProcessLabels) -> (ProcessLabels, Totals) {
        let before = self.last.get(&key).map(|(_, t)| *t).unwrap_or_default();
        (self.series_for(labels), before)
    }

    /// A process's fault counts now (its lifetime totals): what grew goes to its series.
    pub fn update_faults(
        &mut self,
        process: ProcessId,
        labels: ProcessLabels,
        minor: u64,
        major: u64,
    ) {
        let key = Key::Faults(process);
        let (series, before) = self.series_of(key, labels);
        for (kind, delta) in [
            ("minor", minor.saturating_sub(before.minor)),
            ("major", major.saturating_sub(before.major)),
        ] {
            if delta > 0 {
                self.faults
                    .get_or_create(&FaultLabels {
                        kind: kind.to_owned(),
                        comm: series.comm.clone(),
                        cgroup: series.cgroup.clone(),
                    })
                    .inc_by(delta);
            }
        }
        let now = Totals {
            minor,
            major,
            ..before
        };
        self.last.insert(key, (series, now));
    }

    /// A pid's page allocations so far (the kernel's table, by pid): what grew goes to its
    /// series.
    pub fn update_pages(&mut self, pid: u32, labels: ProcessLabels, pages: u64, allocations: u64) {
        let key = Key::Pages(pid);
        let (series, before) = self.series_of(key, labels);
        let grew = pages.saturating_sub(before.pages);
        if grew > 0 {
            self.pages.get_or_create(&series).inc_by(grew);
        }
        let grew = allocations.saturating_sub(before.allocations);
        if grew > 0 {
            self.allocations.get_or_create(&series).inc_by(grew);
        }
        let now = Totals {
            pages,
            allocations,
            ..before
        };
        self.last.insert(key, (series, now));
    }

    /// Forgets a process that ended, once its final fault counts are in.
    pub fn forget(&mut self, process: ProcessId) {
        self.last.remove(&Key::Faults(process));
    }

    pub fn oom_kill(&mut self, labels: ProcessLabels) {
        let series = self.series_for(labels);
        self.oom_kills.get_or_create(&series).inc();
    }

    /// The agent's own figures: lost events and eBPF run time (kernel totals), its RSS.
    pub fn health(&mut self, lost: u64, bpf_seconds: f64, rss_bytes: u64) {
        self.lost_events.inc_by(lost.saturating_sub(self.last_lost));
        self.last_lost = self.last_lost.max(lost);
        if bpf_seconds > self.last_bpf_seconds {
            self.bpf_run_seconds
                .inc_by(bpf_seconds - self.last_bpf_seconds);
            self.last_bpf_seconds = bpf_seconds;
        }
        self.agent_rss.set(rss_bytes as i64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(comm: &str) -> ProcessLabels {
        ProcessLabels {
            comm: comm.to_owned(),
            cgroup: "/".to_owned(),
        }
    }

    fn minor(text: &str, comm: &str) -> Option<u64> {
        text.lines()
            .find(|l| {
                l.starts_with("memtrace_page_faults_total{")
                    && l.contains("kind=\"minor\"")
                    && l.contains(&format!("comm=\"{comm}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn exited_processes_keep_their_counts_and_series_are_bounded() {
        let mut metrics = AgentMetrics::new(2);
        metrics.update_faults((10, 1), labels("a"), 5, 0);
        metrics.update_faults((10, 1), labels("a"), 8, 0);
        metrics.update_faults((11, 1), labels("a"), 2, 0);
        // pid 10 exits: its count stays in its series; its pid comes back as another process.
        metrics.forget((10, 1));
        metrics.update_faults((10, 9), labels("a"), 1, 0);
        metrics.update_faults((12, 1), labels("b"), 1, 0);
        metrics.update_faults((13, 1), labels("c"), 4, 0);
        metrics.update_faults((14, 1), labels("d"), 6, 0);
        let text = metrics.render();
        assert_eq!(minor(&text, "a"), Some(11), "{text}");
        assert_eq!(minor(&text, "b"), Some(1), "{text}");
        assert_eq!(minor(&text, "c"), None, "{text}");
        assert_eq!(minor(&text, "other"), Some(10), "{text}");
    }
}
