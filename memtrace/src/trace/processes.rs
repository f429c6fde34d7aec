//! What the pipeline keeps about the processes it sees: their memory maps (one
//! snapshot per exec generation, see `memory_maps`) and their names, kept current by the fork and
//! exec events every trace carries.
use std::collections::{BTreeSet, HashMap};

use memtrace_common::EventKind;

use crate::trace::{
    mapping_records::MmapRecord,
    memory_maps::MapsCache,
    records::{comm_to_string, Event, Record},
    stacks::StackKey,
};

#[derive(Default)]
pub struct Processes {
    pub maps: MapsCache,
    comms: HashMap<u32, String>,
    /// Execs per pid in the kernel's mapping records (see `on_mapping_record`): which exec
    /// generation each mapping belongs to. (Not reset for a reused pid: the rare reuse within
    /// one trace can cost that process its symbols.)
    mapping_generations: HashMap<u32, u32>,
    /// Records that did not decode (skipped, reported at the end).
    undecodable: u64,
    /// Processes the targets forked while traced (the kernel says only of targets' forks).
    forked: BTreeSet<u32>,
}

impl Processes {
    /// Processes given by pid: their maps are read now, while they surely exist.
    pub fn capture(&mut self, pids: &[u32]) {
        for &pid in pids {
            self.maps.capture(pid);
        }
    }

    /// The drain's step with each record before any consumer sees it: a fork or exec is
    /// applied (and not passed on: false), an event's process gets its name noted.
    pub fn admit(&mut self, record: &Record) -> bool {
        let Record::Event(event) = record else {
            return true;
        };
        if self.on_lifecycle(event) {
            return false;
        }
        self.comm(event);
        true
    }

    /// A record that did not decode (skipped, reported at the end).
    pub fn count_undecodable(&mut self) {
        self.undecodable += 1;
    }

    /// A record of the kernel's executable and shared mappings (see `mapping_records`):
    /// short-lived processes get their libraries' symbols, and their shared memory its region,
    /// even when they exit before their maps are read.
    pub fn on_mapping_record(&mut self, record: MmapRecord) {
        match record {
            MmapRecord::Exec { pid, .. } => *self.mapping_generations.entry(pid).or_default() += 1,
            // Pseudo files ([vdso]) have no file to symbolize from.
            MmapRecord::Mapping(mapping) if mapping.path.starts_with('[') => {}
            MmapRecord::Mapping(mapping) => {
                let generation = self
                    .mapping_generations
                    .get(&mapping.pid)
                    .copied()
                    .unwrap_or(0);
                self.maps.add_mapping(generation, &mapping);
            }
        }
    }

    /// Drops what is kept about `pid`, a process that ended and is no longer needed.
    pub fn forget(&mut self, pid: u32) {
        self.maps.forget(pid);
        self.comms.remove(&pid);
        self.mapping_generations.remove(&pid);
        self.forked.remove(&pid);
    }

    /// Forgets every process but those `keep` says to keep.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        let pids = (self.maps.pids().into_iter())
            .chain(self.comms.keys().copied())
            .chain(self.mapping_generations.keys().copied())
            .chain(self.forked.iter().copied())
            .collect::<std::collections::HashSet<u32>>();
        for pid in pids.into_iter().filter(|&pid| !keep(pid)) {
            self.forget(pid);
        }
    }

    /// The processes the targets forked while traced (followed or not: see the request's
    /// follow_children), in pid order, until they are forgotten.
    pub fn forked(&self) -> &BTreeSet<u32> {
        &self.forked
    }

    /// Says how many records were skipped, if any.
    pub fn report_undecodable(&self) {
        if self.undecodable > 0 {
            log::warn!(
                "{} records could not be decoded and were skipped",
                self.undecodable
            );
        }
    }

    /// Applies a fork or exec event; false for any other event.
    fn on_lifecycle(&mut self, event: &Event) -> bool {
        let tgid = event.raw.tgid;
        match event.kind {
            EventKind::Fork => {
                let child = event.raw.addr as u32;
                self.maps.fork(tgid, child);
                self.forked.insert(child);
            }
            EventKind::Exec => {
                // A new program: its map and name replace the old ones (the old map is kept
                // for the stacks recorded before). Read the new map now: a short-lived program
                // may be gone by its next event.
                self.maps.exec(tgid);
                self.maps.capture(tgid);
                self.maps.expect_changes(tgid);
                self.comms
                    .insert(tgid, read_comm(tgid).unwrap_or_else(|| event.comm()));
            }
            _ => return false,
        }
        true
    }

    /// The event's process name: its thread group leader's comm (read once), or the event's
    /// thread name when the process is already gone.
    pub fn comm(&mut self, event: &Event) -> &str {
        let tgid = event.raw.tgid;
        self.comms
            .entry(tgid)
            .or_insert_with(|| read_comm(tgid).unwrap_or_else(|| event.comm()))
    }

    /// The name known for `pid` (empty if none).
    pub fn name(&self, pid: u32) -> String {
        self.comms.get(&pid).cloned().unwrap_or_default()
    }

    /// The stack key of an event, in its process's current exec generation.
    pub fn stack_key(&self, event: &Event) -> StackKey {
        StackKey {
            tgid: event.raw.tgid,
            generation: self.maps.generation(event.raw.tgid),
            kind: event.kind,
            user_stack: event.raw.user_stack,
            kernel_stack_id: event.raw.kernel_stack_id,
        }
    }
}

fn read_comm(tgid: u32) -> Option<String> {
    let comm = std::fs::read(format!("/proc/{tgid}/comm")).ok()?;
    Some(comm_to_string(comm.strip_suffix(b"\n").unwrap_or(&comm)))
}
