//! What `memtrace pages` keeps while tracing: the kernel's exact counts (per process, order,
//! GFP flags, migratetype), reloaded each live interval and at the end, and the stacks the
//! events bring.
use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use memtrace_common::{EventKind, PageContext, PageDetail, PageKey};

use crate::{
    kernel::tracer::Tracer,
    trace::{
        consumer::Consumer,
        page_origin::{context_name, Origin},
        processes::Processes,
        progress::Progress,
        records::{comm_to_string, Record},
        stack_groups::Weight,
        stacks::StackKey,
    },
};

/// Allocations and the pages they took.
#[derive(Default, Clone, Copy)]
pub struct Totals {
    pub(super) allocations: u64,
    pub(super) pages: u64,
}

/// A stack row's weight: its pages, and whom they were allocated for.
impl Weight for (Totals, PageContext) {
    fn merge(&mut self, other: &Self) {
        self.0 += other.0;
    }
    fn heft(&self) -> f64 {
        self.0.pages as f64
    }
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, other: Self) {
        self.allocations += other.allocations;
        self.pages += other.pages;
    }
}

/// One allocation (or a kernel count of many): what it was and how much.
pub struct Allocation {
    origin: Origin,
    detail: PageDetail,
    gfp_flags: u64,
    totals: Totals,
}

#[derive(Default)]
pub struct Tallies {
    pub(super) origins: HashMap<Origin, Totals>,
    pub(super) orders: BTreeMap<u32, Totals>,
    pub(super) gfp: HashMap<u64, Totals>,
    pub(super) migratetypes: BTreeMap<u32, Totals>,
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
pub struct PageBooks {
    /// Rebuilt from the kernel's table at each live line and at the end.
    pub(super) tallies: Tallies,
    pub(super) stacks: HashMap<StackKey, (Totals, PageContext)>,
    /// Names from the kernel's counts, for processes gone before the report.
    names: HashMap<u32, String>,
    /// Pages per origin at the last live line.
    last_pages: HashMap<Origin, u64>,
    pub(super) progress: Progress,
}

impl PageBooks {
    pub fn new(progress: Progress) -> Self {
        Self {
            tallies: Tallies::default(),
            stacks: HashMap::new(),
            names: HashMap::new(),
            last_pages: HashMap::new(),
            progress,
        }
    }

    /// The kernel's counts so far replace the tallies.
    pub fn load_kernel_counts(&mut self, tracer: &Tracer) {
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

    pub fn name(&self, origin: Origin, known: &Processes) -> String {
        origin.name(known, || {
            self.names.get(&origin.pid).cloned().unwrap_or_default()
        })
    }

    fn live_lines(&mut self, elapsed: Duration, interval: Duration, known: &Processes) {
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
                self.name(origin, known),
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
    fn on_record(&mut self, record: &Record, processes: &mut Processes) {
        let Record::Event(event) = record else {
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
        let mut stack = processes.stack_key(event);
        if allocation.origin.context == PageContext::Interrupt {
            // The interrupted task's user stack says nothing about the allocation.
            stack.tgid = 0;
            stack.user_stack = 0;
        }
        let context = allocation.origin.context;
        let entry = (self.stacks.entry(stack)).or_insert((Totals::default(), context));
        entry.0 += allocation.totals;
    }

    fn on_tick(&mut self, elapsed: Duration, tracer: &mut Tracer, processes: &mut Processes) {
        let Some(interval) = self.progress.interval_due(elapsed) else {
            let counters = tracer.counters().unwrap_or_default();
            let text = format!("{} allocations seen, {} lost", counters.seen, counters.lost);
            self.progress.status(elapsed, &text);
            return;
        };
        self.load_kernel_counts(tracer);
        self.live_lines(elapsed, interval, processes);
    }
}
