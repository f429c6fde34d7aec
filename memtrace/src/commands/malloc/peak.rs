//! Each process's peak of bytes still allocated while traced (the blocks followed), when it
//! came, and what was allocated at that moment by stack: exactly, at O(1) amortized a block.
//!
//! The bytes allocated by stack are kept current. At a new peak they *are* the peak's, so
//! nothing is copied; from then on, each change is logged, and the peak's figures are the
//! current ones with the log undone. When the log outgrows the stacks (the peak was long ago),
//! the peak's figures are worked out once and kept, and logging stops until a higher peak.
use std::{collections::HashMap, time::Duration};

use super::books::Weight;
use crate::trace::stacks::StackKey;

/// The log is folded into a copy of the peak's figures past this many changes, or as many
/// as there are stacks, whichever is more.
const MIN_LOG: usize = 4096;

#[derive(Default)]
pub struct Peaks {
    processes: HashMap<u32, ProcessPeak>,
}

/// One process's peak.
#[derive(Default)]
struct ProcessPeak {
    /// Bytes (and blocks) allocated now, in all and by stack.
    live: Weight,
    by_stack: HashMap<StackKey, Weight>,
    peak: Weight,
    peak_at: Duration,
    /// Changes to `by_stack` since the peak, as (stack, change); None once folded into
    /// `at_peak`.
    since_peak: Option<Vec<(StackKey, Weight)>>,
    at_peak: HashMap<StackKey, Weight>,
}

/// A process's peak, as the report gives it.
pub struct Peak {
    pub bytes: f64,
    pub at: Duration,
    /// Bytes allocated when the trace ended.
    pub live_bytes: f64,
    /// What was allocated at the peak, by stack.
    pub by_stack: Vec<(StackKey, Weight)>,
}

impl Peaks {
    /// A block of `weight` allocated on `stack` at `now`.
    pub fn allocated(&mut self, tgid: u32, stack: StackKey, weight: Weight, now: Duration) {
        let process = self.processes.entry(tgid).or_default();
        process.change(stack, weight);
        if process.live.bytes > process.peak.bytes {
            process.peak = process.live;
            process.peak_at = now;
            // Kept, not dropped: under a growing heap each block is a new peak, and this
            // process's allocator calls trap too while memtrace hooks them.
            process.since_peak.get_or_insert_with(Vec::new).clear();
            process.at_peak.clear();
        }
    }

    /// A block of `weight` allocated on `stack` freed (or gone with the image an exec
    /// replaced).
    pub fn freed(&mut self, tgid: u32, stack: StackKey, weight: Weight) {
        if let Some(process) = self.processes.get_mut(&tgid) {
            process.change(stack, negated(weight));
        }
    }

    /// The bytes `tgid` has allocated now.
    pub fn live_bytes(&self, tgid: u32) -> f64 {
        self.processes.get(&tgid).map_or(0.0, |p| p.live.bytes)
    }

    /// Each process's peak, and what was allocated then.
    pub fn peaks(&self) -> HashMap<u32, Peak> {
        (self.processes.iter())
            .map(|(&tgid, process)| {
                let peak = Peak {
                    bytes: process.peak.bytes,
                    at: process.peak_at,
                    live_bytes: process.live.bytes,
                    // Sampled weights are fractions: a stack whose blocks are all gone is
                    // near 0, not 0.
                    by_stack: (process.stacks_at_peak().into_iter())
                        .filter(|(_, weight)| weight.calls >= 0.5)
                        .collect(),
                };
                (tgid, peak)
            })
            .collect()
    }
}

impl ProcessPeak {
    fn change(&mut self, stack: StackKey, change: Weight) {
        self.live += change;
        add(&mut self.by_stack, stack, change);
        let Some(log) = &mut self.since_peak else {
            return;
        };
        log.push((stack, change));
        if log.len() > MIN_LOG.max(self.by_stack.len()) {
            self.at_peak = self.stacks_at_peak();
            self.since_peak = None;
        }
    }

    /// What was allocated at the peak, by stack (stacks with nothing left out).
    fn stacks_at_peak(&self) -> HashMap<StackKey, Weight> {
        let Some(log) = &self.since_peak else {
            return self.at_peak.clone();
        };
        let mut at_peak = self.by_stack.clone();
        for &(stack, change) in log {
            add(&mut at_peak, stack, negated(change));
        }
        at_peak
    }
}

/// Adds `change` to `stack`'s figures (a stack left with no block stays, at 0: the books keep
/// every stack anyway, and removing it would make churn insert it again).
fn add(by_stack: &mut HashMap<StackKey, Weight>, stack: StackKey, change: Weight) {
    *by_stack.entry(stack).or_default() += change;
}

fn negated(weight: Weight) -> Weight {
    Weight {
        calls: -weight.calls,
        bytes: -weight.bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::malloc::books::test_support::{key, weight};

    fn block(bytes: f64) -> Weight {
        weight(1.0, bytes)
    }

    fn at_peak(peaks: &Peaks) -> Vec<(u64, f64, f64)> {
        let peak = &peaks.peaks()[&7];
        let mut stacks: Vec<_> = (peak.by_stack.iter())
            .map(|(key, weight)| (key.user_stack, weight.calls, weight.bytes))
            .collect();
        stacks.sort_by_key(|stack| stack.0);
        stacks
    }

    /// 300 up (200 on stack 1, 100 on 2), down to 50 (150 freed on 1, 100 on 2), up to 200
    /// (150 on 3): the peak is 300, with stacks 1 and 2 as they were then, not as at the end.
    #[test]
    fn the_peak_keeps_the_stacks_allocated_then() {
        for freeze in [false, true] {
            let mut peaks = Peaks::default();
            let now = |s: u64| Duration::from_secs(s);
            for _ in 0..200 {
                peaks.allocated(7, key(1), block(1.0), now(1));
            }
            for _ in 0..100 {
                peaks.allocated(7, key(2), block(1.0), now(2));
            }
            for _ in 0..150 {
                peaks.freed(7, key(1), block(1.0));
            }
            for _ in 0..100 {
                peaks.freed(7, key(2), block(1.0));
            }
            if freeze {
                // Past the log's bound, its changes are folded into a copy: the same answer.
                for _ in 0..MIN_LOG {
                    peaks.allocated(7, key(4), block(0.0), now(3));
                    peaks.freed(7, key(4), block(0.0));
                }
            }
            for _ in 0..150 {
                peaks.allocated(7, key(3), block(1.0), now(4));
            }
            let peak = &peaks.peaks()[&7];
            assert_eq!(
                (peak.bytes, peak.at, peak.live_bytes),
                (300.0, now(2), 200.0)
            );
            assert_eq!(at_peak(&peaks), [(1, 200.0, 200.0), (2, 100.0, 100.0)]);
        }
    }

    /// A higher peak later replaces the first, with its own stacks.
    #[test]
    fn a_higher_peak_replaces_the_first() {
        let mut peaks = Peaks::default();
        peaks.allocated(7, key(1), block(100.0), Duration::from_secs(1));
        peaks.freed(7, key(1), block(100.0));
        peaks.allocated(7, key(2), block(150.0), Duration::from_secs(2));
        let peak = &peaks.peaks()[&7];
        assert_eq!((peak.bytes, peak.at), (150.0, Duration::from_secs(2)));
        assert_eq!(at_peak(&peaks), [(2, 1.0, 150.0)]);
    }
}
