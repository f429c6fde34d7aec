//! The heap profiles of heap-profiled processes the OOM killer ended: what each held at its
//! death, by stack, with the kill (cgroup, limit, usage, constraint) as the profile's comments
//! and labels. Each is written to the configured directory (the oldest the agent wrote are
//! deleted past the configured count) and the latest are kept in memory for /debug/pprof/oom.
use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};

use super::heap::{self, ProfileOf};
use crate::{
    commands::{malloc::heap_profile::HeapWeight, oom::OomKillRow},
    report::StackRow,
};

/// Profiles kept in memory, the latest first.
const KEPT: usize = 16;

/// One victim's profile.
pub struct OomProfile {
    /// Its file's name: `<time>-<comm>-<pid>.pb.gz`.
    pub name: String,
    pub pid: u32,
    pub comm: String,
    /// When the kill was seen (RFC 3339).
    pub time: String,
    pub cgroup: String,
    /// gzip'd pprof.
    pub bytes: Vec<u8>,
}

/// The latest profiles, shared with the HTTP side.
pub type Latest = Arc<Mutex<VecDeque<OomProfile>>>;

pub struct OomProfiles {
    /// Where they are written (None: not written).
    dir: Option<PathBuf>,
    /// How many of the agent's profiles the directory keeps (0: all).
    kept_on_disk: usize,
    pub latest: Latest,
}

impl OomProfiles {
    pub fn new(dir: &Path, kept_on_disk: usize) -> Self {
        Self {
            dir: (!dir.as_os_str().is_empty()).then(|| dir.to_path_buf()),
            kept_on_disk,
            latest: Arc::default(),
        }
    }

    /// The heap profile of `kill`'s victim, from its `rows` (what it allocated while profiled,
    /// and held at its death), written and kept.
    pub fn save(&self, kill: &OomKillRow, rows: Vec<(StackRow, HeapWeight)>, sample_bytes: u64) {
        match self.build(kill, rows, sample_bytes) {
            Ok(profile) => {
                if let Some(dir) = &self.dir {
                    match write(dir, &profile) {
                        Ok(path) => log::info!(
                            "heap profile of OOM-killed pid {} ({}) written to {}",
                            profile.pid,
                            profile.comm,
                            path.display()
                        ),
                        Err(err) => log::warn!("{err:#}"),
                    }
                    if self.kept_on_disk > 0 {
                        if let Err(err) = prune(dir, self.kept_on_disk) {
                            log::warn!("{err:#}");
                        }
                    }
                }
                let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
                latest.push_front(profile);
                latest.truncate(KEPT);
            }
            Err(err) => log::warn!("the heap profile of pid {}: {err:#}", kill.pid),
        }
    }

    fn build(
        &self,
        kill: &OomKillRow,
        rows: Vec<(StackRow, HeapWeight)>,
        sample_bytes: u64,
    ) -> Result<OomProfile> {
        let of = ProfileOf {
            target: format!("pid {} ({}), OOM-killed", kill.pid, kill.comm),
            duration_s: 0.0,
            lost_events: 0,
            in_use_first: true,
            context: context(kill),
        };
        let bytes = heap::pprof_bytes(of, rows, sample_bytes)?;
        // A name that sorts by time and says whose it is.
        let stamp: String = (kill.time.chars())
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        let comm: String = (kill.comm.chars())
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Ok(OomProfile {
            name: format!("{stamp}-{comm}-{}.pb.gz", kill.pid),
            pid: kill.pid,
            comm: kill.comm.clone(),
            time: kill.time.clone(),
            cgroup: kill.cgroup.clone(),
            bytes,
        })
    }
}

/// The kill, as the profile's comments and labels.
fn context(kill: &OomKillRow) -> Vec<(&'static str, String)> {
    let mut context = vec![
        ("oom_kill_time", kill.time.clone()),
        ("oom_pid", kill.pid.to_string()),
        ("oom_comm", kill.comm.clone()),
        ("oom_memcg", kill.cgroup.clone()),
        ("oom_constraint", kill.constraint.to_owned()),
        ("oom_anon_rss_bytes", (kill.anon_rss_kb * 1024).to_string()),
        ("oom_file_rss_bytes", (kill.file_rss_kb * 1024).to_string()),
        (
            "oom_shmem_rss_bytes",
            (kill.shmem_rss_kb * 1024).to_string(),
        ),
    ];
    if let Some(limit) = kill.cgroup_limit_bytes {
        context.push(("oom_limit_bytes", limit.to_string()));
    }
    if let Some(usage) = kill.cgroup_usage_bytes {
        context.push(("oom_usage_bytes", usage.to_string()));
    }
    if let Some(cgroup) = &kill.limit_cgroup {
        context.push(("oom_limit_cgroup", cgroup.clone()));
    }
    context
}

/// Writes `profile` into `dir` (made if missing); its path.
fn write(dir: &Path, profile: &OomProfile) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot make {} for OOM heap profiles", dir.display()))?;
    let path = dir.join(&profile.name);
    std::fs::write(&path, &profile.bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Whether `name` is a profile the agent wrote: `<time>-<comm>-<pid>.pb.gz`, the time's
/// digits first (so names sort by time).
fn is_agents_profile(name: &str) -> bool {
    let mut parts = name.split('-');
    name.ends_with(".pb.gz")
        && parts.next().is_some_and(|stamp| {
            stamp.len() >= 8 && stamp.starts_with(|c: char| c.is_ascii_digit())
        })
        && parts.count() >= 2
}

/// Deletes the oldest of the agent's profiles in `dir` past the `kept` newest; other files
/// are left alone. The paths deleted.
fn prune(dir: &Path, kept: usize) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {} to delete old OOM profiles", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| is_agents_profile(name))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(kept);
    let mut deleted = Vec::new();
    for name in &names[..excess] {
        let path = dir.join(name);
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot delete the old OOM profile {}", path.display()))?;
        deleted.push(path);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_of_the_agents_profiles_go_past_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let ours = [
            "20261205T030000Z-redis_server-100.pb.gz",
            "20261205T030500Z-redis_server-200.pb.gz",
            "20261205T031000Z-postgres-300.pb.gz",
            "20261205T031500Z-redis_server-400.pb.gz",
        ];
        let theirs = ["notes.txt", "saved.pb.gz", "baseline-heap.pb.gz"];
        for name in ours.iter().chain(&theirs) {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let deleted = prune(dir.path(), 2).unwrap();
        assert_eq!(
            deleted,
            vec![dir.path().join(ours[0]), dir.path().join(ours[1])]
        );
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected: Vec<String> = ours[2..]
            .iter()
            .chain(&theirs)
            .map(|name| name.to_string())
            .collect();
        expected.sort();
        assert_eq!(left, expected);
        // Within the count: nothing goes.
        assert!(prune(dir.path(), 2).unwrap().is_empty());
    }
}
