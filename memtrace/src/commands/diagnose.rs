//! `memtrace diagnose`: watches one process for a while (its faults and swap traffic with
//! eBPF, its memory from /proc every interval), then says what is wrong, with evidence and
//! the command to run next (see `verdicts`).
use std::{io::Write, time::Duration};

use anyhow::Result;
use memtrace_common::EventKind;
use serde::Serialize;

use crate::{
    bpf::Tracer,
    cli::{DiagnoseArgs, RunArgs, TableOrJson, TargetArgs},
    commands::pages::Origin,
    error::GateFailed,
    memcg::MemoryHierarchy,
    output::{self, profile::Reweighted},
    outputs,
    pipeline::{self, KernelOptions},
    process_memory,
    processes::Processes,
    report::{CommandExit, TracerCost},
    session::Consumer,
    stacks::{StackCounts, StackKey},
    symbolize::Symbolizer,
    sysmem::SystemSample,
    verdicts::{self, Limits, Sample, Severity, Verdict},
};

/// The JSON report (the contract: command, pid, duration_s, verdicts, samples).
#[derive(Serialize)]
pub struct DiagnoseReport {
    pub command: &'static str,
    pub pid: u32,
    pub comm: String,
    pub duration_s: f64,
    pub verdicts: Vec<Verdict>,
    pub samples: Vec<Sample>,
    pub stack_limit_kb: Option<u64>,
    pub cgroup: Option<String>,
    pub cgroup_limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<CommandExit>,
    /// Events the kernel could not deliver (the fault stacks of --html).
    pub lost_events: u64,
    /// What watching cost memtrace itself.
    pub tracer: TracerCost,
}

/// Samples the watched process every interval.
struct Watch {
    known: Processes,
    pid: Option<u32>,
    comm: String,
    interval: Duration,
    next_sample: Duration,
    samples: Vec<Sample>,
    limits: Limits,
    hierarchy: Option<MemoryHierarchy>,
    cgroup: Option<String>,
    swap: bool,
    /// Sampled fault stacks (--html's flame graph): minor faults 1 in MINOR_PERIOD, every
    /// major one.
    minor_stacks: StackCounts,
    major_stacks: StackCounts,
}

/// 1 minor fault in this many has its stacks taken for the flame graph.
const MINOR_PERIOD: u64 = 100;

impl Watch {
    /// The process now, or None once it is gone.
    fn sample(&mut self, t: Duration, tracer: &Tracer) -> Option<Sample> {
        let pid = self.pid?;
        let process = procfs::process::Process::new(pid as i32).ok()?;
        let stat = process.stat().ok()?;
        // An exiting process has given its memory back already: not a reading of it.
        if matches!(stat.state, 'Z' | 'X') {
            return None;
        }
        let status = process.status().ok()?;
        status.vmrss?;
        self.look(&process, &stat.comm);
        // The kernel's table counts only the watched process's allocations.
        let pages_allocated = tracer
            .page_counts()
            .map(|counts| {
                counts
                    .iter()
                    .filter(|(key, _)| Origin::of_key(key).pid == pid)
                    .map(|(_, count)| count.pages)
                    .sum()
            })
            .unwrap_or(0);
        let swapped = if self.swap {
            tracer
                .swap_counts()
                .ok()
                .and_then(|counts| counts.get(&pid).copied())
                .unwrap_or_default()
        } else {
            Default::default()
        };
        let cgroup_usage_bytes = match (&self.hierarchy, &self.cgroup) {
            (Some(h), Some(path)) => h.read(path).usage_bytes,
            _ => None,
        };
        Some(Sample {
            t: t.as_secs_f64(),
            rss_kb: status.vmrss.unwrap_or(0),
            vsz_kb: stat.vsize / 1024,
            swap_kb: status.vmswap.unwrap_or(0),
            minflt: stat.minflt,
            majflt: stat.majflt,
            rss_anon_kb: status.rssanon.unwrap_or(0),
            stack_kb: status.vmstk.unwrap_or(0),
            pages_allocated,
            swap_out_pages: swapped.out_written,
            swap_in_pages: swapped.swapped_in,
            cgroup_usage_bytes,
        })
    }

    /// Its name, stack limit, cgroup and the cgroup's limit, which an exec or a move (a
    /// command that puts itself in a cgroup, a container runtime) can change.
    fn look(&mut self, process: &procfs::process::Process, comm: &str) {
        comm.clone_into(&mut self.comm);
        self.limits.stack_limit_kb = process_memory::stack_limit_kb(process);
        if let (Some(h), Some(pid)) = (&self.hierarchy, self.pid) {
            let path = h.path_of(pid);
            if path != self.cgroup {
                self.limits.cgroup_limit_bytes =
                    path.as_ref().and_then(|path| h.read(path).limit_bytes);
                self.cgroup = path;
                // Usage read so far was another cgroup's: not to be held against this limit.
                for sample in &mut self.samples {
                    sample.cgroup_usage_bytes = None;
                }
            }
        }
    }
}

impl Consumer for Watch {
    fn processes(&mut self) -> &mut Processes {
        &mut self.known
    }

    fn on_targets(&mut self, pids: &[u32]) {
        self.pid = pids.first().copied();
    }

    fn on_record(&mut self, bytes: &[u8]) {
        // Fork and exec records keep names and maps current; faults bring their stacks.
        let Some(event) = self.known.admit(bytes) else {
            return;
        };
        let key = self.known.stack_key(&event);
        match event.kind {
            EventKind::MinorFault => self.minor_stacks.add(key, 1),
            EventKind::MajorFault => self.major_stacks.add(key, 1),
            _ => {}
        }
    }

    fn on_tick(&mut self, elapsed: Duration, tracer: &mut Tracer) {
        if elapsed < self.next_sample {
            return;
        }
        self.next_sample = elapsed + self.interval;
        if let Some(sample) = self.sample(elapsed, tracer) {
            self.samples.push(sample);
        }
    }
}

pub async fn run(args: &DiagnoseArgs) -> Result<()> {
    let mut out = outputs::report_writer(args.output.as_deref())?;
    let target = TargetArgs {
        pids: args.pid.into_iter().collect(),
        cgroup: None,
        follow_children: false,
        command: args.command.clone(),
    };
    let run_args = RunArgs {
        duration: Some(args.duration),
        interval: None,
    };
    // Swap traffic can only be counted where there is swap.
    let swap_layout = if SystemSample::read().swap_total_kb > 0 {
        pipeline::swap_layout("swap traffic is judged from /proc/vmstat alone")
    } else {
        None
    };
    let swap = swap_layout.is_some();
    // Fault counts are the kernel's (/proc); the fault programs only take stacks, for --html.
    let stacks = args.html.is_some();
    let options = KernelOptions {
        ring_bytes: pipeline::RING_BYTES,
        page_stacks: false,
        user_stacks: stacks,
        kernel_stacks: stacks,
        file_tags: false,
        swap: swap_layout,
        malloc: None,
        // Counted in the kernel, no stacks: allocation churn's evidence.
        pages: true,
        stack_sample_period: 100,
        exits: false,
        oom: false,
    };
    let attach = |tracer: &mut Tracer, _single: Option<u32>| {
        tracer.attach_tracepoint("page_alloc", "kmem", "mm_page_alloc")?;
        if swap {
            tracer.attach_swap()?;
        }
        if stacks {
            tracer.attach_faults(true, false, MINOR_PERIOD)?;
            tracer.attach_faults(false, true, 1)?;
        }
        Ok(())
    };
    let mut watch = Watch {
        known: Processes::default(),
        pid: None,
        comm: String::new(),
        interval: args.interval,
        next_sample: Duration::ZERO,
        samples: Vec::new(),
        limits: Limits::default(),
        hierarchy: MemoryHierarchy::find(),
        cgroup: None,
        swap,
        minor_stacks: StackCounts::default(),
        major_stacks: StackCounts::default(),
    };
    let traced = pipeline::trace(&target, &run_args, options, &attach, &mut watch).await?;
    let pid = watch.pid.unwrap_or(0);
    let watch_stacks = FaultStacks {
        minor: std::mem::take(&mut watch.minor_stacks),
        major: std::mem::take(&mut watch.major_stacks),
        known: std::mem::take(&mut watch.known),
    };
    let verdicts = verdicts::judge(pid, &watch.samples, &watch.limits, &args.thresholds);
    let raised = verdicts
        .iter()
        .filter(|v| v.severity >= Severity::Warning)
        .count();
    let report = DiagnoseReport {
        command: "diagnose",
        pid,
        comm: watch.comm,
        duration_s: traced.duration.as_secs_f64(),
        verdicts,
        samples: watch.samples,
        stack_limit_kb: watch.limits.stack_limit_kb,
        cgroup: watch.cgroup,
        cgroup_limit_bytes: watch.limits.cgroup_limit_bytes,
        exit: traced.exit,
        lost_events: traced.tracer.counters().map_or(0, |c| c.lost),
        tracer: TracerCost::measure(traced.attach_ms, &traced.tracer),
    };
    if let Some(path) = &args.html {
        let flamegraph = fault_flamegraph(&watch_stacks, &traced.tracer, &report)?;
        let mut page = outputs::report_writer(Some(path))?;
        output::diagnose_html::write(&report, &flamegraph, &mut page)?;
        page.flush()?;
    }
    match args.format {
        TableOrJson::Table => output::diagnose::write(&report, &mut out)?,
        TableOrJson::Json => output::json::write_value(&report, &mut out)?,
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

/// The sampled fault stacks and what names them.
struct FaultStacks {
    minor: StackCounts,
    major: StackCounts,
    known: Processes,
}

/// The flame graph of the sampled faults (counts scaled back to all faults), as SVG.
fn fault_flamegraph(
    stacks: &FaultStacks,
    tracer: &Tracer,
    report: &DiagnoseReport,
) -> Result<Vec<u8>> {
    let mut symbolizer = Symbolizer::new();
    let mut rows = Vec::new();
    for (counts, kind, period) in [
        (&stacks.minor, "minor", MINOR_PERIOD),
        (&stacks.major, "major", 1),
    ] {
        let label = |key: &StackKey| (stacks.known.name(key.tgid), kind);
        rows.extend(counts.resolve(
            tracer,
            &mut symbolizer,
            &stacks.known.maps,
            None,
            period,
            &label,
        )?);
    }
    let profile = Reweighted {
        command: "diagnose",
        target: format!("pid {}", report.pid),
        duration_s: report.duration_s,
        lost_events: tracer.counters().map_or(0, |c| c.lost),
        rows,
        sample_type: ("faults", "count"),
        period: 1,
        sampling_note: Some(format!(
            "stacks of 1 minor fault in {MINOR_PERIOD} and every major fault"
        )),
    };
    let mut svg = Vec::new();
    output::flamegraph::write(
        &profile,
        &format!("Faults of pid {} ({})", report.pid, report.comm),
        &mut svg,
    )?;
    Ok(svg)
}
