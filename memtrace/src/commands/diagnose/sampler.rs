//! What `memtrace diagnose` watches while tracing: the process's memory from /proc every
//! interval, with its page allocations and swap traffic from the kernel's tables, and the
//! fault stacks its events bring (for --html).
use std::time::Duration;

use memtrace_common::EventKind;

use super::verdicts::{Limits, Sample};
use crate::{
    host::{memcg::MemoryHierarchy, process_memory},
    kernel::tracer::Tracer,
    trace::{
        consumer::Consumer, page_origin::Origin, processes::Processes, records::Record,
        stacks::StackCounts,
    },
};

/// Samples the watched process every interval, and counts its sampled fault stacks.
pub struct Sampler {
    pub pid: Option<u32>,
    pub comm: String,
    interval: Duration,
    next_sample: Duration,
    pub samples: Vec<Sample>,
    pub limits: Limits,
    hierarchy: Option<MemoryHierarchy>,
    pub cgroup: Option<String>,
    swap: bool,
    /// Sampled fault stacks (--html's flame graph): minor faults 1 in MINOR_PERIOD, every
    /// major one.
    pub minor_stacks: StackCounts,
    pub major_stacks: StackCounts,
}

impl Sampler {
    pub fn new(interval: Duration, swap: bool) -> Self {
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
            minor_stacks: StackCounts::default(),
            major_stacks: StackCounts::default(),
        }
    }

    /// The process now, or None once it is gone.
    fn sample(&mut self, t: Duration, tracer: &Tracer) -> Option<Sample> {
        let pid = self.pid?;
        let process = procfs::process::Process::new(pid as i32).ok()?;
        let stat = process.stat().ok()?;
        // An exiting process has given its memory back already: not a reading of it.
        if matches!(stat.state, 'Z' | 'X') {
            return None;
        }
        let status = process.status().ok()?;
        status.vmrss?;
        self.look(&process, &stat.comm);
        // The kernel's table counts only the watched process's allocations.
        let pages_allocated = tracer
            .page_counts()
            .map(|counts| {
                counts
                    .iter()
                    .filter(|(key, _)| Origin::of_key(key).pid == pid)
                    .map(|(_, count)| count.pages)
                    .sum()
            })
            .unwrap_or(0);
        let swapped = if self.swap {
            tracer
                .swap_counts()
                .ok()
                .and_then(|counts| counts.get(&pid).copied())
                .unwrap_or_default()
        } else {
            Default::default()
        };
        let cgroup_usage_bytes = match (&self.hierarchy, &self.cgroup) {
            (Some(h), Some(path)) => h.read(path).usage_bytes,
            _ => None,
        };
        Some(Sample {
            t: t.as_secs_f64(),
            rss_kb: status.vmrss.unwrap_or(0),
            vsz_kb: stat.vsize / 1024,
            swap_kb: status.vmswap.unwrap_or(0),
            minflt: stat.minflt,
            majflt: stat.majflt,
            rss_anon_kb: status.rssanon.unwrap_or(0),
            stack_kb: status.vmstk.unwrap_or(0),
            pages_allocated,
            swap_out_pages: swapped.out_written,
            swap_in_pages: swapped.swapped_in,
            cgroup_usage_bytes,
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

    fn on_tick(&mut self, elapsed: Duration, tracer: &mut Tracer, _processes: &mut Processes) {
        if elapsed < self.next_sample {
            return;
        }
        self.next_sample = elapsed + self.interval;
        if let Some(sample) = self.sample(elapsed, tracer) {
            self.samples.push(sample);
        }
    }
}
