//! `memtrace pages`: the kernel's page allocations per process, order, GFP flags, migratetype
//! and call stack. Interrupts and kernel threads allocate for the kernel: they get rows of
//! their own, never a traced process's. The figures are the kernel's own counts (exact); the
//! events carry only stacks (every allocation's, or 1 in N with --sample).
use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use anyhow::Result;
use memtrace_common::{EventKind, PageContext, PageDetail, PageKey};

use crate::{
    bpf::Tracer,
    cli::{Format, PagesArgs, Stacks},
    events::comm_to_string,
    gfp::{GfpNames, MigrateTypes},
    output::{self, profile::Reweighted},
    outputs::Outputs,
    pages_report::{GfpRow, MigrateTypeRow, OrderRow, PageStackRow, PagesProcessRow, PagesReport},
    pipeline::{self, KernelOptions},
    processes::Processes,
    progress::Progress,
    report::TracerCost,
    session::Consumer,
    stacks::{self, StackKey},
    symbolize::Symbolizer,
};

/// Allocations and the pages they took.
#[derive(Default, Clone, Copy)]
struct Totals {
    allocations: u64,
    pages: u64,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, other: Self) {
        self.allocations += other.allocations;
        self.pages += other.pages;
    }
}

/// Who an allocation is credited to: a process, a kernel thread, or interrupts (pid 0).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    pub pid: u32,
    pub context: PageContext,
}

impl Origin {
    fn of(tgid: u32, context: PageContext) -> Self {
        let pid = if context == PageContext::Interrupt {
            0
        } else {
            tgid
        };
        Self { pid, context }
    }

    /// Whom an entry of the kernel's count table is credited to.
    pub fn of_key(key: &PageKey) -> Self {
        Self::of(key.tgid, PageDetail::unpack(key.detail).context)
    }

    /// Its name: "[interrupt]"; else the process's as memtrace knows it; else `recorded`
    /// (the kernel's, at its first counted allocation: the process may be gone).
    pub fn name(self, known: &Processes, recorded: impl FnOnce() -> String) -> String {
        if self.context == PageContext::Interrupt {
            return "[interrupt]".to_owned();
        }
        let name = known.name(self.pid);
        if name.is_empty() {
            recorded()
        } else {
            name
        }
    }
}

fn context_name(context: PageContext) -> &'static str {
    match context {
        PageContext::Process => "process",
        PageContext::KernelThread => "kernel thread",
        PageContext::Interrupt => "interrupt",
    }
}

/// One allocation (or a kernel count of many): what it was and how much.
struct Allocation {
    origin: Origin,
    detail: PageDetail,
    gfp_flags: u64,
    totals: Totals,
}

#[derive(Default)]
struct Tallies {
    origins: HashMap<Origin, Totals>,
    orders: BTreeMap<u32, Totals>,
    gfp: HashMap<u64, Totals>,
    migratetypes: BTreeMap<u32, Totals>,
}

impl Tallies {
    fn add(&mut self, a: &Allocation) {
        *self.origins.entry(a.origin).or_default() += a.totals;
        *self.orders.entry(a.detail.order).or_default() += a.totals;
        *self.gfp.entry(a.gfp_flags).or_default() += a.totals;
        *self.migratetypes.entry(a.detail.migratetype).or_default() += a.totals;
    }
}

/// Page allocations: the kernel's counts, and stacks from events.
struct PageBooks {
    known: Processes,
    /// Rebuilt from the kernel's table at each live line and at the end.
    tallies: Tallies,
    stacks: HashMap<StackKey, (Totals, PageContext)>,
    /// Names from the kernel's counts, for processes gone before the report.
    names: HashMap<u32, String>,
    /// Pages per origin at the last live line.
    last_pages: HashMap<Origin, u64>,
    progress: Progress,
}

impl PageBooks {
    /// The kernel's counts so far replace the tallies.
    fn load_kernel_counts(&mut self, tracer: &Tracer) {
        let Ok(counts) = tracer.page_counts() else {
            return;
        };
        self.tallies = Tallies::default();
        for (key, count) in counts {
            let allocation = allocation_of(&key, count.allocations, count.pages);
            if count.comm[0] != 0 {
                self.names
                    .entry(allocation.origin.pid)
                    .or_insert_with(|| comm_to_string(&count.comm));
            }
            self.tallies.add(&allocation);
        }
    }

    fn name(&self, origin: Origin) -> String {
        origin.name(&self.known, || {
            self.names.get(&origin.pid).cloned().unwrap_or_default()
        })
    }

    fn live_lines(&mut self, elapsed: Duration, interval: Duration) {
        let seconds = interval.as_secs_f64();
        let mut rates: Vec<(Origin, u64)> = self
            .tallies
            .origins
            .iter()
            .map(|(o, t)| (*o, t.pages - self.last_pages.get(o).copied().unwrap_or(0)))
            .filter(|(_, delta)| *delta > 0)
            .collect();
        rates.sort_by_key(|(_, delta)| std::cmp::Reverse(*delta));
        for (origin, delta) in rates.into_iter().take(LIVE_ROWS) {
            self.progress.interval_line(&format!(
                "{:>8.1}s  pid {:<7} {:<16} {:<13} pages/s {:>10.0}",
                elapsed.as_secs_f64(),
                origin.pid,
                self.name(origin),
                context_name(origin.context),
                delta as f64 / seconds,
            ));
        }
        self.last_pages = (self.tallies.origins.iter())
            .map(|(o, t)| (*o, t.pages))
            .collect();
    }
}

/// Rows per live interval.
const LIVE_ROWS: usize = 10;

fn allocation_of(key: &PageKey, allocations: u64, pages: u64) -> Allocation {
    let detail = PageDetail::unpack(key.detail);
    Allocation {
        origin: Origin::of(key.tgid, detail.context),
        detail,
        gfp_flags: key.gfp_flags,
        totals: Totals { allocations, pages },
    }
}

impl Consumer for PageBooks {
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
        if event.kind != EventKind::PageAlloc {
            return;
        }
        let key = PageKey {
            tgid: event.raw.tgid,
            detail: event.raw.detail,
            gfp_flags: event.raw.addr,
        };
        let allocation = allocation_of(&key, 1, event.raw.weight);
        let mut stack = self.known.stack_key(&event);
        if allocation.origin.context == PageContext::Interrupt {
            // The interrupted task's user stack says nothing about the allocation.
            stack.tgid = 0;
            stack.user_stack = 0;
        }
        let context = allocation.origin.context;
        let entry = (self.stacks.entry(stack)).or_insert((Totals::default(), context));
        entry.0 += allocation.totals;
    }

    fn on_tick(&mut self, elapsed: Duration, tracer: &mut Tracer) {
        let Some(interval) = self.progress.interval_due(elapsed) else {
            let counters = tracer.counters().unwrap_or_default();
            let text = format!("{} allocations seen, {} lost", counters.seen, counters.lost);
            self.progress.status(elapsed, &text);
            return;
        };
        self.load_kernel_counts(tracer);
        self.live_lines(elapsed, interval);
    }
}

pub async fn run(args: &PagesArgs) -> Result<()> {
    let mut outputs = Outputs::open(&args.output)?;
    let options = KernelOptions {
        page_stacks: true,
        ring_bytes: pipeline::RING_BYTES,
        user_stacks: matches!(args.stacks, Stacks::User | Stacks::Both),
        kernel_stacks: matches!(args.stacks, Stacks::Kernel | Stacks::Both),
        file_tags: false,
        swap: None,
        malloc: None,
        pages: true,
        stack_sample_period: args.sample,
        exits: false,
        oom: false,
    };
    let mut books = PageBooks {
        known: Processes::default(),
        tallies: Tallies::default(),
        stacks: HashMap::new(),
        names: HashMap::new(),
        last_pages: HashMap::new(),
        progress: Progress::new(args.run.interval),
    };
    let attach = |tracer: &mut Tracer, _single: Option<u32>| {
        tracer.attach_tracepoint("page_alloc", "kmem", "mm_page_alloc")
    };
    let traced = pipeline::trace(&args.target, &args.run, options, &attach, &mut books).await?;
    books.progress.finish();
    books.load_kernel_counts(&traced.tracer);
    books.known.report_undecodable();
    let report = build_report(args, &books, &traced)?;
    let profile = page_stacks(&report);
    match args.output.format {
        Format::Table => output::pages::write(&report, args.output.top, &mut outputs.report)?,
        Format::Json => output::json::write_value(&report, &mut outputs.report)?,
        Format::Folded => output::folded::write(&profile, &mut outputs.report)?,
    }
    outputs.finish(&profile, "memtrace pages")
}

fn build_report(
    args: &PagesArgs,
    books: &PageBooks,
    traced: &pipeline::Traced,
) -> Result<PagesReport> {
    let counters = traced.tracer.counters()?;
    let seconds = traced.duration.as_secs_f64().max(1e-9);
    // Counted in the kernel: exact, whatever the stack sampling.
    let scaled = |t: &Totals| (t.allocations, t.pages);
    let mut processes: Vec<PagesProcessRow> = (books.tallies.origins.iter())
        .map(|(origin, totals)| {
            let (allocations, pages) = scaled(totals);
            PagesProcessRow {
                pid: origin.pid,
                comm: books.name(*origin),
                context: context_name(origin.context),
                pages,
                allocations,
                pages_per_s: pages as f64 / seconds,
            }
        })
        .collect();
    processes.sort_by_key(|row| (std::cmp::Reverse(row.pages), row.pid));
    let orders = (books.tallies.orders.iter())
        .map(|(&order, totals)| {
            let (allocations, pages) = scaled(totals);
            OrderRow {
                order,
                allocations,
                pages,
            }
        })
        .collect();
    let names = GfpNames::from_tracefs().unwrap_or_else(|err| {
        log::debug!("GFP flag names from tracefs: {err:#}; using the built-in table");
        GfpNames::builtin()
    });
    let mut gfp: Vec<GfpRow> = (books.tallies.gfp.iter())
        .map(|(&value, totals)| {
            let (allocations, pages) = scaled(totals);
            GfpRow {
                flags: names.decode(value),
                value,
                pages,
                allocations,
            }
        })
        .collect();
    gfp.sort_by_key(|row| (std::cmp::Reverse(row.pages), row.value));
    let types = MigrateTypes::from_btf().unwrap_or_else(|_| MigrateTypes::builtin());
    let mut migratetypes: Vec<MigrateTypeRow> = (books.tallies.migratetypes.iter())
        .map(|(&value, totals)| {
            let (allocations, pages) = scaled(totals);
            MigrateTypeRow {
                migratetype: types.name(value),
                pages,
                allocations,
            }
        })
        .collect();
    migratetypes.sort_by_key(|row| std::cmp::Reverse(row.pages));
    Ok(PagesReport {
        command: "pages",
        duration_s: traced.duration.as_secs_f64(),
        lost_events: counters.lost,
        sampled: args.sample > 1,
        sample_period: args.sample,
        counts_full: counters.page_counts_full,
        target: traced.target.clone(),
        exit: traced.exit.clone(),
        tracer: TracerCost::measure(traced.attach_ms, &traced.tracer),
        processes,
        orders,
        gfp,
        migratetypes,
        stacks: stack_rows(args, books, traced)?,
    })
}

/// The stacks with the most pages (every one when a stack sink needs them all), symbolized.
fn stack_rows(
    args: &PagesArgs,
    books: &PageBooks,
    traced: &pipeline::Traced,
) -> Result<Vec<PageStackRow>> {
    let all = args.output.format == Format::Folded
        || args.output.flamegraph.is_some()
        || args.output.pprof.is_some();
    let mut sorted: Vec<(&StackKey, &(Totals, PageContext))> = books.stacks.iter().collect();
    sorted.sort_by(|a, b| {
        (b.1 .0.pages.cmp(&a.1 .0.pages)).then_with(|| {
            (a.0.tgid, a.0.user_stack, a.0.kernel_stack_id).cmp(&(
                b.0.tgid,
                b.0.user_stack,
                b.0.kernel_stack_id,
            ))
        })
    });
    if !all {
        sorted.truncate(args.output.top);
    }
    let period = args.sample;
    let keys: Vec<(StackKey, u64)> = (sorted.iter())
        .map(|(key, (totals, _))| (**key, totals.allocations * period))
        .collect();
    let label = |key: &StackKey| {
        let context = books.stacks.get(key).map_or(PageContext::Process, |s| s.1);
        (books.name(Origin::of(key.tgid, context)), "pages")
    };
    let mut symbolizer = Symbolizer::new();
    let rows = stacks::rows(
        &traced.tracer,
        &mut symbolizer,
        &books.known.maps,
        &keys,
        &label,
    )?;
    Ok(rows
        .into_iter()
        .zip(&sorted)
        .map(|(stack, (_, (totals, context)))| PageStackRow {
            pages: totals.pages * period,
            context: context_name(*context),
            stack,
        })
        .collect())
}

/// The stacks weighed by pages, for the stack sinks.
fn page_stacks(report: &PagesReport) -> Reweighted {
    Reweighted {
        command: report.command,
        target: report.target.clone(),
        duration_s: report.duration_s,
        lost_events: report.lost_events,
        rows: (report.stacks.iter())
            .map(|r| Reweighted::row(&r.stack, r.pages))
            .collect(),
        sample_type: ("pages", "count"),
        period: report.sample_period,
        sampling_note: report.sampled.then(|| {
            format!(
                "stacks sampled 1 in {}: pages per stack are estimates",
                report.sample_period
            )
        }),
    }
}
