//! Counting faults as they are drained: per process (in total and in the current interval),
//! per process and memory region, per stack.
use std::{collections::HashMap, time::Duration};

use memtrace_common::EventKind;

use crate::{
    kernel::tracer::Tracer,
    trace::{
        consumer::Consumer,
        memory_maps::{FileId, MapsCache},
        processes::Processes,
        progress::Progress,
        records::{Event, Record},
        region::Region,
        stacks::StackCounts,
    },
};

/// The region of anonymous memory whose mapping was gone before memtrace read the maps.
const ANON_UNMAPPED: &str = "[anon, since unmapped]";

/// Minor and major counts, indexed by `slot`.
pub type Pair = [u64; 2];

fn slot(kind: EventKind) -> Option<usize> {
    match kind {
        EventKind::MinorFault => Some(0),
        EventKind::MajorFault => Some(1),
        _ => None,
    }
}

pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::MajorFault => "major",
        _ => "minor",
    }
}

#[derive(Default)]
pub struct ProcessEntry {
    pub total: Pair,
    interval: Pair,
}

/// Aggregates fault events as they are drained.
pub struct FaultCounter {
    pub processes: HashMap<u32, ProcessEntry>,
    pub regions: HashMap<(u32, Region), Pair>,
    /// Files the kernel said faults were served from, by identity, once resolved to a region.
    files: HashMap<FileId, Region>,
    pub stacks: StackCounts,
    record_stacks: bool,
    /// The sampling period: each event stands for this many faults.
    period: u64,
    pub progress: Progress,
}

impl FaultCounter {
    pub fn new(record_stacks: bool, period: u64, progress: Progress) -> Self {
        Self {
            processes: HashMap::new(),
            regions: HashMap::new(),
            files: HashMap::new(),
            stacks: StackCounts::default(),
            record_stacks,
            period,
            progress,
        }
    }

    /// The region of a fault. When the kernel named the file the fault was served from, that
    /// wins over the maps snapshot, which may be newer than the fault (the mapping replaced).
    fn region(&mut self, event: &Event, maps: &mut MapsCache) -> Region {
        let (tgid, addr) = (event.raw.tgid, event.raw.addr);
        let Some(id) = file_id(event) else {
            return match maps.region(tgid, addr) {
                // Not served from a file (the kernel would have said), mapped and unmapped
                // before memtrace read the maps: short-lived anonymous memory, like a freed
                // malloc buffer.
                Region::Unknown => Region::Other(ANON_UNMAPPED.to_owned()),
                region => region,
            };
        };
        if let Some(mapping) = maps.lookup(tgid, addr) {
            if mapping.file_id() == Some(id) {
                return mapping.region.clone();
            }
        }
        if let Some(region) = self.files.get(&id) {
            return region.clone();
        }
        // A mapping memtrace has not seen yet: read the maps once for this file.
        maps.capture(tgid);
        let region = match maps.file_region(id) {
            Some(region) => region.clone(),
            None => Region::Other(format!(
                "[file {}:{} inode {}, unmapped before memtrace saw it]",
                id.dev.0, id.dev.1, id.inode
            )),
        };
        self.files.insert(id, region.clone());
        region
    }
}

/// The file identity the kernel attached to a fault, in the form /proc/PID/maps uses.
fn file_id(event: &Event) -> Option<FileId> {
    (event.raw.file_dev != 0 || event.raw.file_ino != 0).then_some(FileId {
        // The kernel's dev_t: major in the top 12 bits, minor in the low 20.
        dev: (
            (event.raw.file_dev >> 20) as i32,
            (event.raw.file_dev & 0xf_ffff) as i32,
        ),
        inode: event.raw.file_ino,
    })
}

impl Consumer for FaultCounter {
    fn on_record(&mut self, record: &Record, processes: &mut Processes) {
        let Record::Event(event) = record else {
            return;
        };
        let tgid = event.raw.tgid;
        let Some(slot) = slot(event.kind) else {
            return;
        };
        let weight = event.raw.weight;
        let entry = self.processes.entry(tgid).or_default();
        entry.total[slot] += weight;
        entry.interval[slot] += weight;
        let region = self.region(event, &mut processes.maps);
        self.regions.entry((tgid, region)).or_default()[slot] += weight;
        if self.record_stacks {
            self.stacks.add(processes.stack_key(event), weight);
        }
    }

    fn on_tick(&mut self, elapsed: Duration, tracer: &mut Tracer, processes: &mut Processes) {
        let counters = tracer.counters().unwrap_or_default();
        if let Some(interval) = self.progress.interval_due(elapsed) {
            let seconds = interval.as_secs_f64();
            let mut active: Vec<(&u32, &ProcessEntry)> = self
                .processes
                .iter()
                .filter(|(_, e)| e.interval != [0, 0])
                .collect();
            active.sort_by_key(|(_, e)| std::cmp::Reverse(e.interval[0] + e.interval[1]));
            for (&pid, entry) in active {
                self.progress.interval_line(&format!(
                    "{:>8.1}s  pid {pid:<7} {:<16} minor/s {:>10.0}  major/s {:>8.0}",
                    elapsed.as_secs_f64(),
                    processes.name(pid),
                    entry.interval[0] as f64 / seconds,
                    entry.interval[1] as f64 / seconds,
                ));
            }
            for entry in self.processes.values_mut() {
                entry.interval = [0, 0];
            }
        }
        let text = format!(
            "{} faults seen, {} lost",
            counters.seen * self.period,
            counters.lost
        );
        self.progress.status(elapsed, &text);
    }
}
