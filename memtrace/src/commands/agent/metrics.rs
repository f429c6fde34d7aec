//! The agent's Prometheus metrics: counters per (comm, cgroup), fed each second from the
//! kernel's per-process counts as deltas, so they stay monotonic when processes exit (the
//! kernel keeps an exited process's count, which simply stops growing). Series
//! are bounded: the first `max_series` pairs seen keep their own, later ones add to "other".
use std::collections::{HashMap, HashSet};

use crate::host::container::ContainerLabels;

use prometheus_client::{
    encoding::{prometheus_text, text::encode, EncodeLabel, EncodeLabelSet, LabelSetEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Whose figures a series holds: a process name in a cgroup, with the container and pod the
/// cgroup path names ("" outside them; they add no series, being the cgroup's).
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessLabels {
    pub comm: String,
    pub cgroup: String,
    pub container_id: String,
    pub pod_uid: String,
}

impl ProcessLabels {
    pub fn new(comm: String, cgroup: String) -> Self {
        let container = ContainerLabels::from_cgroup_path(&cgroup);
        Self {
            comm,
            cgroup,
            container_id: container.container_id,
            pod_uid: container.pod_uid,
        }
    }

    /// The series of everything beyond the bound.
    fn other() -> Self {
        Self {
            comm: "other".to_owned(),
            cgroup: "other".to_owned(),
            ..Self::default()
        }
    }
}

/// A series split by a kind of event (minor/major, in/out).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
    #[prometheus(flatten)]
    pub process: ProcessLabels,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: String,
    #[prometheus(flatten)]
    pub process: ProcessLabels,
}

/// A memory gauge's series: per process name and cgroup, and per pid when asked for.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct MemoryLabels {
    process: ProcessLabels,
    pid: Option<u32>,
}

impl EncodeLabelSet for MemoryLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.process.encode(encoder)?;
        match self.pid {
            Some(pid) => ("pid", pid.to_string()).encode(encoder.encode_label()),
            None => Ok(()),
        }
    }
}

/// The agent's own state, each second.
#[derive(Debug, Default)]
pub struct Health {
    /// Events the kernel could not deliver (total).
    pub lost_events: u64,
    /// Page allocations not counted because the kernel's count table was full (total).
    pub uncounted_page_allocations: u64,
    /// Time in the agent's eBPF programs (total).
    pub bpf_seconds: f64,
    pub rss_bytes: u64,
    /// Entries in the kernel's tables that grow with processes.
    pub map_entries: Vec<(&'static str, u64)>,
    /// Address-space snapshots the agent keeps for symbolizing stacks.
    pub processes_held: u64,
    /// Times the kernel's stack tables were emptied (total).
    pub stack_table_clears: u64,
    /// Distinct stacks in the rolling fault profile.
    pub profile_stacks: u64,
    /// Heap profiling's figures (zero when off).
    pub heap: HeapHealth,
}

/// What heap profiling holds, and what it dropped to stay bounded.
#[derive(Debug, Default)]
pub struct HeapHealth {
    pub processes: u64,
    pub blocks: u64,
    pub stacks: u64,
    /// Totals.
    pub dropped_blocks: u64,
    pub dropped_stacks: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DroppedLabels {
    what: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: String,
}

/// One live process's memory now.
#[derive(Clone, Debug)]
pub struct ProcessMemory {
    pub pid: u32,
    pub labels: ProcessLabels,
    pub rss_bytes: u64,
    pub swap_bytes: u64,
}

/// A process's cumulative figures as the kernel counts them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub minor: u64,
    pub major: u64,
    pub pages: u64,
    pub allocations: u64,
    pub swapped_out: u64,
    pub swapped_in: u64,
}

/// A process: its pid and start time (clock ticks after boot), which tell it from a later
/// process with the same pid.
pub type ProcessId = (u32, u64);

/// Faults are followed per process (from /proc and exits), pages and swap per pid (the
/// kernel's tables keep a pid's counts until the agent drops them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Faults(ProcessId),
    Pages(u32),
    Swap(u32),
}

pub struct AgentMetrics {
    registry: Registry,
    faults: Family<KindLabels, Counter>,
    swap: Family<DirectionLabels, Counter>,
    pages: Family<ProcessLabels, Counter>,
    allocations: Family<ProcessLabels, Counter>,
    oom_kills: Family<ProcessLabels, Counter>,
    rss: Family<MemoryLabels, Gauge>,
    swapped: Family<MemoryLabels, Gauge>,
    lost_events: Counter,
    uncounted_page_allocations: Counter,
    bpf_run_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    agent_rss: Gauge,
    map_entries: Family<MapLabels, Gauge>,
    processes_held: Gauge,
    stack_table_clears: Counter,
    profile_stacks: Gauge,
    heap_processes: Gauge,
    heap_blocks: Gauge,
    heap_stacks: Gauge,
    heap_dropped: Family<DroppedLabels, Counter>,
    /// What each process had at the last update, with its series.
    last: HashMap<Key, (ProcessLabels, Totals)>,
    /// The series with their own labels, with the update each last grew in.
    series: HashMap<ProcessLabels, u64>,
    /// Updates so far (one a second).
    epoch: u64,
    /// A series that has not grown for this many updates gives its place up.
    idle_updates: u64,
    max_series: usize,
    /// Memory gauges per pid too (bounded like the rest).
    pid_labels: bool,
    /// Kernel-side figures at the last update, for deltas.
    last_lost: u64,
    last_bpf_seconds: f64,
}

impl AgentMetrics {
    pub fn new(max_series: usize, pid_labels: bool) -> Self {
        let mut registry = Registry::with_prefix("memtrace");
        let faults = Family::<KindLabels, Counter>::default();
        registry.register(
            "page_faults",
            "Page faults, minor and major, counted in the kernel",
            faults.clone(),
        );
        let swap = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "swap_pages",
            "Pages written to swap (out) and brought back by swap-in faults (in), credited to \
             the process that owns them, whoever reclaimed them",
            swap.clone(),
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
        let rss = Family::<MemoryLabels, Gauge>::default();
        registry.register(
            "process_rss_bytes",
            "Resident memory of the living processes now, the largest series first",
            rss.clone(),
        );
        let swapped = Family::<MemoryLabels, Gauge>::default();
        registry.register(
            "process_swap_bytes",
            "Memory of the living processes out in swap now (VmSwap)",
            swapped.clone(),
        );
        let uncounted_page_allocations = Counter::default();
        registry.register(
            "uncounted_page_allocations",
            "Page allocations not counted because the kernel's count table was full (the \
             page allocation series are lower bounds when this grows)",
            uncounted_page_allocations.clone(),
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
        let map_entries = Family::<MapLabels, Gauge>::default();
        registry.register(
            "bpf_map_entries",
            "Entries in the agent's kernel tables that grow with processes (exited ones are \
             dropped)",
            map_entries.clone(),
        );
        let processes_held = Gauge::default();
        registry.register(
            "agent_processes_held",
            "Processes whose memory maps the agent keeps to symbolize sampled stacks",
            processes_held.clone(),
        );
        let stack_table_clears = Counter::default();
        registry.register(
            "stack_table_clears",
            "Times the kernel's stack tables were emptied as they neared full (their stacks \
             were symbolized into the profile already)",
            stack_table_clears.clone(),
        );
        let profile_stacks = Gauge::default();
        registry.register(
            "profile_stacks",
            "Distinct stacks held in the rolling fault profile",
            profile_stacks.clone(),
        );
        let heap_processes = Gauge::default();
        registry.register(
            "heap_profiled_processes",
            "Processes heap-profiled now (the config's [heap] section)",
            heap_processes.clone(),
        );
        let heap_blocks = Gauge::default();
        registry.register(
            "heap_blocks_followed",
            "Heap blocks of profiled processes followed until freed (at most [heap] max_blocks)",
            heap_blocks.clone(),
        );
        let heap_stacks = Gauge::default();
        registry.register(
            "heap_stacks",
            "Distinct (process name, stack) pairs in the heap profiles (at most [heap] \
             max_stacks)",
            heap_stacks.clone(),
        );
        let heap_dropped = Family::<DroppedLabels, Counter>::default();
        registry.register(
            "heap_dropped",
            "Heap samples not kept whole: what=\"blocks\" not followed (past max_blocks: \
             never in use in the profile), what=\"stacks\" counted under \
             [stacks past max_stacks]",
            heap_dropped.clone(),
        );
        Self {
            registry,
            faults,
            swap,
            pages,
            allocations,
            oom_kills,
            rss,
            swapped,
            lost_events,
            uncounted_page_allocations,
            bpf_run_seconds,
            agent_rss,
            map_entries,
            processes_held,
            stack_table_clears,
            profile_stacks,
            heap_processes,
            heap_blocks,
            heap_stacks,
            heap_dropped,
            last: HashMap::new(),
            series: HashMap::new(),
            epoch: 0,
            idle_updates: SERIES_IDLE_UPDATES,
            max_series,
            pid_labels,
            last_lost: 0,
            last_bpf_seconds: 0.0,
        }
    }

    /// The series a process's figures go to: its own while there is room, else "other".
    fn series_for(&mut self, labels: ProcessLabels) -> ProcessLabels {
        if self.series.contains_key(&labels) {
            return labels;
        }
        if self.series.len() < self.max_series {
            self.series.insert(labels.clone(), self.epoch);
            return labels;
        }
        ProcessLabels::other()
    }

    /// The series counted something in this update.
    fn grew(&mut self, series: &ProcessLabels) {
        if let Some(epoch) = self.series.get_mut(series) {
            *epoch = self.epoch;
        }
    }

    /// Ends an update: series idle for `idle_updates` leave the exposition and give their
    /// place to others (processes that started after the first `max_series` pairs, such as a
    /// service started after a boot's burst of short-lived commands). Prometheus sees such
    /// a series end; if it comes back it starts again from zero, which `rate()` takes as a
    /// counter reset.
    pub fn end_update(&mut self) {
        self.epoch += 1;
        let (epoch, idle) = (self.epoch, self.idle_updates);
        let mut gone = Vec::new();
        self.series.retain(|labels, grew| {
            let keep = epoch - *grew <= idle;
            if !keep {
                gone.push(labels.clone());
            }
            keep
        });
        for process in gone {
            for kind in ["minor", "major"] {
                self.faults.remove(&KindLabels {
                    kind: kind.to_owned(),
                    process: process.clone(),
                });
            }
            for direction in ["in", "out"] {
                self.swap.remove(&DirectionLabels {
                    direction: direction.to_owned(),
                    process: process.clone(),
                });
            }
            self.pages.remove(&process);
            self.allocations.remove(&process);
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
        // Kernel threads never fault: they take no series.
        if minor == 0 && major == 0 && !self.last.contains_key(&key) {
            return;
        }
        let (series, before) = self.series_of(key, labels);
        for (kind, delta) in [
            ("minor", minor.saturating_sub(before.minor)),
            ("major", major.saturating_sub(before.major)),
        ] {
            if delta > 0 {
                self.faults
                    .get_or_create(&KindLabels {
                        kind: kind.to_owned(),
                        process: series.clone(),
                    })
                    .inc_by(delta);
                self.grew(&series);
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
            self.grew(&series);
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

    /// A pid's swap traffic so far (the kernel's table, by owner): what grew goes to its
    /// series.
    pub fn update_swap(&mut self, pid: u32, labels: ProcessLabels, out: u64, back: u64) {
        let key = Key::Swap(pid);
        let (series, before) = self.series_of(key, labels);
        for (direction, delta) in [
            ("out", out.saturating_sub(before.swapped_out)),
            ("in", back.saturating_sub(before.swapped_in)),
        ] {
            if delta > 0 {
                self.swap
                    .get_or_create(&DirectionLabels {
                        direction: direction.to_owned(),
                        process: series.clone(),
                    })
                    .inc_by(delta);
                self.grew(&series);
            }
        }
        let now = Totals {
            swapped_out: out,
            swapped_in: back,
            ..before
        };
        self.last.insert(key, (series, now));
    }

    /// Forgets a process that ended, once its final fault counts are in.
    pub fn forget(&mut self, process: ProcessId) {
        self.last.remove(&Key::Faults(process));
    }

    /// Forgets pids whose counts the kernel's tables dropped: a later process with the pid
    /// starts from zero there.
    pub fn forget_pids(&mut self, pids: &HashSet<u32>) {
        self.last.retain(|key, _| match key {
            Key::Pages(pid) | Key::Swap(pid) => !pids.contains(pid),
            Key::Faults(_) => true,
        });
    }

    /// The memory gauges now: the largest `max_series` series (by resident plus swapped
    /// memory) their own, the rest summed into "other". Rebuilt whole each time, so a series
    /// whose processes are gone disappears.
    pub fn set_memory(&mut self, processes: Vec<ProcessMemory>) {
        let mut series: HashMap<MemoryLabels, (u64, u64)> = HashMap::new();
        // Kernel threads have no memory of their own.
        for process in processes
            .into_iter()
            .filter(|p| p.rss_bytes + p.swap_bytes > 0)
        {
            let labels = MemoryLabels {
                pid: self.pid_labels.then_some(process.pid),
                process: process.labels,
            };
            let sums = series.entry(labels).or_default();
            sums.0 += process.rss_bytes;
            sums.1 += process.swap_bytes;
        }
        let mut ranked: Vec<_> = series.into_iter().collect();
        ranked.sort_unstable_by_key(|(_, (rss, swap))| std::cmp::Reverse(rss + swap));
        let rest = ranked.split_off(ranked.len().min(self.max_series));
        let other = rest.iter().fold((0, 0), |sums, (_, (rss, swap))| {
            (sums.0 + rss, sums.1 + swap)
        });
        self.rss.clear();
        self.swapped.clear();
        let other_labels = MemoryLabels {
            process: ProcessLabels::other(),
            pid: None,
        };
        let other = (!rest.is_empty()).then_some((other_labels, other));
        for (labels, (rss, swap)) in ranked.into_iter().chain(other) {
            self.rss.get_or_create(&labels).set(gauge_value(rss));
            self.swapped.get_or_create(&labels).set(gauge_value(swap));
        }
    }

    pub fn oom_kill(&mut self, labels: ProcessLabels) {
        let series = self.series_for(labels);
        self.oom_kills.get_or_create(&series).inc();
    }

    /// The agent's own figures: lost events and eBPF run time (kernel totals), its RSS and
    /// how much it holds.
    pub fn health(&mut self, health: &Health) {
        self.lost_events
            .inc_by(health.lost_events.saturating_sub(self.last_lost));
        self.last_lost = self.last_lost.max(health.lost_events);
        let uncounted = health.uncounted_page_allocations;
        self.uncounted_page_allocations
            .inc_by(uncounted.saturating_sub(self.uncounted_page_allocations.get()));
        if health.bpf_seconds > self.last_bpf_seconds {
            self.bpf_run_seconds
                .inc_by(health.bpf_seconds - self.last_bpf_seconds);
            self.last_bpf_seconds = health.bpf_seconds;
        }
        self.agent_rss.set(gauge_value(health.rss_bytes));
        for (map, entries) in &health.map_entries {
            self.map_entries
                .get_or_create(&MapLabels {
                    map: (*map).to_owned(),
                })
                .set(gauge_value(*entries));
        }
        self.processes_held.set(gauge_value(health.processes_held));
        self.profile_stacks.set(gauge_value(health.profile_stacks));
        let cleared = health.stack_table_clears;
        self.stack_table_clears
            .inc_by(cleared.saturating_sub(self.stack_table_clears.get()));
        let heap = &health.heap;
        self.heap_processes.set(gauge_value(heap.processes));
        self.heap_blocks.set(gauge_value(heap.blocks));
        self.heap_stacks.set(gauge_value(heap.stacks));
        for (what, total) in [
            ("blocks", heap.dropped_blocks),
            ("stacks", heap.dropped_stacks),
        ] {
            let counter = self.heap_dropped.get_or_create(&DroppedLabels { what });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The Prometheus text exposition.
    /// OpenMetrics text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// Prometheus's classic text format (0.0.4): counters' HELP and TYPE under the name
    /// their samples carry (`_total`), as promtool and older readers expect.
    pub fn render_classic(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

/// Five minutes without growth (updates are a second apart) frees a series' place.
const SERIES_IDLE_UPDATES: u64 = 300;

/// A byte count as a gauge's value (i64; no memory size comes near its end).
fn gauge_value(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(comm: &str) -> ProcessLabels {
        ProcessLabels::new(comm.to_owned(), "/".to_owned())
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
        let mut metrics = AgentMetrics::new(2, false);
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

    fn gauge(text: &str, metric: &str, labels: &str) -> Option<i64> {
        text.lines()
            .find(|l| l.starts_with(&format!("{metric}{{{labels}")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn idle_series_give_their_place_to_newcomers() {
        let mut metrics = AgentMetrics::new(1, false);
        metrics.idle_updates = 2;
        metrics.update_faults((10, 1), labels("boot"), 5, 0);
        metrics.end_update();
        // The bound is reached: a service started later goes to "other"...
        metrics.update_faults((20, 1), labels("service"), 3, 0);
        metrics.end_update();
        assert_eq!(minor(&metrics.render(), "service"), None);
        // ...until "boot" has been idle long enough.
        for _ in 0..2 {
            metrics.update_faults((20, 1), labels("service"), 3, 0);
            metrics.end_update();
        }
        metrics.update_faults((20, 1), labels("service"), 7, 0);
        metrics.end_update();
        let text = metrics.render();
        assert_eq!(minor(&text, "boot"), None, "{text}");
        assert_eq!(minor(&text, "service"), Some(4), "{text}");
        assert_eq!(minor(&text, "other"), Some(3), "{text}");
    }

    #[test]
    fn memory_gauges_keep_the_largest_series_and_sum_the_rest() {
        let mut metrics = AgentMetrics::new(2, false);
        let process = |pid, comm, rss_bytes, swap_bytes| ProcessMemory {
            pid,
            labels: labels(comm),
            rss_bytes,
            swap_bytes,
        };
        metrics.set_memory(vec![
            process(1, "big", 100, 0),
            process(2, "big", 50, 10),
            process(3, "mid", 80, 0),
            process(4, "small", 5, 1),
            process(5, "tiny", 1, 0),
            // A kernel thread: no memory, no series.
            process(6, "kthread", 0, 0),
        ]);
        let text = metrics.render();
        let rss = |comm: &str| {
            gauge(
                &text,
                "memtrace_process_rss_bytes",
                &format!("comm=\"{comm}\""),
            )
        };
        assert_eq!(rss("big"), Some(150), "{text}");
        assert_eq!(rss("mid"), Some(80), "{text}");
        assert_eq!(rss("other"), Some(6), "{text}");
        assert_eq!(rss("small"), None, "{text}");
        assert_eq!(rss("kthread"), None, "{text}");
        let swap = gauge(&text, "memtrace_process_swap_bytes", "comm=\"big\"");
        assert_eq!(swap, Some(10), "{text}");
        // Rebuilt each time: a series whose processes are gone disappears.
        metrics.set_memory(vec![process(3, "mid", 70, 0)]);
        let text = metrics.render();
        assert!(!text.contains("comm=\"big\""), "{text}");
        assert!(!text.contains("comm=\"other\""), "{text}");
    }

    #[test]
    fn pid_labels_only_when_asked_for() {
        let process = ProcessMemory {
            pid: 42,
            labels: ProcessLabels::new("web".to_owned(), "/docker/".to_owned() + &"ab".repeat(32)),
            rss_bytes: 4096,
            swap_bytes: 0,
        };
        let mut plain = AgentMetrics::new(10, false);
        plain.set_memory(vec![process.clone()]);
        let text = plain.render();
        assert!(!text.contains("pid="), "{text}");
        assert!(
            text.contains(&format!("container_id=\"{}\"", "ab".repeat(32))),
            "{text}"
        );
        let mut with_pids = AgentMetrics::new(10, true);
        with_pids.set_memory(vec![process]);
        assert!(with_pids.render().contains("pid=\"42\""));
    }
}
