//! `memtrace faults`: page faults per process, memory region and call stack.
pub mod args;
mod counter;
pub mod report;
mod table;

use anyhow::Result;

use crate::{
    commands::options::Format,
    kernel::hooks::{self, Attachment, CommandHooks},
    output,
    trace::{
        pipeline::{self, Traced},
        progress::Progress,
        request::{KernelOptions, TraceRequest},
        stacks::StackKey,
        symbolize::Symbolizer,
    },
};

use self::{
    args::{FaultsArgs, Kind},
    counter::{kind_name, FaultCounter},
    report::{FaultReport, ProcessRow, RegionRow},
};

pub const HOOKS: CommandHooks = CommandHooks {
    needs: &[&hooks::MINOR_FAULT, &hooks::MAJOR_FAULT],
    // Names the file of each file fault (else from /proc/PID/maps).
    improves: &[&hooks::FILEMAP_FAULT],
};

pub async fn run(args: FaultsArgs) -> Result<()> {
    let mut outputs = args.output.open()?;
    let kernel = KernelOptions {
        ring_bytes: args.ring_buffer,
        user_stacks: args.stacks.user(),
        kernel_stacks: args.stacks.kernel(),
        // A file fault's tag is taken by the fault's own program: every fault must run one.
        file_tags: args.kind == Kind::All && args.sample == 1,
        unwind_memory_mib: args.unwind.memory_mib(),
        python_frames: args.unwind.python_frames(),
        ..KernelOptions::default()
    };
    let period = args.sample;
    let hooks = [
        (args.kind != Kind::Major, &hooks::MINOR_FAULT),
        (args.kind != Kind::Minor, &hooks::MAJOR_FAULT),
    ]
    .into_iter()
    .filter(|(wanted, _)| *wanted)
    .map(|(_, hook)| Attachment::Sampled { hook, period })
    .collect();
    let request = TraceRequest {
        declared: &HOOKS,
        target: args.target.request(),
        follow_children: args.target.follows_children(),
        stop_after: args.run.duration,
        kernel,
        hooks,
    };
    let record_stacks = kernel.user_stacks || kernel.kernel_stacks;
    let mut counter = FaultCounter::new(record_stacks, period, Progress::new(args.run.interval));
    let traced = pipeline::trace(request, &mut counter).await?;
    counter.progress.finish();
    let report = build_report(&args, &counter, &traced)?;
    match args.output.format {
        Format::Table => table::write(&report, args.output.top, &mut outputs.report)?,
        Format::Json => report::write_json(&report, args.output.top, &mut outputs.report)?,
        Format::Folded => output::folded::write(&report, &mut outputs.report)?,
    }
    outputs.finish(&report, "memtrace faults")
}

fn build_report(args: &FaultsArgs, counter: &FaultCounter, traced: &Traced) -> Result<FaultReport> {
    let period = args.sample;
    let known = &traced.processes;
    let seconds = traced.duration.as_secs_f64().max(1e-9);
    let mut processes: Vec<ProcessRow> = counter
        .processes
        .iter()
        .map(|(&pid, entry)| {
            let [minor, major] = entry.total.map(|n| n * period);
            ProcessRow {
                pid,
                comm: known.name(pid),
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

    let label = |key: &StackKey| (known.name(key.tgid), kind_name(key.kind));
    let (stacks, stacks_total) = counter.stacks.resolve(
        &traced.tracer,
        &mut Symbolizer::new(),
        &known.maps,
        (!args.output.needs_every_stack()).then_some(args.output.top),
        period,
        args.output.grouping(),
        &label,
    )?;
    Ok(FaultReport {
        header: traced.header("faults"),
        sampled: period > 1,
        sample_period: period,
        stack_errors: traced.tracer.counters()?.stack_errors,
        processes,
        regions,
        stacks_total,
        stacks,
    })
}
