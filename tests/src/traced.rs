//! A command traced by memtrace with a JSON report: the run, the report, and the workload's own
//! figures (its last stdout line), with what a failing assertion should show.
use serde_json::Value;

use crate::{memtrace, parse_report, Report, Run, TempDir};

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
    let workload = parse_report(&run.stdout)
        .unwrap_or_else(|e| panic!("workload line: {e:#}\n{}", run.describe()));
    Traced {
        run,
        report,
        workload,
    }
}

/// `memtrace <subcommand> --format json --output FILE <extra> -- <command>`: the run and its
/// JSON report (whatever the exit code).
pub fn run_json(subcommand: &str, extra: &[&str], command: &[&str]) -> (Run, Value) {
    let dir = TempDir::new(subcommand);
    let out = dir.join("report.json");
    let mut argv = vec![
        subcommand,
        "--format",
        "json",
        "--output",
        out.to_str().unwrap(),
    ];
    argv.extend_from_slice(extra);
    argv.push("--");
    argv.extend_from_slice(command);
    let run = memtrace(&argv);
    let text = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("no report ({e})\n{}", run.describe()));
    let report = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {text}\n{}", run.describe()));
    (run, report)
}

/// `value[key]` as a number, or a panic naming what is missing.
pub fn u64_of(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key:?} in {value}"))
}
