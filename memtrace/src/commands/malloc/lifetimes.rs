//! How long a stack's blocks lived: a log2 histogram of the lifetimes of the blocks freed
//! while traced, and how many of them were temporary (freed within --temporary). A block
//! still allocated at the end has no lifetime yet, and is in neither.
use std::time::Duration;

use serde::Serialize;

use super::books::log2_bucket;

/// Bucket 0 holds lifetimes up to 1 µs, bucket i those in (2^(i-1), 2^i] µs; the last one
/// (2^40 µs, 12.7 days) every longer one too.
const BUCKETS: usize = 41;

/// One stack's freed blocks by lifetime (weighted: a sampled block stands for several).
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    counts: [f64; BUCKETS],
    /// Blocks freed within --temporary of their allocation.
    pub temporary: f64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            counts: [0.0; BUCKETS],
            temporary: 0.0,
        }
    }
}

/// Blocks that lived at most `le_s` seconds (and longer than the bucket before).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LifetimeBucket {
    pub le_s: f64,
    pub count: u64,
}

impl Lifetimes {
    /// `blocks` freed after `lifetime`; temporary when freed within `temporary`.
    pub fn freed(&mut self, lifetime: Duration, blocks: f64, temporary: Duration) {
        self.counts[bucket(lifetime)] += blocks;
        if lifetime <= temporary {
            self.temporary += blocks;
        }
    }

    pub fn merge(&mut self, other: &Self) {
        for (count, more) in self.counts.iter_mut().zip(other.counts) {
            *count += more;
        }
        self.temporary += other.temporary;
    }

    /// The buckets that hold blocks, shortest first.
    pub fn buckets(&self) -> Vec<LifetimeBucket> {
        (self.counts.iter().enumerate())
            .filter(|(_, &count)| count.round() > 0.0)
            .map(|(i, &count)| LifetimeBucket {
                le_s: (1u64 << i) as f64 * 1e-6,
                count: count.round() as u64,
            })
            .collect()
    }

    /// Blocks freed while traced.
    pub fn freed_blocks(&self) -> f64 {
        self.counts.iter().sum()
    }
}

/// The bucket of a lifetime: i such that 2^(i-1) µs < lifetime <= 2^i µs.
fn bucket(lifetime: Duration) -> usize {
    let micros = u64::try_from(lifetime.as_nanos().div_ceil(1000)).unwrap_or(u64::MAX);
    log2_bucket(micros).min(BUCKETS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_fall_in_log2_buckets_of_microseconds() {
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_nanos(1000)), 0);
        assert_eq!(bucket(Duration::from_nanos(1001)), 1);
        assert_eq!(bucket(Duration::from_micros(2)), 1);
        assert_eq!(bucket(Duration::from_micros(3)), 2);
        // 2 ms is in (1024, 2048] µs, 200 ms in (131072, 262144] µs.
        assert_eq!(bucket(Duration::from_millis(2)), 11);
        assert_eq!(bucket(Duration::from_millis(200)), 18);
        assert_eq!(bucket(Duration::from_secs(86400 * 365)), BUCKETS - 1);
    }

    #[test]
    fn temporary_blocks_are_those_freed_within_the_threshold() {
        let mut lifetimes = Lifetimes::default();
        let within = Duration::from_millis(1);
        lifetimes.freed(Duration::from_micros(3), 2.0, within);
        lifetimes.freed(within, 1.0, within);
        lifetimes.freed(Duration::from_millis(2), 4.0, within);
        assert_eq!(lifetimes.temporary, 3.0);
        assert_eq!(lifetimes.freed_blocks(), 7.0);
        let mut merged = lifetimes;
        merged.merge(&lifetimes);
        assert_eq!(
            merged.buckets(),
            [
                LifetimeBucket {
                    le_s: 4e-6,
                    count: 4
                },
                LifetimeBucket {
                    le_s: 1024e-6,
                    count: 2
                },
                LifetimeBucket {
                    le_s: 2048e-6,
                    count: 8
                },
            ]
        );
    }
}
