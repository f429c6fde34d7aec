//! What the agent does while tracing: each second, the kernel's per-process counts (faults
//! from /proc and from exit records, page allocations and swap from the programs' tables)
//! into the metrics; each tick, the sampled fault stacks symbolized into the rolling
//! profile; OOM kills as they come; the HTTP side's profile requests answered.
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use memtrace_common::{EventKind, ProcessExit};
use tokio::sync::mpsc;

use super::{
    config::AgentConfig,
    heap_feed::HeapProfiling,
    http::{ProfileRequest, Wanted, Window},
    interned::Stack,
    metrics::{AgentMetrics, Health, ProcessId, ProcessLabels, ProcessMemory},
    profile::RollingProfile,
};
use crate::{
    host::{
        memcg::MemoryHierarchy,
        process_memory,
        system_memory::{self, SystemSample},
    },
    kernel::tracer::Tracer,
    output::{pprof, profile::Reweighted},
    trace::{
        consumer::Consumer,
        page_origin::Origin,
        processes::Processes,
        records::{comm_to_string, Record},
        stacks::{StackKey, StackTables},
        symbolize::Symbolizer,
    },
};

/// How often the kernel's counts are read into the metrics.
const UPDATE_EVERY: Duration = Duration::from_secs(1);
/// The kernel's stack tables hold 16,384 stacks each: emptied at three quarters.
const CLEAR_STACKS_AT: usize = 12_288;
/// Cgroup paths remembered by id at most (more are forgotten and looked up again).
const MAX_CGROUPS: usize = 4096;
/// How often the ring is drained (sampled stacks and OOM kills only: few events, and an idle
/// agent should mostly sleep).
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// Reads the kernel's counts into the metrics the HTTP server serves.
pub struct AgentFeed {
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
    /// Requests for the next N seconds, waiting for them to pass: (from, until, reply).
    waiting: Vec<(Duration, Duration, ProfileRequest)>,
    symbolizer: Symbolizer,
    /// The config's [heap] processes' allocations (None: heap profiling is off).
    heap: Option<HeapProfiling>,
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
pub enum SwapCounting {
    Off,
    /// swap = "auto" on a host without swap: the programs attach once it has some.
    WhenSwapIsOn,
    On,
}

impl AgentFeed {
    pub fn new(
        metrics: Arc<Mutex<AgentMetrics>>,
        requests: mpsc::Receiver<ProfileRequest>,
        config: &AgentConfig,
        swap: SwapCounting,
        heap: Option<HeapProfiling>,
    ) -> Self {
        Self {
            heap,
            metrics,
            hierarchy: MemoryHierarchy::find(),
            cgroups: HashMap::new(),
            cgroup_paths: HashMap::new(),
            ended: HashSet::new(),
            page_allocations: config.page_allocations,
            swap,
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
            requests,
            waiting: Vec::new(),
            symbolizer: Symbolizer::new(),
            _stats: config
                .bpf_stats
                .then(|| {
                    aya::sys::enable_stats(aya::sys::Stats::RunTime)
                        .map_err(|err| log::warn!("eBPF run-time statistics unavailable: {err}"))
                        .ok()
                })
                .flatten(),
        }
    }

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
    pub fn update(&mut self, tracer: &mut Tracer, known: &mut Processes) {
        let live = live_processes();
        let alive: HashSet<u32> = live.iter().map(|p| p.process.0).collect();
        // An ended process's pid gone from /proc (reaped): it cannot be seen again.
        self.ended.retain(|(pid, _)| alive.contains(pid));
        // What is kept about processes gone (the profile holds its stacks symbolized; records
        // of a process can come after its exit: the kernel's mapping records travel apart).
        known.retain(|pid| alive.contains(&pid));
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
        // (process, name, cgroup) of every living process, for heap profiling's choice.
        let mut living = Vec::new();
        for p in live {
            let pid = p.process.0;
            // (An exiting process's /proc/PID/cgroup says "/": its exit record's is kept.)
            if !self.ended.contains(&p.process) {
                self.refresh_cgroup(pid, p.minor_faults + p.major_faults);
            }
            let labels = self.labels(pid, p.comm);
            if self.heap.is_some() && !self.ended.contains(&p.process) {
                living.push((p.process, labels.comm.clone(), labels.cgroup.clone()));
            }
            if !self.ended.contains(&p.process) && pid != std::process::id() {
                faults.push((p.process, labels.clone(), p.minor_faults, p.major_faults));
            }
            let swap_kb = if read_swap {
                system_memory::vmswap_kb(pid)
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
        let (pages, page_entries) = self.page_counts(tracer, known);
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
                    _ => known.name(pid),
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
        if let Some(heap) = &mut self.heap {
            let living =
                (living.iter()).map(|(p, comm, cgroup)| (*p, comm.as_str(), cgroup.as_str()));
            heap.update(tracer, living);
        }
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
            processes_held: known.maps.snapshots() as u64,
            stack_table_clears: self.stack_table_clears,
            profile_stacks: self.profile.held().0 as u64,
            heap: self
                .heap
                .as_ref()
                .map(HeapProfiling::health)
                .unwrap_or_default(),
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
    fn page_counts(
        &self,
        tracer: &Tracer,
        known: &Processes,
    ) -> (HashMap<u32, (String, u64, u64)>, u64) {
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
                _ => origin.name(known, || comm_to_string(&count.comm)),
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
        if let Some(heap) = &mut self.heap {
            heap.on_exit(exit.tgid);
        }
    }
}

impl AgentFeed {
    /// The stacks sampled since the last tick, symbolized into the profile while their
    /// processes' maps and the kernel's stack tables hold them; then the processes that
    /// ended are forgotten, and the stack tables emptied when they near full.
    fn resolve_samples(&mut self, tracer: &mut Tracer, known: &mut Processes) {
        let heap_pending = self.heap.as_ref().is_some_and(HeapProfiling::has_pending);
        if !self.pending.is_empty() || heap_pending {
            if let Ok(tables) = StackTables::open(tracer) {
                for (at, key) in std::mem::take(&mut self.pending) {
                    self.stack_keys
                        .insert((key.user_stack, key.kernel_stack_id));
                    let symbolizer = &mut self.symbolizer;
                    let kind = match key.kind {
                        EventKind::MajorFault => "major",
                        _ => "minor",
                    };
                    self.profile.push(at, key, kind, || {
                        let (user, kernel) =
                            tables.frames_reading_maps(&key, symbolizer, &mut known.maps);
                        (known.name(key.tgid), Stack::new(user, kernel))
                    });
                }
                if let Some(heap) = &mut self.heap {
                    heap.apply(&tables, &mut self.symbolizer, known);
                }
            }
            self.pending.clear();
        }
        for pid in std::mem::take(&mut self.departed) {
            known.forget(pid);
        }
        // The tables keep every stack stored (each CPU skips storing its last one again):
        // emptied before they fill, what they held is in the profile already.
        if self.stack_keys.len() >= CLEAR_STACKS_AT {
            if let Err(err) = tracer.clear_stacks() {
                log::warn!("cannot empty the stack tables: {err:#}");
            }
            self.stack_keys.clear();
            self.profile.forget_keys();
            if let Some(heap) = &mut self.heap {
                heap.forget_keys();
            }
            self.stack_table_clears += 1;
        }
    }

    /// Answers the profile requests: one for the last N seconds at once, one for the next
    /// N seconds once they have passed (samples are stamped as they are drained).
    fn answer_requests(&mut self, tracer: &Tracer) {
        while let Ok(request) = self.requests.try_recv() {
            match request.wanted {
                Wanted::Faults(Window::Last(seconds)) => {
                    let since = self.now.saturating_sub(seconds);
                    let _ = request.reply.send(self.profile(tracer, since, self.now));
                }
                Wanted::Faults(Window::Next(seconds)) => {
                    (self.waiting).push((self.now, self.now + seconds, request));
                }
                Wanted::Heap { in_use_first } => {
                    let lost = tracer.counters().map_or(0, |c| c.lost);
                    let profile = match &self.heap {
                        Some(heap) => heap.profile(in_use_first, self.now.as_secs_f64(), lost),
                        None => Err(anyhow::anyhow!("heap profiling is off")),
                    };
                    let _ = request.reply.send(profile);
                }
            }
        }
        // A client that hung up is not waited for.
        self.waiting
            .retain(|(.., request)| !request.reply.is_closed());
        let now = self.now;
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(_, until, _)| *until <= now);
        self.waiting = waiting;
        for (since, until, request) in due {
            let _ = request.reply.send(self.profile(tracer, since, until));
        }
    }

    /// The gzip'd pprof profile of the fault stacks sampled from `since` to `until`.
    fn profile(&self, tracer: &Tracer, since: Duration, until: Duration) -> Result<Vec<u8>> {
        let rows = self.profile.rows(since, until, self.stack_period);
        let profile = Reweighted {
            command: "agent",
            target: "system-wide".to_owned(),
            duration_s: until.saturating_sub(since).as_secs_f64(),
            lost_events: tracer.counters().map_or(0, |c| c.lost),
            rows,
            sample_type: ("faults", "count"),
            period: self.stack_period,
            values: None,
            sampling_note: Some(format!(
                "stacks of 1 fault in {}: counts are estimates",
                self.stack_period
            )),
            context: Vec::new(),
        };
        let mut bytes = Vec::new();
        pprof::write(&profile, &mut bytes)?;
        Ok(bytes)
    }
}

/// The agent's resident memory, from /proc/self/statm.
fn own_rss_bytes() -> u64 {
    process_memory::statm_rss_bytes(
        &std::fs::read_to_string("/proc/self/statm").unwrap_or_default(),
    )
}

impl Consumer for AgentFeed {
    fn tick(&self) -> Duration {
        DRAIN_EVERY
    }

    fn on_record(&mut self, record: &Record, processes: &mut Processes) {
        match record {
            Record::ProcessExit(exit) => self.on_exit(exit),
            Record::OomKill(kill) => {
                if let Some(heap) = &mut self.heap {
                    heap.on_oom_kill(kill, self.hierarchy.as_ref());
                }
                let cgroup = (self.hierarchy.as_ref())
                    .and_then(|h| h.victim_cgroup(kill))
                    .unwrap_or_default();
                let labels = ProcessLabels::new(comm_to_string(&kill.comm), cgroup);
                let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
                metrics.oom_kill(labels);
            }
            Record::Event(event) => {
                // Whatever carried them, its stacks are in the kernel's tables.
                (self.stack_keys).insert((event.raw.user_stack, event.raw.kernel_stack_id));
                match event.kind {
                    // A sampled fault's stacks, for the rolling profile.
                    EventKind::MinorFault | EventKind::MajorFault => {
                        // Symbolized at the next tick: a process that started before the
                        // agent has its maps read now, before it can exit.
                        processes.maps.capture_unknown(event.raw.tgid);
                        let key = processes.stack_key(event);
                        self.pending.push((self.now, key));
                    }
                    EventKind::Alloc | EventKind::Free => {
                        if let Some(heap) = &mut self.heap {
                            heap.on_event(event, processes);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn on_tick(&mut self, elapsed: Duration, tracer: &mut Tracer, processes: &mut Processes) {
        self.now = elapsed;
        self.resolve_samples(tracer, processes);
        if elapsed >= self.next_update {
            self.next_update = elapsed + UPDATE_EVERY;
            self.update(tracer, processes);
            self.profile.expire(elapsed);
            // Setting up (BTF, kallsyms, the programs) and each second's reads leave freed
            // heap behind: hand it back, or the agent's RSS keeps the high-water mark.
            // SAFETY: malloc_trim has no preconditions.
            unsafe { libc::malloc_trim(0) };
        }
        self.answer_requests(tracer);
    }
}
