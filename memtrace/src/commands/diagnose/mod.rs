//! `memtrace diagnose`: watches one process (a command: with what it starts) for a while (its faults and swap traffic with
//! eBPF, its memory from /proc every interval), then says what is wrong, with evidence and
//! the command to run next (see `verdicts`).
pub mod args;
mod html;
mod report;
mod sampler;
mod table;
mod verdicts;

use std::io::Write;

use anyhow::Result;

use self::{args::DiagnoseArgs, report::DiagnoseReport, sampler::Sampler, verdicts::Severity};
use crate::{
    commands::options::TableOrJson,
    error::GateFailed,
    host::system_memory::SystemSample,
    kernel::hooks::{self, Attachment, CommandHooks},
    output::{files, flamegraph, json, profile::Reweighted},
    trace::{
        pipeline::{self, Traced},
        request::{self, KernelOptions, TargetRequest, TraceRequest},
        stack_groups::Grouping,
        stacks::StackKey,
        symbolize::Symbolizer,
    },
};

pub const HOOKS: CommandHooks = CommandHooks {
    needs: &[&hooks::MINOR_FAULT, &hooks::MAJOR_FAULT, &hooks::PAGE_ALLOC],
    improves: &hooks::SWAP,
};

/// 1 minor fault in this many has its stacks taken for the flame graph.
const MINOR_PERIOD: u64 = 100;

pub async fn run(args: DiagnoseArgs) -> Result<()> {
    let mut out = files::report_writer(args.output.as_deref())?;
    // Swap traffic can only be counted where there is swap.
    let swap_layout = if SystemSample::read().swap_total_kb > 0 {
        request::swap_layout("swap traffic is judged from /proc/vmstat alone")
    } else {
        None
    };
    let swap = swap_layout.is_some();
    // Fault counts are the kernel's (/proc); the fault programs only take stacks, for --html.
    let stacks = args.html.is_some();
    // Page allocations counted in the kernel, no stacks: allocation churn's evidence.
    let mut hooks = vec![Attachment::Hook(&hooks::PAGE_ALLOC)];
    if swap {
        hooks.extend(hooks::SWAP.into_iter().map(Attachment::Hook));
    }
    if stacks {
        hooks.push(Attachment::Sampled {
            hook: &hooks::MINOR_FAULT,
            period: MINOR_PERIOD,
        });
        hooks.push(Attachment::Sampled {
            hook: &hooks::MAJOR_FAULT,
            period: 1,
        });
    }
    // A command's tree is its work, as perf record's `-- CMD` is.
    let tree = args.pid.is_none() && !args.no_follow_children;
    let request = TraceRequest {
        declared: &HOOKS,
        target: match args.pid {
            Some(pid) => TargetRequest::Pids(vec![pid]),
            None => TargetRequest::Command(args.command.clone()),
        },
        follow_children: tree,
        stop_after: Some(args.duration),
        kernel: KernelOptions {
            user_stacks: stacks,
            kernel_stacks: stacks,
            swap: swap_layout,
            stack_sample_period: 100,
            unwind_memory_mib: args.unwind.memory_mib(),
            python_frames: args.unwind.python_frames(),
            ..KernelOptions::default()
        },
        hooks,
    };
    let mut sampler = Sampler::new(args.interval, swap, tree);
    let traced = pipeline::trace(request, &mut sampler).await?;
    let pid = sampler.pid.unwrap_or(0);
    let verdicts = verdicts::judge(pid, &sampler.samples, &sampler.limits, &args.thresholds);
    let raised = verdicts
        .iter()
        .filter(|v| v.severity >= Severity::Warning)
        .count();
    let report = DiagnoseReport {
        header: traced.header("diagnose"),
        pid,
        comm: sampler.comm.clone(),
        verdicts,
        samples: std::mem::take(&mut sampler.samples),
        stack_limit_kb: sampler.limits.stack_limit_kb,
        cgroup: sampler.cgroup.clone(),
        cgroup_limit_bytes: sampler.limits.cgroup_limit_bytes,
    };
    if let Some(path) = &args.html {
        let flamegraph = fault_flamegraph(&sampler, &traced, &report)?;
        let mut page = files::report_writer(Some(path))?;
        html::write(&report, &flamegraph, &mut page)?;
        page.flush()?;
    }
    match args.format {
        TableOrJson::Table => table::write(&report, &mut out)?,
        TableOrJson::Json => json::write_value(&report, &mut out)?,
    }
    out.flush()?;
    if raised > 0 {
        return Err(GateFailed(format!(
            "{raised} verdict{} of warning or worse (exit 3)",
            if raised == 1 { "" } else { "s" }
        ))
        .into());
    }
    Ok(())
}

/// The flame graph of the sampled faults (counts scaled back to all faults), as SVG.
fn fault_flamegraph(
    sampler: &Sampler,
    traced: &Traced,
    report: &DiagnoseReport,
) -> Result<Vec<u8>> {
    let known = &traced.processes;
    let mut symbolizer = Symbolizer::new();
    let mut rows = Vec::new();
    for (counts, kind, period) in [
        (&sampler.minor_stacks, "minor", MINOR_PERIOD),
        (&sampler.major_stacks, "major", 1),
    ] {
        let label = |key: &StackKey| (known.name(key.tgid), kind);
        let (all, _) = counts.resolve(
            &traced.tracer,
            &mut symbolizer,
            &known.maps,
            None,
            period,
            Grouping::default(),
            &label,
        )?;
        rows.extend(all);
    }
    let profile = Reweighted {
        command: "diagnose",
        target: format!("pid {}", report.pid),
        duration_s: report.header.duration_s,
        lost_events: report.header.lost_events,
        rows,
        sample_type: ("faults", "count"),
        period: 1,
        values: None,
        sampling_note: Some(format!(
            "stacks of 1 minor fault in {MINOR_PERIOD} and every major fault"
        )),
        context: Vec::new(),
    };
    let mut svg = Vec::new();
    flamegraph::write(
        &profile,
        &format!("Faults of pid {} ({})", report.pid, report.comm),
        &mut svg,
    )?;
    Ok(svg)
}
