//! `memtrace agent`: always-on, system-wide, low-overhead counters served to Prometheus.
//! Faults are the kernel's own per-task counts (from /proc each second, and from each
//! process's exit), page allocations are counted per process by a program; each second the
//! agent turns them into monotonic counters per (comm, cgroup), bounded in number.
use std::{
    collections::{HashMap, HashSet, VecDeque},
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
    agent_config::AgentConfig,
    agent_metrics::{AgentMetrics, ProcessId, ProcessLabels},
    bpf::Tracer,
    cli::{AgentArgs, RunArgs, TargetArgs},
    commands::{
        oom::{decode_kill, victim_cgroup},
        pages::Origin,
    },
    events::{comm_to_string, decode_record},
    memcg::MemoryHierarchy,
    output::{self, profile::Reweighted},
    pipeline::{self, KernelOptions},
    processes::Processes,
    session::Consumer,
    stacks::{StackCounts, StackKey},
    symbolize::Symbolizer,
};

/// How often the kernel's counts are read into the metrics.
const UPDATE_EVERY: Duration = Duration::from_secs(1);
/// How often the ring is drained (sampled stacks and OOM kills only: few events, and an idle
/// agent should mostly sleep).
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// The rolling fault profile covers at most this much of the past...
const PROFILE_WINDOW: Duration = Duration::from_secs(600);
/// ...and holds at most this many sampled stacks (the oldest go first).
const PROFILE_SAMPLES: usize = 100_000;

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
    /// Each process's memory cgroup, read once.
    cgroups: HashMap<u32, String>,
    /// Processes that ended (final counts taken) while /proc may still show them.
    ended: HashSet<ProcessId>,
    /// /proc's start times are clock ticks; the exit record's are nanoseconds.
    nanoseconds_per_tick: u64,
    page_allocations: bool,
    next_update: Duration,
    /// Sampled fault stacks, oldest first, with when they came.
    samples: VecDeque<(Duration, StackKey)>,
    now: Duration,
    stack_period: u64,
    requests: mpsc::Receiver<ProfileRequest>,
    symbolizer: Symbolizer,
    /// Keeps kernel.bpf_stats collection on while the agent runs.
    _stats: Option<std::os::fd::OwnedFd>,
}

impl AgentFeed {
    fn labels(&mut self, pid: u32, comm: String) -> ProcessLabels {
        let hierarchy = &self.hierarchy;
        let cgroup = self
            .cgroups
            .entry(pid)
            .or_insert_with(|| {
                hierarchy
                    .as_ref()
                    .and_then(|h| h.path_of(pid))
                    .unwrap_or_default()
            })
            .clone();
        ProcessLabels { comm, cgroup }
    }

    /// The kernel's counts now into the metrics: faults of live processes from /proc (the
    /// kernel counts them per task), page allocations from the programs' table.
    fn update(&mut self, tracer: &Tracer) {
        let mut alive: HashSet<u32> = HashSet::new();
        let mut faults: Vec<(ProcessId, String, u64, u64)> = Vec::new();
        if let Ok(processes) = procfs::process::all_processes() {
            for stat in processes.flatten().filter_map(|p| p.stat().ok()) {
                let Ok(pid) = u32::try_from(stat.pid) else {
                    continue;
                };
                alive.insert(pid);
                let process = (pid, stat.starttime);
                if !self.ended.contains(&process) && pid != std::process::id() {
                    faults.push((process, stat.comm, stat.minflt, stat.majflt));
                }
            }
        }
        // An ended process's pid gone from /proc (reaped): it cannot be seen again.
        self.ended.retain(|(pid, _)| alive.contains(pid));
        let mut pages: HashMap<u32, (String, u64, u64)> = HashMap::new();
        let page_counts = if self.page_allocations {
            tracer.page_counts().unwrap_or_default()
        } else {
            HashMap::new()
        };
        for (key, count) in page_counts {
            let origin = Origin::of_key(&key);
            let comm = origin.name(&self.known, || comm_to_string(&count.comm));
            let entry = pages.entry(origin.pid).or_insert((comm, 0, 0));
            entry.1 += count.pages;
            entry.2 += count.allocations;
        }
        let faults: Vec<_> = faults
            .into_iter()
            .map(|(process, comm, minor, major)| {
                (process, self.labels(process.0, comm), minor, major)
            })
            .collect();
        let pages: Vec<_> = pages
            .into_iter()
            .map(|(pid, (comm, n, calls))| (pid, self.labels(pid, comm), n, calls))
            .collect();
        // A gone process's cgroup is kept while the kernel's table still counts its pid.
        let counted: HashSet<u32> = pages.iter().map(|(pid, ..)| *pid).collect();
        self.cgroups
            .retain(|pid, _| alive.contains(pid) || counted.contains(pid));
        let counters = tracer.counters().unwrap_or_default();
        let (run_time, _) = tracer.program_runs();
        let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        for (process, labels, minor, major) in faults {
            metrics.update_faults(process, labels, minor, major);
        }
        for (pid, labels, n, calls) in pages {
            metrics.update_pages(pid, labels, n, calls);
        }
        metrics.health(counters.lost, run_time.as_secs_f64(), own_rss_bytes());
    }

    /// A process ended: its lifetime fault counts are final.
    fn on_exit(&mut self, exit: &ProcessExit) {
        let process = (
            exit.tgid,
            exit.start_boottime_ns / self.nanoseconds_per_tick,
        );
        let labels = self.labels(exit.tgid, comm_to_string(&exit.comm));
        let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        metrics.update_faults(process, labels, exit.minor_faults, exit.major_faults);
        metrics.forget(process);
        drop(metrics);
        self.ended.insert(process);
    }
}

/// The record, if it is a process's end.
fn decode_exit(bytes: &[u8]) -> Option<ProcessExit> {
    decode_record(bytes, EventKind::ProcessExit)
}

impl AgentFeed {
    /// The gzip'd pprof profile of the fault stacks sampled in the last `seconds`.
    fn profile(&mut self, tracer: &Tracer, seconds: u64) -> Result<Vec<u8>> {
        let since = self.now.saturating_sub(Duration::from_secs(seconds));
        let mut counts = StackCounts::default();
        for (_, key) in self.samples.iter().filter(|(at, _)| *at >= since) {
            counts.add(*key, 1);
        }
        let known = &self.known;
        let label = |key: &StackKey| {
            let kind = if key.kind == EventKind::MajorFault {
                "major"
            } else {
                "minor"
            };
            (known.name(key.tgid), kind)
        };
        let rows = counts.resolve(
            tracer,
            &mut self.symbolizer,
            &self.known.maps,
            None,
            self.stack_period,
            &label,
        )?;
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
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
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
                if matches!(event.kind, EventKind::MinorFault | EventKind::MajorFault) {
                    if self.samples.len() >= PROFILE_SAMPLES {
                        self.samples.pop_front();
                    }
                    let key = self.known.stack_key(&event);
                    self.samples.push_back((self.now, key));
                }
            }
            return;
        };
        let cgroup = (self.hierarchy.as_ref())
            .and_then(|h| victim_cgroup(h, &kill))
            .unwrap_or_default();
        let labels = ProcessLabels {
            comm: comm_to_string(&kill.comm),
            cgroup,
        };
        let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        metrics.oom_kill(labels);
    }

    fn on_tick(&mut self, elapsed: Duration, tracer: &Tracer) {
        self.now = elapsed;
        if elapsed >= self.next_update {
            self.next_update = elapsed + UPDATE_EVERY;
            self.update(tracer);
            let oldest = elapsed.saturating_sub(PROFILE_WINDOW);
            while self.samples.front().is_some_and(|(at, _)| *at < oldest) {
                self.samples.pop_front();
            }
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
    let metrics = Arc::new(Mutex::new(AgentMetrics::new(config.max_series)));
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

    let options = KernelOptions {
        // Of 1 fault in stack_sample only, for /pprof/faults.
        user_stacks: true,
        kernel_stacks: true,
        file_tags: false,
        swap: false,
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
        ended: HashSet::new(),
        page_allocations: config.page_allocations,
        // SAFETY: sysconf has no preconditions.
        nanoseconds_per_tick: 1_000_000_000
            / (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64),
        next_update: Duration::ZERO,
        samples: VecDeque::new(),
        now: Duration::ZERO,
        stack_period: config.stack_sample,
        requests: profile_requests,
        symbolizer: Symbolizer::new(),
        _stats: aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map_err(|err| log::warn!("eBPF run-time statistics unavailable: {err}"))
            .ok(),
    };
    let attach = |tracer: &mut Tracer, _single: Option<u32>| {
        // Faults are counted by the kernel per task: the programs run for 1 fault in
        // stack_sample only, for the stacks.
        tracer.attach_faults(true, true, config.stack_sample)?;
        tracer.attach_tracepoint("exit_counts", "sched", "sched_process_exit")?;
        if config.page_allocations {
            tracer.attach_tracepoint("page_alloc", "kmem", "mm_page_alloc")?;
        }
        tracer.attach_tracepoint("oom_kill", "oom", "mark_victim")
    };
    let traced = pipeline::trace(&target, &run_args, options, &attach, &mut feed).await?;
    feed.update(&traced.tracer);
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
