//! What `memtrace swap` keeps while tracing: the kernel's per-owner swap counts read each
//! interval beside the system's figures, major faults and swap-in stacks, and thrashing.
use std::{collections::HashMap, time::Duration};

use memtrace_common::{EventKind, SwapCounts};

use super::{
    args::ThrashingArgs,
    report::{SwapInterval, Thrashing},
};
use crate::{
    host::system_memory::{self, SystemSample},
    kernel::tracer::Tracer,
    trace::{
        consumer::Consumer, memory_maps::Region, processes::Processes, progress::Progress,
        records::Record, stacks::StackCounts,
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
    progress: Progress,
}

impl Consumer for SwapBooks {
    fn on_record(&mut self, record: &Record, processes: &mut Processes) {
        let Record::Event(event) = record else {
            return;
        };
        if event.kind != EventKind::MajorFault {
            return;
        }
        *self.major_faults.entry(event.raw.tgid).or_default() += 1;
        // A major fault outside any file mapping read the page back from swap: its stack is
        // a code path that waited on swap-in.
        let region = processes.maps.region(event.raw.tgid, event.raw.addr);
        if !matches!(region, Region::File(_)) {
            self.stacks.add(processes.stack_key(event), 1);
        }
    }

    fn on_tick(&mut self, elapsed: Duration, tracer: &mut Tracer, processes: &mut Processes) {
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
            processes,
        );
        self.last_counts = counts;
        self.last_system = system;
    }
}

impl SwapBooks {
    pub fn new(thresholds: ThrashingArgs, start: SystemSample, interval: Duration) -> Self {
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
                processes.name(pid),
                self.vmswap.get(&pid).copied().unwrap_or(0),
            ));
        }
        self.progress.interval_table(&table);
        self.intervals.push(row);
    }
}
