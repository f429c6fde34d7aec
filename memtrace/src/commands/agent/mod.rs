//! `memtrace agent`: always-on, system-wide, low-overhead counters served to Prometheus.
//! Faults are the kernel's own per-task counts (from /proc each second, and from each
//! process's exit), page allocations are counted per process by a program; each second the
//! agent (`feed`) turns them into monotonic counters per (comm, cgroup), bounded in number
//! (`metrics`), served over HTTP (`http`) with a rolling profile of fault stacks (`profile`).
//! Processes the config names are heap-profiled (`heap_feed`): uprobes on their allocators,
//! their stacks' allocations and blocks in use (`heap`), served as Go's heap profiles, and
//! what an OOM-killed one held at its death (`oom_profiles`).
pub mod args;
mod config;
mod feed;
mod heap;
mod heap_feed;
mod heap_targets;
mod http;
mod interned;
mod metrics;
mod oom_profiles;
mod profile;

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use self::{
    args::AgentArgs,
    config::{AgentConfig, Switch},
    feed::{AgentFeed, SwapCounting},
    heap_feed::HeapProfiling,
    http::Sources,
    metrics::AgentMetrics,
};
use crate::{
    host::system_memory::SystemSample,
    kernel::{
        hooks::{self, Attachment, CommandHooks},
        layout::SwapLayout,
    },
    trace::{
        pipeline,
        request::{self, KernelOptions, TargetRequest, TraceRequest},
    },
};

pub const HOOKS: CommandHooks = CommandHooks {
    needs: &[
        &hooks::MINOR_FAULT,
        &hooks::MAJOR_FAULT,
        &hooks::EXIT_COUNTS,
        &hooks::OOM_KILL,
    ],
    // page_allocations = true needs page_alloc; swap = "auto" goes without swap counts;
    // [heap] needs the allocator probes.
    improves: &[
        &hooks::ALLOC_ENTRIES[0],
        &hooks::ALLOC_ENTRIES[1],
        &hooks::ALLOC_ENTRIES[2],
        &hooks::ALLOC_ENTRIES[3],
        &hooks::ALLOC_ENTRIES[4],
        &hooks::ALLOC_ENTRIES[5],
        &hooks::ALLOC_ENTRIES[6],
        &hooks::ALLOC_ENTRIES[7],
        &hooks::ALLOC_ENTRIES[8],
        &hooks::ALLOC_ENTRIES[9],
        &hooks::ALLOC_RETURN,
        &hooks::PAGE_ALLOC,
        &hooks::SWAP_RSS_STAT,
        &hooks::SWAP_WRITE_FOLIO,
        &hooks::LEARN_CPU_OFFSET,
    ],
};

/// The agent's events are few (sampled stacks, process exits, OOM kills): a small ring
/// keeps its memory small (the ring is mapped twice, and counts twice in its RSS).
const RING_BYTES: u32 = 1 << 20;

pub async fn run(args: AgentArgs) -> Result<()> {
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
    let heap = config
        .heap
        .enabled()
        .then(|| HeapProfiling::new(&config.heap));
    let (requests, profile_requests) = mpsc::channel(8);
    let router = http::router(Sources {
        metrics: Arc::clone(&metrics),
        requests,
        heap_profiling: heap.is_some(),
        oom_profiles: heap
            .as_ref()
            .map(|heap| Arc::clone(&heap.oom.latest))
            .unwrap_or_default(),
    });
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            log::error!("HTTP server stopped: {err}");
        }
    });
    eprintln!(
        "memtrace: agent serving /metrics, /pprof/faults{} and /healthz on http://{}",
        if heap.is_some() {
            ", /debug/pprof/heap, /debug/pprof/allocs, /debug/pprof/oom"
        } else {
            ""
        },
        config.listen
    );

    // Swap traffic needs swap: "auto" waits for the host to have some. On kernels whose swap
    // counters memtrace cannot read, "auto" means off (said once); `true` fails.
    let swap_layout = match config.swap {
        Switch::Set(false) => None,
        Switch::Set(true) => Some(SwapLayout::discover()?),
        Switch::Auto => {
            request::swap_layout("memtrace_swap_pages_total is not served (swap = \"auto\")")
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
    // Faults are counted by the kernel per task: the programs run for 1 fault in
    // stack_sample only, for the stacks (/pprof/faults).
    let period = config.stack_sample;
    let mut hooks = vec![
        Attachment::Sampled {
            hook: &hooks::MINOR_FAULT,
            period,
        },
        Attachment::Sampled {
            hook: &hooks::MAJOR_FAULT,
            period,
        },
        Attachment::Hook(&hooks::EXIT_COUNTS),
    ];
    if config.page_allocations {
        hooks.push(Attachment::Hook(&hooks::PAGE_ALLOC));
    }
    if swap_now {
        hooks.extend(hooks::SWAP.into_iter().map(Attachment::Hook));
    }
    hooks.push(Attachment::Hook(&hooks::OOM_KILL));
    let request = TraceRequest {
        declared: &HOOKS,
        target: TargetRequest::System,
        follow_children: false,
        stop_after: args.duration,
        kernel: KernelOptions {
            ring_bytes: RING_BYTES,
            user_stacks: true,
            kernel_stacks: true,
            swap: swap_layout,
            stack_sample_period: config.stack_sample,
            malloc: heap.is_some().then_some(config.heap.sample_bytes),
            ..KernelOptions::default()
        },
        hooks,
    };
    let swap = match swap_setting {
        Switch::Set(false) => SwapCounting::Off,
        _ if swap_now => SwapCounting::On,
        _ => SwapCounting::WhenSwapIsOn,
    };
    let mut feed = AgentFeed::new(metrics, profile_requests, &config, swap, heap);
    let mut traced = pipeline::trace(request, &mut feed).await?;
    feed.update(&mut traced.tracer, &mut traced.processes);
    eprintln!("memtrace: agent stopped");
    Ok(())
}
