//! The files a target runs code from (where malloc looks for allocators, and whose unwind
//! tables are built before a command starts): a running process's executable mappings, or,
//! for a command not started yet, its executable (the interpreter of a script), the libraries
//! it needs (DT_NEEDED, as the dynamic loader finds them) and LD_PRELOAD's.
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use object::{
    elf,
    read::elf::{Dyn, ElfFile64},
};

use crate::trace::launch::resolve_program;

/// The dynamic loader's default directories (Debian's multiarch ones first).
const LIBRARY_DIRS: [&str; 8] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/local/lib",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib/x86_64-linux-gnu",
];
/// Bounds the walk of needed libraries (a program needs a few dozen at most).
const MAX_LIBRARIES: usize = 512;

/// A running process's executable files, as it names them (its root is `/proc/PID/root`), the
/// executable first.
pub fn of_process(pid: u32) -> Vec<PathBuf> {
    let Ok(process) = procfs::process::Process::new(pid as i32) else {
        return Vec::new();
    };
    let executable = process.exe().ok();
    let maps = process.maps().map(|m| m.0).unwrap_or_default();
    let mut files: Vec<PathBuf> = maps
        .into_iter()
        .filter(|map| map.perms.contains(procfs::process::MMPermissions::EXECUTE))
        .filter_map(|map| match map.pathname {
            procfs::process::MMapPath::Path(path) => Some(path),
            _ => None,
        })
        .collect();
    files.dedup();
    if let Some(at) = files
        .iter()
        .position(|path| Some(path) == executable.as_ref())
    {
        files[..=at].rotate_right(1);
    }
    files
}

/// A command's files before it runs: what the dynamic loader will map, the executable first.
pub fn of_command(argv: &[String]) -> Vec<PathBuf> {
    let Some(program) = argv.first().and_then(|name| resolve_program(name).ok()) else {
        return Vec::new();
    };
    let executable = interpreter(&program).unwrap_or(program);
    let mut files = vec![executable.clone()];
    let preload = std::env::var("LD_PRELOAD").unwrap_or_default();
    let preloaded = preload
        .split([' ', ':'])
        .filter(|name| !name.is_empty())
        .filter_map(|name| find_library(name, &[]));
    files.extend(preloaded);
    files.extend(needed_closure(&executable));
    files
}

/// The program a script runs (`#!/usr/bin/env python3` gives python3's path).
fn interpreter(script: &Path) -> Option<PathBuf> {
    let head = std::fs::read(script).ok()?;
    let line = head.strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let first = words.next()?;
    let program = if Path::new(first).file_name().is_some_and(|n| n == "env") {
        words.find(|word| !word.starts_with('-'))?
    } else {
        first
    };
    let resolved = resolve_program(program).ok()?;
    // An interpreter that is itself a script: one level is what the kernel allows too.
    Some(resolved)
}

/// Every library `executable` needs, directly or through the libraries it needs.
fn needed_closure(executable: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut pending = vec![executable.to_path_buf()];
    while let Some(file) = pending.pop() {
        let Some((needed, search)) = dynamic_section(&file) else {
            continue;
        };
        for name in needed {
            if found.len() >= MAX_LIBRARIES || !seen.insert(name.clone()) {
                continue;
            }
            if let Some(path) = find_library(&name, &search) {
                pending.push(path.clone());
                found.push(path);
            }
        }
    }
    found
}

/// A file's DT_NEEDED names and its own search path (DT_RUNPATH or DT_RPATH; $ORIGIN is the
/// file's directory).
fn dynamic_section(file: &Path) -> Option<(Vec<String>, Vec<PathBuf>)> {
    let opened = std::fs::File::open(file).ok()?;
    // Mapped, not read: only the headers and the dynamic section are touched. Read only, as
    // `LibraryCode` maps.
    let data = unsafe { memmap2::Mmap::map(&opened) }.ok()?;
    let elf = ElfFile64::<object::Endianness>::parse(&*data).ok()?;
    let endian = elf.endian();
    let table = elf.elf_section_table();
    let (dynamic, index) = table.dynamic(endian, &*data).ok()??;
    let strings = table.strings(endian, &*data, index).ok()?;
    let string = |value: u64| {
        let bytes = strings.get(value as u32).ok()?;
        Some(String::from_utf8_lossy(bytes).into_owned())
    };
    let origin = file.parent().unwrap_or(Path::new("/"));
    let mut needed = Vec::new();
    let mut search = Vec::new();
    for entry in dynamic {
        let tag = entry.d_tag(endian);
        let value = entry.d_val(endian);
        match tag {
            elf::DT_NEEDED => needed.extend(string(value)),
            elf::DT_RUNPATH | elf::DT_RPATH => {
                let paths = string(value).unwrap_or_default();
                search.extend(
                    paths
                        .split(':')
                        .filter(|p| !p.is_empty())
                        .map(|p| PathBuf::from(p.replace("$ORIGIN", &origin.to_string_lossy()))),
                );
            }
            _ => {}
        }
    }
    Some((needed, search))
}

/// Where the loader finds library `name`: a path as given, else the file's own search path,
/// LD_LIBRARY_PATH, then the default directories.
fn find_library(name: &str, search: &[PathBuf]) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    let from_env = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let env_dirs = from_env
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    let defaults = LIBRARY_DIRS.iter().map(PathBuf::from);
    (search.iter().cloned())
        .chain(env_dirs)
        .chain(defaults)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_brings_its_libc() {
        let files = of_command(&["sh".to_owned()]);
        let libc = files.iter().any(|f| f.ends_with("libc.so.6"));
        assert!(libc, "{files:?}");
        // Other libraries are not candidates; the executable always is.
        assert!(files[0].ends_with("sh"), "{files:?}");
    }

    #[test]
    fn a_process_maps_its_libc() {
        let files = of_process(std::process::id());
        assert!(files.iter().any(|f| f.ends_with("libc.so.6")), "{files:?}");
    }

    #[test]
    fn a_script_runs_its_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/usr/bin/env -S sh -e\necho hi\n").unwrap();
        let found = interpreter(&script).unwrap();
        assert_eq!(found.file_name().unwrap(), "sh");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        assert_eq!(interpreter(&plain).unwrap(), Path::new("/bin/sh"));
    }
}
