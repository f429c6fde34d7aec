//! `memtrace agent`: always-on, system-wide, low-overhead counters served to Prometheus.
//! Faults and page allocations are counted per process in the kernel; each second the agent
//! turns the counts into monotonic counters per (comm, cgroup), bounded in number.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use axum::{routing::get, Router};
use memtrace_common::{PageContext, PageDetail};

use crate::{
    agent_config::AgentConfig,
    agent_metrics::{AgentMetrics, ProcessLabels, Totals},
    bpf::Tracer,
    cli::{AgentArgs, RunArgs, TargetArgs},
    commands::oom::{decode_kill, victim_cgroup},
    events::comm_to_string,
    memcg::MemoryHierarchy,
    pipeline::{self, KernelOptions},
    processes::Processes,
    session::Consumer,
};

/// How often the kernel's counts are read into the metrics.
const UPDATE_EVERY: Duration = Duration::from_secs(1);

/// Reads the kernel's counts into the metrics the HTTP server serves.
struct AgentFeed {
    known: Processes,
    metrics: Arc<Mutex<AgentMetrics>>,
    hierarchy: Option<MemoryHierarchy>,
    /// Each process's memory cgroup, read once.
    cgroups: HashMap<u32, String>,
    next_update: Duration,
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

    fn update(&mut self, tracer: &Tracer) {
        let mut totals: HashMap<u32, (String, Totals)> = HashMap::new();
        if let Ok(faults) = tracer.fault_counts() {
            for (pid, count) in faults {
                let entry = totals.entry(pid).or_default();
                entry.0 = comm_to_string(&count.comm);
                entry.1.minor = count.minor;
                entry.1.major = count.major;
            }
        }
        if let Ok(pages) = tracer.page_counts() {
            for (key, count) in pages {
                let detail = PageDetail::unpack(key.detail);
                let (pid, comm) = match detail.context {
                    PageContext::Interrupt => (0, "[interrupt]".to_owned()),
                    _ => (key.tgid, comm_to_string(&count.comm)),
                };
                let entry = totals.entry(pid).or_default();
                if entry.0.is_empty() {
                    entry.0 = comm;
                }
                entry.1.pages += count.pages;
                entry.1.allocations += count.allocations;
            }
        }
        let labelled: Vec<(u32, ProcessLabels, Totals)> = totals
            .into_iter()
            .map(|(pid, (comm, t))| {
                let name = self.known.name(pid);
                let comm = if name.is_empty() { comm } else { name };
                (pid, self.labels(pid, comm), t)
            })
            .collect();
        let counters = tracer.counters().unwrap_or_default();
        let (run_time, _) = tracer.program_runs();
        let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        for (pid, labels, t) in labelled {
            metrics.update(pid, labels, t);
        }
        metrics.health(counters.lost, run_time.as_secs_f64(), own_rss_bytes());
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

    fn on_record(&mut self, bytes: &[u8]) {
        let Some(kill) = decode_kill(bytes) else {
            self.known.admit(bytes);
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
        if elapsed >= self.next_update {
            self.next_update = elapsed + UPDATE_EVERY;
            self.update(tracer);
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
    let served = Arc::clone(&metrics);
    let router = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&served);
                async move {
                    let text = metrics.lock().unwrap_or_else(|e| e.into_inner()).render();
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            log::error!("HTTP server stopped: {err}");
        }
    });
    eprintln!(
        "memtrace: agent serving /metrics and /healthz on http://{}",
        config.listen
    );

    let options = KernelOptions {
        user_stacks: false,
        kernel_stacks: false,
        file_tags: false,
        swap: false,
        malloc: None,
        pages: true,
        stack_sample_period: config.stack_sample,
        count_faults: true,
        oom: true,
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
        next_update: Duration::ZERO,
        _stats: aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map_err(|err| log::warn!("eBPF run-time statistics unavailable: {err}"))
            .ok(),
    };
    let attach = |tracer: &mut Tracer, _single: Option<u32>| {
        tracer.attach_faults(true, true, 1)?;
        tracer.attach_tracepoint("page_alloc", "kmem", "mm_page_alloc")?;
        tracer.attach_tracepoint("oom_kill", "oom", "mark_victim")
    };
    let traced = pipeline::trace(&target, &run_args, options, &attach, &mut feed).await?;
    feed.update(&traced.tracer);
    eprintln!("memtrace: agent stopped");
    Ok(())
}
