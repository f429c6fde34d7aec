//! `memtrace faults`: page faults per process, memory region and call stack.
use std::{collections::HashMap, time::Duration};

use anyhow::Result;
use memtrace_common::EventKind;

use crate::{
    bpf::Tracer,
    cli::{FaultsArgs, Format, Kind, Stacks},
    events::Event,
    output,
    outputs::Outputs,
    pipeline::{self, KernelOptions},
    processes::Processes,
    procmaps::{FileId, Region},
    progress::Progress,
    report::{FaultReport, ProcessRow, RegionRow, TracerCost},
    session::Consumer,
    stacks::{StackCounts, StackKey},
    symbolize::Symbolizer,
};

/// The region of anonymous memory whose mapping was gone before memtrace read the maps.
const ANON_UNMAPPED: &str = "[anon, since unmapped]";

/// Minor and major counts, indexed by `slot`.
type Pair = [u64; 2];

fn slot(kind: EventKind) -> Option<usize> {
    match kind {
        EventKind::MinorFault => Some(0),
        EventKind::MajorFault => Some(1),
        _ => None,
    }
}

fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::MajorFault => "major",
        _ => "minor",
    }
}

#[derive(Default)]
struct ProcessEntry {
    total: Pair,
    interval: Pair,
}

/// Aggregates fault events as they are drained.
struct FaultCounter {
    known: Processes,
    processes: HashMap<u32, ProcessEntry>,
    regions: HashMap<(u32, Region), Pair>,
    /// Files the kernel said faults were served from, by identity, once resolved to a region.
    files: HashMap<FileId, Region>,
    stacks: StackCounts,
    record_stacks: bool,
    /// The sampling period: each event stands for this many faults.
    period: u64,
    progress: Progress,
}

impl FaultCounter {
    /// The region of a fault. When the kernel named the file the fault was served from, that
    /// wins over the maps snapshot, which may be newer than the fault (the mapping replaced).
    fn region(&mut self, event: &Event) -> Region {
        let (tgid, addr) = (event.raw.tgid, event.raw.addr);
        let Some(id) = file_id(event) else {
            return match self.known.maps.region(tgid, addr) {
                // Not served from a file (the kernel would have said), mapped and unmapped
                // before memtrace read the maps: short-lived anonymous memory, like a freed
                // malloc buffer.
                Region::Unknown => Region::Other(ANON_UNMAPPED.to_owned()),
                region => region,
            };
        };
        if let Some(mapping) = self.known.maps.lookup(tgid, addr) {
            if mapping.file_id() == Some(id) {
                return mapping.region.clone();
            }
        }
        if let Some(region) = self.files.get(&id) {
            return region.clone();
        }
        // A mapping memtrace has not seen yet: read the maps once for this file.
        self.known.maps.capture(tgid);
        let region = match self.known.maps.file_path(id) {
            Some(path) => Region::File(path.to_owned()),
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
    fn processes(&mut self) -> &mut Processes {
        &mut self.known
    }

    fn on_targets(&mut self, pids: &[u32]) {
        self.known.capture(pids);
    }

    fn on_record(&mut self, bytes: &[u8]) {
        let Some(event) = self.known.admit(bytes) else {
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
        let region = self.region(&event);
        self.regions.entry((tgid, region)).or_default()[slot] += weight;
        if self.record_stacks {
            self.stacks.add(self.known.stack_key(&event), weight);
        }
    }

    fn on_tick(&mut self, elapsed: Duration, tracer: &mut Tracer) {
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
                    self.known.name(pid),
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

pub async fn run(args: &FaultsArgs) -> Result<()> {
    let mut outputs = Outputs::open(&args.output)?;
    let options = KernelOptions {
        page_stacks: false,
        ring_bytes: args.ring_buffer,
        user_stacks: matches!(args.stacks, Stacks::User | Stacks::Both),
        kernel_stacks: matches!(args.stacks, Stacks::Kernel | Stacks::Both),
        // A file fault's tag is taken by the fault's own program: every fault must run one.
        file_tags: args.kind == Kind::All && args.sample == 1,
        swap: None,
        malloc: None,
        pages: false,
        stack_sample_period: 1,
        exits: false,
        oom: false,
    };
    let mut counter = FaultCounter {
        known: Processes::default(),
        processes: HashMap::new(),
        regions: HashMap::new(),
        files: HashMap::new(),
        stacks: StackCounts::default(),
        record_stacks: options.user_stacks || options.kernel_stacks,
        period: args.sample,
        progress: Progress::new(args.run.interval),
    };
    let (minor, major) = (args.kind != Kind::Major, args.kind != Kind::Minor);
    let period = args.sample;
    // The pipeline attaches the file tagger (file_tags) where the kernel has its tracepoint.
    let attach =
        |tracer: &mut Tracer, _single: Option<u32>| tracer.attach_faults(minor, major, period);
    let traced = pipeline::trace(&args.target, &args.run, options, &attach, &mut counter).await?;
    counter.progress.finish();

    let counters = traced.tracer.counters()?;
    counter.known.report_undecodable();
    let seconds = traced.duration.as_secs_f64().max(1e-9);
    let mut processes: Vec<ProcessRow> = counter
        .processes
        .iter()
        .map(|(&pid, entry)| {
            let [minor, major] = entry.total.map(|n| n * period);
            ProcessRow {
                pid,
                comm: counter.known.name(pid),
                minor,
                major,
                minor_per_s: minor as f64 / seconds,
                major_per_s: major as f64 / seconds,
            }
        })
        .collect();
    processes.sort_by_key(|row| (std::cmp::Reverse(row.minor + row.major), row.pid));
    let mut regions: Vec<RegionRow> = counter
        .regions
        .iter()
        .map(|((pid, region), counts)| RegionRow {
            pid: *pid,
            region: region.to_string(),
            minor: counts[0] * period,
            major: counts[1] * period,
        })
        .collect();
    regions.sort_by(|a, b| {
        (b.minor + b.major)
            .cmp(&(a.minor + a.major))
            .then(a.pid.cmp(&b.pid))
            .then(a.region.cmp(&b.region))
    });

    // Every stack is needed for folded, flame graph and pprof output; otherwise only the top.
    let all_stacks = args.output.format == Format::Folded
        || args.output.flamegraph.is_some()
        || args.output.pprof.is_some();
    let label = |key: &StackKey| (counter.known.name(key.tgid), kind_name(key.kind));
    let mut symbolizer = Symbolizer::new();
    let stacks = counter.stacks.resolve(
        &traced.tracer,
        &mut symbolizer,
        &counter.known.maps,
        (!all_stacks).then_some(args.output.top),
        period,
        &label,
    )?;

    let report = FaultReport {
        command: "faults",
        duration_s: traced.duration.as_secs_f64(),
        lost_events: counters.lost,
        sampled: period > 1,
        sample_period: period,
        stack_errors: counters.stack_errors,
        target: traced.target,
        exit: traced.exit,
        tracer: TracerCost::measure(traced.attach_ms, &traced.tracer),
        processes,
        regions,
        stacks,
    };
    write_report(&report, args, &mut outputs)
}

fn write_report(report: &FaultReport, args: &FaultsArgs, outputs: &mut Outputs) -> Result<()> {
    match args.output.format {
        Format::Table => output::table::write(report, args.output.top, &mut outputs.report)?,
        Format::Json => output::json::write(report, args.output.top, &mut outputs.report)?,
        Format::Folded => output::folded::write(report, &mut outputs.report)?,
    }
    outputs.finish(report, "memtrace faults")
}
