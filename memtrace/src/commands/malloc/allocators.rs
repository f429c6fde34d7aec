//! Which allocators a target uses, found in the files it runs: libc's, and jemalloc, tcmalloc
//! or mimalloc, whether shared libraries or linked into the executable (a Rust or C++ binary
//! with its allocator's functions in its own symbol table), prefixed builds included (je_malloc,
//! _rjem_malloc). Each is named by what it defines, not by its file name.
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::kernel::probe_site::LibraryCode;

/// An allocator in one file.
#[derive(Debug, Clone)]
pub struct Allocator {
    pub kind: Kind,
    /// The file to attach to (through the process's root, so a container's own).
    pub library: PathBuf,
    /// The file as the process names it.
    pub shown: PathBuf,
    /// The prefixes its functions' names take ("" for malloc, "je_" for je_malloc).
    pub prefixes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Glibc,
    Jemalloc,
    Tcmalloc,
    Mimalloc,
    /// Another file with malloc and free of its own (musl, a custom allocator).
    Other,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Glibc => "glibc",
            Self::Jemalloc => "jemalloc",
            Self::Tcmalloc => "tcmalloc",
            Self::Mimalloc => "mimalloc",
            Self::Other => "malloc",
        }
    }
}

/// What allocator `code` holds, and its functions' prefixes; None when it defines no
/// malloc/free pair.
pub fn identify(code: &LibraryCode) -> Option<(Kind, Vec<String>)> {
    let has_pair = |prefix: &str| {
        code.defines(&format!("{prefix}malloc")) && code.defines(&format!("{prefix}free"))
    };
    // jemalloc's mallctl takes the prefix its build gave every function.
    let mut jemalloc: Vec<String> = (code.defined_names())
        .filter_map(|name| name.strip_suffix("mallctl"))
        .filter(|prefix| has_pair(prefix))
        .map(str::to_owned)
        .collect();
    if !jemalloc.is_empty() {
        // Names are distinct, so their prefixes are.
        jemalloc.sort();
        return Some((Kind::Jemalloc, jemalloc));
    }
    let standard = has_pair("");
    if code.defines("mi_malloc") {
        // mimalloc's own names (Rust's mimalloc crate calls these), and the standard ones
        // when the build overrides them.
        let mut prefixes = vec!["mi_".to_owned()];
        if standard {
            prefixes.insert(0, String::new());
        }
        return Some((Kind::Mimalloc, prefixes));
    }
    if !standard {
        return None;
    }
    let kind = if code.defines("tc_malloc") {
        Kind::Tcmalloc
    } else if code.defines("gnu_get_libc_version") {
        Kind::Glibc
    } else {
        Kind::Other
    };
    Some((kind, vec![String::new()]))
}

/// Whether a file may hold an allocator, by its name: libc, the three known allocators and
/// musl's loader. Other libraries are not opened (a process maps dozens); the executable
/// itself always is, and --lib names any other.
pub fn may_be_allocator(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name.starts_with("libc.")
        || name.starts_with("libc-")
        || name.starts_with("ld-musl")
        || ["jemalloc", "tcmalloc", "mimalloc"]
            .iter()
            .any(|allocator| name.contains(allocator))
}

/// The allocators among `files` (paths as a process names them, opened through `root`), each
/// file once.
pub fn find(files: &[PathBuf], root: &Path) -> Vec<Allocator> {
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    for shown in files {
        if !seen.insert(shown.clone()) {
            continue;
        }
        let library = under_root(root, shown);
        let Some(code) = LibraryCode::read(&library) else {
            continue;
        };
        if let Some((kind, prefixes)) = identify(&code) {
            found.push(Allocator {
                kind,
                library,
                shown: shown.clone(),
                prefixes,
            });
        }
    }
    // Shared allocators first: they are what the program calls when it also maps libc.
    found.sort_by_key(|a| a.kind == Kind::Glibc);
    found
}

/// `path` as seen from `root` (a process's `/proc/PID/root`, or `/`).
pub fn under_root(root: &Path, path: &Path) -> PathBuf {
    if root == Path::new("/") {
        return path.to_path_buf();
    }
    root.join(path.strip_prefix("/").unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIB: &str = "/usr/lib/x86_64-linux-gnu";

    fn identified(path: &str) -> Option<(Kind, Vec<String>)> {
        identify(&LibraryCode::read(Path::new(path))?)
    }

    #[test]
    fn each_allocator_is_named_by_what_it_defines() {
        let libc = identified("/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(libc, Some((Kind::Glibc, vec![String::new()])));
        // Installed by `cargo xtask setup`.
        for (file, kind, prefixes) in [
            ("libjemalloc.so.2", Kind::Jemalloc, vec![""]),
            ("libtcmalloc_minimal.so.4", Kind::Tcmalloc, vec![""]),
            ("libmimalloc.so.2", Kind::Mimalloc, vec!["", "mi_"]),
        ] {
            let path = format!("{LIB}/{file}");
            let prefixes: Vec<String> = prefixes.into_iter().map(String::from).collect();
            assert_eq!(identified(&path), Some((kind, prefixes)), "{path}");
        }
        // A program that only calls malloc defines none.
        assert_eq!(identified("/bin/sh"), None);
    }

    #[test]
    fn allocator_file_names() {
        for yes in [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/libjemalloc.so.2",
            "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
            "/lib/ld-musl-x86_64.so.1",
        ] {
            assert!(may_be_allocator(Path::new(yes)), "{yes}");
        }
        for no in [
            "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
            "/usr/bin/python3.11",
        ] {
            assert!(!may_be_allocator(Path::new(no)), "{no}");
        }
    }

    #[test]
    fn paths_go_through_the_process_root() {
        let lib = Path::new("/usr/lib/libc.so.6");
        assert_eq!(under_root(Path::new("/"), lib), lib);
        assert_eq!(
            under_root(Path::new("/proc/7/root"), lib),
            Path::new("/proc/7/root/usr/lib/libc.so.6")
        );
    }
}
