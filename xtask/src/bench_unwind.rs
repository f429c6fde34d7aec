//! `cargo xtask bench unwind`: what unwinding user stacks from `.eh_frame` tables in eBPF
//! (`--unwind dwarf`, issue 17) costs, as ratios in one run, side by side with the
//! frame-pointer walk (`--unwind fp`) and with `perf record --call-graph dwarf`:
//! - the fault storm built without frame pointers, every fault 15 frames deep;
//! - the unwinder's own time per frame, from the kernel's eBPF run-time statistics;
//! - the malloc storm built without frame pointers under dwarf, against the frame-pointer
//!   build under fp (today's cost);
//! - attaching to a waiting python3: the tables' build and load time, and memtrace's memory.
//!
//! Each figure is printed beside the goal, and the whole goes to BENCHMARKS.md.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{
    bench::{
        measure, median, round_ratio, rounds, run_once, table, write_section, BpfStats, Config,
        Samples,
    },
    bench_support::{prepare, wait_for_detaching_memtraces, Scratch},
};

/// unwind_storm's arguments: 512 MiB touched 4 times (about 524k faults), each fault 10
/// levels deep (storm_touch, 10 levels, main, and libc's start-up down to _start: 15 frames).
const STORM: [&str; 3] = ["512", "4", "10"];
/// The storm with two callers taking turns page by page (RUN 1: see unwind_storm.c): no
/// fault's stack is the one before it, so each is walked whole (17 frames), none replayed.
const WALKED: [&str; 4] = ["512", "4", "10", "1"];
/// The same 1 level deep (8 frames): the per-frame cost is what the 9 more frames of the
/// deep one add to each run of the fault program.
const WALKED_SHALLOW: [&str; 4] = ["512", "4", "1", "1"];
/// malloc/free pairs in the malloc storm.
const MALLOC_PAIRS: u64 = 1_000_000;
/// Debian's python3 (python3.11, libpython linked in, no frame pointers); `python3` in PATH
/// may be another build (pyenv).
const PYTHON: &str = "/usr/bin/python3";
/// How long each attach run traces the waiting python3.
const ATTACH_TRACE: &str = "500ms";

/// The goals.
const GOAL_STORM_RATIO: f64 = 1.5;
const GOAL_SHARE_OF_PERF: f64 = 0.5;
const GOAL_NS_PER_FRAME: f64 = 100.0;
const GOAL_MALLOC_RATIO: f64 = 1.2;
const GOAL_TABLES_MS: f64 = 50.0;
const GOAL_RSS_MIB: f64 = 60.0;

pub fn unwind() -> Result<()> {
    let (target, memtrace) = prepare()?;
    require_unwind_option(&memtrace)?;
    let scratch = Scratch::new("bench-unwind")?;
    let workloads = target.join("workloads");
    let mut goals = Vec::new();

    eprintln!("the fault storm without frame pointers:");
    let storm = storm(&memtrace, &scratch, &workloads, &mut goals)?;
    eprintln!("the unwinder's time per frame:");
    let per_frame = per_frame(&memtrace, &scratch, &workloads, &mut goals)?;
    eprintln!("the malloc storm:");
    let malloc = malloc(&memtrace, &scratch, &workloads, &mut goals)?;
    eprintln!("attaching to python3:");
    let attach = attach(&memtrace, &scratch, &mut goals)?;

    let text = format!(
        "{storm}\n{per_frame}\n{malloc}\n{attach}\nThe issue's goals:\n\n{}",
        goals_table(&goals)
    );
    println!("{text}");
    write_section(
        "unwind",
        "the workloads built -O2 -fomit-frame-pointer (their own loop time), and memtrace \
         attaching to a waiting python3",
        &text,
    )
}

/// memtrace's `--unwind` (issue 17): without it nothing here measures what it says.
fn require_unwind_option(memtrace: &str) -> Result<()> {
    for subcommand in ["faults", "malloc"] {
        let help = Command::new(memtrace)
            .args([subcommand, "--help"])
            .output()
            .with_context(|| format!("running {memtrace} {subcommand} --help"))?;
        if !String::from_utf8_lossy(&help.stdout).contains("--unwind") {
            bail!(
                "`memtrace {subcommand}` has no --unwind option: this benchmark measures the \
                 .eh_frame unwinder (issue 17)"
            );
        }
    }
    Ok(())
}

/// A figure beside its goal.
struct Goal {
    what: &'static str,
    how: String,
    figure: Option<f64>,
    unit: &'static str,
    goal: f64,
}

fn goals_table(goals: &[Goal]) -> String {
    let mut table = String::from(
        "| goal | figure | how it is computed | goal | met |\n|---|---:|---|---:|---|\n",
    );
    for goal in goals {
        let shown = |v: f64| match goal.unit {
            "x" => format!("{v:.2}x"),
            unit => format!("{v:.0} {unit}"),
        };
        table += &format!(
            "| {} | {} | {} | ≤ {} | {} |\n",
            goal.what,
            goal.figure.map_or_else(|| "-".to_owned(), shown),
            goal.how,
            shown(goal.goal),
            match goal.figure {
                Some(v) if v <= goal.goal => "yes",
                Some(_) => "no",
                None => "-",
            }
        );
    }
    table
}

/// `memtrace SUBCOMMAND ARGS --format json --output REPORT -- COMMAND`: the whole command in the
/// prefix (the workload given to `measure` is empty), so configs may run different commands.
fn memtrace_config(
    memtrace: &str,
    report: &Path,
    args: &[&str],
    name: &str,
    records: &'static str,
    command: Vec<String>,
) -> Config {
    let report_path = report.to_string_lossy().into_owned();
    let prefix = std::iter::once(memtrace)
        .chain(args.iter().copied())
        .chain(["--format", "json", "--output", &report_path, "--"])
        .map(str::to_owned)
        .chain(command)
        .collect();
    Config {
        name: name.to_owned(),
        records,
        prefix,
        report: Some(report.to_owned()),
    }
}

/// The workload `name` in `workloads` with `args`.
fn command(workloads: &Path, name: &str, args: &[&str]) -> Vec<String> {
    std::iter::once(workloads.join(name).to_string_lossy().into_owned())
        .chain(args.iter().map(|a| a.to_string()))
        .collect()
}

fn untraced(name: &str, command: Vec<String>) -> Config {
    Config {
        name: name.to_owned(),
        prefix: command,
        ..Config::untraced()
    }
}

/// What perf prints as it ends: the samples written and the chunks of them it lost.
#[derive(Debug, PartialEq)]
struct PerfEnd {
    samples: Option<u64>,
    lost_chunks: u64,
}

/// Reads perf record's closing lines: `[ perf record: Captured and wrote 4282.123 MB
/// perf.data (524888 samples) ]` and, when its buffers overflowed, `Processed N events and
/// lost M chunks!`.
fn perf_end(stderr: &str) -> PerfEnd {
    let samples = stderr
        .lines()
        .filter(|l| l.contains("perf record: Captured and wrote"))
        .find_map(|l| {
            let before = l.rsplit_once(" samples)")?.0;
            before.rsplit(['(', ' ']).next()?.parse().ok()
        });
    let lost_chunks = stderr
        .lines()
        .filter_map(|l| {
            let before = l.split_once(" chunks")?.0;
            let after_lost = before.rsplit_once("lost ")?.1;
            after_lost.trim().parse::<u64>().ok()
        })
        .sum();
    PerfEnd {
        samples,
        lost_chunks,
    }
}

/// The median over rounds of (a - a_base) / (b - b_base): how `a`'s cost above its baseline
/// compares with `b`'s, round by round (each round's runs are back to back).
fn cost_ratio(a: &Samples, a_base: &Samples, b: &Samples, b_base: &Samples) -> f64 {
    let ratios: Vec<f64> = (a.elapsed.iter().zip(&a_base.elapsed))
        .zip(b.elapsed.iter().zip(&b_base.elapsed))
        .map(|((a, a_base), (b, b_base))| (a - a_base) / (b - b_base))
        .collect();
    median(&ratios)
}

/// The fault storm without frame pointers: untraced, memtrace unwinding every fault with the
/// tables and with frame pointers, memtrace without stacks, and perf copying every fault's
/// stack to unwind it later.
fn storm(
    memtrace: &str,
    scratch: &Path,
    workloads: &Path,
    goals: &mut Vec<Goal>,
) -> Result<String> {
    let deep = || command(workloads, "unwind_storm", &STORM);
    let faults = |file: &str, args: &[&str], name: &str, records| {
        let args: Vec<&str> = std::iter::once("faults")
            .chain(args.iter().copied())
            .collect();
        memtrace_config(memtrace, &scratch.join(file), &args, name, records, deep())
    };
    // perf's file can reach gigabytes: it goes once perf is done, so that the next runs do
    // not share the machine with its write-back.
    let perf_data = scratch.join("perf.data");
    let perf_script = "perf record -e page-faults -c 1 --call-graph dwarf -o \"$0\" -- \"$@\"; \
                       status=$?; rm -f \"$0\" \"$0.old\"; exit $status";
    let configs = [
        untraced("untraced", deep()),
        faults(
            "dwarf.json",
            &["--unwind", "dwarf"],
            "memtrace faults --unwind dwarf",
            "every fault: user stack from .eh_frame tables, address, region",
        ),
        faults(
            "fp.json",
            &["--unwind", "fp"],
            "memtrace faults --unwind fp",
            "every fault: user stack by frame pointers (none here), address, region",
        ),
        faults(
            "none.json",
            &["--stacks", "none"],
            "memtrace faults --stacks none",
            "every fault: address, region (no stacks)",
        ),
        Config {
            name: "perf record -e page-faults -c 1 --call-graph dwarf".into(),
            records: "every fault: registers and 8 KiB of user stack, unwound afterwards",
            prefix: ["sh", "-c", perf_script, &perf_data.to_string_lossy()]
                .into_iter()
                .map(str::to_owned)
                .chain(deep())
                .collect(),
            report: None,
        },
    ];
    let samples = measure(&configs, &[])?;
    let (untraced, dwarf, perf) = (&samples[0], &samples[1], &samples[4]);

    let mut text = format!(
        "On the fault storm without frame pointers (`unwind_storm {}`: -O2 -fomit-frame-pointer, \
         every fault {} levels deep, {} frames down to _start):\n\n{}",
        STORM.join(" "),
        STORM[2],
        storm_frames(STORM[2]),
        table(&configs, &samples)
    );
    text += &walks_table(&configs, &samples);
    // What perf kept: its samples against the faults the workload counted itself.
    let kept: Vec<f64> = (perf.runs.iter())
        .filter_map(|run| {
            let end = perf_end(&run.stderr);
            Some(end.samples? as f64 / run.figures["minflt"].as_f64()?)
        })
        .collect();
    let lost: u64 = perf
        .runs
        .iter()
        .map(|r| perf_end(&r.stderr).lost_chunks)
        .sum();
    text += &format!(
        "\nperf wrote {} of the workload's faults as samples (median of rounds; its getrusage \
         counts the faults), and lost {lost} chunks in all.\n",
        if kept.is_empty() {
            "an unknown share".to_owned()
        } else {
            format!("{:.1}%", median(&kept) * 100.0)
        }
    );

    goals.push(Goal {
        what: "fault storm: memtrace --unwind dwarf vs untraced",
        how: "loop time against the untraced run, median of rounds".into(),
        figure: Some(round_ratio(dwarf, untraced)),
        unit: "x",
        goal: GOAL_STORM_RATIO,
    });
    goals.push(Goal {
        what: "fault storm: memtrace --unwind dwarf's cost vs perf --call-graph dwarf's",
        how: "(dwarf - untraced) / (perf - untraced), loop times, median of rounds".into(),
        figure: Some(cost_ratio(dwarf, untraced, perf, untraced)),
        unit: "x",
        goal: GOAL_SHARE_OF_PERF,
    });
    Ok(text)
}

/// Frames from the faulting function down to _start, DEPTH levels deep: storm_touch, the
/// levels, main, __libc_start_call_main, __libc_start_main, _start.
fn storm_frames(depth: &str) -> u64 {
    depth.parse::<u64>().unwrap_or(0) + 5
}

/// How each memtrace config's walks ended, from its last report (the statistics run's when
/// there was one); empty when no report has an `unwind` object.
fn walks_table(configs: &[Config], samples: &[Samples]) -> String {
    let mut rows = String::new();
    for (config, samples) in configs.iter().zip(samples) {
        let Some(unwind) = (samples.runs.iter().rev())
            .find_map(|run| run.report.as_ref())
            .map(|report| &report["unwind"])
            .filter(|unwind| unwind.is_object())
        else {
            continue;
        };
        let walks = unwind["walks"].as_u64().unwrap_or(0);
        let share = |key: &str| match unwind[key].as_u64() {
            Some(n) if walks > 0 => format!("{:.1}%", n as f64 / walks as f64 * 100.0),
            Some(n) => n.to_string(),
            None => "-".to_owned(),
        };
        rows += &format!(
            "| {} | {} | {walks} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            config.name,
            unwind["mode"].as_str().unwrap_or("?"),
            match unwind["frames"].as_u64() {
                Some(frames) if walks > 0 => format!("{:.1}", frames as f64 / walks as f64),
                _ => "-".to_owned(),
            },
            share("reached_root"),
            share("used_frame_pointers"),
            share("ended_without_table"),
            share("ended_at_invalid_rule"),
            share("ended_at_failed_read"),
            share("truncated"),
            share("replayed"),
        );
    }
    if rows.is_empty() {
        return rows;
    }
    format!(
        "\nHow the walks went (each config's last report; shares of its walks):\n\n\
         | tool | mode | walks | frames a walk | reached the root | used frame pointers | \
         no table | invalid rule | failed read | truncated | replayed |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n{rows}"
    )
}

/// One run's program time, from a report written with the kernel's run-time statistics on.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProgramTime {
    /// Seconds in memtrace's programs (tracer.bpf_run_s).
    seconds: f64,
    /// Their runs (tracer.bpf_runs): the storm's faults, and other processes' (memtrace's
    /// own among them), which the programs leave at once.
    runs: u64,
    /// Stacks the unwinder walked and the frames it found (unwind.walks, unwind.frames; 0
    /// without stacks).
    walks: u64,
    frames: u64,
}

impl ProgramTime {
    fn from_report(report: &Value) -> Option<Self> {
        let tracer = &report["tracer"];
        let unwind = &report["unwind"];
        Some(Self {
            seconds: tracer["bpf_run_s"].as_f64()?,
            runs: tracer["bpf_runs"].as_u64()?,
            walks: unwind["walks"].as_u64().unwrap_or(0),
            frames: unwind["frames"].as_u64().unwrap_or(0),
        })
    }

    fn frames_per_walk(&self) -> f64 {
        self.frames as f64 / self.walks.max(1) as f64
    }

    /// The time one more frame costs: the deep storm's program time beyond the shallow
    /// one's, over the frames it unwound beyond it. Both fault on the same pages, so what
    /// every walk pays once (registers, the first lookups, the record) and what each run
    /// pays before any walk cancel out.
    fn marginal_ns_per_frame(deep: &Self, shallow: &Self) -> Option<f64> {
        let frames = deep.frames.checked_sub(shallow.frames).filter(|&f| f > 0)?;
        Some((deep.seconds - shallow.seconds) * 1e9 / frames as f64)
    }

    /// Everything stacks cost, spread over the frames: the dwarf run's program time above
    /// the same storm's without stacks, over the frames unwound.
    fn all_in_ns_per_frame(dwarf: &Self, no_stacks: &Self) -> Option<f64> {
        (dwarf.frames > 0).then(|| (dwarf.seconds - no_stacks.seconds) * 1e9 / dwarf.frames as f64)
    }

    fn shown(&self) -> String {
        format!(
            "{:.0} ms, {} runs, {:.1} frames a walk",
            self.seconds * 1e3,
            self.runs,
            self.frames_per_walk()
        )
    }
}

/// The unwinder's time per frame: with the kernel's run-time statistics on, round by round,
/// the deep storm and the shallow one under `--unwind dwarf`, and the deep one with
/// `--stacks none`.
fn per_frame(
    memtrace: &str,
    scratch: &Path,
    workloads: &Path,
    goals: &mut Vec<Goal>,
) -> Result<String> {
    let faults = |file: &str, args: &[&str], storm: &[&str]| {
        let args: Vec<&str> = std::iter::once("faults")
            .chain(args.iter().copied())
            .collect();
        let name = format!(
            "memtrace {} on unwind_storm {}",
            args.join(" "),
            storm.join(" ")
        );
        memtrace_config(
            memtrace,
            &scratch.join(file),
            &args,
            &name,
            "",
            command(workloads, "unwind_storm", storm),
        )
    };
    let dwarf = ["--unwind", "dwarf"];
    let configs = [
        faults("walked.json", &dwarf, &WALKED),
        faults("walked-shallow.json", &dwarf, &WALKED_SHALLOW),
        faults("storm.json", &dwarf, &STORM),
        faults("no-stacks.json", &["--stacks", "none"], &STORM),
    ];
    let mut samples: Vec<Samples> = configs.iter().map(|_| Samples::default()).collect();
    let rounds = rounds();
    let (mut marginal, mut all_in, mut storm_all_in) = (Vec::new(), Vec::new(), Vec::new());
    let mut lines = String::new();
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}");
        let mut order: Vec<usize> = (0..configs.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        let mut times = [None; 4];
        for index in order {
            wait_for_detaching_memtraces();
            let _stats = BpfStats::enable()?;
            run_once(&configs[index], &[], &mut samples[index])?;
            let report = samples[index].runs.last().and_then(|r| r.report.as_ref());
            times[index] = report.and_then(ProgramTime::from_report);
            if let Some(t) = times[index] {
                eprintln!("  {:<58} {}", configs[index].name, t.shown());
            }
        }
        let [Some(deep), Some(shallow), Some(storm), Some(none)] = times else {
            bail!("no eBPF run-time statistics in memtrace's reports (kernel.bpf_stats_enabled)");
        };
        let m = ProgramTime::marginal_ns_per_frame(&deep, &shallow);
        let a = ProgramTime::all_in_ns_per_frame(&deep, &none);
        let r = ProgramTime::all_in_ns_per_frame(&storm, &none);
        marginal.extend(m);
        all_in.extend(a);
        storm_all_in.extend(r);
        let ns = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.0} ns"));
        lines += &format!(
            "| {round} | {} | {} | {} | {:.0} ms, {} runs | {} | {} | {} |\n",
            deep.shown(),
            shallow.shown(),
            storm.shown(),
            none.seconds * 1e3,
            none.runs,
            ns(m),
            ns(a),
            ns(r),
        );
    }
    let text = format!(
        "The unwinder's time per frame, from the kernel's eBPF run-time statistics \
         (kernel.bpf_stats_enabled, on for these runs only), {rounds} rounds of four runs \
         under `--unwind dwarf`: `unwind_storm {deep}` and `unwind_storm {shallow}` (two \
         callers taking turns page by page: every stack walked whole, none replayed), the \
         storm `unwind_storm {storm}` (its faults' stacks replayed), and the storm under \
         `--stacks none`; each run's tracer.bpf_run_s, tracer.bpf_runs, unwind.walks and \
         unwind.frames. All fault on the same pages. **Per frame** is (bpf_run_s, {d} levels \
         - bpf_run_s, {s} level) / (frames, {d} levels - frames, {s} level) of the walked \
         runs: what one more frame walked costs, with what every walk pays once cancelled \
         out (a replay's compares that fail included). **All in** is (bpf_run_s - bpf_run_s \
         without stacks) / frames: every cost of taking a stack, spread over its frames, \
         walked ({d} levels) and replayed (the storm).\n\n\
         | round | walked, {d} levels | walked, {s} level | the storm, replayed | no stacks | \
         per frame, walked | all in, walked | all in, replayed |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n{lines}\
         | median | | | | | {} | {} | {} |\n",
        shown_ns(&marginal),
        shown_ns(&all_in),
        shown_ns(&storm_all_in),
        deep = WALKED.join(" "),
        shallow = WALKED_SHALLOW.join(" "),
        storm = STORM.join(" "),
        d = WALKED[2],
        s = WALKED_SHALLOW[2],
    );
    goals.push(Goal {
        what: "the unwinder's time per frame",
        how: format!(
            "(bpf_run_s, {d} levels - {s} level) / (unwind.frames, {d} levels - {s} level), \
             every stack walked whole, median of rounds (above)",
            d = WALKED[2],
            s = WALKED_SHALLOW[2]
        ),
        figure: (!marginal.is_empty()).then(|| median(&marginal)),
        unit: "ns",
        goal: GOAL_NS_PER_FRAME,
    });
    Ok(text)
}

fn shown_ns(values: &[f64]) -> String {
    if values.is_empty() {
        "-".to_owned()
    } else {
        format!("{:.0} ns", median(values))
    }
}

/// The malloc storm: the frame-pointer build under `--unwind fp` (what a stack costs today)
/// and the same source built without frame pointers under `--unwind dwarf`, each beside its
/// own untraced run.
fn malloc(
    memtrace: &str,
    scratch: &Path,
    workloads: &Path,
    goals: &mut Vec<Goal>,
) -> Result<String> {
    let pairs = MALLOC_PAIRS.to_string();
    let storm = |build: &str| command(workloads, build, &["0", "16", &pairs]);
    let records = "every malloc and free: block, size, user stack; outstanding blocks";
    let configs = [
        untraced("untraced", storm("malloc_leak")),
        memtrace_config(
            memtrace,
            &scratch.join("malloc-fp.json"),
            &["malloc", "--leaks", "--unwind", "fp"],
            "memtrace malloc --leaks --unwind fp",
            records,
            storm("malloc_leak"),
        ),
        untraced("untraced", storm("malloc_leak_nofp")),
        memtrace_config(
            memtrace,
            &scratch.join("malloc-dwarf.json"),
            &["malloc", "--leaks", "--unwind", "dwarf"],
            "memtrace malloc --leaks --unwind dwarf",
            records,
            storm("malloc_leak_nofp"),
        ),
    ];
    let samples = measure(&configs, &[])?;
    let per_pair = |traced: &Samples, base: &Samples| {
        (median(&traced.elapsed) - median(&base.elapsed)) / MALLOC_PAIRS as f64 * 1e6
    };
    let ratio = cost_ratio(&samples[3], &samples[2], &samples[1], &samples[0]);
    let text = format!(
        "On the malloc storm (`malloc_leak 0 16 {MALLOC_PAIRS}`: {MALLOC_PAIRS} malloc/free \
         pairs of 16-272 bytes, its own loop time), today's build (`malloc_leak`: -O0 \
         -fno-omit-frame-pointer) under `--unwind fp`:\n\n{}{}\
         The same source built -O2 -fomit-frame-pointer (`malloc_leak_nofp`) under \
         `--unwind dwarf`:\n\n{}{}\
         Above each build's untraced run, per malloc/free pair: {:.2} µs with frame pointers \
         (fp), {:.2} µs without (dwarf); round by round, dwarf's cost is {ratio:.2}x fp's.\n",
        table(&configs[0..2], &samples[0..2]),
        walks_table(&configs[0..2], &samples[0..2]) + "\n",
        table(&configs[2..4], &samples[2..4]),
        walks_table(&configs[2..4], &samples[2..4]) + "\n",
        per_pair(&samples[1], &samples[0]),
        per_pair(&samples[3], &samples[2]),
    );
    goals.push(Goal {
        what: "malloc storm: a pair's cost, no frame pointers under dwarf vs the frame-pointer build under fp",
        how: "(dwarf - its untraced) / (fp - its untraced), loop times, median of rounds".into(),
        figure: Some(ratio),
        unit: "x",
        goal: GOAL_MALLOC_RATIO,
    });
    Ok(text)
}

/// A process memtrace attaches to, killed when dropped (however the benchmark ends).
struct Waiting(Child);

impl Drop for Waiting {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One attach run's figures.
struct Attach {
    attach_ms: f64,
    max_rss_kb: f64,
    tables: Value,
}

/// `memtrace faults --pid` on a python3 waiting on its standard input, under each mode in
/// turn: the attach time, the tables' build time and size, and memtrace's peak memory.
fn attach(memtrace: &str, scratch: &Path, goals: &mut Vec<Goal>) -> Result<String> {
    let python = Command::new(PYTHON)
        .args(["-c", "import sys; sys.stdin.read()"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {PYTHON}"))?;
    let python = Waiting(python);
    let pid = python.0.id().to_string();
    // Started once its libraries are mapped.
    let maps = format!("/proc/{pid}/maps");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&maps).is_ok_and(|m| m.contains("libc.so")) {
        if Instant::now() > deadline {
            bail!("{PYTHON} did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));

    let modes = ["dwarf", "fp"];
    let mut runs: [Vec<Attach>; 2] = [Vec::new(), Vec::new()];
    // Attaching takes a second, and its time varies by tens of ms: twice the rounds.
    let rounds = 2 * rounds();
    for round in 1..=rounds {
        let mut order = [0, 1];
        if round % 2 == 0 {
            order.reverse();
        }
        for index in order {
            wait_for_detaching_memtraces();
            let report_path = scratch.join(format!("attach-{}.json", modes[index]));
            let output = Command::new(memtrace)
                .args(["faults", "--pid", &pid, "--unwind", modes[index]])
                .args(["--duration", ATTACH_TRACE, "--format", "json", "--output"])
                .arg(&report_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .context("running memtrace faults --pid")?;
            if !output.status.success() {
                bail!(
                    "memtrace faults --pid {pid} failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_path)?)
                .context("memtrace's report unreadable")?;
            let run = Attach {
                attach_ms: report["tracer"]["attach_ms"].as_f64().unwrap_or(f64::NAN),
                max_rss_kb: report["tracer"]["max_rss_kb"].as_f64().unwrap_or(f64::NAN),
                tables: report["unwind"]["tables"].clone(),
            };
            eprintln!(
                "  --unwind {:<5} attached in {:.0} ms, tables built in {} ms, peak RSS {:.0} MiB",
                modes[index],
                run.attach_ms,
                run.tables["build_ms"]
                    .as_f64()
                    .map_or("-".into(), |v| format!("{v:.1}")),
                run.max_rss_kb / 1024.0
            );
            runs[index].push(run);
        }
    }
    drop(python);

    let column = |mode: usize, f: &dyn Fn(&Attach) -> Option<f64>| -> Vec<f64> {
        runs[mode].iter().filter_map(f).collect()
    };
    let attach_ms = |r: &Attach| Some(r.attach_ms);
    let rss_mib = |r: &Attach| Some(r.max_rss_kb / 1024.0);
    let build_ms = |r: &Attach| r.tables["build_ms"].as_f64();
    // What dwarf adds to the whole attach: round by round, dwarf's attach minus fp's (the
    // tables, and the kernel verifying the walk's code in each program that takes stacks).
    let added: Vec<f64> = (runs[0].iter().zip(&runs[1]))
        .map(|(dwarf, fp)| dwarf.attach_ms - fp.attach_ms)
        .collect();
    let or_dash = |values: Vec<f64>, f: &dyn Fn(f64) -> String| {
        if values.is_empty() {
            "-".to_owned()
        } else {
            f(median(&values))
        }
    };
    let mut table = String::from(
        "| unwind | attach (median) | tables built in | binaries | rows | in the kernel | peak RSS |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (mode, name) in modes.iter().enumerate() {
        let tables = runs[mode].last().map(|r| &r.tables);
        let count = |key: &str| {
            tables
                .and_then(|t| t[key].as_u64())
                .map_or("-".to_owned(), |v| v.to_string())
        };
        table += &format!(
            "| {name} | {} | {} | {} | {} | {} | {} |\n",
            or_dash(column(mode, &attach_ms), &|v| format!("{v:.0} ms")),
            or_dash(column(mode, &build_ms), &|v| format!("{v:.1} ms")),
            count("binaries"),
            count("rows"),
            tables
                .and_then(|t| t["kernel_bytes"].as_f64())
                .map_or("-".to_owned(), |v| format!("{:.0} KiB", v / 1024.0)),
            or_dash(column(mode, &rss_mib), &|v| format!("{v:.0} MiB")),
        );
    }
    let text = format!(
        "Attaching to a waiting python3 (`memtrace faults --pid PID --unwind MODE --duration \
         {ATTACH_TRACE}`, {PYTHON}: Debian's python3.11 with libpython linked in, libc and its \
         other libraries), {rounds} interleaved rounds; tables are the last run's. \
         `tables built in` is unwind.tables.build_ms: reading the files, building their rows \
         and writing them into the kernel's arrays. The whole attach under dwarf is {} longer \
         than under fp (median of the rounds' differences): the tables, and the kernel \
         verifying the walk's code once in each program that takes stacks.\n\n{table}",
        or_dash(added, &|v| format!("{v:.0} ms")),
    );
    let median_of = |values: Vec<f64>| (!values.is_empty()).then(|| median(&values));
    goals.push(Goal {
        what: "python3 + libc: tables built and loaded at attach",
        how: "unwind.tables.build_ms (built and written into the kernel's arrays), median \
              of rounds; the whole attach's difference is above the goals"
            .into(),
        figure: median_of(column(0, &build_ms)),
        unit: "ms",
        goal: GOAL_TABLES_MS,
    });
    goals.push(Goal {
        what: "python3 + libc: memtrace's peak RSS",
        how: "tracer.max_rss_kb under dwarf, median of rounds".into(),
        figure: median_of(column(0, &rss_mib)),
        unit: "MiB",
        goal: GOAL_RSS_MIB,
    });
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Run;

    #[test]
    fn perf_end_reads_samples_and_lost_chunks() {
        let stderr = "[ perf record: Woken up 1714 times to write data ]\n\
                      Warning:\nProcessed 690142 events and lost 412 chunks!\n\n\
                      Check IO/CPU overload!\n\n\
                      [ perf record: Captured and wrote 4282.123 MB /tmp/x/perf.data (521883 samples) ]\n";
        assert_eq!(
            perf_end(stderr),
            PerfEnd {
                samples: Some(521883),
                lost_chunks: 412
            }
        );
        assert_eq!(
            perf_end("[ perf record: Captured and wrote 0.1 MB perf.data (12 samples) ]"),
            PerfEnd {
                samples: Some(12),
                lost_chunks: 0
            }
        );
        assert_eq!(perf_end("").samples, None);
    }

    fn report(seconds: f64, runs: u64, walks_frames: Option<(u64, u64)>) -> Value {
        let mut report = serde_json::json!({
            "tracer": {"attach_ms": 40.0, "bpf_run_s": seconds, "bpf_runs": runs},
        });
        if let Some((walks, frames)) = walks_frames {
            report["unwind"] =
                serde_json::json!({"mode": "dwarf", "walks": walks, "frames": frames});
        }
        report
    }

    #[test]
    fn per_frame_cancels_what_every_walk_pays() {
        // 1000 faults; 500 ns a walk plus 80 ns a frame, 15 and 6 frames; other processes'
        // runs (20 ns each) differ in number between the runs.
        let run = |frames: u64, others: u64| {
            let seconds = (1000.0 * (500.0 + frames as f64 * 80.0) + others as f64 * 20.0) * 1e-9;
            let report = report(seconds, 1000 + others, Some((1000, 1000 * frames)));
            ProgramTime::from_report(&report).unwrap()
        };
        let (deep, shallow) = (run(15, 100), run(6, 130));
        let marginal = ProgramTime::marginal_ns_per_frame(&deep, &shallow).unwrap();
        assert!((marginal - 80.0).abs() < 0.1, "{marginal}");
        assert_eq!(deep.frames_per_walk(), 15.0);
        // Without stacks: 300 ns a fault; all in: (1700 - 300) / 15.
        let none = ProgramTime::from_report(&report(1000.0 * 300e-9, 1000, None)).unwrap();
        assert_eq!((none.walks, none.frames), (0, 0));
        let all_in = ProgramTime::all_in_ns_per_frame(&run(15, 0), &none).unwrap();
        assert!((all_in - 1400.0 / 15.0).abs() < 1e-6, "{all_in}");
        // No frames to tell apart: no figure.
        assert_eq!(ProgramTime::marginal_ns_per_frame(&shallow, &shallow), None);
        assert_eq!(ProgramTime::marginal_ns_per_frame(&shallow, &deep), None);
        assert_eq!(ProgramTime::all_in_ns_per_frame(&none, &none), None);
    }

    #[test]
    fn program_time_needs_the_kernel_statistics() {
        let mut r = report(0.5, 1000, Some((1000, 6000)));
        r["tracer"]["bpf_run_s"] = Value::Null;
        r["tracer"]["bpf_runs"] = Value::Null;
        assert_eq!(ProgramTime::from_report(&r), None);
    }

    fn samples(elapsed: &[f64]) -> Samples {
        let mut samples = Samples::default();
        samples.elapsed = elapsed.to_vec();
        samples
    }

    #[test]
    fn cost_ratio_compares_costs_above_each_baseline_round_by_round() {
        let untraced = samples(&[1.0, 2.0, 1.0]);
        let dwarf = samples(&[1.4, 2.4, 1.6]);
        let perf = samples(&[2.0, 3.0, 2.0]);
        assert!((cost_ratio(&dwarf, &untraced, &perf, &untraced) - 0.4).abs() < 1e-9);
        let other_base = samples(&[0.5, 0.5, 0.5]);
        let other = samples(&[1.0, 1.5, 1.5]);
        // rounds: 0.4/0.5, 0.4/1.0, 0.6/1.0 -> median 0.6
        assert!((cost_ratio(&dwarf, &untraced, &other, &other_base) - 0.6).abs() < 1e-9);
    }

    #[test]
    fn goals_show_beside_their_figures() {
        let table = goals_table(&[
            Goal {
                what: "ratio",
                how: "how".into(),
                figure: Some(1.234),
                unit: "x",
                goal: 1.5,
            },
            Goal {
                what: "time",
                how: "how".into(),
                figure: Some(120.4),
                unit: "ns",
                goal: 100.0,
            },
            Goal {
                what: "none",
                how: "how".into(),
                figure: None,
                unit: "ms",
                goal: 50.0,
            },
        ]);
        assert!(
            table.contains("| ratio | 1.23x | how | ≤ 1.50x | yes |"),
            "{table}"
        );
        assert!(
            table.contains("| time | 120 ns | how | ≤ 100 ns | no |"),
            "{table}"
        );
        assert!(
            table.contains("| none | - | how | ≤ 50 ms | - |"),
            "{table}"
        );
    }

    #[test]
    fn walks_table_shows_shares_of_walks() {
        let config = |name: &str| Config {
            name: name.into(),
            ..Config::untraced()
        };
        let configs = [config("untraced"), config("memtrace faults --unwind dwarf")];
        let mut traced = Samples::default();
        traced.runs.push(Run {
            figures: Value::Null,
            report: Some(serde_json::json!({"unwind": {
                "mode": "dwarf", "walks": 200, "reached_root": 190, "used_frame_pointers": 0,
                "ended_without_table": 4, "ended_at_invalid_rule": 0,
                "ended_at_failed_read": 6, "truncated": 0, "frames": 2900,
            }})),
            stderr: String::new(),
        });
        let samples = [Samples::default(), traced];
        let table = walks_table(&configs, &samples);
        assert!(
            table.contains(
                "| memtrace faults --unwind dwarf | dwarf | 200 | 14.5 | 95.0% | 0.0% | 2.0% \
                 | 0.0% | 3.0% | 0.0% |"
            ),
            "{table}"
        );
        assert!(!table.contains("| untraced |"), "{table}");
        // Reports without an unwind object (memtrace before issue 17): no table at all.
        assert_eq!(walks_table(&configs[..1], &samples[..1]), "");
    }

    #[test]
    fn storm_frames_count_down_to_start() {
        assert_eq!(storm_frames(STORM[2]), 15);
        assert_eq!(storm_frames("1"), 6);
    }
}
