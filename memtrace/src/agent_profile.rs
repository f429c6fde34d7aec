//! The agent's rolling fault profile: the sampled fault stacks of the last ten minutes, at
//! most `PROFILE_SAMPLES` of them, each symbolized once as it arrives. Holding names rather
//! than addresses, the profile needs no process's memory maps afterwards (processes are
//! forgotten when they end) and no entry of the kernel's stack tables (cleared when full).
use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use crate::{report::StackRow, stacks::StackKey};

/// The profile covers at most this much of the past...
pub const PROFILE_WINDOW: Duration = Duration::from_secs(600);
/// ...and holds at most this many sampled stacks (the oldest go first).
const PROFILE_SAMPLES: usize = 100_000;

#[derive(Default)]
pub struct RollingProfile {
    /// Sampled stacks, oldest first, with when they came.
    samples: VecDeque<(Duration, Arc<StackRow>)>,
    /// Each stack symbolized once, by the kernel tables' keys (valid until they are cleared).
    interned: HashMap<StackKey, Arc<StackRow>>,
}

impl RollingProfile {
    /// A sampled stack at `now`; `resolve` symbolizes it if it is new.
    pub fn push(&mut self, now: Duration, key: StackKey, resolve: impl FnOnce() -> StackRow) {
        if self.samples.len() >= PROFILE_SAMPLES {
            self.samples.pop_front();
        }
        let row = self
            .interned
            .entry(key)
            .or_insert_with(|| Arc::new(resolve()));
        self.samples.push_back((now, Arc::clone(row)));
    }

    /// Drops the samples older than the window at `now`, and the stacks no sample holds.
    pub fn expire(&mut self, now: Duration) {
        let oldest = now.saturating_sub(PROFILE_WINDOW);
        while self.samples.front().is_some_and(|(at, _)| *at < oldest) {
            self.samples.pop_front();
        }
        self.interned.retain(|_, row| Arc::strong_count(row) > 1);
    }

    /// The kernel's stack tables were cleared: their keys may now name other stacks.
    pub fn forget_keys(&mut self) {
        self.interned.clear();
    }

    /// The stacks sampled at or after `since`, most first, each counted `period` times.
    pub fn rows(&self, since: Duration, period: u64) -> Vec<StackRow> {
        let mut counts: HashMap<*const StackRow, (&StackRow, u64)> = HashMap::new();
        for (_, row) in self.samples.iter().filter(|(at, _)| *at >= since) {
            counts.entry(Arc::as_ptr(row)).or_insert((row, 0)).1 += 1;
        }
        let mut rows: Vec<StackRow> = counts
            .into_values()
            .map(|(row, n)| StackRow {
                count: n * period,
                ..row.clone()
            })
            .collect();
        rows.sort_by(|a, b| (b.count, a.pid, &a.frames).cmp(&(a.count, b.pid, &b.frames)));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtrace_common::EventKind;

    fn key(tgid: u32, user_stack: u64) -> StackKey {
        StackKey {
            tgid,
            generation: 0,
            kind: EventKind::MinorFault,
            user_stack,
            kernel_stack_id: 1,
        }
    }

    fn row(tgid: u32, function: &str) -> StackRow {
        let mut row = StackRow::new(tgid, "w".into(), "minor", 1, Vec::new(), Vec::new());
        row.frames = vec![function.to_owned()];
        row
    }

    #[test]
    fn stacks_are_counted_in_the_window_and_symbolized_once() {
        let mut profile = RollingProfile::default();
        let second = Duration::from_secs(1);
        let mut resolved = 0;
        for at in 1..=3 {
            profile.push(at * second, key(7, 1), || {
                resolved += 1;
                row(7, "touch")
            });
        }
        profile.push(4 * second, key(8, 2), || row(8, "read"));
        assert_eq!(resolved, 1);
        let rows = profile.rows(Duration::ZERO, 10);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].pid, rows[0].count), (7, 30));
        assert_eq!((rows[1].pid, rows[1].count), (8, 10));
        // The last 2 seconds only.
        assert_eq!(
            profile
                .rows(3 * second, 1)
                .iter()
                .map(|r| r.count)
                .sum::<u64>(),
            2
        );
        // Samples leave with the window, and their stacks with them.
        profile.expire(PROFILE_WINDOW + 3 * second + second / 2);
        assert_eq!(profile.rows(Duration::ZERO, 1).len(), 1);
        assert_eq!(profile.interned.len(), 1);
        profile.expire(PROFILE_WINDOW * 2);
        assert!(profile.rows(Duration::ZERO, 1).is_empty());
        assert!(profile.interned.is_empty());
    }
}
