//! Where `memtrace malloc` hooks: the allocator library, and the probe sites of its functions
//! (one set per function, at the cheapest place for entry probes: see `probe_site`).
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::Result;
use memtrace_common::AllocFn;

use super::args::MallocArgs;
use crate::{
    error::UsageError,
    kernel::{
        hooks::{self, Attachment, UprobeSite},
        probe_site::LibraryCode,
    },
};

/// The allocator to hook: `--lib`, else the libc the target maps (through its root, so a
/// process in a container gets its own), else memtrace's own.
pub fn allocator_library(args: &MallocArgs) -> Result<PathBuf> {
    if let Some(lib) = &args.lib {
        if !lib.is_file() {
            return Err(UsageError(format!(
                "--lib {}: no such file (give the allocator's shared library, e.g. \
                 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2)",
                lib.display()
            ))
            .into());
        }
        return Ok(lib.clone());
    }
    let pid = args.target.pids.first().copied();
    let maps_of = pid.map_or_else(|| "self".to_owned(), |p| p.to_string());
    // Parsed by procfs, as the maps cache does (`memory_maps`).
    let process = match pid {
        Some(pid) => procfs::process::Process::new(pid as i32),
        None => procfs::process::Process::myself(),
    };
    let maps = process
        .and_then(|p| p.maps())
        .map(|m| m.0)
        .unwrap_or_default();
    let libc = maps.into_iter().find_map(|map| match map.pathname {
        procfs::process::MMapPath::Path(path)
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-")) =>
        {
            Some(path)
        }
        _ => None,
    });
    match (libc, pid) {
        (Some(path), Some(pid)) => Ok(PathBuf::from(format!("/proc/{pid}/root{}", path.display()))),
        (Some(path), None) => Ok(path),
        (None, _) => Err(UsageError(format!(
            "no libc in /proc/{maps_of}/maps: the program may be static or use another \
             allocator; name its library with --lib"
        ))
        .into()),
    }
}

/// The allocator's functions to hook in `library`, named with `prefix`, as uprobe sites (in
/// [`AllocFn::UPROBED`]'s order); and the names to report for them, an alias standing for the
/// function it shares its code with (glibc's memalign is aligned_alloc): one set of probes,
/// under the first name, since two would count each call twice.
pub fn sites(library: &Path, prefix: &str) -> Vec<(String, Option<UprobeSite>)> {
    let mut addresses: HashMap<u64, String> = HashMap::new();
    let code = LibraryCode::read(library);
    let mut sites = Vec::new();
    for function in AllocFn::UPROBED {
        let symbol = format!("{prefix}{}", function.name());
        if let Some(address) = code.as_ref().and_then(|c| c.address(&symbol)) {
            if let Some(first) = addresses.get(&address) {
                sites.push((format!("{symbol} (= {first})"), None));
                continue;
            }
            addresses.insert(address, symbol.clone());
        }
        let Some(entry) = hooks::alloc_entry(function) else {
            continue;
        };
        let probes = if function == AllocFn::Free {
            // No return probe shares its breakpoint: it can move to a cheaper place.
            let offset = code.as_ref().map_or(0, |c| c.entry_offset(&symbol, 1));
            log::debug!("{symbol}: entry probe at +{offset}");
            vec![(entry, offset)]
        } else {
            // The return probe needs the entry (the return address is on top of the stack
            // there); the entry probe shares its breakpoint.
            vec![(entry, 0), (&hooks::ALLOC_RETURN, 0)]
        };
        // malloc and free are the least an allocator has.
        let required = matches!(function, AllocFn::Malloc | AllocFn::Free).then(|| {
            format!(
                "{} does not look like an allocator (no {symbol})",
                library.display()
            )
        });
        let site = UprobeSite {
            symbol: symbol.clone(),
            library: library.to_path_buf(),
            probes,
            required,
        };
        sites.push((symbol, Some(site)));
    }
    sites
}

/// The program's own mmap and munmap calls, as blocks (`--mmap`).
pub fn mmap_hooks() -> impl Iterator<Item = Attachment> {
    hooks::MMAP.into_iter().map(Attachment::Hook)
}
