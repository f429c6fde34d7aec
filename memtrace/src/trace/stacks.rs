//! Counting events per call stack, and turning the stack ids into symbolized report rows once,
//! at report time (each unique stack is read and symbolized once).
use std::collections::HashMap;

use anyhow::Result;
use memtrace_common::EventKind;

use aya::maps::{HashMap as BpfHashMap, MapData, StackTraceMap};
use memtrace_common::{python::PythonStack, UserStack};

use crate::{
    kernel::{
        tables::{self, RecordedStack},
        tracer::Tracer,
    },
    python,
    report::{Frame, StackRow},
    trace::{
        memory_maps::MapsCache,
        stack_groups::{self, Grouping, Weight},
        symbolize::Symbolizer,
    },
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

    /// The `limit` rows with the most events (all with None), most first, symbolized, and
    /// how many rows there are in all: stacks merged as `grouping` says (`stack_groups`).
    /// `scale` multiplies counts (the sampling period); `label` gives a stack's process name
    /// and the name of its event kind.
    #[allow(clippy::too_many_arguments)]
    pub fn resolve(
        &self,
        tracer: &Tracer,
        symbolizer: &mut Symbolizer,
        maps: &MapsCache,
        limit: Option<usize>,
        scale: u64,
        grouping: Grouping,
        label: &dyn Fn(&StackKey) -> (String, &'static str),
    ) -> Result<(Vec<StackRow>, usize)> {
        let stacks: Vec<(StackKey, u64)> = self.counts.iter().map(|(k, c)| (*k, *c)).collect();
        let count = |weight: &u64| weight * scale;
        let (rows, total) = grouped_rows(
            tracer, symbolizer, maps, stacks, grouping, limit, &count, label,
        )?;
        Ok((rows.into_iter().map(|(row, _)| row).collect(), total))
    }
}

/// The `limit` heaviest report rows of `stacks` (all with None), merged as `grouping` says
/// (`stack_groups`), symbolized, each with its summed weight; and how many rows there are in
/// all. `count` is a row's count from its weight; `label` gives a stack's process name and
/// the name of its event kind.
#[allow(clippy::too_many_arguments)]
pub fn grouped_rows<W: Weight>(
    tracer: &Tracer,
    symbolizer: &mut Symbolizer,
    maps: &MapsCache,
    stacks: Vec<(StackKey, W)>,
    grouping: Grouping,
    limit: Option<usize>,
    count: &dyn Fn(&W) -> u64,
    label: &dyn Fn(&StackKey) -> (String, &'static str),
) -> Result<(Vec<(StackRow, W)>, usize)> {
    let comm = |key: &StackKey| label(key).0;
    let mut groups = stack_groups::group(tracer, symbolizer, maps, stacks, grouping, &comm)?;
    let total = groups.len();
    groups.truncate(limit.unwrap_or(usize::MAX));
    let keys: Vec<(StackKey, u64)> = (groups.iter())
        .map(|group| (group.key, count(&group.weight)))
        .collect();
    let rows = rows(tracer, symbolizer, maps, &keys, label)?;
    let rows = (rows.into_iter().zip(groups))
        .map(|(mut row, group)| {
            if grouping.by_comm {
                row.pids = group.pids;
            }
            (row, group.weight)
        })
        .collect();
    Ok((rows, total))
}

/// The kernel's stack tables (user and kernel), opened once for a batch of lookups.
pub struct StackTables<'a> {
    user: BpfHashMap<&'a MapData, u64, UserStack>,
    python: BpfHashMap<&'a MapData, u64, PythonStack>,
    kernel: StackTraceMap<&'a MapData>,
}

impl<'a> StackTables<'a> {
    pub fn open(tracer: &'a Tracer) -> Result<Self> {
        Ok(Self {
            user: tracer.user_stacks()?,
            python: tracer.python_stacks()?,
            kernel: tracer.stacks()?,
        })
    }

    /// The stack's user and kernel frames, innermost first, symbolized in the process's maps
    /// of the exec generation it was recorded in.
    pub fn frames(
        &self,
        key: &StackKey,
        symbolizer: &mut Symbolizer,
        maps: &MapsCache,
    ) -> (Vec<Frame>, Vec<Frame>) {
        let stack = tables::user_stack(&self.user, key.user_stack);
        self.symbolized(key, &stack, symbolizer, maps)
    }

    /// `frames`, for a process memtrace may never have read (an always-on tracer learns of
    /// processes started before it only from their samples): its maps are read first when
    /// the snapshot does not cover the stack (see `MapsCache::cover`).
    pub fn frames_reading_maps(
        &self,
        key: &StackKey,
        symbolizer: &mut Symbolizer,
        maps: &mut MapsCache,
    ) -> (Vec<Frame>, Vec<Frame>) {
        let stack = tables::user_stack(&self.user, key.user_stack);
        maps.cover(key.tgid, key.generation, &stack.addrs);
        self.symbolized(key, &stack, symbolizer, maps)
    }

    /// The recorded stack's frames named: native ones by the symbolizer, Python ones by the
    /// code objects read from the process, in place of the interpreter's frames.
    fn symbolized(
        &self,
        key: &StackKey,
        stack: &RecordedStack,
        symbolizer: &mut Symbolizer,
        maps: &MapsCache,
    ) -> (Vec<Frame>, Vec<Frame>) {
        let kernel = tables::stack_frames(&self.kernel, key.kernel_stack_id);
        let native =
            symbolizer.user_frames(maps, key.tgid, key.generation, &stack.addrs, &stack.returns);
        let codes = maps.python_codes(key.tgid, key.generation);
        let words = (stack.python_key)
            .map(|python| tables::python_words(&self.python, python))
            .unwrap_or_default();
        let mut user = python::frames::place(native, &words, codes);
        user.extend(Frame::stack_end(stack.end));
        (user, symbolizer.kernel_frames(&kernel))
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
    let tables = StackTables::open(tracer)?;
    Ok(keys
        .iter()
        .map(|(key, count)| {
            let (user, kernel) = tables.frames(key, symbolizer, maps);
            let (comm, kind) = label(key);
            StackRow::new(key.tgid, comm, kind, *count, user, kernel)
        })
        .collect())
}
