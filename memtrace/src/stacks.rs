//! Counting events per call stack, and turning the stack ids into symbolized report rows once,
//! at report time (each unique stack is read and symbolized once).
use std::collections::HashMap;

use anyhow::Result;
use memtrace_common::EventKind;

use crate::{
    bpf::{self, Tracer},
    procmaps::MapsCache,
    report::StackRow,
    symbolize::Symbolizer,
};

/// A stack as the kernel side identified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub tgid: u32,
    /// The exec generation of the process when the stack was recorded (`MapsCache::exec`).
    pub generation: u32,
    pub kind: EventKind,
    /// Key in `USER_STACKS` (0: none).
    pub user_stack: u64,
    pub kernel_stack_id: i32,
}

#[derive(Default)]
pub struct StackCounts {
    counts: HashMap<StackKey, u64>,
}

impl StackCounts {
    pub fn add(&mut self, key: StackKey, weight: u64) {
        *self.counts.entry(key).or_default() += weight;
    }

    /// The `limit` stacks with the most events (all with None), most first, symbolized.
    /// `scale` multiplies counts (the sampling period); `label` gives a stack's process name
    /// and the name of its event kind.
    pub fn resolve(
        &self,
        tracer: &Tracer,
        symbolizer: &mut Symbolizer,
        maps: &MapsCache,
        limit: Option<usize>,
        scale: u64,
        label: &dyn Fn(&StackKey) -> (String, &'static str),
    ) -> Result<Vec<StackRow>> {
        let mut sorted: Vec<(&StackKey, &u64)> = self.counts.iter().collect();
        // Most first; ties broken by key so the output is deterministic.
        sorted.sort_by(|a, b| {
            b.1.cmp(a.1).then_with(|| {
                (a.0.tgid, a.0.user_stack, a.0.kernel_stack_id).cmp(&(
                    b.0.tgid,
                    b.0.user_stack,
                    b.0.kernel_stack_id,
                ))
            })
        });
        sorted.truncate(limit.unwrap_or(usize::MAX));
        let keys: Vec<(StackKey, u64)> =
            sorted.into_iter().map(|(k, &c)| (*k, c * scale)).collect();
        rows(tracer, symbolizer, maps, &keys, label)
    }
}

/// Report rows for these stacks and counts, in the order given, symbolized (each unique
/// frame once, through the symbolizer's cache).
pub fn rows(
    tracer: &Tracer,
    symbolizer: &mut Symbolizer,
    maps: &MapsCache,
    keys: &[(StackKey, u64)],
    label: &dyn Fn(&StackKey) -> (String, &'static str),
) -> Result<Vec<StackRow>> {
    let stacks = tracer.stacks()?;
    let user_stacks = tracer.user_stacks()?;
    Ok(keys
        .iter()
        .map(|(key, count)| {
            let user = bpf::user_stack_frames(&user_stacks, key.user_stack);
            let kernel = bpf::stack_frames(&stacks, key.kernel_stack_id);
            let (comm, kind) = label(key);
            StackRow::new(
                key.tgid,
                comm,
                kind,
                *count,
                symbolizer.user_frames(maps, key.tgid, key.generation, &user),
                symbolizer.kernel_frames(&kernel),
            )
        })
        .collect())
}
