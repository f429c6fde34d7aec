//! Loading the embedded eBPF object, configuring it and attaching its programs. Subcommands pick
//! hooks here; everything downstream (drain, aggregation, output) is shared.
use std::path::Path;

use crate::kernel_layout::{ExitLayout, OomTracing, PageTracing, SwapLayout};
use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf, StackTraceMap},
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        uprobe::{UProbeAttachLocation, UProbeScope},
        PerfEvent, RawTracePoint, RawTracePointRunOptions, TestRun, TracePoint, UProbe,
    },
    util::online_cpus,
    Ebpf, EbpfLoader,
};
use memtrace_common::{
    counter, filter_mode, stack_flags, PageCount, PageCountCache, PageKey, SwapCounts, UserStack,
    MAX_TARGETS,
};

/// The object built by build.rs from memtrace-ebpf (empty when built with MEMTRACE_SKIP_EBPF=1).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));

/// Which tasks the kernel side records.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Every task.
    All,
    /// Tasks of these processes (more can be added while tracing).
    Tgids(Vec<u32>),
    /// Tasks in this cgroup v2 (by id, at this depth below the root) or below it.
    Cgroup { id: u64, level: u32 },
}

/// Everything fixed at load time.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    pub filter: Filter,
    pub follow_children: bool,
    /// Name the file each file fault was served from, in the kernel (see memtrace-ebpf's
    /// `filetag`). Only sound when every fault's program runs (all kinds, no sampling).
    pub file_tags: bool,
    pub user_stacks: bool,
    pub kernel_stacks: bool,
    /// Page allocations take stacks (as user_stacks and kernel_stacks say).
    pub page_stacks: bool,
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_bytes: u32,
    /// Stacks the stack map can hold.
    pub stack_entries: u32,
    /// Per-process page allocation counts the table can hold.
    pub page_count_entries: u32,
    /// Swap accounting: where the kernel keeps the counters it reads (None: not used, and its
    /// maps get one entry).
    pub swap: Option<SwapLayout>,
    /// Heap allocations through uprobes (its maps get their full size): None when not
    /// traced; Some(N) samples 1 point per N bytes (0: every block).
    pub malloc: Option<u64>,
    /// Kernel page allocations (its maps get their full size): None when not traced.
    pub pages: Option<PageTracing>,
    /// OOM kills: None when not traced.
    pub oom: Option<OomTracing>,
    /// Programs that sample themselves take stacks for 1 event in this many.
    pub stack_sample_period: u64,
    /// Processes' lifetime fault counts at their exit (the agent): None when not traced.
    pub exits: Option<ExitLayout>,
}

impl KernelConfig {
    /// The one process the trace covers, if it is one (no children followed): uprobes then
    /// break in that process only, and the programs' filter compares with it (no lookup).
    pub fn single_process(&self) -> Option<u32> {
        match &self.filter {
            Filter::Tgids(pids) if pids.len() == 1 && !self.follow_children => Some(pids[0]),
            _ => None,
        }
    }

    /// Wake the reader once an eighth of the ring is filled; the reader's timer drains the rest.
    fn wakeup_bytes(&self) -> u64 {
        u64::from(self.ring_bytes / 8)
    }
}

/// The allocation sampler's exponential distances: -ln(u) in 16.16 fixed point, for u spread
/// evenly over (0, 1) (see memtrace-ebpf's `malloc::interval`).
fn exponential_table() -> [u32; 1024] {
    std::array::from_fn(|i| {
        let u = (i as f64 + 0.5) / 1024.0;
        (-u.ln() * 65536.0).round() as u32
    })
}

/// aya's error for an unreadable CPU list (which file, why).
fn cpu_list_error((what, err): (&'static str, std::io::Error)) -> anyhow::Error {
    anyhow::anyhow!("reading {what}: {err}")
}

/// Kernel-side drops and errors, summed over CPUs.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelCounters {
    /// Events that passed the filter (delivered or lost).
    pub seen: u64,
    pub lost: u64,
    pub stack_errors: u64,
    pub targets_full: u64,
    pub alloc_calls_untracked: u64,
    pub page_counts_full: u64,
}

pub struct Tracer {
    ebpf: Ebpf,
}

impl Tracer {
    pub fn load(config: &KernelConfig) -> Result<Self> {
        if OBJECT.is_empty() {
            bail!("this memtrace was built without its eBPF programs (MEMTRACE_SKIP_EBPF=1); rebuild it without that variable");
        }
        let (mode, cgroup_id, cgroup_level) = match config.filter {
            Filter::All => (filter_mode::ALL, 0u64, 0u32),
            Filter::Tgids(_) => (filter_mode::TGIDS, 0, 0),
            Filter::Cgroup { id, level } => (filter_mode::CGROUP, id, level),
        };
        let stacks = if config.user_stacks {
            stack_flags::USER
        } else {
            0
        } | if config.kernel_stacks {
            stack_flags::KERNEL
        } else {
            0
        } | if config.page_stacks {
            stack_flags::PAGE_ALLOCS
        } else {
            0
        };
        let follow = u32::from(config.follow_children);
        let single_tgid = config.single_process().unwrap_or(0);
        let wakeup = config.wakeup_bytes();
        let self_tgid = std::process::id();
        let file_tags = u32::from(config.file_tags);
        // Maps a subcommand does not use get one entry: they are created (and preallocated)
        // at load whether used or not.
        let sized = |used: bool, entries: u32| if used { entries } else { 1 };
        let swap = config.swap.is_some();
        let sample_bytes = config.malloc.unwrap_or(0);
        let pages = config.pages.unwrap_or_default();
        let oom = config.oom.unwrap_or_default();
        let swap_entries = sized(swap, MAX_TARGETS);
        // Zeros when swap is not traced: its programs are never attached.
        let layout = config.swap.unwrap_or_default();
        let swap_page = layout.do_swap_page.unwrap_or((0, 0));
        let possible_cpus = aya::util::nr_cpus().map_err(cpu_list_error)? as u32;
        let ebpf = EbpfLoader::new()
            .override_global("FILTER_MODE", &mode, true)
            .override_global("STACK_FLAGS", &stacks, true)
            .override_global("CGROUP_ID", &cgroup_id, true)
            .override_global("CGROUP_LEVEL", &cgroup_level, true)
            .override_global("FOLLOW_CHILDREN", &follow, true)
            .override_global("SINGLE_TGID", &single_tgid, true)
            .override_global("WAKEUP_BYTES", &wakeup, true)
            .override_global("SELF_TGID", &self_tgid, true)
            .override_global("FILE_TAGS", &file_tags, true)
            .override_global("DO_SWAP_PAGE_START", &swap_page.0, true)
            .override_global("DO_SWAP_PAGE_END", &swap_page.1, true)
            .override_global("MM_SWAP_COUNTER", &u64::from(layout.swap_counter), true)
            .override_global("COUNTER_COUNT", &u64::from(layout.counter_count), true)
            .override_global("COUNTER_PERCPU", &u64::from(layout.counter_percpu), true)
            .override_global("TASK_MM", &u64::from(layout.task_mm), true)
            .override_global(
                "ARRAY_PERCPU_BASE",
                &u64::from(layout.array_percpu_base),
                true,
            )
            .override_global("NR_CPUS", &possible_cpus, true)
            .override_global(
                "ORIG_AX",
                &u64::from(layout.fault_error_code.unwrap_or(0)),
                true,
            )
            .map_max_entries("EVENTS", config.ring_bytes)
            .map_max_entries("STACKS", config.stack_entries.max(1))
            .map_max_entries("USER_STACKS", config.stack_entries.max(1))
            .map_max_entries("FILE_FAULTS", sized(config.file_tags, 4096))
            .map_max_entries("SWAP_COUNTS", swap_entries)
            .map_max_entries("MM_STATE", swap_entries)
            .map_max_entries("SWAP_STAGED", sized(swap, 4096))
            .map_max_entries("CPU_OFFSETS", sized(swap, possible_cpus))
            .override_global("SAMPLE_BYTES", &sample_bytes, true)
            .override_global("SAMPLE_PERIOD", &config.stack_sample_period, true)
            .override_global(
                "EXIT_LAYOUT",
                &config.exits.unwrap_or_default().fields,
                true,
            )
            .override_global("TASK_FLAGS", &u64::from(pages.task_flags), true)
            .override_global("TASK_STACK", &u64::from(pages.task_stack), true)
            .override_global("REGS_SP", &u64::from(pages.regs_sp), true)
            .override_global("OOM_FIELDS", &oom.fields, true)
            .override_global("MEMCG_CHAIN", &oom.memcg_chain, true)
            .map_max_entries(
                "PAGE_COUNTS",
                sized(config.pages.is_some(), config.page_count_entries),
            )
            .override_global("EXP_TABLE", &exponential_table(), true)
            .map_max_entries(
                "PENDING_ALLOCS",
                sized(config.malloc.is_some(), memtrace_common::PENDING_SLOTS),
            )
            .map_max_entries("SAMPLE_COUNTDOWN", sized(sample_bytes > 0, 16384))
            .map_max_entries("SAMPLED_BLOCKS", sized(sample_bytes > 0, 1 << 20))
            .load(OBJECT)
            .context("loading the eBPF maps and programs failed")?;
        let mut tracer = Self { ebpf };
        if swap {
            tracer.learn_cpu_offsets()?;
        }
        if let Filter::Tgids(tgids) = &config.filter {
            for &tgid in tgids {
                tracer.add_target(tgid)?;
            }
        }
        Ok(tracer)
    }

    /// Starts forwarding the eBPF programs' log records to `log` (seen with -v).
    pub fn init_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        match aya_log::EbpfLogger::init(&mut self.ebpf) {
            Ok(logger) => Some(logger),
            Err(err) => {
                log::debug!("eBPF log not available: {err}");
                None
            }
        }
    }

    pub fn add_target(&mut self, tgid: u32) -> Result<()> {
        let mut targets: HashMap<_, u32, u8> = HashMap::try_from(self.map_mut("TARGET_TGIDS")?)?;
        targets
            .insert(tgid, 1, 0)
            .with_context(|| format!("adding pid {tgid} to the kernel filter"))
    }

    /// Attaches the page-fault programs on every CPU; `period` 1 records every fault, N one in N.
    pub fn attach_faults(&mut self, minor: bool, major: bool, period: u64) -> Result<()> {
        let cpus = online_cpus().map_err(cpu_list_error)?;
        for (enabled, name, event) in [
            (minor, "minor_fault", SoftwareEvent::PageFaultsMin),
            (major, "major_fault", SoftwareEvent::PageFaultsMaj),
        ] {
            if !enabled {
                continue;
            }
            let program: &mut PerfEvent = self.program(name)?.try_into()?;
            program
                .load()
                .with_context(|| format!("the kernel rejected the {name} program"))?;
            for &cpu in &cpus {
                program
                    .attach(
                        PerfEventConfig::Software(event),
                        PerfEventScope::AllProcessesOneCpu { cpu },
                        SamplePolicy::Period(period),
                        false,
                    )
                    .with_context(|| {
                        format!("attaching {name} to the page-fault event on CPU {cpu}")
                    })?;
            }
        }
        Ok(())
    }

    /// Attaches a tracepoint program (`category:name`).
    pub fn attach_tracepoint(&mut self, program: &str, category: &str, name: &str) -> Result<()> {
        let tracepoint: &mut TracePoint = self.program(program)?.try_into()?;
        tracepoint
            .load()
            .with_context(|| format!("the kernel rejected the {program} program"))?;
        tracepoint
            .attach(category, name)
            .with_context(|| format!("attaching to tracepoint {category}:{name}"))?;
        Ok(())
    }

    pub fn attach_raw_tracepoint(&mut self, program: &str, name: &str) -> Result<()> {
        let tracepoint: &mut RawTracePoint = self.program(program)?.try_into()?;
        tracepoint
            .load()
            .with_context(|| format!("the kernel rejected the {program} program"))?;
        tracepoint
            .attach(name)
            .with_context(|| format!("attaching to raw tracepoint {name}"))?;
        Ok(())
    }

    /// Runs memtrace-ebpf's `learn_cpu_offset` on each online CPU, so programs can read the
    /// per-CPU parts of kernel counters (see there).
    fn learn_cpu_offsets(&mut self) -> Result<()> {
        let cpus = online_cpus().map_err(cpu_list_error)?;
        let program: &mut RawTracePoint = self.program("learn_cpu_offset")?.try_into()?;
        program
            .load()
            .context("the kernel rejected the learn_cpu_offset program")?;
        for &cpu in &cpus {
            let mut options = RawTracePointRunOptions::new();
            options.cpu = Some(cpu);
            let result = program
                .test_run(options)
                .with_context(|| format!("learning CPU {cpu}'s per-CPU offset"))?;
            if result.return_value != 0 {
                bail!("could not learn CPU {cpu}'s per-CPU offset");
            }
        }
        let offsets: Array<_, u64> = Array::try_from(self.map("CPU_OFFSETS")?)?;
        let mut seen = std::collections::HashSet::new();
        for &cpu in &cpus {
            let offset = offsets.get(&cpu, 0)?;
            // Distinct and non-zero, or the reading went wrong: refuse rather than miscount.
            if offset == 0 || !seen.insert(offset) {
                bail!("CPU {cpu}'s per-CPU offset came out as {offset:#x}: this kernel's per-CPU layout is not supported");
            }
            log::debug!("CPU {cpu}: per-CPU offset {offset:#x}");
        }
        Ok(())
    }

    /// Total run time and runs of memtrace's attached programs (zero unless the kernel keeps
    /// run-time statistics).
    pub fn program_runs(&self) -> (std::time::Duration, u64) {
        self.ebpf
            .programs()
            .filter_map(|(_, program)| program.info().ok())
            .fold((std::time::Duration::ZERO, 0), |(time, runs), info| {
                (time + info.run_time(), runs + info.run_count())
            })
    }

    /// Attaches uprobe (or uretprobe) `program` to `symbol` (plus `offset` bytes) in `library`,
    /// loading the program the first time. With `process`, the breakpoint is set in that
    /// process only; without, in every process that maps the library (the programs' target
    /// filter narrows what they record, but every call traps).
    pub fn attach_uprobe(
        &mut self,
        program: &str,
        symbol: &str,
        offset: u64,
        library: &Path,
        process: Option<u32>,
    ) -> Result<()> {
        let probe: &mut UProbe = self.program(program)?.try_into()?;
        if probe.fd().is_err() {
            probe
                .load()
                .with_context(|| format!("the kernel rejected the {program} program"))?;
        }
        probe
            .attach(
                UProbeAttachLocation::SymbolOffset(symbol, offset),
                library,
                process
                    .and_then(std::num::NonZeroU32::new)
                    .map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess),
            )
            .with_context(|| format!("attaching to {symbol} in {}", library.display()))?;
        Ok(())
    }

    /// The event ring buffer, for the drain (can be taken once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .context("EVENTS map missing or already taken")?;
        Ok(RingBuf::try_from(map)?)
    }

    pub fn counters(&self) -> Result<KernelCounters> {
        let map = self.map("COUNTERS")?;
        let counters: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        let sum = |index: u32| -> Result<u64> { Ok(counters.get(&index, 0)?.iter().sum()) };
        Ok(KernelCounters {
            seen: sum(counter::SEEN)?,
            lost: sum(counter::LOST)?,
            stack_errors: sum(counter::STACK_ERRORS)?,
            targets_full: sum(counter::TARGETS_FULL)?,
            alloc_calls_untracked: sum(counter::ALLOC_CALLS_UNTRACKED)?,
            page_counts_full: sum(counter::PAGE_COUNTS_FULL)?,
        })
    }

    /// Swap traffic per owning process (pid 0: not attributed yet), summed over CPUs.
    pub fn swap_counts(&self) -> Result<std::collections::HashMap<u32, SwapCounts>> {
        let map = self.map("SWAP_COUNTS")?;
        let counts: PerCpuHashMap<_, u32, SwapCounts> = PerCpuHashMap::try_from(map)?;
        let mut totals = std::collections::HashMap::new();
        for entry in counts.iter() {
            let (pid, per_cpu) = entry?;
            let total: &mut SwapCounts = totals.entry(pid).or_default();
            for cpu in per_cpu.iter() {
                total.out_written += cpu.out_written;
                total.out_unmapped += cpu.out_unmapped;
                total.swapped_in += cpu.swapped_in;
                total.freed += cpu.freed;
            }
        }
        Ok(totals)
    }

    /// Page allocations counted in the kernel (`memtrace pages --stacks none`), summed over
    /// CPUs, with the name the allocating task had (from any CPU's entry).
    pub fn page_counts(&self) -> Result<std::collections::HashMap<PageKey, PageCount>> {
        let map = self.map("PAGE_COUNTS")?;
        let counts: PerCpuHashMap<_, PageKey, PageCount> = PerCpuHashMap::try_from(map)?;
        let mut totals = std::collections::HashMap::new();
        let mut add = |key: PageKey, count: &PageCount| {
            let total: &mut PageCount = totals.entry(key).or_default();
            total.allocations += count.allocations;
            total.pages += count.pages;
            if total.comm[0] == 0 {
                total.comm = count.comm;
            }
        };
        for entry in counts.iter() {
            let (key, per_cpu) = entry?;
            per_cpu.iter().for_each(|cpu| add(key, cpu));
        }
        // Each CPU's last run of allocations, not in the table yet.
        let caches: PerCpuArray<_, PageCountCache> =
            PerCpuArray::try_from(self.map("PAGE_COUNT_CACHE")?)?;
        for cache in caches.get(&0, 0)?.iter() {
            if cache.count.allocations > 0 {
                add(cache.key, &cache.count);
            }
        }
        Ok(totals)
    }

    /// Drops the kernel's per-pid counts (page allocations, swap) of processes that ended and
    /// were read for the last time, so an always-on trace's tables hold the living. A pid
    /// whose last run of allocations still sits in a CPU's cache is kept for now: the cache
    /// would bring it back into the table. Returns the pids dropped.
    pub fn forget_counts(
        &mut self,
        pids: &std::collections::HashSet<u32>,
    ) -> Result<std::collections::HashSet<u32>> {
        let caches: PerCpuArray<_, PageCountCache> =
            PerCpuArray::try_from(self.map("PAGE_COUNT_CACHE")?)?;
        let cached: std::collections::HashSet<u32> = caches
            .get(&0, 0)?
            .iter()
            .filter(|c| c.count.allocations > 0)
            .map(|c| c.key.tgid)
            .collect();
        let forgotten: std::collections::HashSet<u32> = pids
            .iter()
            .copied()
            .filter(|pid| !cached.contains(pid))
            .collect();
        let mut pages: PerCpuHashMap<_, PageKey, PageCount> =
            PerCpuHashMap::try_from(self.map_mut("PAGE_COUNTS")?)?;
        let stale: Vec<PageKey> = pages
            .keys()
            .filter_map(|key| key.ok())
            .filter(|key| forgotten.contains(&key.tgid))
            .collect();
        for key in stale {
            // Gone already (another reader) is as good as removed.
            let _ = pages.remove(&key);
        }
        let mut swap: PerCpuHashMap<_, u32, SwapCounts> =
            PerCpuHashMap::try_from(self.map_mut("SWAP_COUNTS")?)?;
        for pid in &forgotten {
            let _ = swap.remove(pid);
        }
        Ok(forgotten)
    }

    /// The swap programs (see memtrace-ebpf's `swap`): every change of a process's swap
    /// entries, and each page reclaim writes to swap.
    pub fn attach_swap(&mut self) -> Result<()> {
        self.attach_raw_tracepoint("swap_rss_stat", "rss_stat")?;
        self.attach_tracepoint("swap_write_folio", "vmscan", "mm_vmscan_write_folio")
    }

    /// Empties the stack tables (user and kernel), and each CPU's note of the user stack it
    /// stored last (which would skip storing it again). A stack stored while this runs may
    /// be lost with them.
    pub fn clear_stacks(&mut self) -> Result<()> {
        let mut user: HashMap<_, u64, UserStack> = HashMap::try_from(self.map_mut("USER_STACKS")?)?;
        let keys: Vec<u64> = user.keys().filter_map(|k| k.ok()).collect();
        for key in keys {
            let _ = user.remove(&key);
        }
        let mut kernel = StackTraceMap::try_from(self.map_mut("STACKS")?)?;
        let ids: Vec<u32> = kernel.stack_ids().filter_map(|id| id.ok()).collect();
        for id in ids {
            let _ = kernel.remove(&id);
        }
        let mut last: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.map_mut("LAST_STORED_STACK")?)?;
        let cpus = aya::util::nr_cpus().map_err(cpu_list_error)?;
        last.set(0, aya::maps::PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
        Ok(())
    }

    /// A handle to read user stacks by key.
    pub fn user_stacks(&self) -> Result<HashMap<&MapData, u64, UserStack>> {
        let map = self.map("USER_STACKS")?;
        Ok(HashMap::try_from(map)?)
    }

    /// A handle to read (kernel) stacks by id.
    pub fn stacks(&self) -> Result<StackTraceMap<&MapData>> {
        let map = self.map("STACKS")?;
        Ok(StackTraceMap::try_from(map)?)
    }

    /// Loads every program of the object without attaching any: the kernel's verifier judges
    /// each (`memtrace check`). Programs already loaded count as accepted.
    pub fn load_every_program(&mut self) -> Vec<ProgramLoad> {
        use aya::programs::Program;
        let mut loads: Vec<ProgramLoad> = self
            .ebpf
            .programs_mut()
            .map(|(name, program)| {
                let (kind, result) = match program {
                    Program::TracePoint(p) => ("tracepoint", p.load()),
                    Program::RawTracePoint(p) => ("raw_tracepoint", p.load()),
                    Program::PerfEvent(p) => ("perf_event", p.load()),
                    Program::UProbe(p) => ("uprobe", p.load()),
                    other => {
                        let kind = "other";
                        return ProgramLoad {
                            name: name.to_string(),
                            kind,
                            error: Some(format!(
                                "memtrace has no loader for {:?}",
                                other.prog_type()
                            )),
                        };
                    }
                };
                let error = match result {
                    Ok(()) | Err(aya::programs::ProgramError::AlreadyLoaded) => None,
                    Err(err) => Some(verifier_summary(&err)),
                };
                ProgramLoad {
                    name: name.to_string(),
                    kind,
                    error,
                }
            })
            .collect();
        loads.sort_by(|a, b| a.name.cmp(&b.name));
        loads
    }

    fn program(&mut self, name: &str) -> Result<&mut aya::programs::Program> {
        self.ebpf
            .program_mut(name)
            .with_context(|| format!("eBPF program {name} missing"))
    }

    fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("eBPF map {name} missing"))
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("eBPF map {name} missing"))
    }
}

/// The kernel's verdict on one program (see [`Tracer::load_every_program`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgramLoad {
    pub name: String,
    /// aya's program type: tracepoint, raw_tracepoint, perf_event, uprobe.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Why the kernel refused it: the error and the verifier log's last lines.
    pub error: Option<String>,
}

/// A load error in a few lines: the verifier's log can run to thousands, and its end says why.
fn verifier_summary(err: &aya::programs::ProgramError) -> String {
    match err {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
            format!("{io_error}; verifier: {tail}")
        }
        other => other.to_string(),
    }
}

/// Frames of user stack `key` (innermost first), or none for key 0.
pub fn user_stack_frames(stacks: &HashMap<&MapData, u64, UserStack>, key: u64) -> Vec<u64> {
    if key == 0 {
        return Vec::new();
    }
    match stacks.get(&key, 0) {
        Ok(stack) => stack
            .frames
            .iter()
            .copied()
            .take_while(|&ip| ip != 0)
            .collect(),
        Err(err) => {
            log::debug!("user stack {key:#x} unreadable: {err}");
            Vec::new()
        }
    }
}

/// Frames of stack `id` (innermost first), or none when the id is an error code.
pub fn stack_frames(stacks: &StackTraceMap<&MapData>, id: i32) -> Vec<u64> {
    if id < 0 {
        return Vec::new();
    }
    match stacks.get(&(id as u32), 0) {
        Ok(trace) => trace.frames().iter().map(|frame| frame.ip).collect(),
        Err(err) => {
            log::debug!("stack {id} unreadable: {err}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object, ObjectSection, SectionFlags};

    /// The BPF helpers the object's programs call (`call imm` with src_reg 0), by number.
    fn helpers_called(elf: &[u8]) -> std::collections::BTreeSet<i32> {
        let file = object::File::parse(elf).expect("the eBPF object is an ELF file");
        let mut helpers = std::collections::BTreeSet::new();
        for section in file.sections() {
            let executable = matches!(section.flags(), SectionFlags::Elf { sh_flags }
                if sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0);
            if !executable {
                continue;
            }
            let code = section.data().expect("section data");
            for insn in code.chunks_exact(8) {
                // BPF_JMP | BPF_CALL, src_reg 0: a helper (1: a BPF-to-BPF call, 2: a kfunc).
                if insn[0] == 0x85 && insn[1] >> 4 == 0 {
                    helpers.insert(i32::from_le_bytes(insn[4..8].try_into().unwrap()));
                }
            }
        }
        helpers
    }

    /// memtrace only observes: no program can write a process's memory, change a function's
    /// return value, or signal a process.
    #[test]
    fn programs_call_no_helper_that_changes_the_traced_system() {
        if OBJECT.is_empty() {
            assert!(
                !std::env::var("CI").is_ok_and(|ci| ci == "true"),
                "built with MEMTRACE_SKIP_EBPF=1: no eBPF object to check, and CI never skips"
            );
            return;
        }
        let helpers = helpers_called(OBJECT);
        // Sanity of the decoding: every program asks which process it runs in.
        const GET_CURRENT_PID_TGID: i32 = 14;
        assert!(helpers.contains(&GET_CURRENT_PID_TGID), "{helpers:?}");
        for (id, name) in [
            (36, "bpf_probe_write_user"),
            (58, "bpf_override_return"),
            (109, "bpf_send_signal"),
            (117, "bpf_send_signal_thread"),
        ] {
            assert!(
                !helpers.contains(&id),
                "a program calls {name}: {helpers:?}"
            );
        }
    }
}
