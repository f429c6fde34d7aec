//! What `memtrace faults` reports. Field names of the `Serialize` types are the public JSON
//! contract: keep them, add freely.
use std::io::Write;

use serde::Serialize;

use crate::{
    output::{json, profile::StackProfile},
    report::{ReportHeader, StackRow},
};

/// Per-process fault totals.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessRow {
    pub pid: u32,
    pub comm: String,
    pub minor: u64,
    pub major: u64,
    pub minor_per_s: f64,
    pub major_per_s: f64,
}

/// Faults per process and memory region (`[heap]`, `[stack]`, `[anon]`, `[shared anon]`,
/// `[vdso]`, a file path, ...: `Region`'s names).
#[derive(Clone, Debug, Serialize)]
pub struct RegionRow {
    pub pid: u32,
    pub region: String,
    pub minor: u64,
    pub major: u64,
}

/// Everything `memtrace faults` found.
#[derive(Clone, Debug, Serialize)]
pub struct FaultReport {
    #[serde(flatten)]
    pub header: ReportHeader,
    /// True when `--sample N` traced 1 in N faults: counts are estimates (rescaled by N).
    pub sampled: bool,
    pub sample_period: u64,
    /// Stacks the kernel could not store (stack map full): those events have no stack.
    pub stack_errors: u64,
    pub processes: Vec<ProcessRow>,
    pub regions: Vec<RegionRow>,
    /// Stack rows in all (distinct stacks, merged as `--group-by` and `--by-address` say):
    /// `stacks` holds the first `--top` of them.
    pub stacks_total: usize,
    /// All stacks, most events first; table and JSON show the first `--top`.
    pub stacks: Vec<StackRow>,
}

impl StackProfile for FaultReport {
    fn command(&self) -> &str {
        self.header.command
    }
    fn target(&self) -> &str {
        &self.header.target
    }
    fn duration_s(&self) -> f64 {
        self.header.duration_s
    }
    fn lost_events(&self) -> u64 {
        self.header.lost_events
    }
    fn stacks(&self) -> &[StackRow] {
        &self.stacks
    }
    fn sample_type(&self) -> (&'static str, &'static str) {
        ("faults", "count")
    }
    fn period(&self) -> u64 {
        self.sample_period.max(1)
    }
    fn sampling_note(&self) -> Option<String> {
        self.sampled
            .then(|| format!("sampled 1 in {}: counts are estimates", self.sample_period))
    }
}

/// Writes the report with only its first `top` stacks (they come sorted, most events first).
pub fn write_json(report: &FaultReport, top: usize, out: &mut dyn Write) -> anyhow::Result<()> {
    // A copy keeps every field of the report, present and future, in declaration order without
    // listing them here; it is made once per run, so its cost does not matter.
    let mut shown = report.clone();
    shown.stacks.truncate(top);
    json::write_value(&shown, out)
}

/// A small hand-made faults report shared by the report's and the table's unit tests.
#[cfg(test)]
pub(crate) mod testdata {
    use super::*;
    use crate::{
        output::testdata::stacks,
        report::{CommandExit, TracerCost},
    };

    /// Two processes, both kinds, a kernel stack, an unsymbolized frame, a name with ';'.
    pub fn report() -> FaultReport {
        FaultReport {
            header: ReportHeader {
                command: "faults",
                target: "pid 123".to_owned(),
                duration_s: 2.0,
                lost_events: 0,
                exit: Some(CommandExit {
                    pid: 123,
                    command: vec!["./server".to_owned(), "--fill".to_owned()],
                    exit_code: Some(0),
                    signal: None,
                }),
                unwind: None,
                tracer: TracerCost {
                    attach_ms: 80.0,
                    cpu_s: 0.5,
                    max_rss_kb: 20000,
                    bpf_run_s: None,
                    bpf_runs: None,
                },
            },
            sampled: false,
            sample_period: 1,
            stack_errors: 0,
            processes: vec![
                ProcessRow {
                    pid: 123,
                    comm: "server".into(),
                    minor: 40000,
                    major: 2,
                    minor_per_s: 20000.0,
                    major_per_s: 1.0,
                },
                ProcessRow {
                    pid: 124,
                    comm: "worker".into(),
                    minor: 10,
                    major: 0,
                    minor_per_s: 5.0,
                    major_per_s: 0.0,
                },
                ProcessRow {
                    pid: 125,
                    comm: "worker".into(),
                    minor: 5,
                    major: 0,
                    minor_per_s: 2.5,
                    major_per_s: 0.0,
                },
            ],
            regions: vec![
                RegionRow {
                    pid: 123,
                    region: "[heap]".into(),
                    minor: 39000,
                    major: 0,
                },
                RegionRow {
                    pid: 123,
                    region: "/usr/lib/libc.so.6".into(),
                    minor: 1000,
                    major: 2,
                },
                RegionRow {
                    pid: 124,
                    region: "[stack]".into(),
                    minor: 10,
                    major: 0,
                },
            ],
            stacks_total: stacks().len(),
            stacks: stacks(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{testdata, *};
    use serde_json::Value;

    fn json(top: usize) -> (String, Value) {
        let mut out = Vec::new();
        write_json(&testdata::report(), top, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let value = serde_json::from_str(&text).unwrap();
        (text, value)
    }

    #[test]
    fn has_contract_keys() {
        let (text, v) = json(10);
        assert!(text.ends_with("}\n"));
        for key in [
            "command",
            "duration_s",
            "lost_events",
            "sampled",
            "processes",
            "regions",
            "stacks",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        let keys = |section: &str, keys: &[&str]| {
            for row in v[section].as_array().unwrap() {
                for key in keys {
                    assert!(row.get(key).is_some(), "missing {section}.{key}");
                }
            }
        };
        keys("processes", &["pid", "comm", "minor", "major"]);
        keys("regions", &["pid", "region", "minor", "major"]);
        keys(
            "stacks",
            &["pid", "kind", "count", "frames", "kernel_frames"],
        );
        assert_eq!(v["stacks"][0]["frames"][0], "memset");
        assert_eq!(v["stacks"][0]["kernel_frames"][1], "exc_page_fault");
        assert_eq!(v["stacks"][3]["frames"][0], "worker+0x1234");
    }

    #[test]
    fn stacks_cut_to_top() {
        assert_eq!(json(2).1["stacks"].as_array().unwrap().len(), 2);
        assert_eq!(json(2).1["stacks"][1]["count"], 1000);
        assert_eq!(json(0).1["stacks"].as_array().unwrap().len(), 0);
        assert_eq!(json(100).1["stacks"].as_array().unwrap().len(), 5);
    }
}
