//! `memtrace agent`: always-on, system-wide, low-overhead counters served to Prometheus.
//! Faults are the kernel's own per-task counts (from /proc each second, and from each
//! process's exit), page allocations are counted per process by a program; each second the
//! agent turns them into monotonic counters per (comm, cgroup), bounded in number.
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use axum::{
    extract::{Query, State},
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use memtrace_common::{EventKind, ProcessExit};
use tokio::sync::{mpsc, oneshot};

use crate::{
    agent_config::{AgentConfig, Switch},
    agent_metrics::{AgentMetrics, Health, ProcessId, ProcessLabels, ProcessMemory},
    agent_profile::{RollingProfile, Stack, PROFILE_WINDOW},
    bpf::{self, Tracer},
    cli::{AgentArgs, RunArgs, TargetArgs},
    commands::{
        oom::{decode_kill, victim_cgroup},
        pages::Origin,
    },
    events::{comm_to_string, decode_record},
    kernel_layout::SwapLayout,
    memcg::MemoryHierarchy,
    output::{self, profile::Reweighted},
    pipeline::{self, KernelOptions},
    processes::Processes,
    session::Consumer,
    stacks::StackKey,
    symbolize::Symbolizer,
    sysmem::{self, SystemSample},
};

/// How often the kernel's counts are read into the metrics.
const UPDATE_EVERY: Duration = Duration::from_secs(1);
/// The agent's events are few (sampled stacks, process exits, OOM kills): a small ring
/// keeps its memory small (the ring is mapped twice, and counts twice in its RSS).
const RING_BYTES: u32 = 1 << 20;
/// The kernel's stack tables hold 16,384 stacks each: emptied at three quarters.
const CLEAR_STACKS_AT: usize = 12_288;
/// Cgroup paths remembered by id at most (more are forgotten and looked up again).
const MAX_CGROUPS: usize = 4096;
/// How often the ring is drained (sampled stacks and OOM kills only: few events, and an idle
/// agent should mostly sleep).
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// A request from the HTTP side for the fault profile of the last `seconds`.
struct ProfileRequest {
    seconds: u64,
    reply: oneshot::Sender<Result<Vec<u8>>>,
}

/// Reads the kernel's counts into the metrics the HTTP server serves.
struct AgentFeed {
    known: Processes,
    metrics: Arc<Mutex<AgentMetrics>>,
    hierarchy: Option<MemoryHierarchy>,
    /// Each process's memory cgroup, with its fault count when read.
    cgroups: HashMap<u32, KnownCgroup>,
    /// Cgroup paths by kernfs node id (as exit records give them), each looked up once.
    cgroup_paths: HashMap<u64, Option<String>>,
    /// Processes that ended (final counts taken) while /proc may still show them.
    ended: HashSet<ProcessId>,
    /// /proc's start times are clock ticks; the exit record's are nanoseconds.
    nanoseconds_per_tick: u64,
    page_allocations: bool,
    swap: SwapCounting,
    next_update: Duration,
    profile: RollingProfile,
    /// Sampled stacks drained since the last tick, to symbolize.
    pending: Vec<(Duration, StackKey)>,
    /// Processes that ended since the last tick.
    departed: Vec<u32>,
    /// The names processes ended with since the last update (their maps and names are
    /// forgotten at once; their last page and swap counts are read at the update).
    exit_names: HashMap<u32, String>,
    /// Stacks in the kernel's tables (user key, kernel id) since they were last emptied.
    stack_keys: HashSet<(u64, i32)>,
    stack_table_clears: u64,
    /// Time since tracing began, at the last tick.
    now: Duration,
    /// 1 fault in this many has its stacks taken.
    stack_period: u64,
    requests: mpsc::Receiver<ProfileRequest>,
    symbolizer: Symbolizer,
    /// Keeps kernel.bpf_stats collection on while the agent runs.
    _stats: Option<std::os::fd::OwnedFd>,
}

/// A process's memory cgroup as last read.
struct KnownCgroup {
    path: String,
    /// The process's faults (minor + major) when it was read.
    faults: u64,
}

/// A living process as /proc shows it each second.
struct LiveProcess {
    process: ProcessId,
    comm: String,
    minor_faults: u64,
    major_faults: u64,
    rss_bytes: u64,
}

/// Every process in /proc now.
fn live_processes() -> Vec<LiveProcess> {
    let Ok(processes) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let page_size = procfs::page_size();
    processes
        .flatten()
        .filter_map(|p| p.stat().ok())
        .filter_map(|stat| {
            Some(LiveProcess {
                process: (u32::try_from(stat.pid).ok()?, stat.starttime),
                minor_faults: stat.minflt,
                major_faults: stat.majflt,
                rss_bytes: stat.rss.saturating_mul(page_size),
                comm: stat.comm,
            })
        })
        .collect()
}

/// Whether the agent counts swap traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SwapCounting {
    Off,
    /// swap = "auto" on a host without swap: the programs attach once it has some.
    WhenSwapIsOn,
    On,
}

impl AgentFeed {
    fn labels(&mut self, pid: u32, comm: String) -> ProcessLabels {
        let hierarchy = &self.hierarchy;
        let cgroup = &self
            .cgroups
            .entry(pid)
            .or_insert_with(|| KnownCgroup {
                path: hierarchy
                    .as_ref()
                    .and_then(|h| h.path_of(pid))
                    .unwrap_or_default(),
                faults: 0,
            })
            .path;
        ProcessLabels::new(comm, cgroup.clone())
    }

    /// A process may have been moved to another cgroup since its was read (container
    /// runtimes move a process after starting it): read again for a process that took
    /// faults since, which is what gets counted; an idle one costs nothing.
    fn refresh_cgroup(&mut self, pid: u32, faults: u64) {
        let Some(known) = self.cgroups.get_mut(&pid) else {
            return;
        };
        if known.faults != faults {
            known.faults = faults;
            if let Some(path) = self.hierarchy.as_ref().and_then(|h| h.path_of(pid)) {
                known.path = path;
            }
        }
    }

    /// The kernel's counts now into the metrics: faults of live processes from /proc (the
    /// kernel counts them per task), page allocations and swap traffic from the programs'
    /// tables; then the tables' pids that are gone are dropped from them.
    fn update(&mut self, tracer: &mut Tracer) {
        let live = live_processes();
        let alive: HashSet<u32> = live.iter().map(|p| p.process.0).collect();
        // An ended process's pid gone from /proc (reaped): it cannot be seen again.
        self.ended.retain(|(pid, _)| alive.contains(pid));
        // What is kept about processes gone (the profile holds its stacks symbolized; records
        // of a process can come after its exit: the kernel's mapping records travel apart).
        self.known.retain(|pid| alive.contains(&pid));
        let system = SystemSample::read();
        if self.swap == SwapCounting::WhenSwapIsOn && system.swap_total_kb > 0 {
            match tracer.attach_swap() {
                Ok(()) => log::info!("swap is on: counting swap traffic per process"),
                Err(err) => log::warn!("cannot count swap traffic: {err:#}"),
            }
            self.swap = SwapCounting::On;
        }
        // With nothing in swap, no process's VmSwap needs reading.
        let read_swap = system.swap_total_kb > system.swap_free_kb;
        let mut faults = Vec::new();
        let mut memory = Vec::new();
        for p in live {
            let pid = p.process.0;
            // (An exiting process's /proc/PID/cgroup says "/": its exit record's is kept.)
            if !self.ended.contains(&p.process) {
                self.refresh_cgroup(pid, p.minor_faults + p.major_faults);
            }
            let labels = self.labels(pid, p.comm);
            if !self.ended.contains(&p.process) && pid != std::process::id() {
                faults.push((p.process, labels.clone(), p.minor_faults, p.major_faults));
            }
            let swap_kb = if read_swap {
                sysmem::vmswap_kb(pid)
            } else {
                None
            };
            memory.push(ProcessMemory {
                pid,
                labels,
                rss_bytes: p.rss_bytes,
                swap_bytes: swap_kb.unwrap_or(0) * 1024,
            });
        }
        let (pages, page_entries) = self.page_counts(tracer);
        let swap = if self.swap == SwapCounting::On {
            tracer.swap_counts().unwrap_or_default()
        } else {
            HashMap::new()
        };
        let swap_entries = swap.len() as u64;
        let pages: Vec<_> = pages
            .into_iter()
            .map(|(pid, (comm, n, calls))| (pid, self.labels(pid, comm), n, calls))
            .collect();
        let swap: Vec<_> = swap
            .into_iter()
            .map(|(pid, counts)| {
                // 0: pages whose owner the program has not learnt yet.
                let comm = match (pid, self.exit_names.get(&pid)) {
                    (0, _) => "[owner unknown]".to_owned(),
                    (_, Some(name)) => name.clone(),
                    _ => self.known.name(pid),
                };
                (pid, self.labels(pid, comm), counts)
            })
            .collect();
        // The tables' pids that are gone: read for the last time just now.
        let gone: HashSet<u32> = (pages.iter().map(|(pid, ..)| *pid))
            .chain(swap.iter().map(|(pid, ..)| *pid))
            .filter(|pid| *pid != 0 && !alive.contains(pid))
            .collect();
        let forgotten = tracer.forget_counts(&gone).unwrap_or_default();
        self.cgroups.retain(|pid, _| alive.contains(pid));
        let counters = tracer.counters().unwrap_or_default();
        let (run_time, _) = tracer.program_runs();
        let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        for (process, labels, minor, major) in faults {
            metrics.update_faults(process, labels, minor, major);
        }
        for (pid, labels, n, calls) in pages {
            metrics.update_pages(pid, labels, n, calls);
        }
        for (pid, labels, counts) in swap {
            metrics.update_swap(pid, labels, counts.out_written, counts.swapped_in);
        }
        metrics.forget_pids(&forgotten);
        metrics.end_update();
        metrics.set_memory(memory);
        metrics.health(&Health {
            lost_events: counters.lost,
            uncounted_page_allocations: counters.page_counts_full,
            bpf_seconds: run_time.as_secs_f64(),
            rss_bytes: own_rss_bytes(),
            map_entries: vec![("page_counts", page_entries), ("swap_counts", swap_entries)],
            processes_held: self.known.maps.snapshots() as u64,
            stack_table_clears: self.stack_table_clears,
            profile_stacks: self.profile.held().0 as u64,
        });
        drop(metrics);
        // Their last counts are in.
        self.exit_names.clear();
    }

    /// The path of the memory cgroup with kernfs node id `id`.
    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        let hierarchy = self.hierarchy.as_ref()?;
        if self.cgroup_paths.len() >= MAX_CGROUPS {
            self.cgroup_paths.clear();
        }
        (self.cgroup_paths)
            .entry(id)
            .or_insert_with(|| hierarchy.path_of_id(id))
            .clone()
    }

    /// Page allocations per pid (name, pages, calls) from the kernel's table, and the table's
    /// entries.
    fn page_counts(&self, tracer: &Tracer) -> (HashMap<u32, (String, u64, u64)>, u64) {
        let mut pages: HashMap<u32, (String, u64, u64)> = HashMap::new();
        if !self.page_allocations {
            return (pages, 0);
        }
        let table = tracer.page_counts().unwrap_or_default();
        let entries = table.len() as u64;
        // The name each pid allocated most pages under (a process's first pages may carry
        // the name it had before its exec).
        let mut most: HashMap<u32, u64> = HashMap::new();
        for (key, count) in table {
            let origin = Origin::of_key(&key);
            let exited = self.exit_names.get(&origin.pid);
            let comm = match exited {
                Some(name) if key.tgid == origin.pid => name.clone(),
                _ => origin.name(&self.known, || comm_to_string(&count.comm)),
            };
            let entry = pages.entry(origin.pid).or_insert((comm.clone(), 0, 0));
            let largest = most.entry(origin.pid).or_default();
            if count.pages > *largest {
                *largest = count.pages;
                entry.0 = comm;
            }
            entry.1 += count.pages;
            entry.2 += count.allocations;
        }
        (pages, entries)
    }

    /// A process ended: its lifetime fault counts are final, and what is kept about it goes
    /// once no sampled stack needs it.
    fn on_exit(&mut self, exit: &ProcessExit) {
        let process = (
            exit.tgid,
            exit.start_boottime_ns / self.nanoseconds_per_tick,
        );
        // /proc/PID/cgroup of an exiting process already says "/": the record's is right.
        if let Some(path) = self.cgroup_path(exit.memcg) {
            let faults = exit.minor_faults + exit.major_faults;
            self.cgroups.insert(exit.tgid, KnownCgroup { path, faults });
        }
        let labels = self.labels(exit.tgid, comm_to_string(&exit.comm));
        let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        metrics.update_faults(process, labels, exit.minor_faults, exit.major_faults);
        metrics.forget(process);
        drop(metrics);
        self.ended.insert(process);
        self.exit_names
            .insert(exit.tgid, comm_to_string(&exit.comm));
        // Forgotten once its sampled stacks in this drain are symbolized.
        self.departed.push(exit.tgid);
    }
}

/// The record, if it is a process's end.
fn decode_exit(bytes: &[u8]) -> Option<ProcessExit> {
    decode_record(bytes, EventKind::ProcessExit)
}

impl AgentFeed {
    /// The stacks sampled since the last tick, symbolized into the profile while their
    /// processes' maps and the kernel's stack tables hold them; then the processes that
    /// ended are forgotten, and the stack tables emptied when they near full.
    fn resolve_samples(&mut self, tracer: &mut Tracer) {
        if !self.pending.is_empty() {
            if let (Ok(user_stacks), Ok(kernel_stacks)) = (tracer.user_stacks(), tracer.stacks()) {
                for (at, key) in std::mem::take(&mut self.pending) {
                    self.stack_keys
                        .insert((key.user_stack, key.kernel_stack_id));
                    let (known, symbolizer) = (&self.known, &mut self.symbolizer);
                    let kind = match key.kind {
                        EventKind::MajorFault => "major",
                        _ => "minor",
                    };
                    self.profile.push(at, key, kind, || {
                        let user = bpf::user_stack_frames(&user_stacks, key.user_stack);
                        let kernel = bpf::stack_frames(&kernel_stacks, key.kernel_stack_id);
                        let stack = Stack::new(
                            symbolizer.user_frames(&known.maps, key.tgid, key.generation, &user),
                            symbolizer.kernel_frames(&kernel),
                        );
                        (known.name(key.tgid), stack)
                    });
                }
            }
            self.pending.clear();
        }
        for pid in std::mem::take(&mut self.departed) {
            self.known.forget(pid);
        }
        // The tables keep every stack stored (each CPU skips storing its last one again):
        // emptied before they fill, what they held is in the profile already.
        if self.stack_keys.len() >= CLEAR_STACKS_AT {
            if let Err(err) = tracer.clear_stacks() {
                log::warn!("cannot empty the stack tables: {err:#}");
            }
            self.stack_keys.clear();
            self.profile.forget_keys();
            self.stack_table_clears += 1;
        }
    }

    /// The gzip'd pprof profile of the fault stacks sampled in the last `seconds`.
    fn profile(&mut self, tracer: &Tracer, seconds: u64) -> Result<Vec<u8>> {
        let since = self.now.saturating_sub(Duration::from_secs(seconds));
        let rows = self.profile.rows(since, self.stack_period);
        let profile = Reweighted {
            command: "agent",
            target: "system-wide".to_owned(),
            duration_s: seconds as f64,
            lost_events: tracer.counters().map_or(0, |c| c.lost),
            rows,
            sample_type: ("faults", "count"),
            period: self.stack_period,
            sampling_note: Some(format!(
                "stacks of 1 fault in {}: counts are estimates",
                self.stack_period
            )),
        };
        let mut bytes = Vec::new();
        output::pprof::write(&profile, &mut bytes)?;
        Ok(bytes)
    }
}

/// The agent's resident memory, from /proc/self/statm.
fn own_rss_bytes() -> u64 {
    statm_rss_bytes(&std::fs::read_to_string("/proc/self/statm").unwrap_or_default())
}

/// The resident memory in the text of a /proc/PID/statm file (0 if it says none).
pub fn statm_rss_bytes(statm: &str) -> u64 {
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages.saturating_mul(4096)
}

impl Consumer for AgentFeed {
    fn processes(&mut self) -> &mut Processes {
        &mut self.known
    }

    fn tick(&self) -> Duration {
        DRAIN_EVERY
    }

    fn on_record(&mut self, bytes: &[u8]) {
        if let Some(exit) = decode_exit(bytes) {
            self.on_exit(&exit);
            return;
        }
        let Some(kill) = decode_kill(bytes) else {
            // A sampled fault's stacks, for the rolling profile.
            if let Some(event) = self.known.admit(bytes) {
                // Whatever carried them, its stacks are in the kernel's tables.
                (self.stack_keys).insert((event.raw.user_stack, event.raw.kernel_stack_id));
                if matches!(event.kind, EventKind::MinorFault | EventKind::MajorFault) {
                    let key = self.known.stack_key(&event);
                    self.pending.push((self.now, key));
                }
            }
            return;
        };
        let cgroup = (self.hierarchy.as_ref())
            .and_then(|h| victim_cgroup(h, &kill))
            .unwrap_or_default();
        let labels = ProcessLabels::new(comm_to_string(&kill.comm), cgroup);
        let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        metrics.oom_kill(labels);
    }

    fn on_tick(&mut self, elapsed: Duration, tracer: &mut Tracer) {
        self.now = elapsed;
        self.resolve_samples(tracer);
        if elapsed >= self.next_update {
            self.next_update = elapsed + UPDATE_EVERY;
            self.update(tracer);
            self.profile.expire(elapsed);
            // Setting up (BTF, kallsyms, the programs) and each second's reads leave freed
            // heap behind: hand it back, or the agent's RSS keeps the high-water mark.
            // SAFETY: malloc_trim has no preconditions.
            unsafe { libc::malloc_trim(0) };
        }
        while let Ok(request) = self.requests.try_recv() {
            let _ = request.reply.send(self.profile(tracer, request.seconds));
        }
    }
}

pub async fn run(args: &AgentArgs) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => AgentConfig::load(path)?,
        None => AgentConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    config.allow_remote |= args.allow_remote;
    config.check_listen()?;
    // Bound before the programs load: a busy port fails in a moment, not after attaching.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (another agent there?); choose another address with \
                 --listen or in the config file",
                config.listen
            )
        })?;
    let metrics = Arc::new(Mutex::new(AgentMetrics::new(
        config.max_series,
        config.pid_labels,
    )));
    let (requests, profile_requests) = mpsc::channel(8);
    let router = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/pprof/faults", get(serve_fault_profile))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Served {
            metrics: Arc::clone(&metrics),
            requests,
        });
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            log::error!("HTTP server stopped: {err}");
        }
    });
    eprintln!(
        "memtrace: agent serving /metrics, /pprof/faults and /healthz on http://{}",
        config.listen
    );

    // Swap traffic needs swap: "auto" waits for the host to have some. On kernels whose swap
    // counters memtrace cannot read, "auto" means off (said once); `true` fails.
    let swap_layout = match config.swap {
        Switch::Set(false) => None,
        Switch::Set(true) => Some(SwapLayout::discover()?),
        Switch::Auto => {
            pipeline::swap_layout("memtrace_swap_pages_total is not served (swap = \"auto\")")
        }
    };
    let swap_setting = match swap_layout {
        None => Switch::Set(false),
        Some(_) => config.swap,
    };
    let swap_now = match swap_setting {
        Switch::Set(on) => on,
        Switch::Auto => SystemSample::read().swap_total_kb > 0,
    };
    let options = KernelOptions {
        page_stacks: false,
        ring_bytes: RING_BYTES,
        // Of 1 fault in stack_sample only, for /pprof/faults.
        user_stacks: true,
        kernel_stacks: true,
        file_tags: false,
        swap: swap_layout,
        malloc: None,
        pages: config.page_allocations,
        stack_sample_period: config.stack_sample,
        oom: true,
        exits: true,
    };
    let target = TargetArgs {
        pids: Vec::new(),
        cgroup: None,
        follow_children: false,
        command: Vec::new(),
    };
    let run_args = RunArgs {
        duration: args.duration,
        interval: None,
    };
    let mut feed = AgentFeed {
        known: Processes::default(),
        metrics,
        hierarchy: MemoryHierarchy::find(),
        cgroups: HashMap::new(),
        cgroup_paths: HashMap::new(),
        ended: HashSet::new(),
        page_allocations: config.page_allocations,
        swap: match swap_setting {
            Switch::Set(false) => SwapCounting::Off,
            _ if swap_now => SwapCounting::On,
            _ => SwapCounting::WhenSwapIsOn,
        },
        // SAFETY: sysconf has no preconditions.
        nanoseconds_per_tick: 1_000_000_000
            / (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64),
        next_update: Duration::ZERO,
        profile: RollingProfile::default(),
        pending: Vec::new(),
        departed: Vec::new(),
        exit_names: HashMap::new(),
        stack_keys: HashSet::new(),
        stack_table_clears: 0,
        now: Duration::ZERO,
        stack_period: config.stack_sample,
        requests: profile_requests,
        symbolizer: Symbolizer::new(),
        _stats: config
            .bpf_stats
            .then(|| {
                aya::sys::enable_stats(aya::sys::Stats::RunTime)
                    .map_err(|err| log::warn!("eBPF run-time statistics unavailable: {err}"))
                    .ok()
            })
            .flatten(),
    };
    let attach = |tracer: &mut Tracer, _single: Option<u32>| {
        // Faults are counted by the kernel per task: the programs run for 1 fault in
        // stack_sample only, for the stacks.
        tracer.attach_faults(true, true, config.stack_sample)?;
        tracer.attach_tracepoint("exit_counts", "sched", "sched_process_exit")?;
        if config.page_allocations {
            tracer.attach_tracepoint("page_alloc", "kmem", "mm_page_alloc")?;
        }
        if swap_now {
            tracer.attach_swap()?;
        }
        tracer.attach_tracepoint("oom_kill", "oom", "mark_victim")
    };
    let traced = pipeline::trace(&target, &run_args, options, &attach, &mut feed).await?;
    let mut tracer = traced.tracer;
    feed.update(&mut tracer);
    eprintln!("memtrace: agent stopped");
    Ok(())
}

/// What the HTTP handlers share with the tracing side.
#[derive(Clone)]
struct Served {
    metrics: Arc<Mutex<AgentMetrics>>,
    requests: mpsc::Sender<ProfileRequest>,
}

async fn serve_metrics(State(served): State<Served>) -> impl IntoResponse {
    let text = served
        .metrics
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .render();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

#[derive(serde::Deserialize)]
struct ProfileQuery {
    /// The last this many seconds (default 60, at most the profile window).
    seconds: Option<u64>,
}

async fn serve_fault_profile(
    State(served): State<Served>,
    Query(query): Query<ProfileQuery>,
) -> axum::response::Response {
    let seconds = query
        .seconds
        .unwrap_or(60)
        .clamp(1, PROFILE_WINDOW.as_secs());
    let (reply, answer) = oneshot::channel();
    let asked = served.requests.try_send(ProfileRequest { seconds, reply });
    let profile = match asked {
        Ok(()) => tokio::time::timeout(Duration::from_secs(30), answer).await,
        // A bounded queue: a flood of requests is refused, not queued without end.
        Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response(),
    };
    match profile {
        Ok(Ok(Ok(bytes))) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"faults.pb.gz\"",
                ),
            ],
            bytes,
        )
            .into_response(),
        Ok(Ok(Err(err))) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}\n")).into_response()
        }
        _ => (StatusCode::SERVICE_UNAVAILABLE, "no answer\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_from_statm() {
        assert_eq!(statm_rss_bytes("2790 645 481 1 0 176 0\n"), 645 * 4096);
        assert_eq!(statm_rss_bytes(""), 0);
        // Found by fuzzing (cargo xtask fuzz proc_text): 2^52 pages overflowed the multiply.
        assert_eq!(statm_rss_bytes("0 4503599627370496 0"), u64::MAX);
    }
}
