//! Stacks as a report shows them: those that differ only in instruction addresses (the same
//! functions, called from other lines) are one row, and with `--group-by comm` so are those of
//! processes running the same program (four postgres backends are one postgres). The row's
//! frames are its heaviest stack's; its weight is the sum of all.
use std::collections::HashMap;

use anyhow::Result;

use crate::{
    kernel::tracer::Tracer,
    report::Frame,
    trace::{
        memory_maps::MapsCache,
        stacks::{StackKey, StackTables},
        symbolize::Symbolizer,
    },
};

/// How stacks are told apart (the shared `--group-by` and `--by-address`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grouping {
    /// One row per command name across pids, not per pid.
    pub by_comm: bool,
    /// Stacks apart by instruction address, as the kernel recorded them.
    pub by_address: bool,
}

/// What a row weighs: summed over the stacks it merges.
pub trait Weight: Clone {
    fn merge(&mut self, other: &Self);
    /// What rows are ranked by (events, bytes, pages).
    fn heft(&self) -> f64;
}

impl Weight for u64 {
    fn merge(&mut self, other: &Self) {
        *self += other;
    }
    fn heft(&self) -> f64 {
        *self as f64
    }
}

/// One row: the stacks it merges, summed.
#[derive(Clone, Debug)]
pub struct StackGroup<W> {
    /// The heaviest stack: the row shows its frames and pid.
    pub key: StackKey,
    /// Every pid whose stacks it merges, in order (one unless grouped by comm).
    pub pids: Vec<u32>,
    pub weight: W,
}

/// What makes two stacks one row.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Identity {
    Addresses {
        who: Who,
        kind: u32,
        generation: u32,
        user_stack: u64,
        kernel_stack_id: i32,
    },
    Functions {
        who: Who,
        kind: u32,
        user: Vec<String>,
        kernel: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Who {
    Pid(u32),
    Comm(String),
}

/// The rows for `stacks`, heaviest first (ties in key order, so output is stable). Stacks
/// are symbolized to compare their functions (through `symbolizer`, which caches each
/// address), unless `by_address` alone is asked for.
pub fn group<W: Weight>(
    tracer: &Tracer,
    symbolizer: &mut Symbolizer,
    maps: &MapsCache,
    stacks: Vec<(StackKey, W)>,
    grouping: Grouping,
    comm: &dyn Fn(&StackKey) -> String,
) -> Result<Vec<StackGroup<W>>> {
    let tables = (!grouping.by_address)
        .then(|| StackTables::open(tracer))
        .transpose()?;
    let mut index: HashMap<Identity, usize> = HashMap::new();
    // Each row, with the heft of the stack that shows for it.
    let mut groups: Vec<(StackGroup<W>, f64)> = Vec::new();
    for (key, weight) in stacks {
        let who = match grouping.by_comm {
            true => Who::Comm(comm(&key)),
            false => Who::Pid(key.tgid),
        };
        let kind = key.kind as u32;
        let identity = match &tables {
            None => Identity::Addresses {
                who,
                kind,
                generation: key.generation,
                user_stack: key.user_stack,
                kernel_stack_id: key.kernel_stack_id,
            },
            Some(tables) => {
                let (user, kernel) = tables.frames(&key, symbolizer, maps);
                Identity::Functions {
                    who,
                    kind,
                    user: user.iter().map(Frame::name).collect(),
                    kernel: kernel.iter().map(Frame::name).collect(),
                }
            }
        };
        let heft = weight.heft();
        match index.get(&identity) {
            Some(&at) => {
                let (group, shown) = &mut groups[at];
                if heft > *shown {
                    (group.key, *shown) = (key, heft);
                }
                group.weight.merge(&weight);
                if !group.pids.contains(&key.tgid) {
                    group.pids.push(key.tgid);
                }
            }
            None => {
                index.insert(identity, groups.len());
                let pids = vec![key.tgid];
                groups.push((StackGroup { key, pids, weight }, heft));
            }
        }
    }
    let mut groups: Vec<StackGroup<W>> = groups.into_iter().map(|(group, _)| group).collect();
    for group in &mut groups {
        group.pids.sort_unstable();
    }
    groups.sort_by(|a, b| {
        (b.weight.heft().total_cmp(&a.weight.heft())).then_with(|| {
            (a.key.tgid, a.key.user_stack, a.key.kernel_stack_id).cmp(&(
                b.key.tgid,
                b.key.user_stack,
                b.key.kernel_stack_id,
            ))
        })
    });
    Ok(groups)
}
