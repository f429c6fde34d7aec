//! A command traced by memtrace with a JSON report: the run, the report, and the workload's own
//! figures (its last stdout line), with what a failing assertion should show.
use std::path::PathBuf;

use serde_json::Value;

use crate::{memtrace, parse_report, spawn_memtrace, Background, Report, Run, TempDir, Waiting};

pub struct Traced {
    pub run: Run,
    pub report: Value,
    pub workload: Report,
}

impl Traced {
    /// Everything needed to understand a failure: the run and the whole report.
    pub fn context(&self) -> String {
        format!(
            "{}\n--- report ---\n{}",
            self.run.describe(),
            serde_json::to_string_pretty(&self.report).unwrap()
        )
    }

    /// The workload's row in the report's `processes`.
    pub fn process(&self) -> &Value {
        self.report["processes"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["pid"] == self.workload.pid))
            .unwrap_or_else(|| panic!("no row for the workload\n{}", self.context()))
    }
}

/// `memtrace <subcommand> --format json --output FILE <extra> -- <command>`, whose command
/// prints a workload line.
pub fn trace(subcommand: &str, extra: &[&str], command: &[&str]) -> Traced {
    let (run, report) = run_json(subcommand, extra, command);
    Traced::of(run, report)
}

impl Traced {
    /// The run, its report, and the workload line the run printed last.
    fn of(run: Run, report: Value) -> Self {
        let workload = parse_report(&run.stdout)
            .unwrap_or_else(|e| panic!("workload line: {e:#}\n{}", run.describe()));
        Traced {
            run,
            report,
            workload,
        }
    }
}

/// `memtrace <subcommand> --format json --output FILE <extra> -- <command>`: the run and its
/// JSON report (whatever the exit code).
pub fn run_json(subcommand: &str, extra: &[&str], command: &[&str]) -> (Run, Value) {
    let dir = TempDir::new(subcommand);
    let out = dir.join("report.json");
    let mut argv = json_argv(subcommand, &out, extra);
    argv.push("--");
    argv.extend_from_slice(command);
    let run = memtrace(&argv);
    let report = report_at(&out, &run);
    (run, report)
}

/// The JSON report `run` wrote to `out`, or a panic showing the run.
fn report_at(out: &std::path::Path, run: &Run) -> Value {
    let text = std::fs::read_to_string(out)
        .unwrap_or_else(|e| panic!("no report ({e})\n{}", run.describe()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {text}\n{}", run.describe()))
}

/// `<subcommand> --format json --output OUT <extra>`.
fn json_argv<'a>(subcommand: &'a str, out: &'a std::path::Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec![
        subcommand,
        "--format",
        "json",
        "--output",
        out.to_str().unwrap(),
    ];
    argv.extend_from_slice(extra);
    argv
}

/// `value[key]` as a number, or a panic naming what is missing.
pub fn u64_of(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key:?} in {value}"))
}

/// `memtrace <subcommand> --format json --output FILE <extra>` in the background (a `--pid`
/// target, the whole system, or `-- COMMAND` at the end of `extra`), attached once
/// [`JsonTracer::start`] returns.
pub struct JsonTracer {
    tracer: Background,
    out: PathBuf,
    _dir: TempDir,
}

impl JsonTracer {
    pub fn start(subcommand: &str, extra: &[&str]) -> Self {
        let dir = TempDir::new(subcommand);
        let out = dir.join("report.json");
        let argv = json_argv(subcommand, &out, extra);
        let mut tracer = spawn_memtrace(&argv);
        tracer.wait_attached();
        Self {
            tracer,
            out,
            _dir: dir,
        }
    }

    /// Sends `signal` to memtrace.
    pub fn signal(&self, signal: i32) {
        self.tracer.signal(signal);
    }

    /// Stops memtrace with SIGINT; its run (which must have succeeded) and its report.
    pub fn stop(self) -> (Run, Value) {
        self.tracer.signal(libc::SIGINT);
        let run = self.tracer.wait();
        assert_eq!(run.code(), 0, "memtrace after SIGINT\n{}", run.describe());
        let report = report_at(&self.out, &run);
        (run, report)
    }

    /// Waits for memtrace to end with its command, which prints a workload line.
    pub fn wait_for_command(self) -> Traced {
        let run = self.tracer.wait();
        let report = report_at(&self.out, &run);
        Traced::of(run, report)
    }
}

/// `memtrace <subcommand> --pid PID <extra>` on the waiting workload `w`: attaches, releases
/// the workload, stops memtrace once the workload reported (it lingers, alive).
pub fn trace_running(subcommand: &str, extra: &[&str], w: &mut Waiting) -> Traced {
    let pid = w.pid.to_string();
    let mut args = vec!["--pid", pid.as_str()];
    args.extend_from_slice(extra);
    let tracer = JsonTracer::start(subcommand, &args);
    let workload = w.go();
    let (run, report) = tracer.stop();
    Traced {
        run,
        report,
        workload,
    }
}
