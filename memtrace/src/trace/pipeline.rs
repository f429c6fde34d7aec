//! The flow every tracing subcommand shares: check privileges, resolve the target, load and
//! attach, release a gated command, trace until a stop condition, collect how the command ended.
//! A subcommand supplies only its request (hooks and options) and its `Consumer`.
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::{
    error::usage,
    kernel::{
        access,
        config::{Filter, KernelConfig},
        features,
        hooks::{self, Attachment, CommandHooks, Hook, Layout},
        layout::{ExitLayout, OomTracing, PageTracing},
        tracefs,
        tracer::Tracer,
        uprobe_lock::UprobeLock,
    },
    report::{CommandExit, ReportHeader, TracerCost, UnwindReport},
    trace::{
        command_end,
        consumer::Consumer,
        drain::Drain,
        launch::ChildExit,
        mapping_records::{MappingRecords, MappingScope},
        processes::Processes,
        program_files,
        request::TraceRequest,
        session::{self, StopWhen},
        target::Target,
        target_exit::TargetExit,
    },
    unwind::{store::Capacity, UnwindMode, Unwinder},
};

/// The hooks the pipeline attaches for every subcommand: processes' execs and forks, and for
/// traced pids their exits (so a reused pid is not traced).
pub const HOOKS: CommandHooks = CommandHooks {
    needs: &[
        &hooks::PROCESS_EXEC,
        &hooks::TASK_NEWTASK,
        &hooks::PROCESS_EXIT,
    ],
    improves: &[],
};

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
        _ => Err(usage(format!(
            "MEMTRACE_MAX_MAP_ENTRIES={text}: not a positive number of entries"
        ))),
    }
}

/// What a finished trace hands back to the subcommand.
pub struct Traced {
    pub tracer: Tracer,
    /// What is known of the traced processes (names, maps), to name stacks with.
    pub processes: Processes,
    pub attach_ms: f64,
    pub target: String,
    pub duration: Duration,
    pub exit: Option<CommandExit>,
    /// Whether each of the request's attachments was made (an uprobe site that is not
    /// required may not be).
    pub attached: Vec<bool>,
    /// Whether user stacks were taken.
    pub user_stacks: bool,
    /// The tables given to the kernel when user stacks were unwound with them (None: by
    /// frame pointers, `--unwind fp`, or no user stacks).
    pub unwinder: Option<Unwinder>,
}

impl Drop for Traced {
    /// The report is out: memtrace need not wait for the kernel to detach its uprobes.
    fn drop(&mut self) {
        self.tracer.hand_off_detach();
    }
}

impl Traced {
    /// The header of `command`'s report: what was traced, for how long, what was lost, and
    /// what tracing cost memtrace so far.
    pub fn header(&self, command: &'static str) -> ReportHeader {
        ReportHeader {
            command,
            target: self.target.clone(),
            duration_s: self.duration.as_secs_f64(),
            lost_events: self.tracer.counters().map_or(0, |c| c.lost),
            exit: self.exit.clone(),
            tracer: self.cost(),
            unwind: self.unwind_report(),
        }
    }

    /// How the user stacks were walked, from the kernel's counts of how walks ended.
    pub fn unwind_report(&self) -> Option<UnwindReport> {
        if !self.user_stacks {
            return None;
        }
        let counters = self.tracer.counters().ok()?;
        if counters.unwind_requests_lost > 0 {
            log::warn!(
                "{} requests for unwind tables were lost (ring buffer full): some processes' \
                 stacks stop early",
                counters.unwind_requests_lost
            );
        }
        let mode = match self.unwinder {
            Some(_) => UnwindMode::Dwarf,
            None => UnwindMode::Fp,
        };
        Some(UnwindReport::new(
            mode,
            &counters,
            self.unwinder.as_ref().map(Unwinder::figures),
            self.unwinder.as_ref().map(|u| u.python.figures.clone()),
        ))
    }

    /// memtrace's usage so far, from getrusage(RUSAGE_SELF), and its programs' run time.
    fn cost(&self) -> TracerCost {
        let stats_on = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .is_ok_and(|v| v.trim() == "1");
        let runs = stats_on.then(|| self.tracer.program_runs());
        // SAFETY: getrusage writes into the struct given, which is plain data.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        TracerCost {
            attach_ms: self.attach_ms,
            cpu_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
            max_rss_kb: usage.ru_maxrss as u64,
            bpf_run_s: runs.map(|(time, _)| time.as_secs_f64()),
            bpf_runs: runs.map(|(_, count)| count),
        }
    }
}

pub async fn trace(request: TraceRequest, consumer: &mut dyn Consumer) -> Result<Traced> {
    let started = Instant::now();
    access::check_privileges()?;
    let target = Target::resolve(&request.target, request.follow_children)?;
    tracefs::ensure_tracefs()?;
    access::raise_memlock_limit();
    access::raise_open_files_limit();

    features::check(matches!(target, Target::Cgroup { .. }))?;
    check_declared(&request)?;
    let config = kernel_config(&request, &target)?;
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
        tracer.attach_hook(&hooks::FILEMAP_FAULT)?;
    }
    if single.is_none() {
        say_uprobes_trap_everywhere(&request.hooks);
    }
    let uprobes = (request.hooks.iter()).any(|a| matches!(a, Attachment::Uprobes(_)));
    let lock = uprobes.then(UprobeLock::exclusive).flatten();
    let attached = (request.hooks.iter())
        .map(|attachment| tracer.attach(attachment, single))
        .collect::<Result<Vec<bool>>>()?;
    drop(lock);
    tracer.attach_hook(&hooks::PROCESS_EXEC)?;
    tracer.attach_hook(&hooks::TASK_NEWTASK)?;
    if matches!(config.filter, Filter::Tgids(_)) {
        // Traced processes leave the filter as they exit, so a reused pid is not traced.
        tracer.attach_hook(&hooks::PROCESS_EXIT)?;
    }
    let unwinder = match config.unwind_tables() {
        Some(capacity) => Some(Unwinder::new(
            &mut tracer,
            capacity,
            request.kernel.python_frames,
        )?),
        None => None,
    };
    let mut drain = Drain::new(tracer.take_events()?, watch_mappings(&target), unwinder)?;

    let description = target.describe();
    let (child, exits) = match target {
        Target::Command(gated) => {
            // Its map now is memtrace's own image (forked, not yet exec'd): faults before exec
            // classify against it; the exec event then replaces it with the command's.
            drain.processes.capture(&[gated.pid]);
            consumer.on_targets(&[gated.pid]);
            if let Some(unwinder) = drain.unwinder.as_mut() {
                unwinder.prebuild(&program_files::of_command(gated.argv()));
            }
            let child = gated.release()?;
            let watch = TargetExit::new(child.pid);
            (Some(child), watch.into_iter().collect())
        }
        Target::Pids(pids) => {
            drain.processes.capture(&pids);
            if let Some(unwinder) = drain.unwinder.as_mut() {
                // Their stacks are whole from the first event.
                for &pid in &pids {
                    unwinder.load(pid);
                }
            }
            consumer.on_targets(&pids);
            (
                None,
                pids.iter()
                    .filter_map(|&pid| TargetExit::new(pid))
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
        deadline: request.stop_after,
        exits,
    };
    let (reason, duration) = session::run(&mut drain, logger, consumer, &stop, &mut tracer).await?;

    let exit = child.map(|child| {
        let mut tree = vec![child.pid];
        if request.follow_children {
            tree.extend(drain.processes.forked().iter().copied());
        }
        let status = command_end::finish(&child, reason, &tree);
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
        processes: drain.processes,
        attach_ms,
        target: description,
        duration,
        exit,
        attached,
        user_stacks: config.user_stacks,
        unwinder: drain.unwinder,
    })
}

/// Every hook the request attaches is among those its subcommand declares (for `memtrace
/// check`): a hook attached but not declared is memtrace's own mistake, refused here.
fn check_declared(request: &TraceRequest) -> Result<()> {
    let declared = |hook: &Hook| {
        (request.declared.needs.iter())
            .chain(request.declared.improves)
            .any(|d| *d == hook)
    };
    match (request.hooks.iter())
        .flat_map(Attachment::hooks)
        .find(|hook| !declared(hook))
    {
        Some(hook) => bail!(
            "internal error: the {} program is attached but not declared in its subcommand's \
             HOOKS",
            hook.program
        ),
        None => Ok(()),
    }
}

/// The kernel side's configuration for this request and target: its options, the tables'
/// sizes, and the kernel layouts its hooks read (found now, in BTF and tracefs).
fn kernel_config(request: &TraceRequest, target: &Target) -> Result<KernelConfig> {
    let mut options = request.kernel;
    if options.file_tags && !tracefs::tracepoint_exists(&file_tagger_event()) {
        // Older kernels (6.1) lack it: file faults are then named by the mapping at the
        // address, from /proc/PID/maps, which misses a file mapped and unmapped in between.
        log::warn!(
            "this kernel has no filemap:mm_filemap_fault tracepoint; file faults are named by \
             their mappings in /proc/PID/maps instead"
        );
        options.file_tags = false;
    }
    let reads = |layout: Layout| {
        request
            .hooks
            .iter()
            .flat_map(Attachment::hooks)
            .any(|hook: &Hook| hook.reads == Some(layout))
    };
    let table_entries = max_table_entries()?;
    Ok(KernelConfig {
        filter: target.filter(),
        follow_children: request.follow_children,
        file_tags: options.file_tags,
        user_stacks: options.user_stacks,
        page_stacks: options.page_stacks,
        kernel_stacks: options.kernel_stacks,
        ring_bytes: options.ring_bytes,
        malloc: options.malloc,
        pages: reads(Layout::Pages)
            .then(PageTracing::discover)
            .transpose()?,
        stack_sample_period: options.stack_sample_period,
        exits: reads(Layout::Exits)
            .then(ExitLayout::discover)
            .transpose()?,
        oom: reads(Layout::Oom).then(OomTracing::discover).transpose()?,
        swap: options.swap,
        // No stacks, no need for the stack maps' memory (the kernel needs at least one entry).
        stack_entries: if options.user_stacks || options.kernel_stacks {
            table_entries.unwrap_or(STACK_ENTRIES)
        } else {
            1
        },
        page_count_entries: table_entries.unwrap_or(PAGE_COUNT_ENTRIES),
        unwind: options.unwind_memory_mib.map(Capacity::of_mib),
    })
}

/// `filemap/mm_filemap_fault`: the event the file tagger attaches to.
fn file_tagger_event() -> String {
    hooks::FILEMAP_FAULT.tracefs_event().unwrap_or_default()
}

/// Uprobes (memtrace's are on allocator functions) for more than one process break in every
/// process that maps the library, traced or not.
fn say_uprobes_trap_everywhere(attachments: &[Attachment]) {
    let Some(site) = attachments.iter().find_map(|attachment| match attachment {
        Attachment::Uprobes(site) => Some(site),
        _ => None,
    }) else {
        return;
    };
    log::warn!(
        "note: more than one process is traced (a command's children are), so every process \
         using {} traps on each allocator call while memtrace runs (about 1 µs each); one \
         --pid, or --no-follow-children for a command, limits that to one process",
        site.library.display()
    );
}

/// The kernel's records of executable mappings, for the symbols of processes that exit before
/// their maps can be read (and, for a command, of shared ones, for their regions): the command
/// and everything it starts, or every process when tracing the whole system. Given pids and
/// cgroups are long-lived and read on demand. Without the records (perf events unavailable),
/// such processes may lack library symbols.
fn watch_mappings(target: &Target) -> Option<MappingRecords> {
    let scope = match target {
        Target::Command(gated) => MappingScope::Process(gated.pid),
        Target::System => MappingScope::System,
        Target::Pids(_) | Target::Cgroup { .. } => return None,
    };
    MappingRecords::open(scope)
        .map_err(|err| log::warn!("{err:#}; short-lived processes may lack library symbols"))
        .ok()
}
