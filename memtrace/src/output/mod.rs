//! The formats a finished report can take that are shared by every subcommand (JSON, folded
//! stacks, flame graphs, pprof, the pieces of text tables), and the files they go to. Each
//! subcommand's own text table lives beside it, in `commands/<name>/table.rs`.
pub mod files;
pub mod flamegraph;
pub mod folded;
pub mod html;
pub mod json;
pub mod pprof;
pub mod profile;
pub mod text;

/// Small hand-made stacks shared by the sinks' unit tests (and the faults report's).
#[cfg(test)]
pub(crate) mod testdata {
    use crate::{
        output::profile::Reweighted,
        report::{Frame, StackRow},
    };

    pub fn frame(address: u64, function: Option<&str>, offset: u64, module: &str) -> Frame {
        Frame {
            address,
            function: function.map(str::to_owned),
            offset,
            module: Some(module.to_owned()),
            mapping: None,
            source: None,
        }
    }

    /// Two processes, both kinds, a kernel stack, an unsymbolized frame, a name with ';'.
    pub fn stacks() -> Vec<StackRow> {
        let user = || {
            vec![
                frame(0x7f00_0000_1010, Some("memset"), 0x10, "libc.so.6"),
                frame(0x5555_0000_2020, Some("fill_buffer"), 0x20, "server"),
                frame(0x5555_0000_3030, Some("main"), 0x30, "server"),
            ]
        };
        let worker = || {
            vec![
                frame(0x4000_1234, None, 0x1234, "worker"),
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
        vec![
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
        ]
    }

    /// The stacks as a profile of faults over two seconds, as the stack sinks see a report.
    pub fn profile() -> Reweighted {
        Reweighted {
            command: "faults",
            target: "pid 123".to_owned(),
            duration_s: 2.0,
            lost_events: 0,
            rows: stacks(),
            sample_type: ("faults", "count"),
            period: 1,
            values: None,
            sampling_note: None,
            context: Vec::new(),
        }
    }
}
