//! Reading what the programs keep in the object's maps: counters of drops and errors, swap and
//! page allocation counts per process, the stack tables; and dropping what is no longer needed.
use anyhow::Result;
use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, StackTraceMap};
use std::borrow::Borrow;

use memtrace_common::{
    counter,
    python::{self, PythonStack},
    unwind::EXACT_PC,
    PageCount, PageCountCache, PageKey, SwapCounts, UserStack,
};

use super::tracer::{cpu_list_error, Tracer};

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
    /// Table walks by how they ended (`unwind::walk_end` order: root, no table, invalid rule,
    /// failed read, truncated).
    pub walks_ended: [u64; 5],
    pub walks_used_frame_pointers: u64,
    pub walk_frames: u64,
    pub unwind_requests_lost: u64,
    pub walks_replayed: u64,
    /// Python frame walks: those that found frames, the frames, threads with no thread state,
    /// walks that stopped early, and walks that were the CPU's last, compared not walked.
    pub python_walks: u64,
    pub python_frames: u64,
    pub python_no_thread_state: u64,
    pub python_incomplete: u64,
    pub python_walks_replayed: u64,
}

impl Tracer {
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
            walks_ended: [
                sum(counter::WALKS)?,
                sum(counter::WALKS + 1)?,
                sum(counter::WALKS + 2)?,
                sum(counter::WALKS + 3)?,
                sum(counter::WALKS + 4)?,
            ],
            walks_used_frame_pointers: sum(counter::WALKS_USED_FRAME_POINTERS)?,
            walk_frames: sum(counter::WALK_FRAMES)?,
            unwind_requests_lost: sum(counter::UNWIND_REQUESTS_LOST)?,
            walks_replayed: sum(counter::WALKS_REPLAYED)?,
            python_walks: sum(counter::PYTHON_WALKS)?,
            python_frames: sum(counter::PYTHON_FRAMES)?,
            python_no_thread_state: sum(counter::PYTHON_NO_THREAD_STATE)?,
            python_incomplete: sum(counter::PYTHON_INCOMPLETE)?,
            python_walks_replayed: sum(counter::PYTHON_WALKS_REPLAYED)?,
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
                total.out_zero += cpu.out_zero;
                total.in_zero += cpu.in_zero;
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

    /// Empties the stack tables (user and kernel), and each CPU's note of the user stack it
    /// stored last (which would skip storing it again). A stack stored while this runs may
    /// be lost with them.
    pub fn clear_stacks(&mut self) -> Result<()> {
        remove_every_stack::<UserStack>(self.map_mut("USER_STACKS")?)?;
        remove_every_stack::<PythonStack>(self.map_mut("PYTHON_STACKS")?)?;
        let mut kernel = StackTraceMap::try_from(self.map_mut("STACKS")?)?;
        let ids: Vec<u32> = kernel.stack_ids().filter_map(|id| id.ok()).collect();
        for id in ids {
            let _ = kernel.remove(&id);
        }
        let cpus = aya::util::nr_cpus().map_err(cpu_list_error)?;
        for name in ["LAST_STORED_STACK", "LAST_PYTHON_STACK"] {
            let mut last: PerCpuArray<_, u64> = PerCpuArray::try_from(self.map_mut(name)?)?;
            last.set(0, aya::maps::PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
        }
        Ok(())
    }

    /// A handle to read user stacks by key.
    pub fn user_stacks(&self) -> Result<HashMap<&MapData, u64, UserStack>> {
        let map = self.map("USER_STACKS")?;
        Ok(HashMap::try_from(map)?)
    }

    /// A handle to read stacks' Python frames by key.
    pub fn python_stacks(&self) -> Result<HashMap<&MapData, u64, PythonStack>> {
        Ok(HashMap::try_from(self.map("PYTHON_STACKS")?)?)
    }

    /// Handles of its own to the user stack tables (native, Python), to read stacks while
    /// the trace runs (the Python frames' code objects are read while their process lives).
    #[allow(clippy::type_complexity)]
    pub fn owned_stack_tables(
        &self,
    ) -> Result<(
        HashMap<MapData, u64, UserStack>,
        HashMap<MapData, u64, PythonStack>,
    )> {
        let again = |name: &str| -> Result<aya::maps::Map> {
            let aya::maps::Map::HashMap(data) = self.map(name)? else {
                anyhow::bail!("eBPF map {name} is not a hash map");
            };
            Ok(aya::maps::Map::HashMap(MapData::from_id(
                data.info()?.id(),
            )?))
        };
        Ok((
            HashMap::try_from(again("USER_STACKS")?)?,
            HashMap::try_from(again("PYTHON_STACKS")?)?,
        ))
    }

    /// A handle to read (kernel) stacks by id.
    pub fn stacks(&self) -> Result<StackTraceMap<&MapData>> {
        let map = self.map("STACKS")?;
        Ok(StackTraceMap::try_from(map)?)
    }
}

/// Empties a stack table keyed by stack hash (user stacks, their Python frames).
fn remove_every_stack<V: aya::Pod>(map: &mut aya::maps::Map) -> Result<()> {
    let mut stacks: HashMap<_, u64, V> = HashMap::try_from(map)?;
    let keys: Vec<u64> = stacks.keys().filter_map(|k| k.ok()).collect();
    for key in keys {
        let _ = stacks.remove(&key);
    }
    Ok(())
}

/// A user stack as recorded: its frames' addresses (innermost first), which of them are
/// return addresses (all but the first, and those the walk marked `EXACT_PC`: a signal's
/// interrupted code and its trampoline), and how the walk ended (`walk_end`; 0 for none).
#[derive(Debug, Default)]
pub struct RecordedStack {
    pub addrs: Vec<u64>,
    pub returns: Vec<bool>,
    /// The key of its Python frames in `PYTHON_STACKS` (memtrace-common's `python`).
    pub python_key: Option<u64>,
    pub end: u64,
}

impl RecordedStack {
    pub fn of(stack: &UserStack) -> Self {
        let words = stack.frames.iter().take_while(|&&word| word != 0);
        let (python, native): (Vec<u64>, Vec<u64>) =
            words.partition(|&&word| python::frame::is_python(word));
        RecordedStack {
            addrs: native.iter().map(|&ip| ip & !EXACT_PC).collect(),
            returns: (native.iter().enumerate())
                .map(|(i, &ip)| i > 0 && ip & EXACT_PC == 0)
                .collect(),
            python_key: python.first().map(|&word| python::frame::referenced(word)),
            end: stack.end,
        }
    }
}

/// User stack `key`, empty for key 0.
pub fn user_stack(stacks: &HashMap<&MapData, u64, UserStack>, key: u64) -> RecordedStack {
    if key == 0 {
        return RecordedStack::default();
    }
    match stacks.get(&key, 0) {
        Ok(stack) => RecordedStack::of(&stack),
        Err(err) => {
            log::debug!("user stack {key:#x} unreadable: {err}");
            RecordedStack::default()
        }
    }
}

/// The Python frames' words stored under `key` (two per frame, innermost first).
pub fn python_words(
    stacks: &HashMap<impl Borrow<MapData>, u64, PythonStack>,
    key: u64,
) -> Vec<u64> {
    match stacks.get(&key, 0) {
        Ok(stack) => stack
            .words
            .iter()
            .take_while(|&&w| w != 0)
            .copied()
            .collect(),
        Err(err) => {
            log::debug!("python stack {key:#x} unreadable: {err}");
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
