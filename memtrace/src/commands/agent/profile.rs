//! The agent's rolling fault profile: the sampled fault stacks of the last ten minutes, at
//! most `PROFILE_SAMPLES` of them, each symbolized as it arrives. Holding names rather than
//! addresses, the profile needs no process's memory maps afterwards (processes are
//! forgotten when they end) and no entry of the kernel's stack tables (cleared when full).
//!
//! A sample is a process name and a stack, both shared: a stack is held once, whichever
//! processes ran it (the same code at other addresses, as address-space randomization
//! places it, is the same stack), so a thousand short-lived processes cost a pointer each.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use super::interned::{Interned, Stack};
use crate::{report::StackRow, trace::stacks::StackKey};

/// The profile covers at most this much of the past...
pub const PROFILE_WINDOW: Duration = Duration::from_secs(600);
/// ...and holds at most this many sampled stacks (the oldest go first).
const PROFILE_SAMPLES: usize = 100_000;

/// What a sample counts toward: a process name, a kind of fault, a stack.
struct Group {
    comm: Arc<str>,
    kind: &'static str,
    stack: Arc<Stack>,
}

/// Shared by identity (the name and stack are shared already).
struct HeldGroup(Arc<Group>);

impl HeldGroup {
    fn identity(&self) -> (*const str, &str, *const Stack) {
        let group = &self.0;
        (
            Arc::as_ptr(&group.comm),
            group.kind,
            Arc::as_ptr(&group.stack),
        )
    }
}

impl PartialEq for HeldGroup {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for HeldGroup {}

impl Hash for HeldGroup {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

/// One sampled fault: 16 bytes, a hundred thousand of them in under 2 MiB.
struct Sample {
    /// Tenths of a second since the agent started (the agent drains samples every tenth).
    at: u32,
    group: Arc<Group>,
}

/// `at` in tenths of a second (u32: 13 years).
fn tenths(at: Duration) -> u32 {
    u32::try_from(at.as_millis() / 100).unwrap_or(u32::MAX)
}

#[derive(Default)]
pub struct RollingProfile {
    /// Oldest first.
    samples: VecDeque<Sample>,
    /// The stacks resolved lately, by the kernel tables' keys (a key names one process's
    /// stack; forgotten each second, and when the tables are cleared).
    by_key: HashMap<StackKey, Arc<Group>>,
    /// Every group held, once.
    groups: HashSet<HeldGroup>,
    /// Every stack and process name held, once.
    interned: Interned,
}

impl RollingProfile {
    /// A sampled fault of `kind` at `now`; `resolve` names its process and symbolizes its
    /// stack, if its key is new.
    pub fn push(
        &mut self,
        now: Duration,
        key: StackKey,
        kind: &'static str,
        resolve: impl FnOnce() -> (String, Stack),
    ) {
        if self.samples.len() >= PROFILE_SAMPLES {
            self.samples.pop_front();
        }
        let group = match self.by_key.get(&key) {
            Some(group) => Arc::clone(group),
            None => {
                let (comm, stack) = resolve();
                let group = Group {
                    comm: self.interned.comm(comm),
                    kind,
                    stack: self.interned.stack(stack),
                };
                let group = self.intern_group(group);
                self.by_key.insert(key, Arc::clone(&group));
                group
            }
        };
        self.samples.push_back(Sample {
            at: tenths(now),
            group,
        });
    }

    fn intern_group(&mut self, group: Group) -> Arc<Group> {
        let group = HeldGroup(Arc::new(group));
        if let Some(held) = self.groups.get(&group) {
            return Arc::clone(&held.0);
        }
        let shared = Arc::clone(&group.0);
        self.groups.insert(group);
        shared
    }

    /// Drops the samples older than the window at `now`, and the names and stacks no sample
    /// holds.
    pub fn expire(&mut self, now: Duration) {
        let oldest = tenths(now.saturating_sub(PROFILE_WINDOW));
        while self.samples.front().is_some_and(|s| s.at < oldest) {
            self.samples.pop_front();
        }
        // Groups first: they hold the names and stacks.
        self.by_key.clear();
        self.groups.retain(|held| Arc::strong_count(&held.0) > 1);
        self.interned.forget_unused();
    }

    /// The kernel's stack tables were cleared: their keys may now name other stacks.
    pub fn forget_keys(&mut self) {
        self.by_key.clear();
    }

    /// The stacks sampled from `since` to `until` (both included, to the tenth of a second),
    /// per process name and kind, most first, each counted `period` times (pid 0: summed
    /// over the processes of the name).
    pub fn rows(&self, since: Duration, until: Duration, period: u64) -> Vec<StackRow> {
        let window = tenths(since)..=tenths(until);
        let mut counts: HashMap<*const Group, (&Group, u64)> = HashMap::new();
        for sample in self.samples.iter().filter(|s| window.contains(&s.at)) {
            let group = &sample.group;
            counts.entry(Arc::as_ptr(group)).or_insert((group, 0)).1 += 1;
        }
        let mut rows: Vec<StackRow> = counts
            .into_values()
            .map(|(group, n)| {
                StackRow::new(
                    0,
                    group.comm.to_string(),
                    group.kind,
                    n * period,
                    group.stack.user.clone(),
                    group.stack.kernel.clone(),
                )
            })
            .collect();
        rows.sort_by(|a, b| (b.count, &a.comm, &a.frames).cmp(&(a.count, &b.comm, &b.frames)));
        rows
    }

    /// Distinct stacks and process names held.
    pub fn held(&self) -> (usize, usize) {
        self.interned.held()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Frame;
    use memtrace_common::EventKind;

    fn key(tgid: u32) -> StackKey {
        StackKey {
            tgid,
            generation: 0,
            kind: EventKind::MinorFault,
            user_stack: 1,
            kernel_stack_id: 1,
        }
    }

    /// `function` at `address` (where address-space randomization put it in this process).
    fn stack(function: &str, address: u64) -> Stack {
        let frame = |function: Option<&str>, address| Frame {
            address,
            function: function.map(str::to_owned),
            offset: 0x10,
            module: Some("w".to_owned()),
            mapping: None,
            source: None,
        };
        // Under a frame no symbol names, at an address of this process's own.
        let unnamed = frame(None, address + 0x100);
        Stack::new(vec![frame(Some(function), address), unnamed], Vec::new())
    }

    #[test]
    fn stacks_are_counted_in_the_window_and_held_once() {
        let mut profile = RollingProfile::default();
        let second = Duration::from_secs(1);
        let mut resolved = 0;
        for at in 1..=3 {
            profile.push(at * second, key(7), "minor", || {
                resolved += 1;
                ("w".to_owned(), stack("touch", 0x1010))
            });
        }
        // Another process runs the same code, elsewhere in its address space: one stack.
        profile.push(3 * second, key(9), "minor", || {
            ("w".to_owned(), stack("touch", 0x7010))
        });
        profile.push(4 * second, key(8), "minor", || {
            ("w".to_owned(), stack("read", 0x2010))
        });
        assert_eq!(resolved, 1);
        assert_eq!(profile.held(), (2, 1));
        let rows = profile.rows(Duration::ZERO, 4 * second, 10);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].frames[0].as_str(), rows[0].count), ("touch", 40));
        assert_eq!((rows[1].frames[0].as_str(), rows[1].count), ("read", 10));
        // The last 2 seconds only.
        let recent: u64 = (profile.rows(3 * second, 4 * second, 1).iter())
            .map(|r| r.count)
            .sum();
        assert_eq!(recent, 3);
        // A window that ended before the last sample.
        let earlier: u64 = (profile.rows(Duration::ZERO, 2 * second, 1).iter())
            .map(|r| r.count)
            .sum();
        assert_eq!(earlier, 2);
        // Samples leave with the window, and their stacks with them.
        profile.expire(PROFILE_WINDOW + 4 * second);
        let all = PROFILE_WINDOW * 2;
        assert_eq!(profile.rows(Duration::ZERO, all, 1).len(), 1);
        assert_eq!(profile.held(), (1, 1));
        profile.expire(PROFILE_WINDOW * 2);
        assert!(profile.rows(Duration::ZERO, all, 1).is_empty());
        assert_eq!(profile.held(), (0, 0));
    }
}
