//! What the benchmarks (`bench`) and the agent soak (`soak`) share: the release build they
//! measure, a scratch folder, a process's CPU time, and the sections of BENCHMARKS.md they
//! write.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{cargo, run, setup, target_dir, workspace_root};

/// Root check, set-up and a release build; the target folder and memtrace's path.
pub fn prepare() -> Result<(PathBuf, String)> {
    if !crate::is_root() {
        bail!("benchmarks trace with eBPF: run them as root");
    }
    setup::setup()?;
    run(&mut cargo("build --release -p memtrace -p tests"))?;
    let target = target_dir();
    let memtrace = target
        .join("release/memtrace")
        .to_string_lossy()
        .into_owned();
    Ok((target, memtrace))
}

/// A benchmark's folder for reports and config files, removed when it ends (however it ends).
pub struct Scratch(PathBuf);

impl Scratch {
    /// `memtrace-KIND-PID` in the temporary folder.
    pub fn new(kind: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("memtrace-{kind}-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// User + system CPU time of `pid` so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').context("stat")? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    Ok(ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

/// Replaces the `name` section of BENCHMARKS.md with `header` (how it was measured) and
/// `table`.
pub fn write_section_as(name: &str, header: &str, table: &str) -> Result<()> {
    let path = workspace_root().join("BENCHMARKS.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let (begin, end) = (
        format!("<!-- bench:{name} -->"),
        format!("<!-- /bench:{name} -->"),
    );
    let section = format!("{begin}\n{header}\n\n{table}{end}");
    let updated = match (existing.find(&begin), existing.find(&end)) {
        (Some(start), Some(stop)) => format!(
            "{}{section}{}",
            &existing[..start],
            &existing[stop + end.len()..]
        ),
        _ => format!("{}\n{section}\n", existing.trim_end()),
    };
    std::fs::write(&path, updated)?;
    println!("updated {}", path.display());
    Ok(())
}

pub fn today() -> String {
    Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Waits (up to 30 s) until no memtrace process runs. Each leaves the kernel's detaching of
/// its probes to a child that outlives it by seconds, and until that ends every process using
/// the hooked library still traps on its calls: the next run would not be untraced.
pub fn wait_for_detaching_memtraces() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline && memtrace_running() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Whether a live process named memtrace exists (unreaped zombies do not count).
fn memtrace_running() -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit(") ")
            .next()
            .and_then(|rest| rest.chars().next());
        stat.contains("(memtrace)") && state.is_some_and(|s| s != 'Z' && s != 'X')
    })
}
