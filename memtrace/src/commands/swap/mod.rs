//! `memtrace swap`: who swaps out, who waits on swap-in, and is the machine thrashing.
//! Counters are kept in the kernel per owning process (see memtrace-ebpf's `swap`); each
//! interval they are read and set beside the kernel's system-wide figures.
pub mod args;
mod books;
mod figures;
mod kills;
mod report;
mod table;

use std::collections::HashMap;

use anyhow::Result;
use memtrace_common::SwapCounts;

use self::{
    args::SwapArgs,
    books::SwapBooks,
    figures::SwapFigures,
    report::{Gate, SwapInterval, SwapProcessRow, SwapReport, SwapSystem},
};
use crate::{
    commands::options::TableOrJson,
    error::GateFailed,
    host::system_memory::{self, SystemSample},
    kernel::{
        hooks::{self, Attachment, CommandHooks},
        tracefs,
    },
    output::{files, json},
    trace::{
        pipeline::{self, Traced},
        request::{self, KernelOptions, TraceRequest},
        stack_groups::Grouping,
        stacks::StackKey,
        symbolize::Symbolizer,
    },
};

pub const HOOKS: CommandHooks = CommandHooks {
    needs: &[&hooks::MAJOR_FAULT],
    improves: &[
        // Per-process swap counts (else system figures and major faults only).
        &hooks::SWAP_RSS_STAT,
        &hooks::SWAP_WRITE_FOLIO,
        &hooks::LEARN_CPU_OFFSET,
        // Zero-filled pages per process (Linux 6.16+).
        &hooks::SWAP_ZERO_EVENTS,
        // OOM kills of the traced processes.
        &hooks::OOM_KILL,
    ],
};

pub async fn run(args: SwapArgs) -> Result<()> {
    let mut out = files::report_writer(args.output.as_deref())?;
    let start = SystemSample::read();
    if start.swap_total_kb == 0 {
        log::warn!(
            "no swap is configured (SwapTotal is 0): no process can swap; major faults and \
             memory pressure are still reported"
        );
    }
    let swap_layout = request::swap_layout(
        "reporting system swap traffic, memory pressure and major faults per process only",
    );
    let per_process = swap_layout.is_some();
    let mut hooks: Vec<Attachment> = if per_process {
        hooks::SWAP.into_iter().map(Attachment::Hook).collect()
    } else {
        Vec::new()
    };
    // Its program runs on every memcg event, each page fault's too (1.14x on the fault
    // storm against 1.04x without): only where pages can go to swap at all.
    let can_swap = start.swap_total_kb > 0;
    let zero_counted = per_process && can_swap && zero_pages_traceable(swap_layout.as_ref());
    if zero_counted {
        hooks.push(Attachment::Hook(&hooks::SWAP_ZERO_EVENTS));
    }
    hooks.push(Attachment::Sampled {
        hook: &hooks::MAJOR_FAULT,
        period: 1,
    });
    hooks.push(Attachment::Hook(&hooks::OOM_KILL));
    let request = TraceRequest {
        declared: &HOOKS,
        target: args.target.request(),
        // A command's children are its load: follow them.
        follow_children: args.target.follows_children(),
        stop_after: args.duration,
        kernel: KernelOptions {
            user_stacks: true, // for swap-in stacks, the only events with stacks here
            swap: swap_layout,
            unwind_memory_mib: args.unwind.memory_mib(),
            python_frames: args.unwind.python_frames(),
            ..KernelOptions::default()
        },
        hooks,
    };
    let mut books = SwapBooks::new(
        args.thrashing,
        start,
        args.interval,
        &request.target,
        zero_counted,
    );
    let traced = pipeline::trace(request, &mut books).await?;

    // The last, partial interval, so totals include everything up to the stop.
    let counts = traced.tracer.swap_counts()?;
    let end = SystemSample::read();
    let elapsed = traced.duration.as_secs_f64();
    let since = books.intervals.last().map_or(0.0, |i| i.t);
    if elapsed > since {
        let seconds = (elapsed - since).max(1e-3);
        books.close_interval(elapsed, seconds, &counts, end, &traced.processes);
    }
    let report = build_report(&args, books, &traced, &counts, (start, end), per_process)?;
    match args.format {
        TableOrJson::Table => table::write(&report, &mut out)?,
        TableOrJson::Json => json::write_value(&report, &mut out)?,
    }
    out.flush()?;
    let failed: Vec<String> = report
        .gates
        .iter()
        .filter(|g| g.failed)
        .map(|g| format!("{} (limit {}, worst {:.0})", g.gate, g.limit, g.worst))
        .collect();
    if !failed.is_empty() {
        return Err(GateFailed(format!("gate failed: {}", failed.join(", "))).into());
    }
    Ok(())
}

/// Whether this kernel lets memtrace tell zero-filled pages apart per process: it has them
/// (6.12+) and traces their counts (memcg:count_memcg_events, 6.16+). Says so when not.
fn zero_pages_traceable(layout: Option<&crate::kernel::layout::SwapLayout>) -> bool {
    let has_zero_pages = layout.is_some_and(|l| l.zero_events.is_some());
    let event = hooks::SWAP_ZERO_EVENTS.tracefs_event().unwrap_or_default();
    if has_zero_pages && !tracefs::tracepoint_exists(&event) {
        log::warn!(
            "this kernel swaps zero-filled pages without I/O but has no {} tracepoint (Linux \
             6.16+): processes' swap figures include them, and their zero counts are null",
            event.replacen('/', ":", 1)
        );
    }
    has_zero_pages && tracefs::tracepoint_exists(&event)
}

fn build_report(
    args: &SwapArgs,
    books: SwapBooks,
    traced: &Traced,
    counts: &HashMap<u32, SwapCounts>,
    (start, end): (SystemSample, SystemSample),
    per_process: bool,
) -> Result<SwapReport> {
    let mut pids: Vec<u32> = counts
        .keys()
        .chain(books.major_faults.keys())
        .copied()
        .collect();
    pids.sort_unstable();
    pids.dedup();
    let mut processes: Vec<SwapProcessRow> = pids
        .into_iter()
        .map(|pid| {
            let c = counts.get(&pid).copied().unwrap_or_default();
            SwapProcessRow {
                pid,
                comm: if pid == 0 {
                    "[unattributed]".into()
                } else {
                    traced.processes.name(pid)
                },
                figures: SwapFigures::of_process(&c, books.zero_counted),
                swap_out_unmapped_pages: c.out_unmapped,
                swap_freed_pages: c.freed,
                major_faults: books.major_faults.get(&pid).copied().unwrap_or(0),
                vmswap_kb: system_memory::vmswap_kb(pid)
                    .or_else(|| books.vmswap.get(&pid).copied())
                    .unwrap_or(0),
            }
        })
        .collect();
    processes.sort_by_key(|p| {
        let f = &p.figures;
        (std::cmp::Reverse(f.swap_out_pages + f.swap_in_pages), p.pid)
    });

    let label = |key: &StackKey| (traced.processes.name(key.tgid), "swap_in");
    let mut symbolizer = Symbolizer::new();
    let (stacks, _) = books.stacks.resolve(
        &traced.tracer,
        &mut symbolizer,
        &traced.processes.maps,
        Some(args.top),
        1,
        Grouping::default(),
        &label,
    )?;
    let mut gates = Vec::new();
    for (gate, limit, value) in [
        (
            "max-swap-in-rate",
            args.max_swap_in_rate,
            &(|i: &SwapInterval| i.traced.swap_in_pages) as &dyn Fn(&SwapInterval) -> u64,
        ),
        (
            "max-swap-out-rate",
            args.max_swap_out_rate,
            &|i: &SwapInterval| i.traced.swap_out_pages,
        ),
    ] {
        if let Some(limit) = limit {
            let rates = rates(&books.intervals, value);
            let worst = rates.iter().map(|(_, rate)| *rate).fold(0.0, f64::max);
            gates.push(Gate {
                gate,
                limit,
                worst,
                failed: worst > limit,
                at_s: rates
                    .iter()
                    .find(|(_, rate)| *rate > limit)
                    .map(|(t, _)| *t),
            });
        }
    }
    if args.fail_on_thrashing {
        let at = books.thrashing.as_ref().map(|t| t.t);
        gates.push(Gate {
            gate: "fail-on-thrashing",
            limit: 0.0,
            worst: f64::from(u8::from(at.is_some())),
            failed: at.is_some(),
            at_s: at,
        });
    }
    Ok(SwapReport {
        header: traced.header("swap"),
        per_process_swap: per_process,
        per_process_zero_pages: books.zero_counted,
        thrashing: books.thrashing.is_some(),
        thrashing_detail: books.thrashing,
        thrashing_thresholds: args.thrashing,
        processes,
        system: SwapSystem {
            pswpin: end.pswpin.saturating_sub(start.pswpin),
            pswpout: end.pswpout.saturating_sub(start.pswpout),
            figures: SwapFigures::of_system(&start, &end),
            swap_configured: end.swap_total_kb > 0,
            swap_total_kb: end.swap_total_kb,
            swap_used_kb: end.swap_total_kb - end.swap_free_kb,
            psi_some_avg10: end.psi_some_avg10,
            psi_full_avg10: end.psi_full_avg10,
        },
        intervals: books.intervals,
        stacks,
        gates,
        oom_kills: books.kills.rows,
    })
}

/// Each interval's end and rate (pages/s of `value`).
fn rates(intervals: &[SwapInterval], value: &dyn Fn(&SwapInterval) -> u64) -> Vec<(f64, f64)> {
    let mut start = 0.0;
    intervals
        .iter()
        .map(|i| {
            let rate = value(i) as f64 / (i.t - start).max(1e-3);
            start = i.t;
            (i.t, rate)
        })
        .collect()
}
