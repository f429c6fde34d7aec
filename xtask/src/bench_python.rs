//! `cargo xtask bench python`: what walking CPython 3.11's frames (issue 18) adds to each
//! event of a Python process, side by side with native unwinding alone
//! (`--no-python-frames`, the interpreter's frames shown as `_PyEval_EvalFrameDefault`):
//! - `memtrace malloc --leaks` on a Python loop that allocates and frees (and keeps a few)
//!   bytes objects of 1-4 KiB, 8 Python calls deep: every block is a malloc;
//! - `memtrace faults` on a fault storm driven from Python: 64 MiB bytearrays made and dropped,
//!   8 Python calls deep: every page a fault.
//!
//! Each workload runs untraced, with native unwinding alone and with Python frames, interleaved
//! round by round; the workloads time their own loop, so start-up and memtrace's attach are not
//! counted. The figure is the loop time with Python frames over the loop time with
//! native unwinding alone (median of the rounds' ratios), printed beside its goal; the eBPF
//! programs' time per run comes from one more run of each with the kernel's run-time
//! statistics on, and the Python frames per walk from memtrace's report.
use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{
    bench::{measure, median, round_ratio, rounds, table, write_section, Config, Samples},
    bench_support::{prepare, Scratch},
    workspace_root,
};

/// Debian's python3.11 (libpython linked in statically, no frame pointers): the CPython
/// memtrace reads. `python3` in PATH may be another build (pyenv).
const PYTHON: &str = "/usr/bin/python3.11";
/// Where the workloads' scripts are, from the workspace root.
const SCRIPTS: &str = "tests/workloads/python";

/// One workload and the memtrace subcommand measured on it.
struct Workload {
    /// A title for the section and the goals.
    title: &'static str,
    script: &'static str,
    args: &'static [&'static str],
    /// What the script does, for the section.
    description: &'static str,
    subcommand: &'static str,
    /// The subcommand's options besides `--no-python-frames`.
    options: &'static str,
    records: &'static str,
    /// The goal: loop time with Python frames / loop time with native unwinding alone.
    goal: f64,
}

const MALLOC: Workload = Workload {
    title: "malloc in a Python loop",
    script: "bench_malloc.py",
    args: &["400000"],
    description: "400000 bytes objects of 1-4 KiB, each one malloc and one free, made 8 Python \
                  calls deep (11 Python frames a stack); one in 32 kept to the end",
    subcommand: "malloc",
    options: "--leaks",
    records: "every malloc and free: block, size, user stack; outstanding blocks",
    goal: 1.20,
};

const FAULTS: Workload = Workload {
    title: "fault storm driven from Python",
    script: "bench_faults.py",
    args: &["64", "16"],
    description: "16 bytearrays of 64 MiB made and dropped, 8 Python calls deep (11 Python \
                  frames a stack): 1 GiB touched, about 262k minor faults",
    subcommand: "faults",
    options: "",
    records: "every fault: user + kernel stack, address, region",
    goal: 1.10,
};

pub fn python() -> Result<()> {
    let (_target, memtrace) = prepare()?;
    require_python_frames_option(&memtrace)?;
    if !Path::new(PYTHON).exists() {
        bail!("{PYTHON} is missing: this benchmark measures Debian's CPython 3.11 (python3.11)");
    }
    let scratch = Scratch::new("bench-python")?;
    let scripts = workspace_root().join(SCRIPTS);
    let mut goals = Vec::new();
    let mut text = String::from(
        "How to read it: each workload runs untraced, under memtrace with native unwinding \
         alone (`--no-python-frames`: the interpreter's frames show as \
         `_PyEval_EvalFrameDefault`) and under memtrace with Python frames (the default), \
         interleaved round by round. **Python frames vs native** is the loop time with Python \
         frames over the loop time with native unwinding alone, the median of the rounds' \
         ratios: the issue's figure, beside its goal at the end. **in eBPF programs** is from \
         one more run of each with the kernel's run-time statistics on \
         (kernel.bpf_stats_enabled); its runs and ns/run count every run of memtrace's programs, \
         other processes' included (under malloc, memtrace's own allocator calls trap too, and \
         it makes more of them with Python frames), so the eBPF time Python frames add is \
         spread over the Python walks as an upper bound. The walks table is each config's last report: `unwind.walks` and \
         `unwind.frames` (native), `unwind.python.walks` and `unwind.python.frames`, and the \
         Python frames memtrace could not name (`<python frame>`).\n",
    );
    for workload in [&MALLOC, &FAULTS] {
        eprintln!("{}:", workload.title);
        text += "\n";
        text += &measure_workload(&memtrace, &scratch, &scripts, workload, &mut goals)?;
    }
    text += &format!("\nThe issue's goals:\n\n{}", goals_table(&goals));
    println!("{text}");
    write_section(
        "python",
        &format!(
            "Debian's {PYTHON} running {SCRIPTS}/{} and {} (their own loop time)",
            MALLOC.script, FAULTS.script
        ),
        &text,
    )
}

/// memtrace's `--no-python-frames` (issue 18): without it there is nothing to compare.
fn require_python_frames_option(memtrace: &str) -> Result<()> {
    for subcommand in [MALLOC.subcommand, FAULTS.subcommand] {
        let help = Command::new(memtrace)
            .args([subcommand, "--help"])
            .output()
            .with_context(|| format!("running {memtrace} {subcommand} --help"))?;
        if !String::from_utf8_lossy(&help.stdout).contains("--no-python-frames") {
            bail!(
                "`memtrace {subcommand}` has no --no-python-frames option: this benchmark \
                 measures Python frame walking (issue 18)"
            );
        }
    }
    Ok(())
}

/// Untraced, native unwinding alone and Python frames on `workload`: its tables, and its goal
/// pushed to `goals`.
fn measure_workload(
    memtrace: &str,
    scratch: &Path,
    scripts: &Path,
    workload: &Workload,
    goals: &mut Vec<Goal>,
) -> Result<String> {
    let argv: Vec<String> = [
        PYTHON.to_owned(),
        scripts.join(workload.script).display().to_string(),
    ]
    .into_iter()
    .chain(workload.args.iter().map(|a| a.to_string()))
    .collect();
    let native_options = format!("{} --no-python-frames", workload.options);
    let memtrace_config = |options: &str| {
        Config::memtrace(
            memtrace,
            scratch,
            workload.subcommand,
            options.trim(),
            workload.records,
        )
    };
    let configs = [
        Config::untraced(),
        memtrace_config(&native_options),
        memtrace_config(workload.options),
    ];
    let samples = measure(&configs, &argv)?;
    let (untraced, native, python) = (&samples[0], &samples[1], &samples[2]);
    let ratio = round_ratio(python, native);
    let cost = cost_ratio(python, native, untraced);
    let command = format!(
        "{PYTHON} {SCRIPTS}/{} {}",
        workload.script,
        workload.args.join(" ")
    );
    let mut text = format!(
        "{} (`{command}`: {}); `memtrace {} [--no-python-frames] --format json --output FILE \
         -- {command}`:\n\n{}\n{}",
        capitalized(workload.title),
        workload.description,
        workload.subcommand_and_options(),
        table(&configs, &samples),
        walks_table(&configs[1..], &samples[1..]),
    );
    text += &format!(
        "\nPython frames vs native: **{ratio:.2}x** (loop time with Python frames / with native \
         unwinding alone, median of the rounds' ratios: {}; goal ≤ {:.2}x). Above untraced, \
         tracing with Python frames costs {} what native unwinding alone does (median of the \
         rounds' (Python - untraced) / (native - untraced)).{}{}\n",
        round_ratios(python, native),
        workload.goal,
        if cost.is_finite() {
            format!("{cost:.2}x")
        } else {
            "-".to_owned()
        },
        match loop_time_per_walk(native, python) {
            Some(us) => format!(
                " Per Python walk, Python frames add {us:.2} µs of loop time (median loop \
                 times)."
            ),
            None => String::new(),
        },
        program_time_line(native, python),
    );
    goals.push(Goal {
        what: workload.title,
        figure: ratio,
        goal: workload.goal,
    });
    Ok(text)
}

impl Workload {
    /// `SUBCOMMAND OPTIONS`, as typed.
    fn subcommand_and_options(&self) -> String {
        format!("{} {}", self.subcommand, self.options)
            .trim_end()
            .to_owned()
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Each round's ratio of `a`'s loop time to `b`'s, in round order: the spread behind the median.
fn round_ratios(a: &Samples, b: &Samples) -> String {
    let ratios: Vec<String> = (a.elapsed.iter().zip(&b.elapsed))
        .map(|(a, b)| format!("{:.2}", a / b))
        .collect();
    ratios.join(", ")
}

/// The median over rounds of (a - base) / (b - base): how `a`'s cost above the untraced run
/// compares with `b`'s, round by round (each round's runs are back to back). NaN without
/// rounds.
fn cost_ratio(a: &Samples, b: &Samples, base: &Samples) -> f64 {
    let ratios: Vec<f64> = (a.elapsed.iter().zip(&b.elapsed))
        .zip(&base.elapsed)
        .map(|((a, b), base)| (a - base) / (b - base))
        .collect();
    median(&ratios)
}

/// The loop time Python frames add per Python walk (unwind.python.walks of the last report),
/// in µs, from the median loop times.
fn loop_time_per_walk(native: &Samples, python: &Samples) -> Option<f64> {
    let report = python.runs.last()?.report.as_ref()?;
    let walks = report["unwind"]["python"]["walks"]
        .as_u64()
        .filter(|&w| w > 0)?;
    Some((median(&python.elapsed) - median(&native.elapsed)) * 1e6 / walks as f64)
}

/// The eBPF time the Python frames add, from the statistics runs (each config's last report):
/// per Python walk and per Python frame. Empty without the kernel's statistics.
fn program_time_line(native: &Samples, python: &Samples) -> String {
    let last_report = |s: &Samples| s.runs.last().and_then(|run| run.report.clone());
    let (Some(native), Some(python)) = (last_report(native), last_report(python)) else {
        return String::new();
    };
    let time = |r: &Value| r["tracer"]["bpf_run_s"].as_f64();
    let (Some(native_s), Some(python_s)) = (time(&native), time(&python)) else {
        return String::new();
    };
    let walks = python["unwind"]["python"]["walks"].as_u64().unwrap_or(0);
    let frames = python["unwind"]["python"]["frames"].as_u64().unwrap_or(0);
    if walks == 0 || frames == 0 {
        return String::new();
    }
    let added = python_s - native_s;
    format!(
        " In the statistics runs, Python frames add {:.0} ms of eBPF time: {:.0} ns a Python \
         walk, {:.1} ns a Python frame.",
        added * 1e3,
        added * 1e9 / walks as f64,
        added * 1e9 / frames as f64
    )
}

/// How each memtrace config's walks went, from its last report (the statistics run's).
fn walks_table(configs: &[Config], samples: &[Samples]) -> String {
    let mut rows = String::new();
    for (config, samples) in configs.iter().zip(samples) {
        let Some(report) = samples.runs.last().and_then(|run| run.report.as_ref()) else {
            continue;
        };
        rows += &walks_row(&config.name, report);
    }
    if rows.is_empty() {
        return rows;
    }
    format!(
        "How the walks went (each config's last report):\n\n\
         | tool | walks | native frames a walk | replayed | Python walks | Python frames a walk \
         | incomplete | threads without state | unnamed frames | code objects |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n{rows}"
    )
}

fn walks_row(name: &str, report: &Value) -> String {
    let unwind = &report["unwind"];
    let python = &unwind["python"];
    let count = |v: &Value| v.as_u64().map_or_else(|| "-".to_owned(), |n| n.to_string());
    let per = |num: &Value, den: &Value| match (num.as_u64(), den.as_u64()) {
        (Some(n), Some(d)) if d > 0 => format!("{:.1}", n as f64 / d as f64),
        _ => "-".to_owned(),
    };
    let share = |n: &Value, of: &Value| match (n.as_u64(), of.as_u64()) {
        (Some(n), Some(of)) if of > 0 => format!("{:.1}%", n as f64 / of as f64 * 100.0),
        _ => count(n),
    };
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        count(&unwind["walks"]),
        per(&unwind["frames"], &unwind["walks"]),
        share(&unwind["replayed"], &unwind["walks"]),
        count(&python["walks"]),
        per(&python["frames"], &python["walks"]),
        count(&python["incomplete"]),
        count(&python["threads_without_state"]),
        count(&python["unnamed_frames"]),
        count(&python["code_objects"]),
    )
}

/// The figure beside its goal.
struct Goal {
    what: &'static str,
    figure: f64,
    goal: f64,
}

fn goals_table(goals: &[Goal]) -> String {
    let mut table = String::from(
        "| goal | Python frames vs native | how it is computed | goal | met |\n\
         |---|---:|---|---:|---|\n",
    );
    for goal in goals {
        let (figure, met) = if goal.figure.is_finite() {
            (
                format!("{:.2}x", goal.figure),
                if goal.figure <= goal.goal {
                    "yes"
                } else {
                    "no"
                },
            )
        } else {
            ("-".to_owned(), "-")
        };
        table += &format!(
            "| {} | {figure} | loop time with Python frames / with `--no-python-frames`, median \
             of {} rounds' ratios | ≤ {:.2}x | {met} |\n",
            goal.what,
            rounds(),
            goal.goal,
        );
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Run;

    fn samples(elapsed: &[f64]) -> Samples {
        let mut samples = Samples::default();
        samples.elapsed = elapsed.to_vec();
        samples
    }

    fn with_report(report: Value) -> Samples {
        let mut samples = Samples::default();
        samples.runs.push(Run {
            figures: Value::Null,
            report: Some(report),
            stderr: String::new(),
        });
        samples
    }

    #[test]
    fn cost_ratio_compares_costs_above_untraced_round_by_round() {
        let untraced = samples(&[1.0, 2.0, 1.0]);
        let native = samples(&[2.0, 3.0, 1.5]);
        let python = samples(&[2.5, 3.2, 2.0]);
        // rounds: 1.5/1.0, 1.2/1.0, 1.0/0.5 -> median 1.5
        assert!((cost_ratio(&python, &native, &untraced) - 1.5).abs() < 1e-9);
        assert!(cost_ratio(&samples(&[]), &samples(&[]), &samples(&[])).is_nan());
        assert_eq!(round_ratios(&python, &native), "1.25, 1.07, 1.33");
    }

    #[test]
    fn walks_rows_show_python_frames_per_walk() {
        let report = serde_json::json!({"unwind": {
            "walks": 1000, "frames": 14000, "replayed": 10,
            "python": {"walks": 990, "frames": 10890, "incomplete": 0,
                       "threads_without_state": 10, "unnamed_frames": 3, "code_objects": 12},
        }});
        assert_eq!(
            walks_row("memtrace malloc --leaks", &report),
            "| memtrace malloc --leaks | 1000 | 14.0 | 1.0% | 990 | 11.0 | 0 | 10 | 3 | 12 |\n"
        );
        // Native alone: no python object.
        let native = serde_json::json!({"unwind": {"walks": 0, "frames": 0, "replayed": 0}});
        assert_eq!(
            walks_row("native", &native),
            "| native | 0 | - | 0 | - | - | - | - | - | - |\n"
        );
    }

    #[test]
    fn program_time_is_spread_over_python_walks_and_frames() {
        let report = |seconds: f64, python: Value| serde_json::json!({"tracer": {"bpf_run_s": seconds}, "unwind": {"python": python}});
        let native = with_report(report(0.100, Value::Null));
        let python = with_report(report(
            0.150,
            serde_json::json!({"walks": 100_000, "frames": 1_000_000}),
        ));
        let (mut native, mut python) = (native, python);
        native.elapsed = vec![1.0, 1.2, 1.1];
        python.elapsed = vec![1.3, 1.2, 1.5];
        let us = loop_time_per_walk(&native, &python).unwrap();
        assert!((us - 2.0).abs() < 1e-9, "{us}");
        let line = program_time_line(&native, &python);
        assert!(
            line.contains("add 50 ms of eBPF time: 500 ns a Python walk, 50.0 ns a Python frame"),
            "{line}"
        );
        // Without the kernel's statistics: nothing said.
        let no_stats = with_report(serde_json::json!({"tracer": {"bpf_run_s": null}}));
        assert_eq!(program_time_line(&no_stats, &python), "");
    }

    #[test]
    fn goals_show_beside_their_figures() {
        let table = goals_table(&[
            Goal {
                what: "malloc",
                figure: 1.234,
                goal: 1.2,
            },
            Goal {
                what: "faults",
                figure: 1.05,
                goal: 1.1,
            },
            Goal {
                what: "none",
                figure: f64::NAN,
                goal: 1.1,
            },
        ]);
        assert!(table.contains("| malloc | 1.23x |"), "{table}");
        assert!(table.contains("| ≤ 1.20x | no |"), "{table}");
        assert!(table.contains("| faults | 1.05x |"), "{table}");
        assert!(table.contains("| ≤ 1.10x | yes |"), "{table}");
        assert!(table.contains("| none | - |"), "{table}");
    }

    #[test]
    fn titles_start_with_a_capital() {
        assert_eq!(capitalized("malloc in a loop"), "Malloc in a loop");
        assert_eq!(capitalized(""), "");
    }
}
