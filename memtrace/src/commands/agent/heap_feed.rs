//! The agent's heap profiling, as the feed drives it: the processes its config names are
//! hooked at each second's pass (`heap_targets`); their allocator events wait, in order, for
//! the drain's tick, when their stacks are symbolized into the books (`heap`); a profiled
//! process the OOM killer ends has what it held at its death written (`oom_profiles`) once
//! its exit shows every event before it was applied.
use std::collections::HashMap;

use anyhow::Result;
use memtrace_common::{AllocFn, EventKind, OomKill};

use super::{
    config::HeapConfig,
    heap::{self, HeapBooks, HeapEvent, ProfileOf},
    heap_targets::HeapTargets,
    interned::Stack,
    metrics::{HeapHealth, ProcessId},
    oom_profiles::OomProfiles,
};
use crate::{
    commands::oom::{self, OomKillRow},
    host::memcg::MemoryHierarchy,
    kernel::tracer::Tracer,
    trace::{processes::Processes, records::Event, stacks::StackTables, symbolize::Symbolizer},
};

pub struct HeapProfiling {
    targets: HeapTargets,
    books: HeapBooks,
    /// Events drained since the last tick, in order.
    pending: Vec<HeapEvent>,
    /// Profiled processes the OOM killer chose, until their exit.
    victims: HashMap<u32, OomKillRow>,
    pub oom: OomProfiles,
}

impl HeapProfiling {
    pub fn new(config: &HeapConfig) -> Self {
        Self {
            books: HeapBooks::new(config.sample_bytes, config.max_blocks, config.max_stacks),
            oom: OomProfiles::new(&config.oom_profiles, config.oom_profiles_kept),
            targets: HeapTargets::new(config.clone()),
            pending: Vec::new(),
            victims: HashMap::new(),
        }
    }

    /// An allocator event of a profiled process (others are not hooked).
    pub fn on_event(&mut self, event: &Event, processes: &mut Processes) {
        let (tgid, addr) = (event.raw.tgid, event.raw.addr);
        match event.kind {
            EventKind::Alloc => {
                // Its maps read now, for the stack's symbols, before the process can exit.
                processes.maps.capture_unknown(tgid);
                self.pending.push(HeapEvent::Alloc {
                    key: processes.stack_key(event),
                    addr,
                    size: event.raw.weight,
                });
            }
            EventKind::Free if AllocFn::from_raw(event.raw.detail).is_some() => {
                self.pending.push(HeapEvent::Free { tgid, addr });
            }
            _ => {}
        }
    }

    /// The OOM killer chose `kill`'s victim: if profiled, its heap at its death is written
    /// when it exits.
    pub fn on_oom_kill(&mut self, kill: &OomKill, hierarchy: Option<&MemoryHierarchy>) {
        if self.books.has_process(kill.pid) || self.targets.profiles_pid(kill.pid) {
            self.victims
                .insert(kill.pid, oom::describe(hierarchy, kill));
        }
    }

    /// Whether events wait for the tick.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// A process ended: its probes go, and its blocks once the events before are applied.
    pub fn on_exit(&mut self, tgid: u32) {
        self.targets.ended(tgid);
        if self.books.has_process(tgid) || self.victims.contains_key(&tgid) {
            self.pending.push(HeapEvent::Exit { tgid });
        }
    }

    /// The events since the last tick into the books, their stacks symbolized now (while the
    /// kernel's tables and the processes' maps hold them).
    pub fn apply(
        &mut self,
        tables: &StackTables,
        symbolizer: &mut Symbolizer,
        known: &mut Processes,
    ) {
        let mut resolve = |key: &_| {
            let (user, kernel) = tables.frames_reading_maps(key, symbolizer, &mut known.maps);
            (known.name(key.tgid), Stack::new(user, kernel))
        };
        for event in std::mem::take(&mut self.pending) {
            if let HeapEvent::Exit { tgid } = event {
                if let Some(kill) = self.victims.remove(&tgid) {
                    let rows = self.books.process_rows(tgid);
                    self.oom.save(&kill, rows, self.books.sample_bytes());
                }
            }
            self.books.apply(event, &mut resolve);
        }
    }

    /// The kernel's stack tables were emptied.
    pub fn forget_keys(&mut self) {
        self.books.forget_keys();
    }

    /// Each second: hooks the living processes the config names, lets go of those gone
    /// (and of their blocks, should their exit record have been lost).
    pub fn update<'a>(
        &mut self,
        tracer: &mut Tracer,
        living: impl Iterator<Item = (ProcessId, &'a str, &'a str)>,
    ) {
        for tgid in self.targets.update(tracer, living) {
            if self.books.has_process(tgid) {
                self.pending.push(HeapEvent::Exit { tgid });
            }
        }
    }

    /// The gzip'd heap profile of every profiled process, per name: in-use bytes shown first
    /// (/debug/pprof/heap) or allocated bytes (/debug/pprof/allocs).
    pub fn profile(
        &self,
        in_use_first: bool,
        duration_s: f64,
        lost_events: u64,
    ) -> Result<Vec<u8>> {
        let of = ProfileOf {
            target: "heap-profiled processes".to_owned(),
            duration_s,
            lost_events,
            in_use_first,
            context: Vec::new(),
        };
        heap::pprof_bytes(of, self.books.rows(), self.books.sample_bytes())
    }

    pub fn health(&self) -> HeapHealth {
        let (blocks, stacks) = self.books.held();
        HeapHealth {
            processes: self.targets.count() as u64,
            blocks: blocks as u64,
            stacks: stacks as u64,
            dropped_blocks: self.books.dropped.blocks,
            dropped_stacks: self.books.dropped.stacks,
        }
    }
}
