//! `memtrace malloc`'s stacks as a heap profile, the way Go writes one: each stack with what
//! it allocated while traced (`alloc_objects`, `alloc_space`) and what of it was still
//! allocated at the end (`inuse_objects`, `inuse_space`), values already scaled up when
//! sampled, `space/bytes` the period type and the sampling period the period. pprof viewers
//! show `inuse_space` first with --leaks and `alloc_space` without; folded output and flame
//! graphs weigh each stack by that same value.
use std::collections::HashMap;

use super::books::Weight;
use crate::{
    output::profile::{ProfileValues, Reweighted},
    report::{ReportHeader, StackRow},
    trace::{stack_groups, stacks::StackKey},
};

/// The profile's values, in order, with their units (Go's names).
const VALUE_TYPES: [(&str, &str); 4] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
];

/// What one stack allocated while traced, and what of it was still allocated at the end.
#[derive(Clone, Copy, Default)]
pub struct HeapWeight {
    pub allocated: Weight,
    pub in_use: Weight,
}

impl stack_groups::Weight for HeapWeight {
    fn merge(&mut self, other: &Self) {
        self.allocated += other.allocated;
        self.in_use += other.in_use;
    }
    fn heft(&self) -> f64 {
        self.allocated.bytes
    }
}

impl HeapWeight {
    /// The four values, in `VALUE_TYPES` order.
    pub fn values(&self) -> [u64; 4] {
        let round = |value: f64| value.round() as u64;
        [
            round(self.allocated.calls),
            round(self.allocated.bytes),
            round(self.in_use.calls),
            round(self.in_use.bytes),
        ]
    }
}

/// Each stack's allocations joined with its blocks in use (`in_use`: at the end, as the
/// leaks table counts them, blocks of exited processes included; or with --at-peak, at each
/// process's peak).
pub fn by_stack(
    allocated: impl Iterator<Item = (StackKey, Weight)>,
    in_use: Vec<(StackKey, Weight)>,
) -> Vec<(StackKey, HeapWeight)> {
    let mut joined: HashMap<StackKey, HeapWeight> = allocated
        .map(|(key, allocated)| {
            let weight = HeapWeight {
                allocated,
                in_use: Weight::default(),
            };
            (key, weight)
        })
        .collect();
    for (key, in_use) in in_use {
        joined.entry(key).or_default().in_use += in_use;
    }
    joined.into_iter().collect()
}

/// The heap profile of `grouped` stacks (every stack, with its weights), for the stack sinks:
/// each row's count is the value shown first: in-use bytes when `in_use_first` (--leaks,
/// --at-peak), allocated bytes otherwise.
pub fn profile(
    header: &ReportHeader,
    grouped: Vec<(StackRow, HeapWeight)>,
    in_use_first: bool,
    sample_bytes: u64,
) -> Reweighted {
    let shown = if in_use_first { 3 } else { 1 };
    let (rows, values): (Vec<StackRow>, Vec<Vec<u64>>) = (grouped.into_iter())
        .map(|(row, weight)| {
            let values = weight.values();
            (Reweighted::row(&row, values[shown]), values.to_vec())
        })
        .unzip();
    Reweighted {
        command: header.command,
        target: header.target.clone(),
        duration_s: header.duration_s,
        lost_events: header.lost_events,
        rows,
        // The period's type: bytes allocated between two sample points.
        sample_type: ("space", "bytes"),
        period: sample_bytes.max(1),
        sampling_note: (sample_bytes > 0).then(|| {
            format!(
                "sampled: one point per {sample_bytes} bytes on average; counts and bytes \
                 are estimates"
            )
        }),
        values: Some(ProfileValues {
            types: VALUE_TYPES.to_vec(),
            rows: values,
            shown: VALUE_TYPES[shown].0,
        }),
        context: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::malloc::books::test_support::{key, weight};
    use crate::output::profile::StackProfile;

    #[test]
    fn a_stacks_allocations_and_blocks_still_allocated_are_joined() {
        let allocated = [(key(1), weight(10.0, 1000.0)), (key(2), weight(5.0, 50.0))];
        // Blocks in use on a stack the books have no allocations for keep their values.
        let in_use = vec![(key(1), weight(3.0, 300.0)), (key(3), weight(1.0, 8.0))];
        let mut joined: Vec<(u64, [u64; 4])> = (by_stack(allocated.into_iter(), in_use)
            .into_iter())
        .map(|(key, weight)| (key.user_stack, weight.values()))
        .collect();
        joined.sort();
        assert_eq!(
            joined,
            [
                (1, [10, 1000, 3, 300]),
                (2, [5, 50, 0, 0]),
                (3, [0, 0, 1, 8]),
            ]
        );
    }

    #[test]
    fn the_value_shown_first_is_in_use_bytes_with_leaks_and_allocated_bytes_without() {
        let row = StackRow::new(7, "app".into(), "heap", 0, vec![], vec![]);
        let heavy = HeapWeight {
            allocated: weight(4.0, 400.0),
            in_use: weight(1.0, 100.0),
        };
        let header = ReportHeader {
            command: "malloc",
            duration_s: 1.0,
            lost_events: 0,
            target: "pid 7".to_owned(),
            exit: None,
            tracer: Default::default(),
            unwind: None,
        };
        for (leaks, shown, count) in [(true, "inuse_space", 100), (false, "alloc_space", 400)] {
            let profile = profile(&header, vec![(row.clone(), heavy)], leaks, 0);
            assert_eq!(profile.rows[0].count, count);
            assert_eq!(profile.default_value_type(), Some(shown));
            assert_eq!(profile.values(0), [4, 400, 1, 100]);
            assert_eq!(profile.value_types().len(), 4);
        }
    }
}
