//! The agent's heap profiles, for the processes under heap profiling (`heap_targets`): what
//! each stack allocated since they were first profiled, and what it holds now, per process
//! name, as Go's /debug/pprof/heap and /debug/pprof/allocs give them. Stacks are symbolized
//! as they come (the kernel's stack tables are emptied when full, and processes forgotten
//! when they end), and memory is bounded: at most `max_blocks` blocks followed and
//! `max_stacks` stacks, what is past them counted as dropped.
use std::{collections::HashMap, sync::Arc};

use anyhow::Result;

use super::interned::{Interned, Stack};
use crate::{
    commands::malloc::{
        books::Weight,
        heap_profile::{self, HeapWeight},
    },
    output::pprof,
    report::{Frame, ReportHeader, StackRow},
    trace::stacks::StackKey,
};

/// What a heap profile the agent serves or writes is of.
pub struct ProfileOf {
    /// Said in its first comment.
    pub target: String,
    pub duration_s: f64,
    pub lost_events: u64,
    /// In-use bytes shown first (else allocated bytes).
    pub in_use_first: bool,
    /// Comments, and labels on every sample (an OOM kill's).
    pub context: Vec<(&'static str, String)>,
}

/// `rows` as a gzip'd pprof heap profile, as Go writes one.
pub fn pprof_bytes(
    of: ProfileOf,
    rows: Vec<(StackRow, HeapWeight)>,
    sample_bytes: u64,
) -> Result<Vec<u8>> {
    let header = ReportHeader {
        command: "agent",
        duration_s: of.duration_s,
        lost_events: of.lost_events,
        target: of.target,
        exit: None,
        tracer: Default::default(),
        unwind: None,
    };
    let mut profile = heap_profile::profile(&header, rows, of.in_use_first, sample_bytes);
    profile.context = of.context;
    let mut bytes = Vec::new();
    pprof::write(&profile, &mut bytes)?;
    Ok(bytes)
}

/// A heap event of a profiled process, kept in order until its stack is symbolized (at the
/// drain's tick): a free must find the block allocated before it.
pub enum HeapEvent {
    Alloc {
        key: StackKey,
        addr: u64,
        size: u64,
    },
    Free {
        tgid: u32,
        addr: u64,
    },
    /// The process ended: its blocks are gone.
    Exit {
        tgid: u32,
    },
}

/// A process name and a stack, and what was allocated there.
struct Group {
    comm: Arc<str>,
    stack: Arc<Stack>,
    weight: HeapWeight,
}

/// A block followed until freed.
struct Block {
    group: usize,
    weight: Weight,
}

/// One process's blocks, and what it allocated by group (for its profile alone: an OOM
/// victim's).
#[derive(Default)]
struct ProcessHeap {
    blocks: HashMap<u64, Block>,
    allocated: HashMap<usize, Weight>,
}

/// What was dropped to keep the books bounded.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// Blocks not followed (past `max_blocks`): their frees are not seen, and they never
    /// count as in use.
    pub blocks: u64,
    /// Allocations whose stack was not kept (past `max_stacks`): counted under one stack,
    /// "[stacks past max_stacks]".
    pub stacks: u64,
}

pub struct HeapBooks {
    sample_bytes: u64,
    max_blocks: usize,
    max_stacks: usize,
    /// Groups by the kernel tables' keys (forgotten when the tables are emptied).
    by_key: HashMap<StackKey, usize>,
    groups: Vec<Group>,
    group_of: HashMap<(*const str, *const Stack), usize>,
    /// Where allocations past `max_stacks` go.
    overflow: Option<usize>,
    interned: Interned,
    processes: HashMap<u32, ProcessHeap>,
    blocks: usize,
    pub dropped: Dropped,
}

/// Resolves a stack key: the process's name, and the stack symbolized.
pub type Resolve<'a> = dyn FnMut(&StackKey) -> (String, Stack) + 'a;

impl HeapBooks {
    pub fn new(sample_bytes: u64, max_blocks: usize, max_stacks: usize) -> Self {
        Self {
            sample_bytes,
            max_blocks,
            max_stacks: max_stacks.max(1),
            by_key: HashMap::new(),
            groups: Vec::new(),
            group_of: HashMap::new(),
            overflow: None,
            interned: Interned::default(),
            processes: HashMap::new(),
            blocks: 0,
            dropped: Dropped::default(),
        }
    }

    pub fn sample_bytes(&self) -> u64 {
        self.sample_bytes
    }

    /// Applies one event; `resolve` symbolizes a stack not seen before.
    pub fn apply(&mut self, event: HeapEvent, resolve: &mut Resolve) {
        match event {
            HeapEvent::Alloc { key, addr, size } => self.allocated(key, addr, size, resolve),
            HeapEvent::Free { tgid, addr } => {
                let Some(process) = self.processes.get_mut(&tgid) else {
                    return;
                };
                if let Some(block) = process.blocks.remove(&addr) {
                    self.blocks -= 1;
                    self.groups[block.group].weight.in_use -= block.weight;
                }
            }
            HeapEvent::Exit { tgid } => self.forget(tgid),
        }
    }

    fn allocated(&mut self, key: StackKey, addr: u64, size: u64, resolve: &mut Resolve) {
        let weight = Weight::of_block(size, self.sample_bytes);
        let group = self.group(&key, resolve);
        let process = self.processes.entry(key.tgid).or_default();
        // A block at an address not freed (a free missed, or an exec's old image): replaced.
        if let Some(old) = process.blocks.remove(&addr) {
            self.blocks -= 1;
            self.groups[old.group].weight.in_use -= old.weight;
        }
        *process.allocated.entry(group).or_default() += weight;
        let held = &mut self.groups[group].weight;
        held.allocated += weight;
        if self.blocks < self.max_blocks {
            process.blocks.insert(addr, Block { group, weight });
            self.blocks += 1;
            held.in_use += weight;
        } else {
            self.dropped.blocks += 1;
        }
    }

    /// The group of the stack `key` names, symbolized the first time.
    fn group(&mut self, key: &StackKey, resolve: &mut Resolve) -> usize {
        if let Some(&group) = self.by_key.get(key) {
            return group;
        }
        let (comm, stack) = resolve(key);
        let comm = self.interned.comm(comm);
        let stack = self.interned.stack(stack);
        let identity = (Arc::as_ptr(&comm), Arc::as_ptr(&stack));
        let group = match self.group_of.get(&identity) {
            Some(&group) => group,
            None if self.groups.len() + 1 >= self.max_stacks => {
                self.dropped.stacks += 1;
                // Not remembered by key: each allocation there counts as dropped.
                return self.overflow_group();
            }
            None => {
                self.groups.push(Group {
                    comm,
                    stack,
                    weight: HeapWeight::default(),
                });
                self.group_of.insert(identity, self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        self.by_key.insert(*key, group);
        group
    }

    fn overflow_group(&mut self) -> usize {
        if let Some(group) = self.overflow {
            return group;
        }
        let frame = Frame {
            address: 0,
            function: Some("[stacks past max_stacks]".to_owned()),
            offset: 0,
            module: None,
            mapping: None,
            source: None,
        };
        self.groups.push(Group {
            comm: self.interned.comm("other".to_owned()),
            stack: self.interned.stack(Stack::new(vec![frame], Vec::new())),
            weight: HeapWeight::default(),
        });
        self.overflow = Some(self.groups.len() - 1);
        self.groups.len() - 1
    }

    /// A process ended: its blocks are no longer in use (what it allocated stays counted).
    fn forget(&mut self, tgid: u32) {
        let Some(process) = self.processes.remove(&tgid) else {
            return;
        };
        self.blocks -= process.blocks.len();
        for block in process.blocks.into_values() {
            self.groups[block.group].weight.in_use -= block.weight;
        }
    }

    /// The kernel's stack tables were emptied: their keys may now name other stacks.
    pub fn forget_keys(&mut self) {
        self.by_key.clear();
    }

    /// Whether `tgid` has allocations in the books.
    pub fn has_process(&self, tgid: u32) -> bool {
        self.processes.contains_key(&tgid)
    }

    /// Every stack with what it allocated and holds now, per process name (pid 0).
    pub fn rows(&self) -> Vec<(StackRow, HeapWeight)> {
        let weights = self.groups.iter().enumerate().map(|(i, g)| (i, g.weight));
        self.rows_of(0, weights)
    }

    /// Process `tgid`'s stacks alone: what it allocated since profiled, and holds now.
    pub fn process_rows(&self, tgid: u32) -> Vec<(StackRow, HeapWeight)> {
        let Some(process) = self.processes.get(&tgid) else {
            return Vec::new();
        };
        let mut by_group: HashMap<usize, HeapWeight> = (process.allocated.iter())
            .map(|(&group, &allocated)| {
                let weight = HeapWeight {
                    allocated,
                    in_use: Weight::default(),
                };
                (group, weight)
            })
            .collect();
        for block in process.blocks.values() {
            by_group.entry(block.group).or_default().in_use += block.weight;
        }
        self.rows_of(tgid, by_group.into_iter())
    }

    fn rows_of(
        &self,
        pid: u32,
        weights: impl Iterator<Item = (usize, HeapWeight)>,
    ) -> Vec<(StackRow, HeapWeight)> {
        let mut rows: Vec<(StackRow, HeapWeight)> = weights
            .map(|(group, weight)| {
                let group = &self.groups[group];
                let row = StackRow::new(
                    pid,
                    group.comm.to_string(),
                    "heap",
                    weight.values()[1],
                    group.stack.user.clone(),
                    group.stack.kernel.clone(),
                );
                (row, weight)
            })
            .collect();
        rows.sort_by(|a, b| (b.0.count, &a.0.frames).cmp(&(a.0.count, &b.0.frames)));
        rows
    }

    /// Blocks followed, and stacks held.
    pub fn held(&self) -> (usize, usize) {
        (self.blocks, self.groups.len())
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
            kind: EventKind::Alloc,
            user_stack,
            kernel_stack_id: -1,
        }
    }

    fn stack(function: &str) -> Stack {
        let frame = Frame {
            address: 0x1000,
            function: Some(function.to_owned()),
            offset: 0,
            module: Some("w".to_owned()),
            mapping: None,
            source: None,
        };
        Stack::new(vec![frame], Vec::new())
    }

    /// Stack 1 is grow_a, 2 grow_b, anything else grow_c.
    fn resolve(key: &StackKey) -> (String, Stack) {
        let name = match key.user_stack {
            1 => "grow_a",
            2 => "grow_b",
            _ => "grow_c",
        };
        ("w".to_owned(), stack(name))
    }

    fn values(rows: Vec<(StackRow, HeapWeight)>) -> Vec<(String, [u64; 4])> {
        let mut values: Vec<_> = (rows.into_iter())
            .map(|(row, weight)| (row.frames[0].clone(), weight.values()))
            .collect();
        values.sort();
        values
    }

    #[test]
    fn blocks_are_followed_per_process_and_summed_per_name() {
        let mut books = HeapBooks::new(0, 100, 100);
        let alloc = |tgid, stack, addr, size| HeapEvent::Alloc {
            key: key(tgid, stack),
            addr,
            size,
        };
        for event in [
            alloc(7, 1, 0x10, 100),
            alloc(7, 1, 0x20, 100),
            alloc(7, 2, 0x30, 50),
            // Another process of the name, the same code elsewhere: one stack.
            alloc(8, 4, 0x10, 10),
            HeapEvent::Free {
                tgid: 7,
                addr: 0x20,
            },
            // A free of a block never seen is nothing.
            HeapEvent::Free {
                tgid: 7,
                addr: 0x99,
            },
        ] {
            books.apply(event, &mut resolve);
        }
        assert_eq!(
            values(books.rows()),
            [
                ("grow_a".to_owned(), [2, 200, 1, 100]),
                ("grow_b".to_owned(), [1, 50, 1, 50]),
                ("grow_c".to_owned(), [1, 10, 1, 10]),
            ]
        );
        assert_eq!(
            values(books.process_rows(8)),
            [("grow_c".to_owned(), [1, 10, 1, 10])]
        );
        // Process 7 ends: what it allocated stays, what it held goes.
        books.apply(HeapEvent::Exit { tgid: 7 }, &mut resolve);
        assert_eq!(
            values(books.rows()),
            [
                ("grow_a".to_owned(), [2, 200, 0, 0]),
                ("grow_b".to_owned(), [1, 50, 0, 0]),
                ("grow_c".to_owned(), [1, 10, 1, 10]),
            ]
        );
        assert_eq!(books.held(), (1, 3));
    }

    #[test]
    fn past_the_bounds_blocks_and_stacks_are_dropped_and_counted() {
        // One block followed; two stacks, the second being the overflow's.
        let mut books = HeapBooks::new(0, 1, 2);
        for (stack, addr) in [(1, 0x10), (2, 0x20), (3, 0x30)] {
            let event = HeapEvent::Alloc {
                key: key(7, stack),
                addr,
                size: 8,
            };
            books.apply(event, &mut resolve);
        }
        assert_eq!(
            books.dropped,
            Dropped {
                blocks: 2,
                stacks: 2
            }
        );
        let rows = values(books.rows());
        assert_eq!(
            rows,
            [
                ("[stacks past max_stacks]".to_owned(), [2, 16, 0, 0]),
                ("grow_a".to_owned(), [1, 8, 1, 8]),
            ]
        );
    }
}
