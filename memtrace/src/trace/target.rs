//! Turning the target options into a checked target and its kernel filter.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::Result;

use crate::{
    error::usage,
    host::cgroup_mounts::{self, CgroupMount},
    kernel::config::Filter,
    trace::{launch, request::TargetRequest},
};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
const PF_KTHREAD: u64 = 0x0020_0000;

pub enum Target {
    System,
    Pids(Vec<u32>),
    Cgroup { path: PathBuf, id: u64, level: u32 },
    Command(launch::GatedChild),
}

impl Target {
    /// Checks the request against the system; for a command, forks it at the gate.
    pub fn resolve(request: &TargetRequest, follow_children: bool) -> Result<Self> {
        match request {
            TargetRequest::Command(argv) => Ok(Self::Command(launch::spawn_gated(argv)?)),
            TargetRequest::Cgroup(path) => {
                let (id, level) = cgroup_identity(path)?;
                Ok(Self::Cgroup {
                    path: path.clone(),
                    id,
                    level,
                })
            }
            TargetRequest::Pids(pids) => {
                for &pid in pids {
                    check_pid(pid)?;
                }
                Ok(Self::Pids(pids.clone()))
            }
            TargetRequest::System if follow_children => Err(usage(
                "--follow-children needs a target: --pid PID or -- COMMAND",
            )),
            TargetRequest::System => Ok(Self::System),
        }
    }

    pub fn filter(&self) -> Filter {
        match self {
            Self::System => Filter::All,
            Self::Pids(pids) => Filter::Tgids(pids.clone()),
            Self::Cgroup { id, level, .. } => Filter::Cgroup {
                id: *id,
                level: *level,
            },
            Self::Command(child) => Filter::Tgids(vec![child.pid]),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::System => "system-wide".into(),
            Self::Pids(pids) => {
                let list: Vec<String> = pids.iter().map(u32::to_string).collect();
                format!("pid {}", list.join(", "))
            }
            Self::Cgroup { path, .. } => format!("cgroup {}", path.display()),
            Self::Command(child) => format!("pid {} (command)", child.pid),
        }
    }
}

fn check_pid(pid: u32) -> Result<()> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|_| usage(format!("no process with pid {pid}")))?;
    if stat_flags(&stat) & PF_KTHREAD != 0 {
        return Err(usage(format!(
            "pid {pid} is a kernel thread: it has no user memory to fault on; pick a user process"
        )));
    }
    Ok(())
}

/// The flags field of a /proc/PID/stat text (0 if it has none).
pub fn stat_flags(stat: &str) -> u64 {
    // Field 9 (flags) comes after the parenthesised comm, which may itself contain spaces.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6))
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0)
}

/// A cgroup v2 directory's id (its inode number, as bpf_get_current_cgroup_id reports) and its
/// depth below the cgroup2 root.
fn cgroup_identity(path: &Path) -> Result<(u64, u32)> {
    let is_cgroup2 = |p: &Path| statfs_magic(p) == Some(CGROUP2_SUPER_MAGIC);
    let meta = std::fs::metadata(path)
        .map_err(|err| usage(format!("cgroup {}: {err}", path.display())))?;
    if !meta.is_dir() || !is_cgroup2(path) {
        let v1 = meta.is_dir() && statfs_magic(path) == Some(CGROUP_SUPER_MAGIC);
        return Err(usage(not_cgroup2(path, v1, &cgroup_mounts::mounts())));
    }
    let canonical = path.canonicalize()?;
    let mut level = 0;
    let mut dir = canonical.as_path();
    while let Some(parent) = dir.parent() {
        if !is_cgroup2(parent) {
            break;
        }
        level += 1;
        dir = parent;
    }
    Ok((meta.ino(), level))
}

/// Why `path` is no cgroup v2 directory, and where this host's cgroup2 hierarchy is.
fn not_cgroup2(path: &Path, v1: bool, mounts: &[CgroupMount]) -> String {
    let what = match cgroup_mounts::v1_mount_of(mounts, path) {
        Some(mount) if v1 => format!(
            "{} is a cgroup v1 directory (the {} hierarchy mounted at {}), and --cgroup takes \
             a cgroup v2 one",
            path.display(),
            mount.controllers.join(","),
            mount.dir.display()
        ),
        _ if v1 => format!(
            "{} is a cgroup v1 directory, and --cgroup takes a cgroup v2 one",
            path.display()
        ),
        _ => format!("{} is not a cgroup v2 directory", path.display()),
    };
    match mounts.iter().find(|m| m.v2) {
        Some(mount) => format!(
            "{what}: this host mounts cgroup2 at {}; give a directory under it (the processes \
             must be in that cgroup v2 group)",
            mount.dir.display()
        ),
        None => format!(
            "{what}: this host has no cgroup2 mount; mount one with \
             `mount -t cgroup2 none /sys/fs/cgroup/unified` and put the processes in a group there"
        ),
    }
}

fn statfs_magic(path: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut buf) } == 0).then_some(buf.f_type as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_pid_is_a_usage_error() {
        let err = check_pid(999_999_999).unwrap_err();
        assert_eq!(err.to_string(), "no process with pid 999999999");
        assert_eq!(crate::error::exit_code(&err), crate::error::exit::USAGE);
    }

    #[test]
    fn kernel_threads_are_refused() {
        // kthreadd is pid 2 on Linux.
        let err = check_pid(2).unwrap_err();
        assert!(err.to_string().contains("kernel thread"), "{err}");
    }

    #[test]
    fn own_pid_is_fine() {
        check_pid(std::process::id()).unwrap();
    }

    #[test]
    fn non_cgroup_directory_is_refused() {
        let err = cgroup_identity(Path::new("/tmp")).unwrap_err();
        assert!(
            err.to_string().contains("not a cgroup v2 directory"),
            "{err}"
        );
    }

    #[test]
    fn a_cgroup_v1_path_is_explained_with_the_cgroup2_mount() {
        let mounts = cgroup_mounts::parse_mountinfo(
            "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        );
        let message = not_cgroup2(Path::new("/sys/fs/cgroup/memory/db"), true, &mounts);
        assert_eq!(
            message,
            "/sys/fs/cgroup/memory/db is a cgroup v1 directory (the memory hierarchy mounted at \
             /sys/fs/cgroup/memory), and --cgroup takes a cgroup v2 one: this host mounts \
             cgroup2 at /sys/fs/cgroup/unified; give a directory under it (the processes must \
             be in that cgroup v2 group)"
        );
        let none = not_cgroup2(Path::new("/srv"), false, &mounts[..1]);
        assert!(none.contains("no cgroup2 mount"), "{none}");
    }
}
