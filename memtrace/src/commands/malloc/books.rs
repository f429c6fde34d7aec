//! The books `memtrace malloc` keeps while tracing: per process, calls and bytes; per stack,
//! what was allocated; sizes; and every block still outstanding, with its age.
use std::{collections::HashMap, time::Duration};

use memtrace_common::{AllocFn, EventKind, OomKill};

use super::{
    lifetimes::Lifetimes,
    peak::Peaks,
    resident::{self, AllocatorMappings, ResidentSplit},
    timeline::{ProcessAt, Timeline},
};
use crate::{
    commands::oom::{self, OomKillRow},
    host::memcg::MemoryHierarchy,
    kernel::tracer::Tracer,
    trace::{
        clock::TraceClock,
        consumer::Consumer,
        memory_maps::MapsCache,
        processes::Processes,
        progress::Progress,
        records::Record,
        stack_groups,
        stacks::{self, StackKey},
        symbolize::Symbolizer,
    },
};

/// How often the blocks of exited processes are folded away.
const EXIT_CHECK_EVERY: Duration = Duration::from_secs(2);

/// How often each process's resident memory is split (its smaps read: the allocator's
/// mappings against the rest) when many are traced; up to `FEW_PROCESSES`, at every moment
/// of the timeline.
const SPLIT_EVERY: Duration = Duration::from_secs(1);
const FEW_PROCESSES: usize = 16;

/// Stacks shown in the live view.
const LIVE_STACKS: usize = 5;

/// What one block seen stands for: itself, or with --sample-bytes, the calls and bytes it
/// estimates (weighted by the inverse of its chance of being sampled).
#[derive(Default, Clone, Copy)]
pub struct Weight {
    pub(crate) calls: f64,
    pub(crate) bytes: f64,
}

impl Weight {
    /// What a block of `size` bytes stands for when 1 point in `sample_bytes` bytes is
    /// sampled (0: every block). Sampled with probability p = 1 - exp(-size/N), it stands for
    /// 1/p calls and size/p bytes (unbiased).
    pub fn of_block(size: u64, sample_bytes: u64) -> Self {
        if sample_bytes == 0 {
            return Self {
                calls: 1.0,
                bytes: size as f64,
            };
        }
        let p = -(-(size.max(1) as f64) / sample_bytes as f64).exp_m1();
        Self {
            calls: 1.0 / p,
            bytes: size as f64 / p,
        }
    }
}

impl std::ops::SubAssign for Weight {
    fn sub_assign(&mut self, other: Self) {
        self.calls -= other.calls;
        self.bytes -= other.bytes;
    }
}

impl std::ops::AddAssign for Weight {
    fn add_assign(&mut self, other: Self) {
        self.calls += other.calls;
        self.bytes += other.bytes;
    }
}

/// What one stack allocated, and how long its freed blocks lived.
#[derive(Default, Clone, Copy)]
pub struct StackBooks {
    pub(super) allocated: Weight,
    pub(super) lifetimes: Lifetimes,
}

/// A traced process the OOM killer chose.
pub struct OomKillSeen {
    /// When it was seen (to the drain's tick).
    pub at: Duration,
    /// The bytes it had allocated then.
    pub live_bytes: f64,
    pub kill: OomKillRow,
}

/// A block still allocated.
#[derive(Clone, Copy)]
struct Block {
    pub(super) weight: Weight,
    stack: StackKey,
    /// When it was allocated, since tracing started.
    at: Duration,
}

/// One process's calls and bytes (estimates when sampling).
#[derive(Default, Clone)]
pub struct ProcessBooks {
    pub(super) calls: HashMap<AllocFn, f64>,
    pub(super) allocated: f64,
    pub(super) freed: f64,
    pub(super) frees_of_untraced_blocks: u64,
}

/// Everything gathered while tracing.
pub struct AllocBooks {
    /// --sample-bytes, or 0.
    pub(super) sample_bytes: u64,
    pub(super) processes: HashMap<u32, ProcessBooks>,
    pub(super) stacks: HashMap<StackKey, StackBooks>,
    /// Allocations by log2 of their size: bucket i holds sizes in (2^(i-1), 2^i].
    pub(super) sizes: [f64; 65],
    outstanding: HashMap<(u32, u64), Block>,
    /// --max-outstanding, and the blocks past it.
    max_outstanding: usize,
    pub(super) outstanding_dropped: u64,
    /// Blocks of exited processes, by stack (see `fold_exited`), and how many were folded.
    exited: HashMap<StackKey, Outstanding>,
    pub(super) exited_blocks: u64,
    next_exit_check: Duration,
    /// The drain's last tick.
    pub(super) now: Duration,
    /// What the events' kernel timestamps count from.
    clock: TraceClock,
    /// --temporary: blocks freed within this are temporary.
    temporary: Duration,
    progress: Progress,
    pub(super) symbolizer: Symbolizer,
    /// Each process's peak of bytes allocated, and its stacks then.
    pub(super) peaks: Peaks,
    pub(super) timeline: Timeline,
    /// Traced processes the OOM killer chose, when, and their cgroup then.
    pub(super) oom_kills: HashMap<u32, OomKillSeen>,
    memory_cgroups: Option<MemoryHierarchy>,
    /// The mappings the blocks were in, and each process's last split of its resident memory.
    allocator_mappings: AllocatorMappings,
    pub(super) resident: HashMap<u32, ResidentSplit>,
    next_split: Duration,
}

impl Consumer for AllocBooks {
    fn on_record(&mut self, record: &Record, processes: &mut Processes) {
        let event = match record {
            Record::Event(event) => event,
            Record::OomKill(kill) => return self.on_oom_kill(kill),
            Record::ProcessExit(_) => return,
        };
        let (tgid, addr, size) = (event.raw.tgid, event.raw.addr, event.raw.weight);
        let at = self.clock.since_start(event.raw.time_ns);
        let Some(function) = AllocFn::from_raw(event.raw.detail) else {
            return;
        };
        match event.kind {
            EventKind::Alloc => {
                // Keeps the process's maps current (a block in memory not mapped before makes
                // them be read again), so the libraries loaded since exec get symbols.
                processes.maps.region(tgid, addr);
                (self.allocator_mappings).block_at(tgid, addr, &processes.maps);
                let stack = processes.stack_key(event);
                let weight = Weight::of_block(size, self.sample_bytes);
                let row = self.processes.entry(tgid).or_default();
                *row.calls.entry(function).or_default() += weight.calls;
                row.allocated += weight.bytes;
                self.stacks.entry(stack).or_default().allocated += weight;
                self.sizes[log2_bucket(size)] += weight.calls;
                let block = Block { weight, stack, at };
                // A block of the image an exec replaced at the same address is not this one.
                self.take_block(tgid, addr, &processes.maps);
                if self.outstanding.len() < self.max_outstanding {
                    self.outstanding.insert((tgid, addr), block);
                    self.peaks.allocated(tgid, stack, weight, at);
                } else {
                    self.outstanding_dropped += 1;
                }
            }
            EventKind::Free => {
                let block = self.take_block(tgid, addr, &processes.maps);
                let row = self.processes.entry(tgid).or_default();
                // A free, or the old block of a realloc: a call of its own only when no new
                // block came back (realloc(p, 0), which carries size 0). Sampling sends only
                // the frees of sampled blocks, each standing for as many as its block.
                if matches!(function, AllocFn::Free | AllocFn::Munmap) || size == 0 {
                    let calls = block.as_ref().map_or(1.0, |b| b.weight.calls);
                    *row.calls.entry(function).or_default() += calls;
                }
                match block {
                    Some(block) => {
                        row.freed += block.weight.bytes;
                        if let Some(books) = self.stacks.get_mut(&block.stack) {
                            let lifetime = at.saturating_sub(block.at);
                            (books.lifetimes).freed(lifetime, block.weight.calls, self.temporary);
                        }
                    }
                    None => row.frees_of_untraced_blocks += 1,
                }
            }
            _ => {}
        }
    }

    fn on_start(&mut self, clock: TraceClock) {
        self.clock = clock;
    }

    fn on_tick(&mut self, elapsed: Duration, tracer: &mut Tracer, processes: &mut Processes) {
        self.now = elapsed;
        if elapsed >= self.next_exit_check {
            self.next_exit_check = elapsed + EXIT_CHECK_EVERY;
            self.fold_exited();
        }
        if self.timeline.due(elapsed) {
            self.take_moment(elapsed);
        }
        if self.progress.interval_due(elapsed).is_none() {
            return;
        }
        let top = self.outstanding_by_stack(Duration::ZERO);
        let keys: Vec<(StackKey, u64)> = top
            .iter()
            .take(LIVE_STACKS)
            .map(|(key, o)| (*key, o.bytes()))
            .collect();
        let label = |key: &StackKey| (processes.name(key.tgid), "outstanding");
        let rows = stacks::rows(tracer, &mut self.symbolizer, &processes.maps, &keys, &label)
            .unwrap_or_default();
        let total: f64 = self.outstanding.values().map(|b| b.weight.bytes).sum();
        let mut table = vec![format!(
            "memtrace malloc {:>7.1}s  outstanding: {} blocks seen, {:.0} bytes{}",
            elapsed.as_secs_f64(),
            self.outstanding.len(),
            total,
            if self.sample_bytes > 0 {
                " (estimated)"
            } else {
                ""
            }
        )];
        for (row, (_, o)) in rows.iter().zip(&top) {
            table.push(format!(
                "  {:>12} B in {:>8} blocks  pid {:<7} {}",
                o.bytes(),
                o.allocations(),
                row.pid,
                row.frames
                    .iter()
                    .take(4)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" < ")
            ));
        }
        self.progress.interval_table(&table);
    }
}

/// Outstanding blocks of one stack.
#[derive(Clone)]
pub struct Outstanding {
    pub(super) weight: Weight,
    pub(super) oldest: Duration,
}

impl stack_groups::Weight for Weight {
    fn merge(&mut self, other: &Self) {
        *self += *other;
    }
    fn heft(&self) -> f64 {
        self.bytes
    }
}

impl stack_groups::Weight for StackBooks {
    fn merge(&mut self, other: &Self) {
        self.allocated += other.allocated;
        self.lifetimes.merge(&other.lifetimes);
    }
    fn heft(&self) -> f64 {
        self.allocated.bytes
    }
}

/// A stack's books ranked by its temporary blocks: the stacks that churn most.
#[derive(Clone, Copy)]
pub struct Churn(pub StackBooks);

impl stack_groups::Weight for Churn {
    fn merge(&mut self, other: &Self) {
        stack_groups::Weight::merge(&mut self.0, &other.0);
    }
    fn heft(&self) -> f64 {
        self.0.lifetimes.temporary
    }
}

impl stack_groups::Weight for Outstanding {
    fn merge(&mut self, other: &Self) {
        self.weight += other.weight;
        self.oldest = self.oldest.min(other.oldest);
    }
    fn heft(&self) -> f64 {
        self.weight.bytes
    }
}

impl Outstanding {
    fn add(&mut self, block: &Block) {
        self.weight += block.weight;
        self.oldest = self.oldest.min(block.at);
    }

    pub fn allocations(&self) -> u64 {
        self.weight.calls.round() as u64
    }

    pub fn bytes(&self) -> u64 {
        self.weight.bytes.round() as u64
    }
}

impl AllocBooks {
    pub fn new(
        sample_bytes: u64,
        max_outstanding: u64,
        temporary: Duration,
        interval: Option<Duration>,
        progress: Progress,
    ) -> Self {
        Self {
            processes: HashMap::new(),
            stacks: HashMap::new(),
            sizes: [0.0; 65],
            sample_bytes,
            outstanding: HashMap::new(),
            max_outstanding: usize::try_from(max_outstanding).unwrap_or(usize::MAX),
            outstanding_dropped: 0,
            exited: HashMap::new(),
            exited_blocks: 0,
            next_exit_check: EXIT_CHECK_EVERY,
            now: Duration::ZERO,
            clock: TraceClock::default(),
            temporary,
            progress,
            symbolizer: Symbolizer::new(),
            peaks: Peaks::default(),
            timeline: Timeline::new(interval),
            allocator_mappings: AllocatorMappings::default(),
            resident: HashMap::new(),
            next_split: Duration::ZERO,
            oom_kills: HashMap::new(),
            memory_cgroups: MemoryHierarchy::find(),
        }
    }

    /// The OOM killer chose a victim: if it is a traced process, its kill is kept with what
    /// it had allocated then (its blocks stay as they were: a killed process frees nothing).
    fn on_oom_kill(&mut self, kill: &OomKill) {
        if !self.processes.contains_key(&kill.pid) {
            return;
        }
        let seen = OomKillSeen {
            at: self.now,
            live_bytes: self.peaks.live_bytes(kill.pid),
            kill: oom::describe(self.memory_cgroups.as_ref(), kill),
        };
        self.oom_kills.insert(kill.pid, seen);
    }

    /// A moment of the timeline, at `at`: each process's bytes allocated now and in all, and
    /// its resident memory (split as `SPLIT_EVERY` says; once more at the end, see `finish`).
    fn take_moment(&mut self, at: Duration) {
        let split = at >= self.next_split || self.processes.len() <= FEW_PROCESSES;
        if split {
            self.next_split = at + SPLIT_EVERY;
        }
        let mut moment = Vec::with_capacity(self.processes.len());
        for (&pid, process) in &self.processes {
            let live_bytes = self.peaks.live_bytes(pid);
            let rss_anon_bytes = if split {
                let read = self.allocator_mappings.read(pid, live_bytes, at);
                if let Some(read) = read {
                    self.resident.insert(pid, read);
                }
                read.map(|read| read.rss_anon_bytes)
            } else {
                resident::rss_anon_bytes(pid)
            };
            moment.push(ProcessAt {
                pid,
                live_bytes,
                allocated_bytes: process.allocated,
                rss_anon_bytes,
            });
        }
        moment.sort_by_key(|p| p.pid);
        self.timeline.record(at, moment);
    }

    /// The trace ended at `at`: the timeline's last moment, with the resident memory of the
    /// processes still alive split once more.
    pub fn finish(&mut self, at: Duration) {
        self.now = at;
        self.next_split = Duration::ZERO;
        self.take_moment(at);
    }

    /// The blocks of processes that have exited: never freed, they join the per-stack totals
    /// of `exited` (still reported with --leaks), and the blocks themselves are dropped, so a
    /// long system-wide trace does not keep every dead process's blocks.
    fn fold_exited(&mut self) {
        let mut alive: HashMap<u32, bool> = HashMap::new();
        let mut gone = Vec::new();
        self.outstanding.retain(|&(tgid, _), block| {
            let is_alive = *alive
                .entry(tgid)
                .or_insert_with(|| crate::host::process_exists(tgid));
            if !is_alive {
                gone.push(*block);
            }
            is_alive
        });
        for block in gone {
            self.retire(block);
        }
    }

    /// The outstanding block at `addr` in the process's current image, taken out. A block
    /// left by an image that exec replaced is retired instead: that address space is gone,
    /// and the block was never freed in it.
    fn take_block(&mut self, tgid: u32, addr: u64, maps: &MapsCache) -> Option<Block> {
        let block = self.outstanding.remove(&(tgid, addr))?;
        self.peaks.freed(tgid, block.stack, block.weight);
        if block.stack.generation == maps.generation(tgid) {
            return Some(block);
        }
        self.retire(block);
        None
    }

    /// A block whose address space is gone: it joins its stack's totals in `exited`.
    fn retire(&mut self, block: Block) {
        self.exited
            .entry(block.stack)
            .or_insert_with(|| Outstanding {
                weight: Weight::default(),
                oldest: block.at,
            })
            .add(&block);
        self.exited_blocks += 1;
    }

    /// Blocks at least `min_age` old (of processes alive or exited), by stack, most bytes
    /// first.
    pub fn outstanding_by_stack(&self, min_age: Duration) -> Vec<(StackKey, Outstanding)> {
        let mut by_stack: HashMap<StackKey, Outstanding> = HashMap::new();
        for block in self.outstanding.values() {
            if self.now.saturating_sub(block.at) < min_age {
                continue;
            }
            by_stack
                .entry(block.stack)
                .or_insert(Outstanding {
                    weight: Weight::default(),
                    oldest: block.at,
                })
                .add(block);
        }
        for (stack, folded) in &self.exited {
            if self.now.saturating_sub(folded.oldest) < min_age {
                continue;
            }
            let entry = by_stack.entry(*stack).or_insert(Outstanding {
                weight: Weight::default(),
                oldest: folded.oldest,
            });
            entry.weight += folded.weight;
            entry.oldest = entry.oldest.min(folded.oldest);
        }
        let mut sorted: Vec<_> = by_stack.into_iter().collect();
        sorted.sort_by(|a, b| {
            (b.1.weight.bytes)
                .total_cmp(&a.1.weight.bytes)
                .then(a.0.user_stack.cmp(&b.0.user_stack))
        });
        sorted
    }
}

/// The log2 bucket of a size (or a lifetime in µs): i such that 2^(i-1) < value <= 2^i (0
/// and 1 in bucket 0).
pub fn log2_bucket(value: u64) -> usize {
    if value <= 1 {
        0
    } else {
        64 - (value - 1).leading_zeros() as usize
    }
}

/// Test helpers of the malloc modules: a stack of process 7 (`user_stack` tells them apart),
/// and a weight.
#[cfg(test)]
pub(super) mod test_support {
    use memtrace_common::EventKind;

    use super::Weight;
    use crate::trace::stacks::StackKey;

    pub fn key(user_stack: u64) -> StackKey {
        StackKey {
            tgid: 7,
            generation: 0,
            kind: EventKind::Alloc,
            user_stack,
            kernel_stack_id: -1,
        }
    }

    pub fn weight(calls: f64, bytes: f64) -> Weight {
        Weight { calls, bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::log2_bucket;

    #[test]
    fn sizes_fall_in_log2_buckets() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 0);
        assert_eq!(log2_bucket(2), 1);
        assert_eq!(log2_bucket(3), 2);
        assert_eq!(log2_bucket(64), 6);
        assert_eq!(log2_bucket(65), 7);
        assert_eq!(log2_bucket(u64::MAX), 64);
    }
}
