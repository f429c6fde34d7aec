//! The agent's settings: defaults, then the config file (TOML), then the command line.
use std::{net::SocketAddr, path::Path};

use anyhow::Result;
use serde::Deserialize;

use crate::error::usage;

/// What `memtrace agent` runs with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Where /metrics, /healthz and /pprof are served.
    pub listen: SocketAddr,
    /// Serve on an address other than loopback (the endpoints show what every process does).
    pub allow_remote: bool,
    /// Series per metric family: the first this many (comm, cgroup) pairs seen get their own;
    /// later ones add to comm="other".
    pub max_series: usize,
    /// Take the stacks of 1 fault in this many, for /pprof/faults.
    pub stack_sample: u64,
    /// Count the kernel's page allocations per process: a program on every allocation
    /// (faults are the kernel's own counts and cost nothing). Off by default: on a burst of
    /// allocations it costs several percent.
    pub page_allocations: bool,
    /// Count swap traffic per owning process: a program on every change of any process's
    /// RSS counters, which leaves at once unless swap entries changed. "auto": from the
    /// moment the host has swap (none can happen without).
    pub swap: Switch,
    /// Turn on the kernel's eBPF run-time statistics (kernel.bpf_stats_enabled) for
    /// memtrace_bpf_run_seconds_total. They time every eBPF program on the host, not only
    /// the agent's.
    pub bpf_stats: bool,
    /// Give the memory gauges (RSS, swap) a pid label, one series per process (still at
    /// most `max_series`, the largest first).
    pub pid_labels: bool,
    /// Heap profiling of the processes named (`[heap]`; none by default).
    pub heap: HeapConfig,
}

/// `[heap]`: which processes have their allocator calls traced (uprobes in those processes
/// only), how they are sampled, and how much the agent keeps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeapConfig {
    /// Process names (as /proc/PID/comm says them: the first 15 characters).
    pub processes: Vec<String>,
    /// Memory cgroups (paths as /proc/PID/cgroup says them): their processes, and those of
    /// the cgroups below.
    pub cgroups: Vec<String>,
    /// One sample point per this many bytes allocated, on average (0: every block).
    pub sample_bytes: u64,
    /// Blocks followed until freed, at most (past it, blocks are counted but not followed).
    pub max_blocks: usize,
    /// Distinct (process name, stack) pairs kept, at most.
    pub max_stacks: usize,
    /// Where the heap profile of a profiled process the OOM killer ends is written ("": not
    /// written; the latest are served on /debug/pprof/oom either way).
    pub oom_profiles: std::path::PathBuf,
    /// The profiles kept in `oom_profiles`, at most: past it the oldest the agent wrote are
    /// deleted (0: never deleted). A process that the OOM killer ends over and over (a
    /// crash-looping container) would otherwise fill the disk.
    pub oom_profiles_kept: usize,
}

impl Default for HeapConfig {
    fn default() -> Self {
        Self {
            processes: Vec::new(),
            cgroups: Vec::new(),
            // Go's runtime.MemProfileRate.
            sample_bytes: 512 * 1024,
            max_blocks: 200_000,
            max_stacks: 10_000,
            oom_profiles: "/var/lib/memtrace/oom".into(),
            oom_profiles_kept: 100,
        }
    }
}

impl HeapConfig {
    /// Whether any process is to be heap-profiled.
    pub fn enabled(&self) -> bool {
        !self.processes.is_empty() || !self.cgroups.is_empty()
    }

    /// Whether a process of name `comm` in memory cgroup `cgroup` is to be heap-profiled.
    pub fn wants(&self, comm: &str, cgroup: &str) -> bool {
        // The kernel keeps 15 characters of a name.
        let named = |name: &String| name.chars().take(15).eq(comm.chars());
        let within = |parent: &String| {
            let parent = parent.trim_end_matches('/');
            cgroup == parent
                || parent.is_empty()
                || cgroup
                    .strip_prefix(parent)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        self.processes.iter().any(named) || self.cgroups.iter().any(within)
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            allow_remote: false,
            max_series: 200,
            stack_sample: 1000,
            page_allocations: false,
            swap: Switch::Auto,
            bpf_stats: true,
            pid_labels: false,
            heap: HeapConfig::default(),
        }
    }
}

/// A setting that is on, off, or decided by the host ("auto").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Switch {
    Set(bool),
    #[serde(with = "auto")]
    Auto,
}

/// The word "auto" as a unit variant.
mod auto {
    use serde::{de::Error, Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<(), D::Error> {
        match String::deserialize(deserializer)?.as_str() {
            "auto" => Ok(()),
            other => Err(D::Error::custom(format!(
                "expected true, false or \"auto\", found \"{other}\""
            ))),
        }
    }
}

impl AgentConfig {
    /// The file's settings over the defaults; a bad file is a usage error naming its line.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| usage(format!("--config {}: {err}", path.display())))?;
        toml::from_str(&text).map_err(|err| {
            // An unknown key's span is the whole table: find the key's own line instead.
            let unknown = err
                .message()
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
                .and_then(|key| key_line(&text, key));
            let line = unknown.or_else(|| {
                err.span()
                    .map(|span| text[..span.start.min(text.len())].lines().count().max(1))
            });
            let place = line.map_or(String::new(), |l| format!(" line {l}"));
            usage(format!(
                "--config {}{place}: {}",
                path.display(),
                err.message()
            ))
        })
    }

    /// Refuses a non-loopback address unless allowed, and warns when it is.
    pub fn check_listen(&self) -> Result<()> {
        if self.listen.ip().is_loopback() {
            return Ok(());
        }
        if !self.allow_remote {
            return Err(usage(format!(
                "--listen {}: not a loopback address; the endpoints show every process's \
                 memory, so serving them beyond this host needs --allow-remote",
                self.listen
            )));
        }
        log::warn!(
            "serving on {}: anyone who can reach it sees every process's memory use",
            self.listen
        );
        Ok(())
    }
}

/// The 1-based line where `key` is set.
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|index| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<AgentConfig> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text)?;
        AgentConfig::load(&path)
    }

    #[test]
    fn a_file_overrides_the_defaults() {
        let config = load_text("listen = \"127.0.0.1:9999\"\nmax_series = 5\n").unwrap();
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.max_series, 5);
        assert_eq!(config.stack_sample, AgentConfig::default().stack_sample);
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = load_text("max_series = 5\n\nstack_sample = \"many\"\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("line 3"), "{text}");
        let err = load_text("max_series = 5\nlisten_on = 1\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }

    /// deploy/agent.toml is what systemd and Kubernetes users copy: it must load, and say
    /// the defaults it claims to.
    #[test]
    fn the_example_config_loads_and_says_the_defaults() {
        let example: AgentConfig =
            toml::from_str(include_str!("../../../../deploy/agent.toml")).unwrap();
        assert_eq!(
            format!("{example:?}"),
            format!("{:?}", AgentConfig::default())
        );
    }

    #[test]
    fn switches_take_true_false_or_auto() {
        assert_eq!(load_text("swap = true\n").unwrap().swap, Switch::Set(true));
        assert_eq!(
            load_text("swap = false\n").unwrap().swap,
            Switch::Set(false)
        );
        assert_eq!(load_text("swap = \"auto\"\n").unwrap().swap, Switch::Auto);
        let err = load_text("\nswap = \"sometimes\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }

    #[test]
    fn heap_profiling_is_asked_for_by_name_or_cgroup() {
        let config = load_text(
            "[heap]\nprocesses = [\"redis-server\", \"a-very-long-process-name\"]\n\
             cgroups = [\"/system.slice/postgresql.service/\"]\nsample_bytes = 0\n\
             oom_profiles_kept = 3\n",
        )
        .unwrap();
        let heap = &config.heap;
        assert!(heap.enabled());
        assert_eq!((heap.sample_bytes, heap.oom_profiles_kept), (0, 3));
        assert!(heap.wants("redis-server", "/"));
        // The kernel's 15 characters of the long name.
        assert!(heap.wants("a-very-long-pro", "/"));
        assert!(!heap.wants("redis-serve", "/"));
        assert!(heap.wants("postgres", "/system.slice/postgresql.service"));
        assert!(heap.wants("postgres", "/system.slice/postgresql.service/main"));
        assert!(!heap.wants("postgres", "/system.slice/postgresql.services"));
        assert!(!AgentConfig::default().heap.enabled());
        let err = load_text("[heap]\nprocess = [\"x\"]\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }

    #[test]
    fn remote_addresses_need_permission() {
        let mut config = AgentConfig {
            listen: "0.0.0.0:9464".parse().unwrap(),
            ..AgentConfig::default()
        };
        assert!(config.check_listen().is_err());
        config.allow_remote = true;
        assert!(config.check_listen().is_ok());
    }
}
