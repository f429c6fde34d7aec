//! Output sinks: each turns a finished report into one format.
pub mod diagnose;
pub mod diagnose_html;
pub mod flamegraph;
pub mod folded;
pub mod json;
pub mod malloc;
pub mod oom;
pub mod pages;
pub mod pprof;
pub mod profile;
pub mod stat;
pub mod swap;
pub mod table;

use crate::report::CommandExit;

/// The first lines of every table report: what was traced for how long, and how a traced
/// command ended.
pub fn title(
    out: &mut dyn std::io::Write,
    command: &str,
    target: &str,
    duration_s: f64,
    exit: Option<&CommandExit>,
) -> anyhow::Result<()> {
    writeln!(out, "memtrace {command}: {target}, {duration_s:.2}s")?;
    if let Some(exit) = exit {
        writeln!(out, "{}", exit_line(exit))?;
    }
    Ok(())
}

/// How a traced command ended, as the table reports say it.
pub fn exit_line(exit: &CommandExit) -> String {
    let how = match (exit.exit_code, exit.signal) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended (status unknown)".to_owned(),
    };
    format!(
        "command `{}` (pid {}) {how}",
        exit.command.join(" "),
        exit.pid
    )
}

/// A small hand-made report shared by the sinks' unit tests.
#[cfg(test)]
pub(crate) mod testdata {
    use crate::report::{
        CommandExit, FaultReport, Frame, ProcessRow, RegionRow, StackRow, TracerCost,
    };

    pub fn frame(address: u64, function: Option<&str>, offset: u64, module: &str) -> Frame {
        Frame {
            address,
            function: function.map(str::to_owned),
            offset,
            module: Some(module.to_owned()),
        }
    }

    /// Two processes, both kinds, a kernel stack, an unsymbolized frame, a name with ';'.
    pub fn report() -> FaultReport {
        let user = || {
            vec![
                frame(0x7f00_0000_1010, Some("memset"), 0x10, "libc.so.6"),
                frame(0x5555_0000_2020, Some("fill_buffer"), 0x20, "server"),
                frame(0x5555_0000_3030, Some("main"), 0x30, "server"),
            ]
        };
        let worker = || {
            vec![
                frame(0x4000_1234, None, 0, "worker"),
                frame(0x4000_2000, Some("run;now"), 0, "worker"),
            ]
        };
        let kernel = vec![
            frame(
                0xffff_ffff_8100_0040,
                Some("handle_mm_fault"),
                0x40,
                "[kernel]",
            ),
            frame(
                0xffff_ffff_8100_0050,
                Some("exc_page_fault"),
                0x50,
                "[kernel]",
            ),
        ];
        FaultReport {
            command: "faults",
            duration_s: 2.0,
            lost_events: 0,
            sampled: false,
            sample_period: 1,
            stack_errors: 0,
            target: "pid 123".to_owned(),
            exit: Some(CommandExit {
                pid: 123,
                command: vec!["./server".to_owned(), "--fill".to_owned()],
                exit_code: Some(0),
                signal: None,
            }),
            tracer: TracerCost {
                attach_ms: 80.0,
                cpu_s: 0.5,
                max_rss_kb: 20000,
                bpf_run_s: None,
                bpf_runs: None,
            },
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
            stacks: vec![
                StackRow::new(123, "server".into(), "minor", 39000, user(), kernel),
                StackRow::new(123, "server".into(), "minor", 1000, user(), vec![]),
                StackRow::new(124, "worker".into(), "minor", 10, worker(), vec![]),
                // Same comm and frames as pid 124: merges with it in folded output.
                StackRow::new(125, "worker".into(), "minor", 5, worker(), vec![]),
                StackRow::new(
                    123,
                    "server".into(),
                    "major",
                    2,
                    user()[1..].to_vec(),
                    vec![],
                ),
            ],
        }
    }
}
