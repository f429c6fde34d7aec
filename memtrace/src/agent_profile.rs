//! The agent's rolling fault profile: the sampled fault stacks of the last ten minutes, at
//! most `PROFILE_SAMPLES` of them, and which ended processes they still need. An ended
//! process's maps are kept until its last sampled stack leaves the window (they symbolize
//! it), then forgotten: an always-on agent must not keep every process it ever saw.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Duration,
};

use crate::stacks::StackKey;

/// The profile covers at most this much of the past...
pub const PROFILE_WINDOW: Duration = Duration::from_secs(600);
/// ...and holds at most this many sampled stacks (the oldest go first).
const PROFILE_SAMPLES: usize = 100_000;

#[derive(Default)]
pub struct RollingProfile {
    /// Sampled stacks, oldest first, with when they came.
    samples: VecDeque<(Duration, StackKey)>,
    /// Samples held per process.
    held: HashMap<u32, usize>,
    /// Ended processes whose samples are still held.
    ended: HashSet<u32>,
}

impl RollingProfile {
    /// A sampled stack at `now`. Returns the ended processes whose last sample made room for it.
    pub fn push(&mut self, now: Duration, key: StackKey) -> Vec<u32> {
        let mut released = Vec::new();
        if self.samples.len() >= PROFILE_SAMPLES {
            released.extend(self.pop());
        }
        *self.held.entry(key.tgid).or_default() += 1;
        self.samples.push_back((now, key));
        released
    }

    /// Drops the samples older than the window at `now`; returns the ended processes no
    /// sample needs any more.
    pub fn expire(&mut self, now: Duration) -> Vec<u32> {
        let oldest = now.saturating_sub(PROFILE_WINDOW);
        let mut released = Vec::new();
        while self.samples.front().is_some_and(|(at, _)| *at < oldest) {
            released.extend(self.pop());
        }
        released
    }

    /// `tgid` ended: true if no sample needs it (forget it now), else it is released later.
    pub fn ended(&mut self, tgid: u32) -> bool {
        if self.held.contains_key(&tgid) {
            self.ended.insert(tgid);
            return false;
        }
        true
    }

    /// The samples taken at or after `since`.
    pub fn since(&self, since: Duration) -> impl Iterator<Item = &StackKey> {
        self.samples
            .iter()
            .filter(move |(at, _)| *at >= since)
            .map(|(_, key)| key)
    }

    /// Drops the oldest sample; its process if that was its last and it has ended.
    fn pop(&mut self) -> Option<u32> {
        let (_, key) = self.samples.pop_front()?;
        let held = self.held.get_mut(&key.tgid)?;
        *held -= 1;
        if *held > 0 {
            return None;
        }
        self.held.remove(&key.tgid);
        self.ended.remove(&key.tgid).then_some(key.tgid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn an_ended_process_is_released_with_its_last_sample() {
        let mut profile = RollingProfile::default();
        let second = Duration::from_secs(1);
        assert!(profile.push(second, key(7)).is_empty());
        assert!(profile.push(2 * second, key(7)).is_empty());
        assert!(profile.push(3 * second, key(8)).is_empty());
        // 9 has no samples: forget it at once; 7 still has two.
        assert!(profile.ended(9));
        assert!(!profile.ended(7));
        assert!(profile.expire(PROFILE_WINDOW + second).is_empty());
        assert_eq!(profile.since(Duration::ZERO).count(), 3);
        assert_eq!(
            profile.expire(PROFILE_WINDOW + 2 * second + second / 2),
            vec![7]
        );
        // 8 lives on: its samples expire, nothing to release.
        assert!(profile.expire(PROFILE_WINDOW * 2).is_empty());
        assert_eq!(profile.since(Duration::ZERO).count(), 0);
    }
}
