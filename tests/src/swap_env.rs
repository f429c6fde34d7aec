//! A real swap environment for tests and benchmarks: a swap file and a memory cgroup with a
//! limit (cgroup v1 `memory.limit_in_bytes` or v2 `memory.max`, whichever the machine has),
//! both removed when dropped, even when a test fails.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::scratch_path;

/// A swap file, on while it lives.
pub struct SwapFile {
    path: PathBuf,
}

impl SwapFile {
    pub fn create(mib: usize) -> Self {
        let path = scratch_path("swapfile");
        // Written out, not fallocated: swapon refuses files with holes.
        fs::write(&path, vec![0u8; mib << 20]).expect("writing the swap file");
        let swap = SwapFile { path };
        let path = swap.path.to_str().unwrap();
        run_ok("chmod", &["600", path]);
        run_ok("mkswap", &[path]);
        run_ok("swapon", &[path]);
        swap
    }
}

impl Drop for SwapFile {
    fn drop(&mut self) {
        let _ = Command::new("swapoff").arg(&self.path).status();
        let _ = fs::remove_file(&self.path);
    }
}

/// A memory cgroup with a limit, removed when dropped.
pub struct MemoryCgroup {
    pub dir: PathBuf,
    pub limit_mib: u64,
}

impl MemoryCgroup {
    pub fn create(limit_mib: u64) -> Self {
        Self::create_named(&format!("memtrace-test-{}", std::process::id()), limit_mib)
    }

    /// A memory cgroup at the hierarchy's top named `name` (e.g. the way a container runtime
    /// names its scopes).
    pub fn create_named(name: &str, limit_mib: u64) -> Self {
        let limit = (limit_mib << 20).to_string();
        let v1 = Path::new("/sys/fs/cgroup/memory");
        if v1.join("memory.limit_in_bytes").exists() {
            let dir = v1.join(name);
            fs::create_dir_all(&dir).expect("creating the v1 memory cgroup");
            let cgroup = MemoryCgroup { dir, limit_mib };
            write(&cgroup.dir.join("memory.limit_in_bytes"), &limit);
            return cgroup;
        }
        let root = cgroup2_with_memory().expect("no memory cgroup controller (v1 or v2)");
        let _ = fs::write(root.join("cgroup.subtree_control"), "+memory");
        let dir = root.join(name);
        fs::create_dir_all(&dir).expect("creating the v2 memory cgroup");
        let cgroup = MemoryCgroup { dir, limit_mib };
        write(&cgroup.dir.join("memory.max"), &limit);
        let _ = fs::write(cgroup.dir.join("memory.swap.max"), "max");
        cgroup
    }

    /// A memory cgroup whose limit holds memory and swap together: going over it is an OOM
    /// kill, not swapping.
    pub fn without_swap(limit_mib: u64) -> Self {
        let cgroup = Self::create(limit_mib);
        let limit = (limit_mib << 20).to_string();
        let _ = fs::write(cgroup.dir.join("memory.memsw.limit_in_bytes"), &limit);
        let _ = fs::write(cgroup.dir.join("memory.swap.max"), "0");
        cgroup
    }

    /// A shell that moves itself into the cgroup, then becomes `fault_touch` touching twice
    /// the limit: the kernel's OOM killer ends it.
    pub fn oom_victim(&self) -> std::process::Command {
        let pages = ((2 * self.limit_mib) << 20) / 4096;
        let mut command = std::process::Command::new("sh");
        command
            .arg("-c")
            .arg(format!(
                "echo $$ > {} && exec {} {pages}",
                self.procs().display(),
                crate::workload("fault_touch").display()
            ))
            .stdout(std::process::Stdio::null());
        command
    }

    /// Writing a pid here moves that process into the cgroup.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Its tasks have exited; the cgroup empties a moment after they are reaped.
        for _ in 0..200 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

/// The cgroup2 mount, if its memory controller is available.
fn cgroup2_with_memory() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let dir = PathBuf::from(fields.get(1)?);
        let controllers = fs::read_to_string(dir.join("cgroup.controllers")).ok()?;
        (fields.get(2) == Some(&"cgroup2") && controllers.split_whitespace().any(|c| c == "memory"))
            .then_some(dir)
    })
}

fn write(path: &Path, value: &str) {
    fs::write(path, value).unwrap_or_else(|e| panic!("writing {value} to {}: {e}", path.display()));
}

fn run_ok(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed: {status}");
}
