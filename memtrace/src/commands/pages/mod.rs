//! `memtrace pages`: the kernel's page allocations per process, order, GFP flags, migratetype
//! and call stack. Interrupts and kernel threads allocate for the kernel: they get rows of
//! their own, never a traced process's. The figures are the kernel's own counts (exact); the
//! events carry only stacks (every allocation's, or 1 in N with --sample).
pub mod args;
mod books;
mod report;
mod table;

use anyhow::Result;
use memtrace_common::PageContext;

use self::{
    args::PagesArgs,
    books::{PageBooks, Totals},
    report::{GfpRow, MigrateTypeRow, OrderRow, PageStackRow, PagesProcessRow, PagesReport},
};
use crate::{
    commands::options::Format,
    kernel::{
        gfp::{GfpNames, MigrateTypes},
        hooks::{self, Attachment, CommandHooks},
    },
    output::{folded, json, profile::Reweighted},
    trace::{
        page_origin::{context_name, Origin},
        pipeline::{self, Traced},
        progress::Progress,
        request::{KernelOptions, TraceRequest},
        stacks::{self, StackKey},
        symbolize::Symbolizer,
    },
};

pub const HOOKS: CommandHooks = CommandHooks {
    needs: &[&hooks::PAGE_ALLOC],
    improves: &[],
};

pub async fn run(args: PagesArgs) -> Result<()> {
    let mut outputs = args.output.open()?;
    let request = TraceRequest {
        declared: &HOOKS,
        target: args.target.request(),
        follow_children: args.target.follows_children(),
        stop_after: args.run.duration,
        kernel: KernelOptions {
            page_stacks: true,
            user_stacks: args.stacks.user(),
            kernel_stacks: args.stacks.kernel(),
            stack_sample_period: args.sample,
            unwind_memory_mib: args.unwind.memory_mib(),
            python_frames: args.unwind.python_frames(),
            ..KernelOptions::default()
        },
        hooks: vec![Attachment::Hook(&hooks::PAGE_ALLOC)],
    };
    let mut books = PageBooks::new(Progress::new(args.run.interval));
    let traced = pipeline::trace(request, &mut books).await?;
    books.progress.finish();
    books.load_kernel_counts(&traced.tracer);
    let report = build_report(&args, &books, &traced)?;
    let profile = page_stacks(&report);
    match args.output.format {
        Format::Table => table::write(&report, args.output.top, &mut outputs.report)?,
        Format::Json => json::write_value(&report, &mut outputs.report)?,
        Format::Folded => folded::write(&profile, &mut outputs.report)?,
    }
    outputs.finish(&profile, "memtrace pages")
}

fn build_report(args: &PagesArgs, books: &PageBooks, traced: &Traced) -> Result<PagesReport> {
    let counters = traced.tracer.counters()?;
    let known = &traced.processes;
    let seconds = traced.duration.as_secs_f64().max(1e-9);
    // Counted in the kernel: exact, whatever the stack sampling.
    let scaled = |t: &Totals| (t.allocations, t.pages);
    let mut processes: Vec<PagesProcessRow> = (books.tallies.origins.iter())
        .map(|(origin, totals)| {
            let (allocations, pages) = scaled(totals);
            PagesProcessRow {
                pid: origin.pid,
                comm: books.name(*origin, known),
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
    let (stacks, stacks_total) = stack_rows(args, books, traced)?;
    Ok(PagesReport {
        header: traced.header("pages"),
        sampled: args.sample > 1,
        sample_period: args.sample,
        counts_full: counters.page_counts_full,
        processes,
        orders,
        gfp,
        migratetypes,
        stacks_total,
        stacks,
    })
}

/// The stacks with the most pages (every one when a stack sink needs them all), merged as
/// --group-by and --by-address say, symbolized; and how many rows there are in all.
fn stack_rows(
    args: &PagesArgs,
    books: &PageBooks,
    traced: &Traced,
) -> Result<(Vec<PageStackRow>, usize)> {
    let limit = (!args.output.needs_every_stack()).then_some(args.output.top);
    let period = args.sample;
    let stacks: Vec<(StackKey, (Totals, PageContext))> =
        books.stacks.iter().map(|(k, w)| (*k, *w)).collect();
    let label = |key: &StackKey| {
        let context = books.stacks.get(key).map_or(PageContext::Process, |s| s.1);
        (
            books.name(Origin::of(key.tgid, context), &traced.processes),
            "pages",
        )
    };
    let count = |(totals, _): &(Totals, PageContext)| totals.allocations * period;
    let (rows, total) = stacks::grouped_rows(
        &traced.tracer,
        &mut Symbolizer::new(),
        &traced.processes.maps,
        stacks,
        args.output.grouping(),
        limit,
        &count,
        &label,
    )?;
    let rows = (rows.into_iter())
        .map(|(stack, (totals, context))| PageStackRow {
            pages: totals.pages * period,
            context: context_name(context),
            stack,
        })
        .collect();
    Ok((rows, total))
}

/// The stacks weighed by pages, for the stack sinks.
fn page_stacks(report: &PagesReport) -> Reweighted {
    Reweighted {
        command: report.header.command,
        target: report.header.target.clone(),
        duration_s: report.header.duration_s,
        lost_events: report.header.lost_events,
        rows: (report.stacks.iter())
            .map(|r| Reweighted::row(&r.stack, r.pages))
            .collect(),
        sample_type: ("pages", "count"),
        period: report.sample_period,
        values: None,
        sampling_note: report.sampled.then(|| {
            format!(
                "stacks sampled 1 in {}: pages per stack are estimates",
                report.sample_period
            )
        }),
        context: Vec::new(),
    }
}
