//! The agent's rolling fault profile: the sampled fault stacks of the last ten minutes, at
//! most `PROFILE_SAMPLES` of them, each symbolized as it arrives. Holding names rather than
//! addresses, the profile needs no process's memory maps afterwards (processes are
//! forgotten when they end) and no entry of the kernel's stack tables (cleared when full).
//! Stacks are kept once per content (name, kind, frames), not per process: a thousand
//! short-lived processes running the same code hold one stack.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::{Hash, Hasher},
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
    /// The stacks resolved lately, by the kernel tables' keys (a key names one process's
    /// stack; forgotten each second, and when the tables are cleared).
    by_key: HashMap<StackKey, Arc<StackRow>>,
    /// Every stack held, once.
    by_content: HashSet<Content>,
}

/// A stack compared by what it shows.
struct Content(Arc<StackRow>);

impl Content {
    fn identity(&self) -> (&str, &str, &[String], &[String]) {
        let row = &self.0;
        (&row.comm, &row.kind, &row.frames, &row.kernel_frames)
    }
}

impl PartialEq for Content {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for Content {}

impl Hash for Content {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

impl RollingProfile {
    /// A sampled stack at `now`; `resolve` symbolizes it if it is new.
    pub fn push(&mut self, now: Duration, key: StackKey, resolve: impl FnOnce() -> StackRow) {
        if self.samples.len() >= PROFILE_SAMPLES {
            self.samples.pop_front();
        }
        let row = match self.by_key.get(&key) {
            Some(row) => Arc::clone(row),
            None => {
                let content = Content(Arc::new(resolve()));
                let row = match self.by_content.get(&content) {
                    Some(held) => Arc::clone(&held.0),
                    None => {
                        let row = Arc::clone(&content.0);
                        self.by_content.insert(content);
                        row
                    }
                };
                self.by_key.insert(key, Arc::clone(&row));
                row
            }
        };
        self.samples.push_back((now, row));
    }

    /// Drops the samples older than the window at `now`, and the stacks no sample holds.
    pub fn expire(&mut self, now: Duration) {
        let oldest = now.saturating_sub(PROFILE_WINDOW);
        while self.samples.front().is_some_and(|(at, _)| *at < oldest) {
            self.samples.pop_front();
        }
        self.by_key.clear();
        self.by_content
            .retain(|content| Arc::strong_count(&content.0) > 1);
    }

    /// The kernel's stack tables were cleared: their keys may now name other stacks.
    pub fn forget_keys(&mut self) {
        self.by_key.clear();
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

    fn row(function: &str) -> StackRow {
        let mut row = StackRow::new(0, "w".into(), "minor", 1, Vec::new(), Vec::new());
        row.frames = vec![function.to_owned()];
        row
    }

    #[test]
    fn stacks_are_counted_in_the_window_and_held_once() {
        let mut profile = RollingProfile::default();
        let second = Duration::from_secs(1);
        let mut resolved = 0;
        for at in 1..=3 {
            profile.push(at * second, key(7, 1), || {
                resolved += 1;
                row("touch")
            });
        }
        // Another process on the same code: one stack held for both.
        profile.push(3 * second, key(9, 1), || row("touch"));
        profile.push(4 * second, key(8, 2), || row("read"));
        assert_eq!(resolved, 1);
        assert_eq!(profile.by_content.len(), 2);
        let rows = profile.rows(Duration::ZERO, 10);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].frames[0].as_str(), rows[0].count), ("touch", 40));
        assert_eq!((rows[1].frames[0].as_str(), rows[1].count), ("read", 10));
        // The last 2 seconds only.
        let recent: u64 = profile.rows(3 * second, 1).iter().map(|r| r.count).sum();
        assert_eq!(recent, 3);
        // Samples leave with the window, and their stacks with them.
        profile.expire(PROFILE_WINDOW + 3 * second + second / 2);
        assert_eq!(profile.rows(Duration::ZERO, 1).len(), 1);
        assert_eq!(profile.by_content.len(), 1);
        profile.expire(PROFILE_WINDOW * 2);
        assert!(profile.rows(Duration::ZERO, 1).is_empty());
        assert!(profile.by_content.is_empty());
    }
}
