//! The flow every tracing subcommand shares: check privileges, resolve the target, load and
//! attach, release a gated command, trace until a stop condition, collect how the command ended.
//! A subcommand supplies only its hooks (`attach`) and its `Consumer`.
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{
    bpf::{KernelConfig, Tracer},
    cli::{RunArgs, TargetArgs},
    drain::Drain,
    features,
    kernel_layout::SwapLayout,
    launch::ChildExit,
    mmap_records::{MmapWatch, WatchScope},
    report::CommandExit,
    session::{self, Consumer, StopWhen},
    system,
    target::Target,
    watch::ProcessWatch,
};

/// Ring buffer size for tracing every event: at a fault storm's ~500k events/s of 64 bytes, 8 MiB holds a quarter second.
pub const RING_BYTES: u32 = 8 << 20;
pub const STACK_ENTRIES: u32 = 16384;
/// Per-process page allocation counts (one entry per process and kind of allocation).
pub const PAGE_COUNT_ENTRIES: u32 = 16384;

/// The size of the tables that grow with what is traced (stacks, page allocation counts),
/// from MEMTRACE_MAX_MAP_ENTRIES, as bpftrace takes BPFTRACE_MAX_MAP_KEYS: to bound the
/// kernel memory memtrace takes, or to see what a full table does (counted and reported).
fn max_table_entries() -> Result<Option<u32>> {
    let Ok(text) = std::env::var("MEMTRACE_MAX_MAP_ENTRIES") else {
        return Ok(None);
    };
    match text.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(crate::error::usage(format!(
            "MEMTRACE_MAX_MAP_ENTRIES={text}: not a positive number of entries"
        ))),
    }
}

/// Where this kernel keeps the counters swap counting reads, when memtrace can read them;
/// when not, says so (`instead`: what the subcommand still does without) and the subcommand
/// goes on without.
pub fn swap_layout(instead: &str) -> Option<SwapLayout> {
    match SwapLayout::discover() {
        Ok(layout) => Some(layout),
        Err(err) => {
            eprintln!("memtrace: no per-process swap counts on this kernel ({err:#}); {instead}");
            None
        }
    }
}

/// What a subcommand asks of the kernel side beyond its hooks.
#[derive(Debug, Clone, Copy)]
pub struct KernelOptions {
    /// The event ring's size (a power of two).
    pub ring_bytes: u32,
    pub user_stacks: bool,
    pub kernel_stacks: bool,
    /// Name the file of each file fault in the kernel (see `KernelConfig::file_tags`).
    pub file_tags: bool,
    /// Count swap traffic per owner, reading the kernel's counters where this layout (from
    /// BTF: [`swap_layout`]) says.
    pub swap: Option<SwapLayout>,
    /// Heap allocations through uprobes: None when not traced; Some(N) samples 1 point per
    /// N bytes on average (0: every block).
    pub malloc: Option<u64>,
    /// Kernel page allocations.
    pub pages: bool,
    /// ...with their stacks (as user_stacks and kernel_stacks say), or counted only.
    pub page_stacks: bool,
    /// Take stacks for 1 event in N where a program samples itself (pages, counted faults).
    pub stack_sample_period: u64,
    /// Report each process's lifetime fault counts when it ends (the agent).
    pub exits: bool,
    /// OOM kills.
    pub oom: bool,
}

/// What a finished trace hands back to the subcommand.
pub struct Traced {
    pub tracer: Tracer,
    pub attach_ms: f64,
    pub target: String,
    pub duration: Duration,
    pub exit: Option<CommandExit>,
}

pub async fn trace(
    target_args: &TargetArgs,
    run_args: &RunArgs,
    options: KernelOptions,
    attach: &dyn Fn(&mut Tracer, Option<u32>) -> Result<()>,
    consumer: &mut dyn Consumer,
) -> Result<Traced> {
    let started = Instant::now();
    system::check_privileges()?;
    let target = Target::resolve(target_args)?;
    system::ensure_tracefs()?;
    system::raise_memlock_limit();
    system::raise_open_files_limit();

    features::check(matches!(target, Target::Cgroup { .. }))?;
    let mut options = options;
    if options.file_tags && !system::tracepoint_exists("filemap/mm_filemap_fault") {
        // Older kernels (6.1) lack it: file faults are then named by the mapping at the
        // address, from /proc/PID/maps, which misses a file mapped and unmapped in between.
        eprintln!(
            "memtrace: this kernel has no filemap:mm_filemap_fault tracepoint; file faults are \
             named by their mappings in /proc/PID/maps instead"
        );
        options.file_tags = false;
    }
    let table_entries = max_table_entries()?;
    let config = KernelConfig {
        filter: target.filter(),
        follow_children: target_args.follow_children,
        file_tags: options.file_tags,
        user_stacks: options.user_stacks,
        page_stacks: options.page_stacks,
        kernel_stacks: options.kernel_stacks,
        ring_bytes: options.ring_bytes,
        malloc: options.malloc,
        pages: if options.pages {
            Some(crate::kernel_layout::PageTracing::discover()?)
        } else {
            None
        },
        stack_sample_period: options.stack_sample_period,
        exits: if options.exits {
            Some(crate::kernel_layout::ExitLayout::discover()?)
        } else {
            None
        },
        oom: if options.oom {
            Some(crate::kernel_layout::OomTracing::discover()?)
        } else {
            None
        },
        swap: options.swap,
        // No stacks, no need for the stack maps' memory (the kernel needs at least one entry).
        stack_entries: if options.user_stacks || options.kernel_stacks {
            table_entries.unwrap_or(STACK_ENTRIES)
        } else {
            1
        },
        page_count_entries: table_entries.unwrap_or(PAGE_COUNT_ENTRIES),
    };
    log::debug!("checked, {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
    let mut tracer = Tracer::load(&config)?;
    log::debug!(
        "maps created, {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let logger = tracer.init_logger();
    let single = config.single_process();
    if config.file_tags {
        // Before the fault programs: each file fault finds its file's tag.
        tracer.attach_tracepoint("filemap_fault", "filemap", "mm_filemap_fault")?;
    }
    attach(&mut tracer, single)?;
    tracer.attach_tracepoint("process_exec", "sched", "sched_process_exec")?;
    tracer.attach_tracepoint("task_newtask", "task", "task_newtask")?;
    if matches!(config.filter, crate::bpf::Filter::Tgids(_)) {
        // Traced processes leave the filter as they exit, so a reused pid is not traced.
        tracer.attach_tracepoint("process_exit", "sched", "sched_process_exit")?;
    }
    let mut drain = Drain::new(tracer.take_events()?, watch_mappings(&target))?;

    let description = target.describe();
    let (child, exits) = match target {
        Target::Command(gated) => {
            // Its map now is memtrace's own image (forked, not yet exec'd): faults before exec
            // classify against it; the exec event then replaces it with the command's.
            consumer.on_targets(&[gated.pid]);
            let child = gated.release()?;
            let watch = ProcessWatch::new(child.pid);
            (Some(child), watch.into_iter().collect())
        }
        Target::Pids(pids) => {
            consumer.on_targets(&pids);
            (
                None,
                pids.iter()
                    .filter_map(|&pid| ProcessWatch::new(pid))
                    .collect(),
            )
        }
        _ => (None, Vec::new()),
    };
    let attach_ms = started.elapsed().as_secs_f64() * 1e3;
    eprintln!(
        "memtrace: tracing {description}; attached in {attach_ms:.0} ms{}",
        if child.is_some() {
            ""
        } else {
            "; Ctrl-C to stop"
        }
    );

    let stop = StopWhen {
        deadline: run_args.duration,
        exits,
    };
    let (reason, duration) = session::run(&mut drain, logger, consumer, &stop, &mut tracer).await?;

    let exit = child.map(|child| {
        // After Ctrl-C the command got the signal too; give it a moment to finish.
        let deadline = Instant::now() + Duration::from_secs(2);
        let status = loop {
            match child.try_wait() {
                Some(status) => break Some(status),
                None if Instant::now() >= deadline => break None,
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        CommandExit {
            pid: child.pid,
            command: child.argv.clone(),
            exit_code: match status {
                Some(ChildExit::Code(code)) => Some(code),
                _ => None,
            },
            signal: match status {
                Some(ChildExit::Signal(signal)) => Some(signal),
                _ => None,
            },
        }
    });
    let targets_full = tracer.counters().map_or(0, |c| c.targets_full);
    if targets_full > 0 {
        log::warn!("{targets_full} child processes were not traced: the target set is full");
    }
    log::debug!("stopped: {reason:?}");
    Ok(Traced {
        tracer,
        attach_ms,
        target: description,
        duration,
        exit,
    })
}

/// The kernel's records of executable mappings, for the symbols of processes that exit before
/// their maps can be read: the command and everything it starts, or every process when
/// tracing the whole system. Given pids and cgroups are long-lived and read on demand. Without
/// the records (perf events unavailable), such processes may lack library symbols.
fn watch_mappings(target: &Target) -> Option<MmapWatch> {
    let scope = match target {
        Target::Command(gated) => WatchScope::Process(gated.pid),
        Target::System => WatchScope::System,
        Target::Pids(_) | Target::Cgroup { .. } => return None,
    };
    MmapWatch::open(scope)
        .map_err(|err| log::warn!("{err:#}; short-lived processes may lack library symbols"))
        .ok()
}
