//! Memory cgroups as an OOM report shows them: a process's cgroup path, its limit and usage,
//! and whether it hit its limit. Cgroup v1 (the memory controller's own mount) or v2.
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use memtrace_common::OomKill;

/// The memory controller's mount: where cgroup paths are directories.
#[derive(Debug, Clone)]
pub struct MemoryHierarchy {
    root: PathBuf,
    v2: bool,
}

/// One memory cgroup as seen now.
#[derive(Debug, Clone, Default)]
pub struct MemoryCgroup {
    /// None: no limit.
    pub limit_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
    /// The cgroup has reached its limit (v1 failure counts or OOM kills, v2 memory.events
    /// max and oom, or usage at 90% of the limit now): an OOM kill in it is its limit's
    /// doing.
    pub limit_hit: bool,
}

/// Limits at or above this mean "no limit" (v1 shows a page-rounded i64::MAX).
const UNLIMITED: u64 = 1 << 62;

impl MemoryHierarchy {
    /// The memory controller's mount, from /proc/mounts: a v1 `memory` hierarchy first (where
    /// it exists the controller is not on v2), else the v2 mount.
    pub fn find() -> Option<Self> {
        Self::from_mounts(&fs::read_to_string("/proc/mounts").ok()?)
    }

    /// The memory controller's mount in the text of /proc/mounts (see `find`).
    pub fn from_mounts(mounts: &str) -> Option<Self> {
        let mut v2 = None;
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(dir), Some(kind), Some(options)) =
                (fields.get(1), fields.get(2), fields.get(3))
            else {
                continue;
            };
            if *kind == "cgroup" && options.split(',').any(|o| o == "memory") {
                return Some(Self {
                    root: PathBuf::from(dir),
                    v2: false,
                });
            }
            if *kind == "cgroup2" && v2.is_none() {
                v2 = Some(Self {
                    root: PathBuf::from(dir),
                    v2: true,
                });
            }
        }
        v2
    }

    /// The memory cgroup path of `pid`, from /proc/PID/cgroup.
    pub fn path_of(&self, pid: u32) -> Option<String> {
        self.path_in(&fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
    }

    /// The memory cgroup path in the text of a /proc/PID/cgroup file.
    pub fn path_in(&self, text: &str) -> Option<String> {
        text.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let ours = if self.v2 {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == "memory")
            };
            ours.then(|| path.to_owned())
        })
    }

    /// The cgroup whose directory has inode `id` (a kernfs node id), searched breadth-first.
    pub fn path_of_id(&self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        let mut queue = vec![self.root.clone()];
        while let Some(dir) = queue.pop() {
            if fs::metadata(&dir).is_ok_and(|m| m.ino() == id) {
                let relative = dir.strip_prefix(&self.root).ok()?;
                return Some(format!("/{}", relative.display()));
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            queue.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        None
    }

    /// The memory pressure (PSI some and full, 10 s averages, percent) of the cgroup at
    /// `path`: cgroup v2 only (v1 keeps none per cgroup).
    pub fn pressure(&self, path: &str) -> Option<(f64, f64)> {
        use procfs::FromRead;
        if !self.v2 {
            return None;
        }
        let file = self
            .root
            .join(path.trim_start_matches('/'))
            .join("memory.pressure");
        let psi = procfs::MemoryPressure::from_file(file).ok()?;
        Some((f64::from(psi.some.avg10), f64::from(psi.full.avg10)))
    }

    /// An OOM victim's memory cgroup: the one the kernel side read at the kill when the
    /// victim itself needed the memory; else the victim's own from /proc (an exiting task may
    /// already show the root), and failing that the cgroup of the task that needed memory.
    pub fn victim_cgroup(&self, kill: &OomKill) -> Option<String> {
        let trigger = || self.path_of_id(kill.trigger_memcg);
        if kill.trigger_pid == kill.pid {
            trigger().or_else(|| self.path_of(kill.pid))
        } else {
            self.path_of(kill.pid).or_else(trigger)
        }
    }

    /// The cgroup at `path`: its limit, usage and whether the limit was ever hit.
    pub fn read(&self, path: &str) -> MemoryCgroup {
        let dir = self.root.join(path.trim_start_matches('/'));
        MemoryCgroup::from_files(self.v2, |file| read_trimmed(&dir.join(file)))
    }
}

impl MemoryCgroup {
    /// A cgroup from its files: `file` gives the trimmed text of the cgroup directory's file
    /// of that name (`memory.max`, ...), None if it cannot be read.
    pub fn from_files(v2: bool, file: impl Fn(&str) -> Option<String>) -> Self {
        let number = |name: &str| -> Option<u64> { file(name)?.parse().ok() };
        let (limit, usage, limit_hit) = if v2 {
            let events = file("memory.events").unwrap_or_default();
            let event = |key: &str| {
                events
                    .lines()
                    .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            (
                number("memory.max"),
                number("memory.current"),
                event("max ") > 0 || event("oom ") > 0,
            )
        } else {
            // With swap accounting the memory+swap counter may be the one that fails; some
            // kernels keep no failure counts, but count the cgroup's OOM kills.
            let failed = ["memory.failcnt", "memory.memsw.failcnt"]
                .iter()
                .any(|name| number(name).is_some_and(|count| count > 0));
            let control = file("memory.oom_control").unwrap_or_default();
            let kills = control
                .lines()
                .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
                .unwrap_or(0);
            (
                number("memory.limit_in_bytes"),
                number("memory.usage_in_bytes"),
                failed || kills > 0,
            )
        };
        let limit_bytes = limit.filter(|&l| l < UNLIMITED);
        // At the kill the victim still holds its memory: a cgroup at 90% of its limit is full.
        let near_limit = matches!((limit_bytes, usage), (Some(l), Some(u)) if u >= l / 10 * 9);
        MemoryCgroup {
            limit_bytes,
            usage_bytes: usage,
            limit_hit: limit_hit || near_limit,
        }
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    Some(fs::read_to_string(path).ok()?.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup directory whose files hold `files` (name, text).
    fn cgroup(v2: bool, files: &[(&str, &str)]) -> MemoryCgroup {
        MemoryCgroup::from_files(v2, |name| {
            let (_, text) = files.iter().find(|(file, _)| *file == name)?;
            Some(text.trim().to_owned())
        })
    }

    #[test]
    fn v2_limit_usage_and_events() {
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n";
        let read = cgroup(
            true,
            &[
                ("memory.max", "536870912\n"),
                ("memory.current", "1000\n"),
                ("memory.events", events),
            ],
        );
        assert_eq!(read.limit_bytes, Some(536870912));
        assert_eq!(read.usage_bytes, Some(1000));
        assert!(read.limit_hit);
        let unlimited = cgroup(true, &[("memory.max", "max\n"), ("memory.current", "5\n")]);
        assert_eq!((unlimited.limit_bytes, unlimited.limit_hit), (None, false));
    }

    #[test]
    fn v1_failure_counts() {
        let limit = ("memory.limit_in_bytes", "9223372036854771712\n");
        let read = cgroup(false, &[limit, ("memory.failcnt", "3\n")]);
        assert_eq!((read.limit_bytes, read.limit_hit), (None, true));
        assert!(!cgroup(false, &[limit, ("memory.failcnt", "0")]).limit_hit);
        // Found by fuzzing (cargo xtask fuzz proc_text): two failure counts whose sum does
        // not fit in a u64 overflowed.
        let huge = "9999000900000000000";
        let read = cgroup(
            false,
            &[("memory.failcnt", huge), ("memory.memsw.failcnt", huge)],
        );
        assert!(read.limit_hit);
    }

    #[test]
    fn mounts_and_cgroup_paths() {
        let mounts = "sysfs /sys sysfs rw 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,memory 0 0\n";
        let v1 = MemoryHierarchy::from_mounts(mounts).unwrap();
        assert_eq!(
            (v1.root.to_str(), v1.v2),
            (Some("/sys/fs/cgroup/memory"), false)
        );
        let cgroup = "4:memory:/process_api/17\n0::/\n";
        assert_eq!(v1.path_in(cgroup).as_deref(), Some("/process_api/17"));
        let v2 = MemoryHierarchy::from_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0").unwrap();
        assert_eq!(v2.path_in(cgroup).as_deref(), Some("/"));
        assert!(MemoryHierarchy::from_mounts("proc /proc proc rw 0 0\n").is_none());
    }
}
