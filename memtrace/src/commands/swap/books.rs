//! What `memtrace swap` keeps while tracing: the kernel's per-owner swap counts read each
//! interval beside the system's figures, major faults and swap-in stacks, and thrashing.
use std::{collections::HashMap, time::Duration};

use memtrace_common::{EventKind, SwapCounts};

use super::{
    args::ThrashingArgs,
    figures::{counts_since, rate_cell, SwapFigures},
    kills::Kills,
    report::{SwapInterval, Thrashing},
};
use crate::{
    host::system_memory::{self, SystemSample},
    kernel::tracer::Tracer,
    trace::{
        consumer::Consumer, processes::Processes, progress::Progress, records::Record,
        region::Region, request::TargetRequest, stacks::StackCounts,
    },
};

/// Processes shown in the live table (the busiest).
const LIVE_ROWS: usize = 20;

/// Everything gathered while tracing.
pub struct SwapBooks {
    /// When swapping counts as thrashing (the help and README define it).
    thresholds: ThrashingArgs,
    pub stacks: StackCounts,
    pub major_faults: HashMap<u32, u64>,
    /// Major faults at the last interval's end.
    last_major_faults: HashMap<u32, u64>,
    /// Kernel counters at the last interval's end.
    last_counts: HashMap<u32, SwapCounts>,
    last_system: SystemSample,
    /// Consecutive intervals each process swapped both ways at the thrashing rate.
    thrash_streak: HashMap<u32, u32>,
    pub thrashing: Option<Thrashing>,
    pub intervals: Vec<SwapInterval>,
    /// Last VmSwap seen per process (kept after it exits).
    pub vmswap: HashMap<u32, u64>,
    /// Zero-filled pages are counted per process (the kernel's zero-page hook is attached).
    pub zero_counted: bool,
    pub kills: Kills,
    /// Seconds since tracing started, at the last tick.
    elapsed_s: f64,
    progress: Progress,
}

/// One process's line in the live table.
struct LiveLine {
    pid: u32,
    figures: SwapFigures,
    unmapped: u64,
    major: u64,
}

impl Consumer for SwapBooks {
    fn on_record(&mut self, record: &Record, processes: &mut Processes) {
        let event = match record {
            Record::Event(event) => event,
            Record::OomKill(kill) => {
                let owns_swap = self.last_counts.contains_key(&kill.pid);
                self.kills
                    .on_kill(kill, processes, owns_swap, self.elapsed_s);
                return;
            }
            _ => return,
        };
        if event.kind != EventKind::MajorFault {
            return;
        }
        *self.major_faults.entry(event.raw.tgid).or_default() += 1;
        // A major fault outside any file mapping read the page back from swap: its stack is
        // a code path that waited on swap-in. Shared memory (shmem) swaps too, so only real
        // files are left out.
        let region = processes.maps.region(event.raw.tgid, event.raw.addr);
        if !matches!(region, Region::File(_)) {
            self.stacks.add(processes.stack_key(event), 1);
        }
    }

    fn on_targets(&mut self, pids: &[u32]) {
        self.kills.on_targets(pids);
    }

    fn on_tick(&mut self, elapsed: Duration, tracer: &mut Tracer, processes: &mut Processes) {
        self.elapsed_s = elapsed.as_secs_f64();
        let Some(interval) = self.progress.interval_due(elapsed) else {
            return;
        };
        // The kernel's counts before /proc/vmstat: the kernel counts a page's I/O before the
        // events memtrace counts it by, so the system's figures are not behind the processes'.
        let counts = tracer.swap_counts().unwrap_or_default();
        let system = SystemSample::read();
        self.close_interval(
            elapsed.as_secs_f64(),
            interval.as_secs_f64(),
            &counts,
            system,
            processes,
        );
    }
}

impl SwapBooks {
    pub fn new(
        thresholds: ThrashingArgs,
        start: SystemSample,
        interval: Duration,
        target: &TargetRequest,
        zero_counted: bool,
    ) -> Self {
        Self {
            thresholds,
            stacks: StackCounts::default(),
            major_faults: HashMap::new(),
            last_major_faults: HashMap::new(),
            last_counts: HashMap::new(),
            last_system: start,
            thrash_streak: HashMap::new(),
            thrashing: None,
            intervals: Vec::new(),
            vmswap: HashMap::new(),
            zero_counted,
            kills: Kills::new(target),
            elapsed_s: 0.0,
            progress: Progress::new(Some(interval)),
        }
    }

    /// Records the interval ending at `t` (seconds), prints its live lines, checks thrashing.
    pub fn close_interval(
        &mut self,
        t: f64,
        seconds: f64,
        counts: &HashMap<u32, SwapCounts>,
        system: SystemSample,
        processes: &Processes,
    ) {
        let mut traced = SwapFigures::none(self.zero_counted);
        let mut lines = Vec::new();
        let majors = |pid: u32, faults: &HashMap<u32, u64>| faults.get(&pid).copied().unwrap_or(0);
        for (&pid, now) in counts {
            let before = self.last_counts.get(&pid).copied().unwrap_or_default();
            let delta = counts_since(now, &before);
            let figures = SwapFigures::of_process(&delta, self.zero_counted);
            traced = traced.plus(figures);
            let in_rate = delta.swapped_in as f64 / seconds;
            let out_rate = delta.out_unmapped as f64 / seconds;
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
                        processes.name(pid)
                    ),
                });
            }
            if pid != 0 {
                if let Some(kb) = system_memory::vmswap_kb(pid) {
                    self.vmswap.insert(pid, kb);
                }
            }
            let major = majors(pid, &self.major_faults) - majors(pid, &self.last_major_faults);
            if delta.out_written + delta.out_unmapped + delta.swapped_in + major > 0 {
                lines.push(LiveLine {
                    pid,
                    figures,
                    unmapped: delta.out_unmapped,
                    major,
                });
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
            traced,
            pswpin: delta(system.pswpin, self.last_system.pswpin),
            pswpout: delta(system.pswpout, self.last_system.pswpout),
            system: SwapFigures::of_system(&self.last_system, &system),
            psi_some_avg10: system.psi_some_avg10,
            psi_full_avg10: system.psi_full_avg10,
        };
        lines.sort_by_key(|l| std::cmp::Reverse(l.unmapped + l.figures.swap_in_pages));
        let rate = |pages: u64| format!("{:.0}", pages as f64 / seconds);
        let with_zero = |pages: u64, zero: Option<u64>| match zero {
            Some(zero) => format!("{} (zero {})", rate(pages), rate(zero)),
            None => rate(pages),
        };
        let mut table = vec![
            format!(
                "memtrace swap {t:>7.1}s  system: out/s {}  in/s {}  swap used {} of {} KiB  \
                 PSI memory some {:.1}% full {:.1}%{}",
                with_zero(row.system.swap_out_pages, row.system.swap_out_zero_pages),
                with_zero(row.system.swap_in_pages, row.system.swap_in_zero_pages),
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
                "{:>8} {:<16} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>11}",
                "PID",
                "COMM",
                "OUT/s",
                "ZERO/s",
                "IN/s",
                "ZERO/s",
                "UNMAPPED/s",
                "MAJFLT/s",
                "VMSWAP KiB"
            ),
        ];
        for line in lines.into_iter().take(LIVE_ROWS) {
            let f = &line.figures;
            table.push(format!(
                "{:>8} {:<16} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>11}",
                line.pid,
                processes.name(line.pid),
                rate(f.swap_out_pages),
                rate_cell(f.swap_out_zero_pages, seconds),
                rate(f.swap_in_pages),
                rate_cell(f.swap_in_zero_pages, seconds),
                rate(line.unmapped),
                rate(line.major),
                self.vmswap.get(&line.pid).copied().unwrap_or(0),
            ));
        }
        self.progress.interval_table(&table);
        self.intervals.push(row);
        self.last_counts = counts.clone();
        self.last_system = system;
    }
}
