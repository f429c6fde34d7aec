//! cgroup v2 directories made for tests, removed when dropped (also when a test fails).
use std::{
    fs,
    path::{Path, PathBuf},
};

/// A cgroup v2 directory made for one test: on drop, moves `pid` back to where it was and
/// removes the directory (also when the test fails).
pub struct TestCgroup {
    pub dir: PathBuf,
    /// The process moved into it and the cgroup.procs file it came from.
    moved: Option<(u32, PathBuf)>,
}

impl TestCgroup {
    /// A new cgroup at the top of the cgroup2 hierarchy.
    pub fn create() -> Self {
        let mount = cgroup2_mount().expect("no cgroup2 mount in /proc/mounts");
        Self::create_under(&mount)
    }

    /// A new cgroup below `parent` (a cgroup2 directory).
    pub fn create_under(parent: &Path) -> Self {
        let dir = parent.join(format!("memtrace-test-{}", std::process::id()));
        let _ = fs::remove_dir(&dir); // a leftover of a killed run, if empty
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self { dir, moved: None }
    }

    /// Moves `pid` into the cgroup.
    pub fn enter(&mut self, pid: u32) {
        let mount = cgroup2_mount().unwrap();
        // "0::/path" is the process's cgroup v2 membership.
        let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/")
            .trim_start_matches('/');
        let from = mount.join(rel).join("cgroup.procs");
        self.moved = Some((pid, from));
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.dir.display()));
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Some((pid, from)) = self.moved.take() {
            let back = pid.to_string();
            if fs::write(&from, &back).is_err() {
                // Its old cgroup may be gone: the root always takes it.
                let root = cgroup2_mount().unwrap().join("cgroup.procs");
                let _ = fs::write(root, &back);
            }
        }
        // An exiting task leaves the cgroup a moment after it is reaped.
        for _ in 0..200 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

/// Where cgroup2 is mounted (`/sys/fs/cgroup` on a unified host).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}
