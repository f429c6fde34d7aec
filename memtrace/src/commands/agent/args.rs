//! `memtrace agent`'s command line (its settings file: `config`).
use std::{path::PathBuf, time::Duration};

use clap::Args;

use crate::commands::options::parse_duration;

const AGENT_HELP: &str = "\
Runs until SIGTERM or Ctrl-C, system-wide, and serves (read-only):
  /metrics   Prometheus text (0.0.4; OpenMetrics when the Accept header asks for it, as
             Prometheus does). Per (comm, cgroup) series, with container_id and pod_uid
             labels read from the cgroup path:
               memtrace_page_faults_total{kind=\"minor\"|\"major\"}
               memtrace_swap_pages_total{direction=\"out\"|\"in\"}  (with swap)
               memtrace_pages_allocated_total, memtrace_page_allocations_total
                                                    (with page_allocations = true)
               memtrace_oom_kills_total
               memtrace_process_rss_bytes, memtrace_process_swap_bytes  (gauges, the
                 largest max_series series; a pid label with pid_labels = true)
             The agent's own: memtrace_lost_events_total, memtrace_bpf_run_seconds_total,
             memtrace_agent_rss_bytes, memtrace_bpf_map_entries{map},
             memtrace_uncounted_page_allocations_total, memtrace_agent_processes_held,
             memtrace_profile_stacks, memtrace_stack_table_clears_total,
             memtrace_heap_profiled_processes, memtrace_heap_blocks_followed,
             memtrace_heap_stacks, memtrace_heap_dropped_total{what}
  /pprof/faults?seconds=N
             gzip'd pprof of the fault stacks sampled in the next N seconds, as Go's
             /debug/pprof/profile: answered when they are over (default 30, at most 600;
             1 fault in stack_sample), for go tool pprof, Pyroscope, Parca. Frames carry
             their file's mapping (path, build id) for the server to symbolize as well.
  /pprof/faults?last=N
             the same for the last N seconds, at once (ten minutes kept)
  /debug/pprof/heap, /debug/pprof/allocs
             gzip'd pprof heap profiles, as Go's, of the processes [heap] names: four
             values a stack (alloc_objects, alloc_space, inuse_objects, inuse_space),
             in-use bytes shown first on /heap, allocated bytes on /allocs; summed per
             process name; allocated since each process was first profiled, in use now
  /debug/pprof/oom[?n=N]
             the heap profile of the latest (n-th latest) heap-profiled process the OOM
             killer ended: what it held at its death, by stack, the kill (memcg, limit,
             usage, constraint) in its comments and labels; /debug/pprof/oom/list
             lists the 16 kept. Each is also written to oom_profiles.
  /healthz   ok

What it costs: faults are the kernel's own per-task counts (read from /proc each second,
and at each process's exit): nothing runs per fault but 1 in stack_sample, for the
stacks. Page allocations and swap need a program on every event: page allocations are
off unless asked for; swap counting starts once the host has swap (swap = \"auto\").

Counters stay monotonic when processes exit (their counts stay in their series). Series
are bounded: the first max_series (comm, cgroup) pairs get their own, later ones add to
comm=\"other\"; a series idle for five minutes gives its place up.

Listens on 127.0.0.1:9464 unless told otherwise; another address needs --allow-remote.

Config file (TOML, every key optional; the command line wins; deploy/agent.toml):
  listen = \"127.0.0.1:9464\"
  allow_remote = false
  max_series = 200
  stack_sample = 1000
  page_allocations = false   # true: a program on every page allocation
  swap = \"auto\"              # true | false | \"auto\": once the host has swap
  bpf_stats = true           # the kernel's eBPF run-time statistics (times every
                             # eBPF program on the host while the agent runs)
  pid_labels = false         # true: the memory gauges get a pid label
  [heap]                     # heap profiling, off unless a process or cgroup is named
  processes = []             # names, as /proc/PID/comm (15 characters), e.g. [\"redis-server\"]
  cgroups = []               # memory cgroups (and those below), e.g. [\"/system.slice/x.service\"]
  sample_bytes = 524288      # one sample point per this many bytes, on average (0: all)
  max_blocks = 200000        # blocks followed until freed, at most
  max_stacks = 10000         # (process name, stack) pairs kept, at most
  oom_profiles = \"/var/lib/memtrace/oom\"   # \"\": not written
  oom_profiles_kept = 100    # past it, the oldest written are deleted (0: never)

Heap profiling puts uprobes on the allocator (glibc, jemalloc, tcmalloc, mimalloc) of each
process named, found at the agent's pass over /proc each second (a process living less
than that is missed), breaking in that process alone; they go when it exits. Every
allocator call of a profiled process traps into the kernel (about 1 µs): profile the
services you are asking about, not the host.

Examples:
  sudo memtrace agent
  sudo memtrace agent --config /etc/memtrace/agent.toml
  go tool pprof -sample_index=inuse_space http://127.0.0.1:9464/debug/pprof/heap";

/// Always-on, system-wide: faults, swap, OOM kills, RSS (and page allocations) per
/// process name, cgroup and container, served to Prometheus on /metrics, sampled fault
/// stacks as pprof, and heap profiles of the processes its config names.
#[derive(Debug, Args)]
#[command(after_help = AGENT_HELP)]
pub struct AgentArgs {
    /// Serve on this address (default 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// Allow an address other than loopback.
    #[arg(long)]
    pub allow_remote: bool,
    /// Settings file (TOML; see below).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Stop after this long (default: until SIGTERM or Ctrl-C).
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
}
