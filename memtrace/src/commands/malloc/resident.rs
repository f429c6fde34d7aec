//! The heap against RSS: what a process holds resident, split as the kernel counts it
//! (/proc/PID/status: anonymous, file, shmem), and of its anonymous memory what the allocator
//! holds: the resident pages of the mappings its blocks were allocated in (`[heap]`, its
//! arenas, its mmapped blocks: the private anonymous mappings memtrace saw a block in). Of
//! that, what no block still allocated uses is `retained`: freed, but kept by the allocator
//! (the allocator mappings' RSS minus the bytes still allocated). The rest of the anonymous
//! memory (stacks, the program's own mappings) is `other_anon`.
use std::{
    collections::{BTreeSet, HashMap},
    ops::Range,
    time::Duration,
};

use procfs::process::{MMPermissions, MMapPath, Process};
use serde::Serialize;

use crate::trace::{memory_maps::MapsCache, region::Region};

/// A process's resident memory at one moment.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ResidentSplit {
    /// When it was read, in seconds since tracing started.
    pub at_s: f64,
    pub rss_anon_bytes: u64,
    pub rss_file_bytes: u64,
    pub rss_shmem_bytes: u64,
    /// Resident in the mappings the allocator's blocks were in.
    pub allocator_rss_bytes: u64,
    /// Of those, what no allocated block uses (allocator RSS minus the bytes allocated then;
    /// 0 when blocks allocated but never written leave less resident than allocated).
    pub retained_bytes: u64,
    /// Anonymous memory outside the allocator's mappings (stacks, the program's own mmaps).
    pub other_anon_bytes: u64,
}

/// `pid`'s resident anonymous memory now (None when it cannot be read).
pub fn rss_anon_bytes(pid: u32) -> Option<u64> {
    let status = Process::new(pid as i32).ok()?.status().ok()?;
    Some(status.rssanon? * 1024)
}

/// The mappings each process's blocks were seen in, by start address.
#[derive(Default)]
pub struct AllocatorMappings {
    processes: HashMap<u32, SeenIn>,
}

#[derive(Default)]
struct SeenIn {
    /// The last mapping a block was in: most blocks fall in the one before's.
    last: Range<u64>,
    starts: BTreeSet<u64>,
}

impl AllocatorMappings {
    /// A block at `addr` of process `tgid` (its maps' snapshot just made current for it).
    pub fn block_at(&mut self, tgid: u32, addr: u64, maps: &MapsCache) {
        let seen = self.processes.entry(tgid).or_default();
        if seen.last.contains(&addr) {
            return;
        }
        let Some(mapping) = maps.lookup(tgid, addr) else {
            return;
        };
        if matches!(mapping.region, Region::Heap | Region::Anon) {
            seen.starts.insert(mapping.start);
            seen.last = mapping.start..mapping.end;
        }
    }

    /// `pid`'s resident memory now, with `allocated` bytes of its blocks allocated; None when
    /// it cannot be read (gone).
    pub fn read(&mut self, pid: u32, allocated: f64, at: Duration) -> Option<ResidentSplit> {
        let process = Process::new(pid as i32).ok()?;
        let status = process.status().ok()?;
        // A process exiting has no memory left to speak of; its last reading stands.
        let rss_anon_bytes = status.rssanon? * 1024;
        let smaps = process.smaps().ok()?;
        let seen = self.processes.entry(pid).or_default();
        let (mut allocator, mut anon) = (0, 0);
        let mut still_mapped = BTreeSet::new();
        for map in smaps.iter() {
            let private = !map.perms.contains(MMPermissions::SHARED);
            if !(private && matches!(map.pathname, MMapPath::Heap | MMapPath::Anonymous)) {
                continue;
            }
            let resident = map.extension.map.get("Anonymous").copied().unwrap_or(0);
            anon += resident;
            let (start, end) = map.address;
            let held: Vec<u64> = seen.starts.range(start..end).copied().collect();
            if !held.is_empty() || map.pathname == MMapPath::Heap {
                allocator += resident;
                still_mapped.extend(held);
            }
        }
        // Mappings gone since are forgotten: their addresses may be another's next.
        seen.starts = still_mapped;
        seen.last = 0..0;
        Some(ResidentSplit {
            at_s: at.as_secs_f64(),
            rss_anon_bytes,
            rss_file_bytes: status.rssfile.unwrap_or(0) * 1024,
            rss_shmem_bytes: status.rssshmem.unwrap_or(0) * 1024,
            allocator_rss_bytes: allocator,
            retained_bytes: allocator.saturating_sub(allocated.round() as u64),
            other_anon_bytes: rss_anon_bytes.saturating_sub(allocator).min(anon),
        })
    }
}
