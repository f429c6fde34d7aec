//! The heap over time: every step, each process's bytes allocated (live), the bytes it had
//! allocated in all (for its rate between two moments) and its anonymous RSS. The step is
//! --interval, or 20 ms; past `MAX_MOMENTS` moments every other one is dropped and the step
//! doubles, so a long trace keeps a timeline of a readable size at an even step.
use std::{collections::HashMap, time::Duration};

use serde::Serialize;

const DEFAULT_STEP: Duration = Duration::from_millis(20);
const MAX_MOMENTS: usize = 1000;

/// One process at one moment, as the JSON gives it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimelineSample {
    pub t_s: f64,
    pub pid: u32,
    pub live_bytes: u64,
    /// Bytes allocated per second since the moment before (since tracing started, for the
    /// first).
    pub allocated_bytes_per_s: f64,
    /// Resident anonymous memory (/proc/PID/status), when the process could be read.
    pub rss_anon_bytes: Option<u64>,
}

/// What the timeline is told of one process at a moment.
#[derive(Clone, Copy, Debug)]
pub struct ProcessAt {
    pub pid: u32,
    pub live_bytes: f64,
    /// Bytes allocated since tracing started.
    pub allocated_bytes: f64,
    pub rss_anon_bytes: Option<u64>,
}

struct Moment {
    at: Duration,
    processes: Vec<ProcessAt>,
}

pub struct Timeline {
    step: Duration,
    /// --interval: the step stays as the user gave it.
    fixed: bool,
    next: Duration,
    moments: Vec<Moment>,
}

impl Timeline {
    pub fn new(interval: Option<Duration>) -> Self {
        let step = interval.unwrap_or(DEFAULT_STEP);
        Self {
            step,
            fixed: interval.is_some(),
            next: step,
            moments: Vec::new(),
        }
    }

    /// Whether a moment is due at `elapsed`.
    pub fn due(&self, elapsed: Duration) -> bool {
        elapsed >= self.next
    }

    /// The processes at `at` (a moment due, or the trace's end).
    pub fn record(&mut self, at: Duration, processes: Vec<ProcessAt>) {
        self.moments.push(Moment { at, processes });
        self.next = at + self.step;
        if !self.fixed && self.moments.len() >= MAX_MOMENTS {
            let mut index = 0;
            self.moments.retain(|_| {
                index += 1;
                index % 2 == 0
            });
            self.step *= 2;
        }
    }

    /// Every moment's processes, in time order.
    pub fn samples(&self) -> Vec<TimelineSample> {
        let mut before: HashMap<u32, (Duration, f64)> = HashMap::new();
        let mut samples = Vec::new();
        for moment in &self.moments {
            for process in &moment.processes {
                let (then, allocated) = (before.get(&process.pid))
                    .copied()
                    .unwrap_or((Duration::ZERO, 0.0));
                let seconds = moment.at.saturating_sub(then).as_secs_f64();
                let rate = if seconds > 0.0 {
                    (process.allocated_bytes - allocated) / seconds
                } else {
                    0.0
                };
                samples.push(TimelineSample {
                    t_s: moment.at.as_secs_f64(),
                    pid: process.pid,
                    live_bytes: process.live_bytes.max(0.0).round() as u64,
                    allocated_bytes_per_s: rate.round(),
                    rss_anon_bytes: process.rss_anon_bytes,
                });
                before.insert(process.pid, (moment.at, process.allocated_bytes));
            }
        }
        samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pid: u32, live: f64, allocated: f64) -> ProcessAt {
        ProcessAt {
            pid,
            live_bytes: live,
            allocated_bytes: allocated,
            rss_anon_bytes: None,
        }
    }

    #[test]
    fn rates_are_over_the_time_since_the_moment_before() {
        let mut timeline = Timeline::new(Some(Duration::from_millis(500)));
        assert!(!timeline.due(Duration::from_millis(499)));
        assert!(timeline.due(Duration::from_millis(500)));
        timeline.record(Duration::from_millis(500), vec![at(7, 100.0, 1000.0)]);
        assert!(!timeline.due(Duration::from_millis(900)));
        timeline.record(
            Duration::from_millis(1000),
            vec![at(7, 50.0, 1500.0), at(8, 10.0, 10.0)],
        );
        let rates: Vec<(f64, u32, u64, f64)> = (timeline.samples().into_iter())
            .map(|s| (s.t_s, s.pid, s.live_bytes, s.allocated_bytes_per_s))
            .collect();
        assert_eq!(
            rates,
            [
                (0.5, 7, 100, 2000.0),
                (1.0, 7, 50, 1000.0),
                (1.0, 8, 10, 10.0)
            ]
        );
    }

    #[test]
    fn a_long_timeline_keeps_every_other_moment_and_doubles_its_step() {
        let mut timeline = Timeline::new(None);
        let mut t = Duration::ZERO;
        let mut allocated = 0.0;
        while timeline.step == DEFAULT_STEP {
            t += timeline.step;
            allocated += 1000.0;
            timeline.record(t, vec![at(7, 0.0, allocated)]);
        }
        assert_eq!(timeline.step, DEFAULT_STEP * 2);
        let samples = timeline.samples();
        assert!(samples.len() < MAX_MOMENTS);
        // Kept moments are two steps apart, and a rate spans the moments dropped too.
        let apart = samples[1].t_s - samples[0].t_s;
        assert!((apart - 2.0 * DEFAULT_STEP.as_secs_f64()).abs() < 1e-9);
        assert_eq!(samples[1].allocated_bytes_per_s, (2000.0 / apart).round());
    }
}
