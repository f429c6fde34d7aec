//! Where `memtrace malloc` hooks: the allocators the target uses (`allocators`), and the
//! probe sites of their functions, each at the cheapest place for its probes (`probe_site`).
use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::Result;
use memtrace_common::AllocFn;

use super::{
    allocators::{self, Allocator, Kind},
    args::MallocArgs,
};
use crate::{
    error::UsageError,
    kernel::{
        hooks::{self, Attachment, Probe, UprobeSite},
        probe_site::LibraryCode,
    },
    trace::program_files,
    trace::request::TargetRequest,
};

/// The files an allocator can be in: the executable (first), and libraries whose names say
/// they may be one.
fn candidates(files: Vec<PathBuf>) -> Vec<PathBuf> {
    let executable = files.first().cloned();
    (files.into_iter())
        .filter(|path| Some(path) == executable.as_ref() || allocators::may_be_allocator(path))
        .collect()
}

/// The allocators to hook: `--lib`'s, else every one the target runs (for a whole-system
/// trace, the libc memtrace itself uses).
pub fn allocators(args: &MallocArgs) -> Result<Vec<Allocator>> {
    if let Some(lib) = &args.lib {
        return named_library(lib, args.symbol_prefix.as_deref()).map(|a| vec![a]);
    }
    let (found, looked_in) = match args.target.request() {
        TargetRequest::Pids(pids) => {
            let found = pids.iter().flat_map(|&pid| of_process(pid)).collect();
            let maps: Vec<String> = pids.iter().map(|p| format!("/proc/{p}/maps")).collect();
            (found, maps.join(", "))
        }
        TargetRequest::Command(argv) => {
            let found = allocators::find(
                &candidates(program_files::of_command(&argv)),
                Path::new("/"),
            );
            (found, format!("{} and the libraries it needs", argv[0]))
        }
        TargetRequest::System | TargetRequest::Cgroup(_) => {
            let own = candidates(program_files::of_process(std::process::id()));
            let found = allocators::find(&own, Path::new("/"));
            let libc = found
                .into_iter()
                .filter(|a| a.kind == Kind::Glibc)
                .collect();
            (libc, "memtrace's own libc".to_owned())
        }
    };
    let mut found = distinct_files(found);
    if let Some(prefix) = &args.symbol_prefix {
        for allocator in &mut found {
            allocator.prefixes = vec![prefix.clone()];
        }
    }
    if found.is_empty() {
        return Err(UsageError(format!(
            "no allocator found in {looked_in}: the program may be static and stripped, or \
             use an allocator in a library of another name; name it with --lib PATH"
        ))
        .into());
    }
    Ok(found)
}

/// `--lib PATH`: what it holds, or the functions `--symbol-prefix` names.
fn named_library(lib: &Path, prefix: Option<&str>) -> Result<Allocator> {
    let missing = || {
        UsageError(format!(
            "--lib {}: no such file (give the allocator's shared library, e.g. \
             /usr/lib/x86_64-linux-gnu/libjemalloc.so.2)",
            lib.display()
        ))
    };
    let code = LibraryCode::read(lib).ok_or_else(missing)?;
    let identified = allocators::identify(&code);
    let (kind, prefixes) = match (identified, prefix) {
        (Some((kind, _)), Some(prefix)) => (kind, vec![prefix.to_owned()]),
        (Some(found), None) => found,
        (None, prefix) => {
            let prefix = prefix.unwrap_or_default();
            if !code.defines(&format!("{prefix}malloc")) {
                return Err(UsageError(format!(
                    "--lib {}: no {prefix}malloc and {prefix}free in it: is it the allocator? \
                     (a prefixed build takes --symbol-prefix, e.g. je_)",
                    lib.display()
                ))
                .into());
            }
            (Kind::Other, vec![prefix.to_owned()])
        }
    };
    Ok(Allocator {
        kind,
        library: lib.to_path_buf(),
        shown: lib.to_path_buf(),
        prefixes,
    })
}

/// The allocators process `pid` runs (found in its executable and libraries, through its
/// root).
pub fn of_process(pid: u32) -> Vec<Allocator> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    allocators::find(&candidates(program_files::of_process(pid)), &root)
}

/// The probe sites of every allocator process `pid` runs, each file once; empty when it runs
/// none memtrace knows.
pub fn sites_of_process(pid: u32) -> Vec<UprobeSite> {
    (distinct_files(of_process(pid)).iter())
        .flat_map(sites)
        .filter_map(|(_, site)| site)
        .collect()
}

/// Each file once, by identity: two processes name the same file through their own roots,
/// and two probes on one instruction would count each call twice.
fn distinct_files(found: Vec<Allocator>) -> Vec<Allocator> {
    let mut seen = HashSet::new();
    (found.into_iter())
        .filter(|a| {
            let identity = std::fs::metadata(&a.library).map(|m| (m.dev(), m.ino()));
            identity.map_or(true, |id| seen.insert(id))
        })
        .collect()
}

/// A function memtrace hooks: its name after the allocator's prefix, and the entry program
/// that reads its arguments (the role it plays).
type Function = (&'static str, AllocFn);

/// jemalloc's own API (Rust's jemallocator calls these).
const JEMALLOC_EXTRA: [Function; 4] = [
    ("mallocx", AllocFn::Malloc),
    ("rallocx", AllocFn::Realloc),
    ("dallocx", AllocFn::Free),
    ("sdallocx", AllocFn::Free),
];
/// mimalloc's aligned and zeroing API (Rust's mimalloc crate calls these), after "mi_".
const MIMALLOC_EXTRA: [Function; 4] = [
    ("zalloc", AllocFn::Malloc),
    ("malloc_aligned", AllocFn::Malloc),
    ("zalloc_aligned", AllocFn::Malloc),
    ("realloc_aligned", AllocFn::Realloc),
];
/// C++'s new and delete, when the allocator defines them itself (libstdc++'s call malloc).
const CXX_OPERATORS: [Function; 16] = [
    ("_Znwm", AllocFn::Malloc),
    ("_Znam", AllocFn::Malloc),
    ("_ZnwmRKSt9nothrow_t", AllocFn::Malloc),
    ("_ZnamRKSt9nothrow_t", AllocFn::Malloc),
    ("_ZnwmSt11align_val_t", AllocFn::Malloc),
    ("_ZnamSt11align_val_t", AllocFn::Malloc),
    ("_ZdlPv", AllocFn::Free),
    ("_ZdaPv", AllocFn::Free),
    ("_ZdlPvm", AllocFn::Free),
    ("_ZdaPvm", AllocFn::Free),
    ("_ZdlPvRKSt9nothrow_t", AllocFn::Free),
    ("_ZdaPvRKSt9nothrow_t", AllocFn::Free),
    ("_ZdlPvSt11align_val_t", AllocFn::Free),
    ("_ZdaPvSt11align_val_t", AllocFn::Free),
    ("_ZdlPvmSt11align_val_t", AllocFn::Free),
    ("_ZdaPvmSt11align_val_t", AllocFn::Free),
];

/// The functions of `allocator` under `prefix`, in the order their probes are attached.
fn functions(allocator: &Allocator, prefix: &str) -> Vec<(String, AllocFn)> {
    let standard = AllocFn::UPROBED.map(|f| (f.name(), f));
    let mut names: Vec<(String, AllocFn)> = (standard.iter())
        .map(|(name, role)| (format!("{prefix}{name}"), *role))
        .collect();
    let extra: &[Function] = match allocator.kind {
        Kind::Jemalloc => &JEMALLOC_EXTRA,
        Kind::Mimalloc if prefix == "mi_" => &MIMALLOC_EXTRA,
        _ => &[],
    };
    names.extend(
        extra
            .iter()
            .map(|(n, role)| (format!("{prefix}{n}"), *role)),
    );
    if allocator.kind != Kind::Glibc && prefix.is_empty() {
        names.extend(CXX_OPERATORS.iter().map(|(n, role)| (n.to_string(), *role)));
    }
    names
}

/// How many arguments the entry program of `role` reads.
fn arguments(role: AllocFn) -> usize {
    match role {
        AllocFn::Malloc | AllocFn::Valloc | AllocFn::Pvalloc | AllocFn::Free => 1,
        AllocFn::Calloc | AllocFn::Realloc | AllocFn::AlignedAlloc | AllocFn::Memalign => 2,
        AllocFn::Reallocarray | AllocFn::PosixMemalign => 3,
        AllocFn::Mmap | AllocFn::Munmap => 0,
    }
}

/// One allocator's hooked functions: the report's names for them and their uprobe sites. An
/// alias (glibc's memalign is aligned_alloc, tcmalloc's free is operator delete) stands for
/// the function it shares its code with: one set of probes, under the first name, since two
/// would count each call twice. Functions the allocator does not define are left out.
pub fn sites(allocator: &Allocator) -> Vec<(String, Option<UprobeSite>)> {
    let Some(code) = LibraryCode::read(&allocator.library) else {
        return Vec::new();
    };
    let mut addresses: HashMap<u64, String> = HashMap::new();
    let mut sites = Vec::new();
    for prefix in &allocator.prefixes {
        for (symbol, role) in functions(allocator, prefix) {
            let Some(address) = code.address(&symbol) else {
                continue;
            };
            if let Some(first) = addresses.get(&address) {
                sites.push((format!("{symbol} (= {first})"), None));
                continue;
            }
            addresses.insert(address, symbol.clone());
            let Some(entry) = hooks::alloc_entry(role) else {
                continue;
            };
            // The return probe needs the return address on top of the stack where it breaks.
            let return_probe = role != AllocFn::Free;
            let site = code.entry_site(&symbol, arguments(role), return_probe);
            log::debug!(
                "{symbol}: probes at +{} (cookie {:#x})",
                site.offset,
                site.cookie
            );
            let probe = |hook| Probe {
                hook,
                offset: site.offset,
                cookie: site.cookie,
            };
            // The return probe first: a call entering between the two attaches would leave
            // its thread's slot of calls in progress taken for good (every later call of the
            // thread then counts as nested in it, and nothing is sent). With the return probe
            // first, a call whose entry was seen always has its return seen.
            let mut probes = Vec::new();
            if return_probe {
                probes.push(probe(&hooks::ALLOC_RETURN));
            }
            probes.push(probe(entry));
            // malloc and free are the least an allocator has.
            let required = (symbol == format!("{prefix}malloc")
                || symbol == format!("{prefix}free"))
            .then(|| format!("hooking {symbol} in {}", allocator.shown.display()));
            let site = UprobeSite {
                symbol: symbol.clone(),
                library: allocator.library.clone(),
                probes,
                required,
            };
            sites.push((symbol, Some(site)));
        }
    }
    sites
}

/// The program's own mmap and munmap calls, as blocks (`--mmap`).
pub fn mmap_hooks() -> impl Iterator<Item = Attachment> {
    hooks::MMAP.into_iter().map(Attachment::Hook)
}
