//! `memtrace malloc`: heap allocations per call stack, and the blocks never freed. The
//! allocators the target uses are found in its files (`allocators`, `program_files`) and
//! hooked where their probes cost least (`probes`); the kernel side (memtrace-ebpf's `malloc`)
//! sends every block allocated and freed; the books are kept here (`books`): per process, per
//! stack, sizes, and the blocks still outstanding.
mod allocators;
pub mod args;
pub(crate) mod books;
pub(crate) mod heap_profile;
mod html;
mod lifetimes;
mod peak;
pub(crate) mod probes;
mod report;
mod resident;
mod table;
mod timeline;
mod unhooked;

use std::collections::HashMap;

use anyhow::Result;
use memtrace_common::AllocFn;

use self::{
    args::MallocArgs,
    books::{AllocBooks, Churn, Outstanding, StackBooks, Weight},
    peak::Peak,
    report::{
        AllocStackRow, HeapOomKill, HookedAllocator, MallocProcessRow, MallocReport,
        OutstandingRow, PeakStackRow, SizeBucket, TemporaryStackRow,
    },
};
use crate::{
    commands::options::Format,
    kernel::hooks::{self, Attachment, CommandHooks, UprobeSite},
    output::{files, flamegraph, folded, json, profile::Reweighted},
    trace::{
        pipeline::{self, Traced},
        progress::Progress,
        request::{KernelOptions, TraceRequest},
        stacks::{self, StackKey},
    },
};

pub const HOOKS: CommandHooks = CommandHooks {
    needs: &[
        &hooks::ALLOC_ENTRIES[0],
        &hooks::ALLOC_ENTRIES[1],
        &hooks::ALLOC_ENTRIES[2],
        &hooks::ALLOC_ENTRIES[3],
        &hooks::ALLOC_ENTRIES[4],
        &hooks::ALLOC_ENTRIES[5],
        &hooks::ALLOC_ENTRIES[6],
        &hooks::ALLOC_ENTRIES[7],
        &hooks::ALLOC_ENTRIES[8],
        &hooks::ALLOC_ENTRIES[9],
        &hooks::ALLOC_RETURN,
        &hooks::MMAP_ENTER,
        &hooks::MMAP_EXIT,
        &hooks::MUNMAP_ENTER,
    ],
    // A traced process's OOM kill, in its report.
    improves: &[&hooks::OOM_KILL],
};

pub async fn run(args: MallocArgs) -> Result<()> {
    let mut outputs = args.output.open()?;
    let allocators = probes::allocators(&args)?;
    // Each allocator's functions, in the order their sites are attached.
    let sites: Vec<Vec<(String, Option<UprobeSite>)>> =
        allocators.iter().map(probes::sites).collect();
    let mut hooks: Vec<Attachment> = (sites.iter().flatten())
        .filter_map(|(_, site)| site.clone().map(Attachment::Uprobes))
        .collect();
    if args.mmap {
        hooks.extend(probes::mmap_hooks());
    }
    hooks.push(Attachment::Hook(&hooks::OOM_KILL));
    let request = TraceRequest {
        declared: &HOOKS,
        target: args.target.request(),
        follow_children: args.target.follows_children(),
        stop_after: args.duration,
        kernel: KernelOptions {
            user_stacks: true,
            malloc: Some(args.sample_bytes.unwrap_or(0)),
            unwind_memory_mib: args.unwind.memory_mib(),
            python_frames: args.unwind.python_frames(),
            ..KernelOptions::default()
        },
        hooks,
    };
    let mut books = AllocBooks::new(
        args.sample_bytes.unwrap_or(0),
        args.max_outstanding,
        args.temporary,
        args.interval,
        Progress::new(args.interval),
    );
    let traced = pipeline::trace(request, &mut books).await?;
    books.finish(traced.duration);
    // What was hooked, aliases included, in the order tried; then --mmap's.
    let mut attached = traced.attached.iter();
    let hooked: Vec<HookedAllocator> = (allocators.iter().zip(sites))
        .map(|(allocator, sites)| HookedAllocator {
            kind: allocator.kind,
            library: allocator.shown.display().to_string(),
            functions: (sites.into_iter())
                .filter(|(_, site)| site.is_none() || attached.next() == Some(&true))
                .map(|(name, _)| name)
                .collect(),
        })
        .collect();
    unhooked::warn(&traced.processes, &allocators);
    let (report, profile) = build_report(&args, books, &traced, hooked)?;
    if let Some(path) = &args.html {
        let mut flamegraph = Vec::new();
        flamegraph::write(&profile, "memtrace malloc", &mut flamegraph)?;
        let mut page = files::report_writer(Some(path))?;
        html::write(&report, &flamegraph, &mut page)?;
        page.flush()?;
    }
    match args.output.format {
        Format::Table => table::write(&report, &mut outputs.report)?,
        Format::Json => json::write_value(&report, &mut outputs.report)?,
        Format::Folded => folded::write(&profile, &mut outputs.report)?,
    }
    outputs.finish(&profile, "memtrace malloc")
}

fn build_report(
    args: &MallocArgs,
    mut books: AllocBooks,
    traced: &Traced,
    allocators: Vec<HookedAllocator>,
) -> Result<(MallocReport, Reweighted)> {
    let known = &traced.processes;
    let round = |value: f64| value.round() as u64;
    let peaks = books.peaks.peaks();
    let processes = process_rows(&books, &peaks, traced);

    let grouping = args.output.grouping();
    let limit = Some(args.output.top);
    let stacks: Vec<(StackKey, StackBooks)> = books.stacks.iter().map(|(k, t)| (*k, *t)).collect();
    let label = |key: &StackKey| (known.name(key.tgid), "alloc");
    let calls = |weight: &Weight| round(weight.calls);
    let mut symbolizer = std::mem::take(&mut books.symbolizer);
    let (rows, stacks_total) = stacks::grouped_rows(
        &traced.tracer,
        &mut symbolizer,
        &known.maps,
        stacks,
        grouping,
        limit,
        &|books: &StackBooks| calls(&books.allocated),
        &label,
    )?;
    let stacks = (rows.into_iter())
        .map(|(stack, books)| AllocStackRow::new(stack, &books))
        .collect();
    let churning: Vec<(StackKey, Churn)> = (books.stacks.iter())
        .filter(|(_, books)| books.lifetimes.temporary > 0.0)
        .map(|(key, books)| (*key, Churn(*books)))
        .collect();
    let label = |key: &StackKey| (known.name(key.tgid), "temporary");
    let (rows, _) = stacks::grouped_rows(
        &traced.tracer,
        &mut symbolizer,
        &known.maps,
        churning,
        grouping,
        limit,
        &|churn: &Churn| round(churn.0.lifetimes.temporary),
        &label,
    )?;
    let temporary_stacks = (rows.into_iter())
        .map(|(stack, churn)| TemporaryStackRow::new(stack, &churn.0))
        .collect();

    let in_use = books.outstanding_by_stack(args.min_age.unwrap_or_default());
    let outstanding = if args.leaks {
        let blocks = in_use.clone();
        let label = |key: &StackKey| (known.name(key.tgid), "outstanding");
        let allocations = |o: &Outstanding| o.allocations();
        let (rows, _) = stacks::grouped_rows(
            &traced.tracer,
            &mut symbolizer,
            &known.maps,
            blocks,
            grouping,
            limit,
            &allocations,
            &label,
        )?;
        (rows.into_iter())
            .map(|(stack, o)| OutstandingRow {
                allocations: o.allocations(),
                bytes: o.bytes(),
                oldest_age_s: books.now.saturating_sub(o.oldest).as_secs_f64(),
                stack,
            })
            .collect()
    } else {
        Vec::new()
    };
    let sizes = books
        .sizes
        .iter()
        .enumerate()
        .filter(|(_, &count)| count > 0.0)
        .map(|(i, &count)| SizeBucket {
            le: if i == 0 { 1 } else { 1u64 << i.min(63) },
            count: round(count),
        })
        .collect();
    let at_peaks: Vec<(StackKey, Weight)> = (peaks.into_values())
        .flat_map(|peak| peak.by_stack)
        .collect();
    let label = |key: &StackKey| (known.name(key.tgid), "peak");
    let (rows, _) = stacks::grouped_rows(
        &traced.tracer,
        &mut symbolizer,
        &known.maps,
        at_peaks.clone(),
        grouping,
        limit,
        &calls,
        &label,
    )?;
    let peak_stacks = (rows.into_iter())
        .map(|(stack, weight)| PeakStackRow {
            allocations: round(weight.calls),
            bytes: round(weight.bytes),
            stack,
        })
        .collect();
    // Every stack, not only the first --top: a profile viewer does its own ranking.
    let label = |key: &StackKey| (known.name(key.tgid), "heap");
    let allocated = (books.stacks.iter()).map(|(key, books)| (*key, books.allocated));
    let in_use = if args.at_peak {
        at_peaks
    } else {
        (in_use.into_iter())
            .map(|(key, o)| (key, o.weight))
            .collect()
    };
    let joined = heap_profile::by_stack(allocated, in_use);
    let (heap_rows, _) = stacks::grouped_rows(
        &traced.tracer,
        &mut symbolizer,
        &known.maps,
        joined,
        grouping,
        None,
        &|weight: &heap_profile::HeapWeight| weight.values()[1],
        &label,
    )?;
    let header = traced.header("malloc");
    let in_use_first = args.leaks || args.at_peak;
    let profile = heap_profile::profile(&header, heap_rows, in_use_first, books.sample_bytes);
    let counters = traced.tracer.counters()?;
    let report = MallocReport {
        header,
        sampled: books.sample_bytes > 0,
        sample_bytes: books.sample_bytes,
        outstanding_dropped: books.outstanding_dropped,
        exited_blocks: books.exited_blocks,
        calls_untracked: counters.alloc_calls_untracked,
        library: allocators
            .first()
            .map(|a| a.library.clone())
            .unwrap_or_default(),
        functions: allocators
            .iter()
            .flat_map(|a| a.functions.clone())
            .collect(),
        allocators,
        processes,
        stacks_total,
        stacks,
        temporary_stacks,
        temporary_s: args.temporary.as_secs_f64(),
        outstanding,
        peak_stacks,
        timeline: books.timeline.samples(),
        sizes,
    };
    Ok((report, profile))
}

/// Each process's row, most bytes allocated first: its calls and bytes, its peak, its heap
/// against RSS, its OOM kill.
fn process_rows(
    books: &AllocBooks,
    peaks: &HashMap<u32, Peak>,
    traced: &Traced,
) -> Vec<MallocProcessRow> {
    let round = |value: f64| value.round() as u64;
    let mut processes: Vec<MallocProcessRow> = (books.processes.iter())
        .map(|(&pid, process)| {
            let mut row = MallocProcessRow {
                pid,
                comm: traced.processes.name(pid),
                bytes_allocated: round(process.allocated),
                bytes_freed: round(process.freed),
                frees_of_untraced_blocks: process.frees_of_untraced_blocks,
                oom_kill: books.oom_kills.get(&pid).map(HeapOomKill::new),
                ..MallocProcessRow::default()
            };
            for (&function, &calls) in &process.calls {
                *calls_of(&mut row, function) = round(calls);
            }
            if let Some(peak) = peaks.get(&pid) {
                row.peak_bytes = round(peak.bytes);
                row.peak_at_s = peak.at.as_secs_f64();
                row.live_bytes = round(peak.live_bytes);
            }
            if let Some(split) = books.resident.get(&pid) {
                row.rss_anon_bytes = Some(split.rss_anon_bytes);
                row.retained_bytes = Some(split.retained_bytes);
                row.resident = Some(*split);
            }
            row
        })
        .collect();
    processes.sort_by_key(|p| (std::cmp::Reverse(p.bytes_allocated), p.pid));
    processes
}

fn calls_of(row: &mut MallocProcessRow, function: AllocFn) -> &mut u64 {
    match function {
        AllocFn::Malloc => &mut row.malloc_calls,
        AllocFn::Calloc => &mut row.calloc_calls,
        AllocFn::Realloc => &mut row.realloc_calls,
        AllocFn::Reallocarray => &mut row.reallocarray_calls,
        AllocFn::PosixMemalign => &mut row.posix_memalign_calls,
        AllocFn::AlignedAlloc => &mut row.aligned_alloc_calls,
        AllocFn::Memalign => &mut row.memalign_calls,
        AllocFn::Valloc => &mut row.valloc_calls,
        AllocFn::Pvalloc => &mut row.pvalloc_calls,
        AllocFn::Free => &mut row.free_calls,
        AllocFn::Mmap => &mut row.mmap_calls,
        AllocFn::Munmap => &mut row.munmap_calls,
    }
}
