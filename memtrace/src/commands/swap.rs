//! `memtrace swap`: who swaps out, who waits on swap-in, and is the machine thrashing.
//! Counters are kept in the kernel per owning process (see memtrace-ebpf's `swap`); each
//! interval they are read and set beside the kernel's system-wide figures.
use std::{collections::HashMap, time::Duration};

use anyhow::Result;
use memtrace_common::{EventKind, SwapCounts};

use crate::{
    bpf::Tracer,
    cli::{RunArgs, SwapArgs, SwapFormat, ThrashingArgs},
    error::GateFailed,
    output, outputs,
    pipeline::{self, KernelOptions},
    processes::Processes,
    procmaps::Region,
    progress::Progress,
    report::TracerCost,
    session::Consumer,
    stacks::{StackCounts, StackKey},
    swap_report::{Gate, SwapInterval, SwapProcessRow, SwapReport, SwapSystem, Thrashing},
    symbolize::Symbolizer,
    sysmem::{self, SystemSample},
};

/// Processes shown in the live table (the busiest).
const LIVE_ROWS: usize = 20;

/// Everything gathered while tracing.
struct SwapWatch {
    /// When swapping counts as thrashing (the help and README define it).
    thresholds: ThrashingArgs,
    known: Processes,
    stacks: StackCounts,
    major_faults: HashMap<u32, u64>,
    /// Major faults at the last interval's end.
    last_major_faults: HashMap<u32, u64>,
    /// Kernel counters at the last interval's end.
    last_counts: HashMap<u32, SwapCounts>,
    last_system: SystemSample,
    /// Consecutive intervals each process swapped both ways at the thrashing rate.
    thrash_streak: HashMap<u32, u32>,
    thrashing: Option<Thrashing>,
    intervals: Vec<SwapInterval>,
    /// Last VmSwap seen per process (kept after it exits).
    vmswap: HashMap<u32, u64>,
    progress: Progress,
}

impl Consumer for SwapWatch {
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
        if event.kind != EventKind::MajorFault {
            return;
        }
        *self.major_faults.entry(event.raw.tgid).or_default() += 1;
        // A major fault outside any file mapping read the page back from swap: its stack is
        // a code path that waited on swap-in.
        let region = self.known.maps.region(event.raw.tgid, event.raw.addr);
        if !matches!(region, Region::File(_)) {
            self.stacks.add(self.known.stack_key(&event), 1);
        }
    }

    fn on_tick(&mut self, elapsed: Duration, tracer: &mut Tracer) {
        let Some(interval) = self.progress.interval_due(elapsed) else {
            return;
        };
        let counts = tracer.swap_counts().unwrap_or_default();
        let system = SystemSample::read();
        self.close_interval(
            elapsed.as_secs_f64(),
            interval.as_secs_f64(),
            &counts,
            system,
        );
        self.last_counts = counts;
        self.last_system = system;
    }
}

impl SwapWatch {
    /// Records the interval ending at `t` (seconds), prints its live lines, checks thrashing.
    fn close_interval(
        &mut self,
        t: f64,
        seconds: f64,
        counts: &HashMap<u32, SwapCounts>,
        system: SystemSample,
    ) {
        let (mut swap_in, mut swap_out) = (0, 0);
        let mut lines = Vec::new();
        let majors = |pid: u32, faults: &HashMap<u32, u64>| faults.get(&pid).copied().unwrap_or(0);
        for (&pid, now) in counts {
            let before = self.last_counts.get(&pid).copied().unwrap_or_default();
            let written = now.out_written - before.out_written;
            let unmapped = now.out_unmapped - before.out_unmapped;
            let back = now.swapped_in - before.swapped_in;
            swap_in += back;
            swap_out += written;
            let (in_rate, out_rate) = (back as f64 / seconds, unmapped as f64 / seconds);
            let streak = self.thrash_streak.entry(pid).or_default();
            let limit = self.thresholds.thrash_rate;
            *streak = if in_rate >= limit && out_rate >= limit {
                *streak + 1
            } else {
                0
            };
            if *streak >= self.thresholds.thrash_intervals && self.thrashing.is_none() {
                self.thrashing = Some(Thrashing {
                    t,
                    reason: format!(
                        "pid {pid} ({}) swapped out {out_rate:.0} and in {in_rate:.0} pages/s \
                         for {streak} intervals in a row",
                        self.known.name(pid)
                    ),
                });
            }
            if pid != 0 {
                if let Some(kb) = sysmem::vmswap_kb(pid) {
                    self.vmswap.insert(pid, kb);
                }
            }
            let major = majors(pid, &self.major_faults) - majors(pid, &self.last_major_faults);
            if written + unmapped + back + major > 0 {
                let (written_rate, major_rate) = (written as f64 / seconds, major as f64 / seconds);
                lines.push((pid, out_rate, in_rate, written_rate, major_rate));
            }
        }
        self.last_major_faults = self.major_faults.clone();
        if system.psi_full_avg10 >= self.thresholds.thrash_psi_full && self.thrashing.is_none() {
            self.thrashing = Some(Thrashing {
                t,
                reason: format!("PSI memory full avg10 at {:.1}%", system.psi_full_avg10),
            });
        }
        let delta = |now: u64, before: u64| now.saturating_sub(before);
        let row = SwapInterval {
            t,
            swap_in_pages: swap_in,
            swap_out_pages: swap_out,
            pswpin: delta(system.pswpin, self.last_system.pswpin),
            pswpout: delta(system.pswpout, self.last_system.pswpout),
            psi_some_avg10: system.psi_some_avg10,
            psi_full_avg10: system.psi_full_avg10,
        };
        lines.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)));
        let mut table = vec![
            format!(
                "memtrace swap {t:>7.1}s  system: pswpin/s {:.0}  pswpout/s {:.0}  swap used {} of {} KiB  \
                 PSI memory some {:.1}% full {:.1}%{}",
                row.pswpin as f64 / seconds,
                row.pswpout as f64 / seconds,
                system.swap_total_kb - system.swap_free_kb,
                system.swap_total_kb,
                system.psi_some_avg10,
                system.psi_full_avg10,
                if self.thrashing.is_some() {
                    "  THRASHING"
                } else {
                    ""
                },
            ),
            format!(
                "{:>8} {:<16} {:>9} {:>10} {:>9} {:>9} {:>11}",
                "PID", "COMM", "OUT/s", "UNMAPPED/s", "IN/s", "MAJFLT/s", "VMSWAP KiB"
            ),
        ];
        for (pid, unmapped_rate, in_rate, written_rate, major_rate) in
            lines.into_iter().take(LIVE_ROWS)
        {
            table.push(format!(
                "{pid:>8} {:<16} {written_rate:>9.0} {unmapped_rate:>10.0} {in_rate:>9.0} \
                 {major_rate:>9.0} {:>11}",
                self.known.name(pid),
                self.vmswap.get(&pid).copied().unwrap_or(0),
            ));
        }
        self.progress.interval_table(&table);
        self.intervals.push(row);
    }
}

pub async fn run(args: &SwapArgs) -> Result<()> {
    let mut out = outputs::report_writer(args.output.as_deref())?;
    let start = SystemSample::read();
    if start.swap_total_kb == 0 {
        eprintln!(
            "memtrace: no swap is configured (SwapTotal is 0): no process can swap; \
             major faults and memory pressure are still reported"
        );
    }
    // A command's children are its load: follow them.
    let mut target = args.target.clone();
    target.follow_children |= !target.command.is_empty();
    let run_args = RunArgs {
        duration: args.duration,
        interval: Some(args.interval),
    };
    let swap_layout = pipeline::swap_layout(
        "reporting system swap traffic, memory pressure and major faults per process only",
    );
    let per_process = swap_layout.is_some();
    let options = KernelOptions {
        page_stacks: false,
        ring_bytes: pipeline::RING_BYTES,
        user_stacks: true, // for swap-in stacks, the only events with stacks here
        kernel_stacks: false,
        file_tags: false,
        swap: swap_layout,
        malloc: None,
        pages: false,
        stack_sample_period: 1,
        exits: false,
        oom: false,
    };
    let attach = |tracer: &mut Tracer, _single: Option<u32>| {
        if per_process {
            tracer.attach_swap()?;
        }
        tracer.attach_faults(false, true, 1)
    };
    let mut watch = SwapWatch {
        thresholds: args.thrashing,
        known: Processes::default(),
        stacks: StackCounts::default(),
        major_faults: HashMap::new(),
        last_major_faults: HashMap::new(),
        last_counts: HashMap::new(),
        last_system: start,
        thrash_streak: HashMap::new(),
        thrashing: None,
        intervals: Vec::new(),
        vmswap: HashMap::new(),
        progress: Progress::new(Some(args.interval)),
    };
    let traced = pipeline::trace(&target, &run_args, options, &attach, &mut watch).await?;

    // The last, partial interval, so totals include everything up to the stop.
    let counts = traced.tracer.swap_counts()?;
    let end = SystemSample::read();
    let elapsed = traced.duration.as_secs_f64();
    let since = watch.intervals.last().map_or(0.0, |i| i.t);
    if elapsed > since {
        watch.close_interval(elapsed, (elapsed - since).max(1e-3), &counts, end);
    }
    watch.known.report_undecodable();
    let report = build_report(args, watch, &traced, &counts, (start, end), per_process)?;
    match args.format {
        SwapFormat::Table => output::swap::write(&report, &mut out)?,
        SwapFormat::Json => output::json::write_value(&report, &mut out)?,
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

fn build_report(
    args: &SwapArgs,
    watch: SwapWatch,
    traced: &pipeline::Traced,
    counts: &HashMap<u32, SwapCounts>,
    (start, end): (SystemSample, SystemSample),
    per_process: bool,
) -> Result<SwapReport> {
    let mut pids: Vec<u32> = counts
        .keys()
        .chain(watch.major_faults.keys())
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
                    watch.known.name(pid)
                },
                swap_out_pages: c.out_written,
                swap_in_pages: c.swapped_in,
                swap_out_unmapped_pages: c.out_unmapped,
                swap_freed_pages: c.freed,
                major_faults: watch.major_faults.get(&pid).copied().unwrap_or(0),
                vmswap_kb: sysmem::vmswap_kb(pid)
                    .or_else(|| watch.vmswap.get(&pid).copied())
                    .unwrap_or(0),
            }
        })
        .collect();
    processes.sort_by_key(|p| (std::cmp::Reverse(p.swap_out_pages + p.swap_in_pages), p.pid));

    let label = |key: &StackKey| (watch.known.name(key.tgid), "swap_in");
    let mut symbolizer = Symbolizer::new();
    let stacks = watch.stacks.resolve(
        &traced.tracer,
        &mut symbolizer,
        &watch.known.maps,
        Some(args.top),
        1,
        &label,
    )?;
    let seconds_of = |i: &SwapInterval, prev: f64| (i.t - prev).max(1e-3);
    let worst = |value: &dyn Fn(&SwapInterval) -> u64| {
        let mut prev = 0.0;
        let mut worst: (f64, Option<f64>) = (0.0, None);
        for i in &watch.intervals {
            let rate = value(i) as f64 / seconds_of(i, prev);
            if rate > worst.0 {
                worst = (rate, Some(i.t));
            }
            prev = i.t;
        }
        worst
    };
    let mut gates = Vec::new();
    for (gate, limit, value) in [
        (
            "max-swap-in-rate",
            args.max_swap_in_rate,
            &(|i: &SwapInterval| i.swap_in_pages) as &dyn Fn(&SwapInterval) -> u64,
        ),
        (
            "max-swap-out-rate",
            args.max_swap_out_rate,
            &|i: &SwapInterval| i.swap_out_pages,
        ),
    ] {
        if let Some(limit) = limit {
            let (rate, at) = worst(value);
            gates.push(Gate {
                gate,
                limit,
                worst: rate,
                failed: rate > limit,
                at_s: at.filter(|_| rate > limit),
            });
        }
    }
    if args.fail_on_thrashing {
        let at = watch.thrashing.as_ref().map(|t| t.t);
        gates.push(Gate {
            gate: "fail-on-thrashing",
            limit: 0.0,
            worst: f64::from(u8::from(at.is_some())),
            failed: at.is_some(),
            at_s: at,
        });
    }
    let counters = traced.tracer.counters()?;
    Ok(SwapReport {
        command: "swap",
        duration_s: traced.duration.as_secs_f64(),
        lost_events: counters.lost,
        per_process_swap: per_process,
        thrashing: watch.thrashing.is_some(),
        thrashing_detail: watch.thrashing,
        thrashing_thresholds: args.thrashing,
        target: traced.target.clone(),
        exit: traced.exit.clone(),
        tracer: TracerCost::measure(traced.attach_ms, &traced.tracer),
        processes,
        system: SwapSystem {
            pswpin: end.pswpin.saturating_sub(start.pswpin),
            pswpout: end.pswpout.saturating_sub(start.pswpout),
            swap_configured: end.swap_total_kb > 0,
            swap_total_kb: end.swap_total_kb,
            swap_used_kb: end.swap_total_kb - end.swap_free_kb,
            psi_some_avg10: end.psi_some_avg10,
            psi_full_avg10: end.psi_full_avg10,
        },
        intervals: watch.intervals,
        stacks,
        gates,
    })
}
