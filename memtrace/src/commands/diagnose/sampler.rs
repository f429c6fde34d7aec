//! What `memtrace diagnose` watches while tracing: the memory of the process and of the
//! processes it started (the trace follows them) from /proc every interval, with their page
//! allocations and swap traffic from the kernel's tables, and the fault stacks their events
//! bring (for --html).
use std::{collections::HashMap, time::Duration};

use memtrace_common::EventKind;

use super::verdicts::{Limits, Member, Sample};
use crate::{
    host::{memcg::MemoryHierarchy, process_memory},
    kernel::tracer::Tracer,
    trace::{
        consumer::Consumer, page_origin::Origin, processes::Processes, records::Record,
        stacks::StackCounts,
    },
};

/// Samples the watched process (with its descendants: the tree a command starts) every
/// interval, and counts its sampled fault stacks.
pub struct Sampler {
    /// The process given or started: its name, limits and cgroup are the report's.
    pub pid: Option<u32>,
    pub comm: String,
    interval: Duration,
    next_sample: Duration,
    pub samples: Vec<Sample>,
    pub limits: Limits,
    hierarchy: Option<MemoryHierarchy>,
    pub cgroup: Option<String>,
    swap: bool,
    /// Whether the descendants are watched too (the trace follows them).
    tree: bool,
    /// Each member's last figures that only grow (faults, pages, swap), kept after it exits
    /// so the tree's totals never fall.
    counted: HashMap<u32, Counted>,
    /// Sampled fault stacks (--html's flame graph): minor faults 1 in MINOR_PERIOD, every
    /// major one.
    pub minor_stacks: StackCounts,
    pub major_stacks: StackCounts,
}

/// A member's figures that only grow.
#[derive(Clone, Copy, Default)]
struct Counted {
    minflt: u64,
    majflt: u64,
    pages_allocated: u64,
    swap_out_pages: u64,
    swap_in_pages: u64,
}

/// One member read now.
struct Reading {
    pid: u32,
    comm: String,
    rss_kb: u64,
    vsz_kb: u64,
    swap_kb: u64,
    rss_anon_kb: u64,
    stack_kb: u64,
    counted: Counted,
}

impl Sampler {
    pub fn new(interval: Duration, swap: bool, tree: bool) -> Self {
        Self {
            pid: None,
            comm: String::new(),
            interval,
            next_sample: Duration::ZERO,
            samples: Vec::new(),
            limits: Limits::default(),
            hierarchy: MemoryHierarchy::find(),
            cgroup: None,
            swap,
            tree,
            counted: HashMap::new(),
            minor_stacks: StackCounts::default(),
            major_stacks: StackCounts::default(),
        }
    }

    /// The tree now: the watched process and the descendants the trace followed, summed; None
    /// once none is left.
    fn sample(&mut self, t: Duration, tracer: &Tracer, processes: &Processes) -> Option<Sample> {
        let root = self.pid?;
        // The kernel's tables count only traced processes, by pid: summed per pid once.
        let mut pages: HashMap<u32, u64> = HashMap::new();
        for (key, count) in tracer.page_counts().into_iter().flatten() {
            *pages.entry(Origin::of_key(&key).pid).or_default() += count.pages;
        }
        let swapped = if self.swap {
            tracer.swap_counts().ok()
        } else {
            None
        };
        let descendants = processes.forked().iter().filter(|_| self.tree);
        let members = std::iter::once(root).chain(descendants.copied());
        let readings: Vec<Reading> = members
            .filter_map(|pid| {
                let mut reading = read_member(pid)?;
                reading.counted.pages_allocated = pages.get(&pid).copied().unwrap_or(0);
                if let Some(swap) = swapped.as_ref().and_then(|s| s.get(&pid)) {
                    reading.counted.swap_out_pages = swap.out_written;
                    reading.counted.swap_in_pages = swap.swapped_in;
                }
                Some(reading)
            })
            .collect();
        if readings.is_empty() {
            return None;
        }
        if let Some(reading) = readings.iter().find(|r| r.pid == root) {
            if let Ok(process) = procfs::process::Process::new(root as i32) {
                self.look(&process, &reading.comm);
            }
        }
        for reading in &readings {
            self.counted.insert(reading.pid, reading.counted);
        }
        let total = |f: fn(&Counted) -> u64| self.counted.values().map(f).sum::<u64>();
        let largest = readings.iter().max_by_key(|r| r.rss_kb)?;
        let cgroup_usage_bytes = match (&self.hierarchy, &self.cgroup) {
            (Some(h), Some(path)) => h.read(path).usage_bytes,
            _ => None,
        };
        Some(Sample {
            t: t.as_secs_f64(),
            rss_kb: readings.iter().map(|r| r.rss_kb).sum(),
            vsz_kb: readings.iter().map(|r| r.vsz_kb).max().unwrap_or(0),
            swap_kb: readings.iter().map(|r| r.swap_kb).sum(),
            minflt: total(|c| c.minflt),
            majflt: total(|c| c.majflt),
            rss_anon_kb: readings.iter().map(|r| r.rss_anon_kb).sum(),
            stack_kb: readings.iter().map(|r| r.stack_kb).max().unwrap_or(0),
            pages_allocated: total(|c| c.pages_allocated),
            swap_out_pages: total(|c| c.swap_out_pages),
            swap_in_pages: total(|c| c.swap_in_pages),
            cgroup_usage_bytes,
            processes: readings.len() as u32,
            largest: (readings.len() > 1).then(|| Member {
                pid: largest.pid,
                comm: largest.comm.clone(),
                rss_kb: largest.rss_kb,
            }),
        })
    }

    /// Its name, stack limit, cgroup and the cgroup's limit, which an exec or a move (a
    /// command that puts itself in a cgroup, a container runtime) can change.
    fn look(&mut self, process: &procfs::process::Process, comm: &str) {
        comm.clone_into(&mut self.comm);
        self.limits.stack_limit_kb = process_memory::stack_limit_kb(process);
        if let (Some(h), Some(pid)) = (&self.hierarchy, self.pid) {
            let path = h.path_of(pid);
            if path != self.cgroup {
                self.limits.cgroup_limit_bytes =
                    path.as_ref().and_then(|path| h.read(path).limit_bytes);
                self.cgroup = path;
                // Usage read so far was another cgroup's: not to be held against this limit.
                for sample in &mut self.samples {
                    sample.cgroup_usage_bytes = None;
                }
            }
        }
    }
}

/// A process read from /proc now; None once it is gone, or exiting (it has given its memory
/// back already: not a reading of it).
fn read_member(pid: u32) -> Option<Reading> {
    let process = procfs::process::Process::new(pid as i32).ok()?;
    let stat = process.stat().ok()?;
    if matches!(stat.state, 'Z' | 'X') {
        return None;
    }
    let status = process.status().ok()?;
    Some(Reading {
        pid,
        rss_kb: status.vmrss?,
        vsz_kb: stat.vsize / 1024,
        swap_kb: status.vmswap.unwrap_or(0),
        rss_anon_kb: status.rssanon.unwrap_or(0),
        stack_kb: status.vmstk.unwrap_or(0),
        counted: Counted {
            minflt: stat.minflt,
            majflt: stat.majflt,
            ..Counted::default()
        },
        comm: stat.comm,
    })
}

impl Consumer for Sampler {
    fn on_targets(&mut self, pids: &[u32]) {
        self.pid = pids.first().copied();
    }

    fn on_record(&mut self, record: &Record, processes: &mut Processes) {
        // Faults bring their stacks (for --html).
        let Record::Event(event) = record else {
            return;
        };
        let key = processes.stack_key(event);
        match event.kind {
            EventKind::MinorFault => self.minor_stacks.add(key, 1),
            EventKind::MajorFault => self.major_stacks.add(key, 1),
            _ => {}
        }
    }

    fn on_tick(&mut self, elapsed: Duration, tracer: &mut Tracer, processes: &mut Processes) {
        if elapsed < self.next_sample {
            return;
        }
        self.next_sample = elapsed + self.interval;
        if let Some(sample) = self.sample(elapsed, tracer, processes) {
            self.samples.push(sample);
        }
    }
}
