//! After a trace: traced processes that mapped an allocator memtrace did not hook (a child
//! running another program, a library loaded later), said with what to run to see its blocks.
use std::{collections::BTreeMap, os::unix::fs::MetadataExt, path::Path};

use super::allocators::{self, Allocator};
use crate::{
    kernel::probe_site::LibraryCode,
    trace::{processes::Processes, region::Region},
};

/// Warns once per allocator file that traced processes mapped and memtrace did not hook.
pub fn warn(processes: &Processes, hooked: &[Allocator]) {
    // Files as the maps name them: (major, minor) device and inode.
    let hooked: Vec<((i32, i32), u64)> = (hooked.iter())
        .filter_map(|a| std::fs::metadata(&a.library).ok())
        .map(|m| {
            let dev = m.dev();
            let device = (libc::major(dev) as i32, libc::minor(dev) as i32);
            (device, m.ino())
        })
        .collect();
    // Each unhooked allocator file, with the processes that mapped it.
    let mut missed: BTreeMap<String, (&'static str, Vec<u32>)> = BTreeMap::new();
    let mut pids: Vec<u32> = processes.maps.pids().into_iter().collect();
    pids.sort_unstable();
    for pid in pids {
        let Some(maps) = processes.maps.process(pid) else {
            continue;
        };
        for mapping in maps.mappings().iter().filter(|m| m.is_exec()) {
            let Region::File(path) = &mapping.region else {
                continue;
            };
            if hooked.contains(&(mapping.dev, mapping.inode))
                || !allocators::may_be_allocator(Path::new(path))
            {
                continue;
            }
            if let Some((_, pids)) = missed.get_mut(path) {
                pids.push(pid);
                continue;
            }
            // Read through memtrace's own descriptor: the process may be gone.
            let kind = (mapping.symbol_path())
                .and_then(|file| LibraryCode::read(&file))
                .and_then(|code| allocators::identify(&code));
            if let Some((kind, _)) = kind {
                missed.insert(path.clone(), (kind.name(), vec![pid]));
            }
        }
    }
    for (path, (kind, pids)) in missed {
        let list: Vec<String> = pids.iter().take(5).map(|p| p.to_string()).collect();
        let more = pids.len().saturating_sub(5);
        let others = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        log::warn!(
            "process {}{others} mapped {kind} ({path}), which memtrace did not hook: its blocks \
             are not counted; trace it alone with `memtrace malloc --pid {}`, or hook that \
             library with --lib {path}",
            list.join(", "),
            pids[0],
        );
    }
}
