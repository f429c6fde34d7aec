//! `memtrace malloc`: heap allocations per call stack, and the blocks never freed. The kernel
//! side (memtrace-ebpf's `malloc`) sends every block allocated and freed; the books are kept
//! here: per process, per stack, sizes, and the blocks still outstanding.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Result;
use memtrace_common::{AllocFn, EventKind};

use crate::{
    bpf::Tracer,
    cli::{Format, MallocArgs, RunArgs},
    error::UsageError,
    malloc_report::{AllocStackRow, MallocProcessRow, MallocReport, OutstandingRow, SizeBucket},
    output,
    outputs::Outputs,
    pipeline::{self, KernelOptions},
    probe_site,
    processes::Processes,
    progress::Progress,
    report::TracerCost,
    session::Consumer,
    stacks::{self, StackKey},
    symbolize::Symbolizer,
};

/// How often the blocks of exited processes are folded away.
const EXIT_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Stacks shown in the live view.
const LIVE_STACKS: usize = 5;

/// What one block seen stands for: itself, or with --sample-bytes, the calls and bytes it
/// estimates (weighted by the inverse of its chance of being sampled).
#[derive(Default, Clone, Copy)]
struct Weight {
    calls: f64,
    bytes: f64,
}

impl std::ops::AddAssign for Weight {
    fn add_assign(&mut self, other: Self) {
        self.calls += other.calls;
        self.bytes += other.bytes;
    }
}

/// A block still allocated.
#[derive(Clone, Copy)]
struct Block {
    weight: Weight,
    stack: StackKey,
    /// When it was allocated, since tracing started (to the drain's tick, a few ms).
    at: Duration,
}

/// One process's calls and bytes (estimates when sampling).
#[derive(Default, Clone)]
struct ProcessBooks {
    calls: HashMap<AllocFn, f64>,
    allocated: f64,
    freed: f64,
    frees_of_untraced_blocks: u64,
}

/// Everything gathered while tracing.
struct AllocBooks {
    known: Processes,
    /// --sample-bytes, or 0.
    sample_bytes: u64,
    processes: HashMap<u32, ProcessBooks>,
    stacks: HashMap<StackKey, Weight>,
    /// Allocations by log2 of their size: bucket i holds sizes in (2^(i-1), 2^i].
    sizes: [f64; 65],
    outstanding: HashMap<(u32, u64), Block>,
    /// --max-outstanding, and the blocks past it.
    max_outstanding: usize,
    outstanding_dropped: u64,
    /// Blocks of exited processes, by stack (see `fold_exited`), and how many were folded.
    exited: HashMap<StackKey, Outstanding>,
    exited_blocks: u64,
    next_exit_check: Duration,
    /// The drain's last tick: the time given to blocks allocated since.
    now: Duration,
    progress: Progress,
    symbolizer: Symbolizer,
}

impl Consumer for AllocBooks {
    fn processes(&mut self) -> &mut Processes {
        &mut self.known
    }

    fn on_targets(&mut self, pids: &[u32]) {
        self.known.capture(pids);
    }

    fn on_record(&mut self, bytes: &[u8]) {
        let Some(event) = self.known.admit(bytes) else {
            return;
        };
        let (tgid, addr, size) = (event.raw.tgid, event.raw.addr, event.raw.weight);
        let Some(function) = AllocFn::from_raw(event.raw.detail) else {
            return;
        };
        match event.kind {
            EventKind::Alloc => {
                // Keeps the process's maps current (a block in memory not mapped before makes
                // them be read again), so the libraries loaded since exec get symbols.
                self.known.maps.region(tgid, addr);
                let stack = self.known.stack_key(&event);
                let weight = self.weigh(size);
                let row = self.processes.entry(tgid).or_default();
                *row.calls.entry(function).or_default() += weight.calls;
                row.allocated += weight.bytes;
                *self.stacks.entry(stack).or_default() += weight;
                self.sizes[size_bucket(size)] += weight.calls;
                let block = Block {
                    weight,
                    stack,
                    at: self.now,
                };
                // A block of the image an exec replaced at the same address is not this one.
                self.take_block(tgid, addr);
                if self.outstanding.len() < self.max_outstanding {
                    self.outstanding.insert((tgid, addr), block);
                } else {
                    self.outstanding_dropped += 1;
                }
            }
            EventKind::Free => {
                let block = self.take_block(tgid, addr);
                let row = self.processes.entry(tgid).or_default();
                // A free, or the old block of a realloc: a call of its own only when no new
                // block came back (realloc(p, 0), which carries size 0). Sampling sends only
                // the frees of sampled blocks, each standing for as many as its block.
                if matches!(function, AllocFn::Free | AllocFn::Munmap) || size == 0 {
                    let calls = block.as_ref().map_or(1.0, |b| b.weight.calls);
                    *row.calls.entry(function).or_default() += calls;
                }
                match block {
                    Some(block) => row.freed += block.weight.bytes,
                    None => row.frees_of_untraced_blocks += 1,
                }
            }
            _ => {}
        }
    }

    fn on_tick(&mut self, elapsed: Duration, tracer: &mut Tracer) {
        self.now = elapsed;
        if elapsed >= self.next_exit_check {
            self.next_exit_check = elapsed + EXIT_CHECK_EVERY;
            self.fold_exited();
        }
        if self.progress.interval_due(elapsed).is_none() {
            return;
        }
        let top = self.outstanding_by_stack(Duration::ZERO);
        let keys: Vec<(StackKey, u64)> = top
            .iter()
            .take(LIVE_STACKS)
            .map(|(key, o)| (*key, o.bytes()))
            .collect();
        let label = |key: &StackKey| (self.known.name(key.tgid), "outstanding");
        let rows = stacks::rows(
            tracer,
            &mut self.symbolizer,
            &self.known.maps,
            &keys,
            &label,
        )
        .unwrap_or_default();
        let total: f64 = self.outstanding.values().map(|b| b.weight.bytes).sum();
        let mut table = vec![format!(
            "memtrace malloc {:>7.1}s  outstanding: {} blocks seen, {:.0} bytes{}",
            elapsed.as_secs_f64(),
            self.outstanding.len(),
            total,
            if self.sample_bytes > 0 {
                " (estimated)"
            } else {
                ""
            }
        )];
        for (row, (_, o)) in rows.iter().zip(&top) {
            table.push(format!(
                "  {:>12} B in {:>8} blocks  pid {:<7} {}",
                o.bytes(),
                o.allocations(),
                row.pid,
                row.frames
                    .iter()
                    .take(4)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" < ")
            ));
        }
        self.progress.interval_table(&table);
    }
}

/// Outstanding blocks of one stack.
struct Outstanding {
    weight: Weight,
    oldest: Duration,
}

impl Outstanding {
    fn add(&mut self, block: &Block) {
        self.weight += block.weight;
        self.oldest = self.oldest.min(block.at);
    }

    fn allocations(&self) -> u64 {
        self.weight.calls.round() as u64
    }

    fn bytes(&self) -> u64 {
        self.weight.bytes.round() as u64
    }
}

impl AllocBooks {
    /// What a block of `size` bytes stands for. Sampled with probability
    /// p = 1 - exp(-size/N), it stands for 1/p calls and size/p bytes (unbiased).
    fn weigh(&self, size: u64) -> Weight {
        if self.sample_bytes == 0 {
            return Weight {
                calls: 1.0,
                bytes: size as f64,
            };
        }
        let p = -(-(size.max(1) as f64) / self.sample_bytes as f64).exp_m1();
        Weight {
            calls: 1.0 / p,
            bytes: size as f64 / p,
        }
    }

    /// The blocks of processes that have exited: never freed, they join the per-stack totals
    /// of `exited` (still reported with --leaks), and the blocks themselves are dropped, so a
    /// long system-wide trace does not keep every dead process's blocks.
    fn fold_exited(&mut self) {
        let mut alive: HashMap<u32, bool> = HashMap::new();
        let mut gone = Vec::new();
        self.outstanding.retain(|&(tgid, _), block| {
            let is_alive = *alive
                .entry(tgid)
                .or_insert_with(|| Path::new(&format!("/proc/{tgid}")).exists());
            if !is_alive {
                gone.push(*block);
            }
            is_alive
        });
        for block in gone {
            self.retire(block);
        }
    }

    /// The outstanding block at `addr` in the process's current image, taken out. A block
    /// left by an image that exec replaced is retired instead: that address space is gone,
    /// and the block was never freed in it.
    fn take_block(&mut self, tgid: u32, addr: u64) -> Option<Block> {
        let block = self.outstanding.remove(&(tgid, addr))?;
        if block.stack.generation == self.known.maps.generation(tgid) {
            return Some(block);
        }
        self.retire(block);
        None
    }

    /// A block whose address space is gone: it joins its stack's totals in `exited`.
    fn retire(&mut self, block: Block) {
        self.exited
            .entry(block.stack)
            .or_insert_with(|| Outstanding {
                weight: Weight::default(),
                oldest: block.at,
            })
            .add(&block);
        self.exited_blocks += 1;
    }

    /// Blocks at least `min_age` old (of processes alive or exited), by stack, most bytes
    /// first.
    fn outstanding_by_stack(&self, min_age: Duration) -> Vec<(StackKey, Outstanding)> {
        let mut by_stack: HashMap<StackKey, Outstanding> = HashMap::new();
        for block in self.outstanding.values() {
            if self.now.saturating_sub(block.at) < min_age {
                continue;
            }
            by_stack
                .entry(block.stack)
                .or_insert(Outstanding {
                    weight: Weight::default(),
                    oldest: block.at,
                })
                .add(block);
        }
        for (stack, folded) in &self.exited {
            if self.now.saturating_sub(folded.oldest) < min_age {
                continue;
            }
            let entry = by_stack.entry(*stack).or_insert(Outstanding {
                weight: Weight::default(),
                oldest: folded.oldest,
            });
            entry.weight += folded.weight;
            entry.oldest = entry.oldest.min(folded.oldest);
        }
        let mut sorted: Vec<_> = by_stack.into_iter().collect();
        sorted.sort_by(|a, b| {
            (b.1.weight.bytes)
                .total_cmp(&a.1.weight.bytes)
                .then(a.0.user_stack.cmp(&b.0.user_stack))
        });
        sorted
    }
}

fn calls_of(row: &mut MallocProcessRow, function: AllocFn) -> &mut u64 {
    match function {
        AllocFn::Malloc => &mut row.malloc_calls,
        AllocFn::Calloc => &mut row.calloc_calls,
        AllocFn::Realloc => &mut row.realloc_calls,
        AllocFn::Reallocarray => &mut row.reallocarray_calls,
        AllocFn::PosixMemalign => &mut row.posix_memalign_calls,
        AllocFn::AlignedAlloc => &mut row.aligned_alloc_calls,
        AllocFn::Memalign => &mut row.memalign_calls,
        AllocFn::Valloc => &mut row.valloc_calls,
        AllocFn::Pvalloc => &mut row.pvalloc_calls,
        AllocFn::Free => &mut row.free_calls,
        AllocFn::Mmap => &mut row.mmap_calls,
        AllocFn::Munmap => &mut row.munmap_calls,
    }
}

/// The log2 bucket of a size: i such that 2^(i-1) < size <= 2^i (0 and 1 in bucket 0).
fn size_bucket(size: u64) -> usize {
    if size <= 1 {
        0
    } else {
        64 - (size - 1).leading_zeros() as usize
    }
}

/// The allocator to hook: `--lib`, else the libc the target maps (through its root, so a
/// process in a container gets its own), else memtrace's own.
fn allocator_library(args: &MallocArgs) -> Result<PathBuf> {
    if let Some(lib) = &args.lib {
        if !lib.is_file() {
            return Err(UsageError(format!(
                "--lib {}: no such file (give the allocator's shared library, e.g. \
                 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2)",
                lib.display()
            ))
            .into());
        }
        return Ok(lib.clone());
    }
    let pid = args.target.pids.first().copied();
    let maps_of = pid.map_or_else(|| "self".to_owned(), |p| p.to_string());
    // Parsed by procfs, as the maps cache does (`procmaps`).
    let process = match pid {
        Some(pid) => procfs::process::Process::new(pid as i32),
        None => procfs::process::Process::myself(),
    };
    let maps = process
        .and_then(|p| p.maps())
        .map(|m| m.0)
        .unwrap_or_default();
    let libc = maps.into_iter().find_map(|map| match map.pathname {
        procfs::process::MMapPath::Path(path)
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-")) =>
        {
            Some(path)
        }
        _ => None,
    });
    match (libc, pid) {
        (Some(path), Some(pid)) => Ok(PathBuf::from(format!("/proc/{pid}/root{}", path.display()))),
        (Some(path), None) => Ok(path),
        (None, _) => Err(UsageError(format!(
            "no libc in /proc/{maps_of}/maps: the program may be static or use another \
             allocator; name its library with --lib"
        ))
        .into()),
    }
}

pub async fn run(args: &MallocArgs) -> Result<()> {
    let mut outputs = Outputs::open(&args.output)?;
    let library = allocator_library(args)?;
    let run_args = RunArgs {
        duration: args.duration,
        interval: args.interval,
    };
    let options = KernelOptions {
        page_stacks: false,
        ring_bytes: pipeline::RING_BYTES,
        user_stacks: true,
        kernel_stacks: false,
        file_tags: false,
        swap: None,
        malloc: Some(args.sample_bytes.unwrap_or(0)),
        pages: false,
        stack_sample_period: 1,
        exits: false,
        oom: false,
    };
    let prefix = args.symbol_prefix.clone();
    let mmap = args.mmap;
    let hooked = std::cell::RefCell::new(Vec::new());
    let attach = |tracer: &mut Tracer, single: Option<u32>| {
        if single.is_none() {
            // Breakpoints go into every process that maps the library, traced or not.
            eprintln!(
                "memtrace: note: more than one process is traced, so every process using {} \
                 traps on each allocator call (about 1 µs each); --pid or a command limits \
                 that to one process",
                library.display()
            );
        }
        // Names of one function (glibc's memalign is aligned_alloc) get one set of probes,
        // under the first name: two would count each call twice.
        let mut addresses: HashMap<u64, String> = HashMap::new();
        let code = probe_site::LibraryCode::read(&library);
        for function in AllocFn::UPROBED {
            let symbol = format!("{prefix}{}", function.name());
            if let Some(address) = code.as_ref().and_then(|c| c.address(&symbol)) {
                if let Some(first) = addresses.get(&address) {
                    hooked.borrow_mut().push(format!("{symbol} (= {first})"));
                    continue;
                }
                addresses.insert(address, symbol.clone());
            }
            let program = format!("{}_enter", function.name());
            let attached = if function == AllocFn::Free {
                // No return probe shares its breakpoint: it can move to a cheaper place.
                let offset = code.as_ref().map_or(0, |c| c.entry_offset(&symbol, 1));
                log::debug!("{symbol}: entry probe at +{offset}");
                tracer.attach_uprobe(&program, &symbol, offset, &library, single)
            } else {
                // The return probe needs the entry (the return address is on top of the stack
                // there); the entry probe shares its breakpoint.
                tracer
                    .attach_uprobe(&program, &symbol, 0, &library, single)
                    .and_then(|()| {
                        tracer.attach_uprobe("alloc_return", &symbol, 0, &library, single)
                    })
            };
            match attached {
                Ok(()) => hooked.borrow_mut().push(symbol),
                // malloc and free are the least an allocator has.
                Err(err) if matches!(function, AllocFn::Malloc | AllocFn::Free) => {
                    return Err(err.context(format!(
                        "{} does not look like an allocator (no {symbol})",
                        library.display()
                    )));
                }
                Err(err) => log::debug!("{symbol} not hooked: {err:#}"),
            }
        }
        if mmap {
            tracer.attach_tracepoint("mmap_enter", "syscalls", "sys_enter_mmap")?;
            tracer.attach_tracepoint("mmap_exit", "syscalls", "sys_exit_mmap")?;
            tracer.attach_tracepoint("munmap_enter", "syscalls", "sys_enter_munmap")?;
            hooked
                .borrow_mut()
                .extend(["mmap".to_owned(), "munmap".to_owned()]);
        }
        Ok(())
    };
    let mut books = AllocBooks {
        known: Processes::default(),
        processes: HashMap::new(),
        stacks: HashMap::new(),
        sizes: [0.0; 65],
        sample_bytes: args.sample_bytes.unwrap_or(0),
        outstanding: HashMap::new(),
        max_outstanding: usize::try_from(args.max_outstanding).unwrap_or(usize::MAX),
        outstanding_dropped: 0,
        exited: HashMap::new(),
        exited_blocks: 0,
        next_exit_check: EXIT_CHECK_EVERY,
        now: Duration::ZERO,
        progress: Progress::new(args.interval),
        symbolizer: Symbolizer::new(),
    };
    let traced = pipeline::trace(&args.target, &run_args, options, &attach, &mut books).await?;
    books.now = traced.duration;
    books.known.report_undecodable();
    let report = build_report(args, books, &traced, &library, hooked.into_inner())?;
    let profile = output::malloc::byte_stacks(&report, args.leaks);
    match args.output.format {
        Format::Table => output::malloc::write(&report, &mut outputs.report)?,
        Format::Json => output::json::write_value(&report, &mut outputs.report)?,
        Format::Folded => output::folded::write(&profile, &mut outputs.report)?,
    }
    outputs.finish(&profile, "memtrace malloc")
}

fn build_report(
    args: &MallocArgs,
    mut books: AllocBooks,
    traced: &pipeline::Traced,
    library: &Path,
    functions: Vec<String>,
) -> Result<MallocReport> {
    let round = |value: f64| value.round() as u64;
    let mut processes: Vec<MallocProcessRow> = books
        .processes
        .iter()
        .map(|(&pid, process)| {
            let mut row = MallocProcessRow {
                pid,
                comm: books.known.name(pid),
                bytes_allocated: round(process.allocated),
                bytes_freed: round(process.freed),
                frees_of_untraced_blocks: process.frees_of_untraced_blocks,
                ..MallocProcessRow::default()
            };
            for (&function, &calls) in &process.calls {
                *calls_of(&mut row, function) = round(calls);
            }
            row
        })
        .collect();
    processes.sort_by_key(|p| (std::cmp::Reverse(p.bytes_allocated), p.pid));

    let mut by_bytes: Vec<(StackKey, Weight)> =
        books.stacks.iter().map(|(k, t)| (*k, *t)).collect();
    by_bytes.sort_by(|a, b| {
        (b.1.bytes)
            .total_cmp(&a.1.bytes)
            .then(a.0.user_stack.cmp(&b.0.user_stack))
    });
    by_bytes.truncate(args.output.top);
    let keys: Vec<(StackKey, u64)> = by_bytes.iter().map(|(k, t)| (*k, round(t.calls))).collect();
    let known = &books.known;
    let label = |key: &StackKey| (known.name(key.tgid), "alloc");
    let mut symbolizer = std::mem::take(&mut books.symbolizer);
    let rows = stacks::rows(&traced.tracer, &mut symbolizer, &known.maps, &keys, &label)?;
    let stacks = rows
        .into_iter()
        .zip(&by_bytes)
        .map(|(stack, (_, totals))| AllocStackRow {
            calls: round(totals.calls),
            bytes: round(totals.bytes),
            stack,
        })
        .collect();

    let outstanding = if args.leaks {
        let mut groups = books.outstanding_by_stack(args.min_age.unwrap_or_default());
        groups.truncate(args.output.top);
        let keys: Vec<(StackKey, u64)> =
            groups.iter().map(|(k, o)| (*k, o.allocations())).collect();
        let label = |key: &StackKey| (known.name(key.tgid), "outstanding");
        let rows = stacks::rows(&traced.tracer, &mut symbolizer, &known.maps, &keys, &label)?;
        rows.into_iter()
            .zip(&groups)
            .map(|(stack, (_, o))| OutstandingRow {
                allocations: o.allocations(),
                bytes: o.bytes(),
                oldest_age_s: books.now.saturating_sub(o.oldest).as_secs_f64(),
                stack,
            })
            .collect()
    } else {
        Vec::new()
    };
    let sizes = books
        .sizes
        .iter()
        .enumerate()
        .filter(|(_, &count)| count > 0.0)
        .map(|(i, &count)| SizeBucket {
            le: if i == 0 { 1 } else { 1u64 << i.min(63) },
            count: round(count),
        })
        .collect();
    let counters = traced.tracer.counters()?;
    Ok(MallocReport {
        command: "malloc",
        duration_s: traced.duration.as_secs_f64(),
        lost_events: counters.lost,
        sampled: books.sample_bytes > 0,
        sample_bytes: books.sample_bytes,
        outstanding_dropped: books.outstanding_dropped,
        exited_blocks: books.exited_blocks,
        calls_untracked: counters.alloc_calls_untracked,
        target: traced.target.clone(),
        exit: traced.exit.clone(),
        tracer: TracerCost::measure(traced.attach_ms, &traced.tracer),
        library: library.display().to_string(),
        functions,
        processes,
        stacks,
        outstanding,
        sizes,
    })
}

#[cfg(test)]
mod tests {
    use super::size_bucket;

    #[test]
    fn sizes_fall_in_log2_buckets() {
        assert_eq!(size_bucket(0), 0);
        assert_eq!(size_bucket(1), 0);
        assert_eq!(size_bucket(2), 1);
        assert_eq!(size_bucket(3), 2);
        assert_eq!(size_bucket(64), 6);
        assert_eq!(size_bucket(65), 7);
        assert_eq!(size_bucket(u64::MAX), 64);
    }
}
