//! What a `/proc/PID/maps` line's path means, as reports name it. Shared memory the kernel
//! backs with an unlinked shmem file has a path, but it is no file anyone can open: postgres's
//! shared_buffers would read as a file named `/dev/zero (deleted)`. Those get names of their
//! own here.

use std::fmt;

use procfs::process::MMapPath;

/// The memory region an address falls in, as reports show it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Region {
    Heap,
    /// The main stack, and thread stacks where the kernel still labels them (before 4.5).
    Stack,
    Anon,
    /// Shared anonymous memory: `mmap(MAP_SHARED | MAP_ANONYMOUS)` or a shared mapping of
    /// /dev/zero, which the kernel lists as `/dev/zero (deleted)`.
    SharedAnon,
    /// A System V shared memory segment (shmget/shmat), listed as `/SYSV<key> (deleted)`.
    SysvShm {
        key: u32,
        /// The segment's id (`ipcs -m`'s shmid): the kernel sets it as the inode number.
        shmid: u64,
    },
    /// A memfd_create file, listed as `/memfd:NAME (deleted)`: the name given to it.
    Memfd(String),
    Vdso,
    Vvar,
    Vsyscall,
    /// A file-backed mapping: the path as the kernel shows it (may end in " (deleted)").
    File(String),
    /// Any other pseudo path, shown as the kernel shows it (`[anon:name]`, `[uprobes]`, ...).
    Other(String),
    /// No snapshot covers the address: the mapping was made and removed before memtrace could
    /// read the process's maps (short-lived buffers, a file mapped briefly).
    Unknown,
}

/// The suffix the kernel adds to the path of an unlinked file.
const DELETED: &str = " (deleted)";

impl Region {
    /// The region of a maps line with `path` (as procfs parsed it) and `inode`.
    pub fn from_path(path: &MMapPath, inode: u64) -> Self {
        match path {
            MMapPath::Heap => Region::Heap,
            MMapPath::Stack | MMapPath::TStack(_) => Region::Stack,
            MMapPath::Anonymous => Region::Anon,
            MMapPath::Vdso => Region::Vdso,
            MMapPath::Vvar => Region::Vvar,
            MMapPath::Vsyscall => Region::Vsyscall,
            MMapPath::Path(path) => Region::of_path(&path.to_string_lossy(), inode),
            // procfs keeps the key's bits in an i32.
            MMapPath::Vsys(key) => Region::SysvShm {
                key: *key as u32,
                shmid: inode,
            },
            MMapPath::Rollup => Region::Other("[rollup]".into()),
            // procfs strips the brackets; put them back so `[anon:name]` reads as in maps.
            MMapPath::Other(name) => Region::Other(format!("[{name}]")),
        }
    }

    /// The region of a mapping with a path, as the kernel prints it in maps or in a perf mmap
    /// record: a file, or shared memory behind an unlinked shmem file.
    pub fn of_path(path: &str, inode: u64) -> Self {
        if path == "/dev/zero (deleted)" {
            return Region::SharedAnon;
        }
        if let Some(name) = path.strip_prefix("/memfd:") {
            return Region::Memfd(name.strip_suffix(DELETED).unwrap_or(name).to_owned());
        }
        let key = (path.strip_prefix("/SYSV"))
            .map(|rest| rest.strip_suffix(DELETED).unwrap_or(rest))
            .filter(|hex| hex.len() == 8)
            .and_then(|hex| u32::from_str_radix(hex, 16).ok());
        match key {
            Some(key) => Region::SysvShm { key, shmid: inode },
            None => Region::File(path.to_owned()),
        }
    }

    /// Whether the region is backed by a file memtrace may open (for symbols) and the kernel
    /// may name at fault time; a memfd is one, though it has no path.
    pub fn is_file(&self) -> bool {
        matches!(self, Region::File(_) | Region::Memfd(_))
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Region::Heap => f.write_str("[heap]"),
            Region::Stack => f.write_str("[stack]"),
            Region::Anon => f.write_str("[anon]"),
            Region::SharedAnon => f.write_str("[shared anon]"),
            // As `ipcs -m` lists segments: by key and shmid.
            Region::SysvShm { key, shmid } => write!(f, "[sysv shm key {key:#010x} shmid {shmid}]"),
            Region::Memfd(name) => write!(f, "[memfd:{name}]"),
            Region::Vdso => f.write_str("[vdso]"),
            Region::Vvar => f.write_str("[vvar]"),
            Region::Vsyscall => f.write_str("[vsyscall]"),
            Region::File(path) | Region::Other(path) => f.write_str(path),
            Region::Unknown => f.write_str("[unmapped]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as this kernel prints them in /proc/PID/maps (the path field, then procfs's
    /// parse of it).
    fn region(path: &str, inode: u64) -> Region {
        Region::from_path(&MMapPath::from(path).unwrap(), inode)
    }

    #[test]
    fn shared_memory_is_named_for_what_it_is() {
        assert_eq!(region("/dev/zero (deleted)", 7), Region::SharedAnon);
        assert_eq!(
            region("/dev/zero (deleted)", 7).to_string(),
            "[shared anon]"
        );
        assert_eq!(
            region("/SYSV0052e2c1 (deleted)", 3),
            Region::SysvShm {
                key: 0x0052_e2c1,
                shmid: 3
            }
        );
        assert_eq!(
            region("/SYSV00000000 (deleted)", 32769).to_string(),
            "[sysv shm key 0x00000000 shmid 32769]"
        );
        assert_eq!(
            region("/memfd:wayland-shm (deleted)", 9).to_string(),
            "[memfd:wayland-shm]"
        );
        assert_eq!(region("/memfd: (deleted)", 9), Region::Memfd(String::new()));
    }

    #[test]
    fn files_stay_files() {
        for path in [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/tmp/data (deleted)",
            "/dev/zero",
            "/dev/shm/PostgreSQL.1234",
            "/SYSV-not-a-key",
        ] {
            assert_eq!(
                Region::of_path(path, 1),
                Region::File(path.into()),
                "{path}"
            );
        }
        assert!(Region::Memfd("jit".into()).is_file());
        assert!(!Region::SharedAnon.is_file());
    }
}
