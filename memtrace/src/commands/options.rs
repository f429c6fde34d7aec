//! What several subcommands' command lines share: the target, how long to trace, where the
//! report goes and in which format, which stacks, and the parsers of values (pids, durations,
//! sizes) that say what is wrong with a bad one.
use std::{path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

use crate::{
    output::files::Outputs,
    trace::{
        request::{TargetRequest, DEFAULT_UNWIND_MIB},
        stack_groups::Grouping,
    },
    unwind::UnwindMode,
};

/// Which processes to trace. Shared by every tracing subcommand.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Trace this process (all its threads); repeat for several.
    #[arg(short, long = "pid", value_name = "PID", value_parser = parse_pid)]
    pub pids: Vec<u32>,
    /// Trace every task in this cgroup v2 directory and below it (e.g. a container).
    #[arg(long, value_name = "PATH", conflicts_with = "pids")]
    pub cgroup: Option<PathBuf>,
    /// With --pid or --cgroup: also trace processes the targets fork after tracing starts
    /// (a command's are always traced, as perf record's are).
    #[arg(long)]
    pub follow_children: bool,
    /// Trace the command alone, not the processes it starts.
    #[arg(long, conflicts_with = "follow_children")]
    pub no_follow_children: bool,
    /// The command to start and trace (after `--`).
    #[arg(last = true, value_name = "COMMAND", conflicts_with_all = ["pids", "cgroup"])]
    pub command: Vec<String>,
}

impl TargetArgs {
    /// Whether processes the targets start are traced too: a command's, unless
    /// --no-follow-children; others' with --follow-children.
    pub fn follows_children(&self) -> bool {
        match self.command.is_empty() {
            true => self.follow_children,
            false => !self.no_follow_children,
        }
    }

    /// The target as the pipeline takes it (clap has made them exclusive).
    pub fn request(&self) -> TargetRequest {
        if !self.command.is_empty() {
            TargetRequest::Command(self.command.clone())
        } else if let Some(path) = &self.cgroup {
            TargetRequest::Cgroup(path.clone())
        } else if !self.pids.is_empty() {
            TargetRequest::Pids(self.pids.clone())
        } else {
            TargetRequest::System
        }
    }
}

/// How user stacks are walked. Shared by the subcommands that take user stacks.
#[derive(Debug, Clone, Copy, Args)]
pub struct UnwindArgs {
    /// How user stacks are walked. dwarf: with each binary's unwind tables (.eh_frame, as
    /// perf --call-graph dwarf and debuggers use), so code built without frame pointers
    /// (most distributions' binaries) gives whole stacks; code with no table (JIT) is walked
    /// by frame pointers. fp: the frame-pointer chain only, which ends at the first function
    /// built without frame pointers.
    #[arg(long, value_enum, value_name = "HOW", default_value_t = UnwindMode::Dwarf)]
    pub unwind: UnwindMode,
    /// Kernel memory for unwind tables, in MiB (8 bytes per row: libc takes about 0.2 MiB,
    /// python3 0.5 MiB). Binaries that do not fit are walked by frame pointers, and counted.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_UNWIND_MIB,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub unwind_memory: u32,
    /// Show a Python process's stacks without its Python frames: the interpreter's native
    /// frames only (`_PyEval_EvalFrameDefault`), as before memtrace read CPython 3.11's
    /// frames. Each event then costs less in a Python process.
    #[arg(long)]
    pub no_python_frames: bool,
}

impl UnwindArgs {
    /// `KernelOptions::python_frames`.
    pub fn python_frames(&self) -> bool {
        !self.no_python_frames
    }

    /// `KernelOptions::unwind_memory_mib`.
    pub fn memory_mib(&self) -> Option<u32> {
        (self.unwind == UnwindMode::Dwarf).then_some(self.unwind_memory)
    }
}

/// How long to trace and how to show progress.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Stop after this long (e.g. 500ms, 10s, 2m); default: until Ctrl-C or the target exits.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print one line per process every DURATION while tracing (e.g. 1s).
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,
}

/// Where and how to write the report.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Report format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the report to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write an interactive flame graph of the stacks (SVG).
    #[arg(long, value_name = "FILE.svg")]
    pub flamegraph: Option<PathBuf>,
    /// Also write the stacks as a gzip'd pprof profile (for go tool pprof, Pyroscope, Parca).
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,
    /// How many call stacks the table and JSON show.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// Stack rows per process (pid), or per program name across processes (comm: four
    /// postgres backends running the same code are one row).
    #[arg(long, value_enum, value_name = "BY", default_value_t = GroupBy::Pid)]
    pub group_by: GroupBy,
    /// Keep stacks apart by instruction address; by default, stacks through the same
    /// functions (called from other lines) are one row.
    #[arg(long)]
    pub by_address: bool,
}

/// What a stack row is per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupBy {
    Pid,
    Comm,
}

impl OutputArgs {
    /// How the report's stacks are told apart (see `stack_groups`).
    pub fn grouping(&self) -> Grouping {
        Grouping {
            by_comm: self.group_by == GroupBy::Comm,
            by_address: self.by_address,
        }
    }

    /// The files asked for, opened now: a bad path fails before tracing starts.
    pub fn open(&self) -> anyhow::Result<Outputs> {
        Outputs::open(
            self.output.as_deref(),
            self.flamegraph.as_deref(),
            self.pprof.as_deref(),
        )
    }

    /// Every stack is needed for folded, flame graph and pprof output; otherwise only the top.
    pub fn needs_every_stack(&self) -> bool {
        self.format == Format::Folded || self.flamegraph.is_some() || self.pprof.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableOrJson {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stacks {
    User,
    Kernel,
    Both,
    None,
}

impl Stacks {
    pub fn user(self) -> bool {
        matches!(self, Self::User | Self::Both)
    }

    pub fn kernel(self) -> bool {
        matches!(self, Self::Kernel | Self::Both)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Folded,
}

pub fn parse_positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value > 0.0 && value.is_finite() => Ok(value),
        _ => Err(format!("{text} is not a positive number")),
    }
}

pub fn parse_pid(text: &str) -> Result<u32, String> {
    match text.parse::<i64>() {
        Ok(pid) if pid > 0 && pid <= i64::from(i32::MAX) => Ok(pid as u32),
        Ok(_) => Err(format!("{text} is not a process id (pids are positive)")),
        Err(_) => Err(format!(
            "{text} is not a process id (expected a number, e.g. 1234)"
        )),
    }
}

/// `--sample N` of faults: 1 fault in N traced.
pub fn parse_fault_sample(text: &str) -> Result<u64, String> {
    from_one(text, "--sample", "1 (every fault)", "0 would trace nothing")
}

/// `--sample N` of pages: stacks for 1 allocation in N.
pub fn parse_stack_sample(text: &str) -> Result<u64, String> {
    from_one(
        text,
        "--sample",
        "1 (a stack for every allocation)",
        "0 would take none",
    )
}

/// `--sample-bytes N`: a sample point every N bytes allocated, on average.
pub fn parse_sample_bytes(text: &str) -> Result<u64, String> {
    from_one(
        text,
        "--sample-bytes",
        "1 (every allocation seen)",
        "0 bytes between sample points has no meaning",
    )
}

/// A whole number from 1 up, for `flag`; the error says the range in words: what 1 means and
/// why 0 does not work, since clap's own words ("0 is not in 1..=18446744073709551615") say
/// neither.
fn from_one(text: &str, flag: &str, one: &str, zero: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err(format!("{flag} takes a whole number from {one} up; {zero}")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "{text} is not a whole number: {flag} takes one from {one} up"
        )),
    }
}

/// A ring buffer size: a power of two from 4K (a page) to 1G, with an optional K, M or G.
pub fn parse_ring_size(text: &str) -> Result<u32, String> {
    let upper = text.trim().to_ascii_uppercase();
    let (digits, scale) = match upper.trim_end_matches('B').chars().last() {
        Some('K') => (&upper[..upper.find('K').unwrap_or(0)], 1u64 << 10),
        Some('M') => (&upper[..upper.find('M').unwrap_or(0)], 1 << 20),
        Some('G') => (&upper[..upper.find('G').unwrap_or(0)], 1 << 30),
        _ => (upper.as_str(), 1),
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&b| b.is_power_of_two() && (4096..=1 << 30).contains(&b))
        .ok_or_else(|| {
            format!("{text} is not a ring buffer size: a power of two from 4K to 1G (64K, 8M)")
        })?;
    Ok(bytes as u32)
}

pub fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("{text} is not a fraction between 0 and 1")),
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|err| format!("{text:?} is not a duration ({err}); try 500ms, 10s or 2m"))?;
    if duration.is_zero() {
        return Err("a duration must be more than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_must_be_positive_numbers() {
        assert_eq!(parse_pid("1234"), Ok(1234));
        assert!(parse_pid("0").is_err());
        assert!(parse_pid("-5").is_err());
        assert!(parse_pid("abc").is_err());
        assert!(parse_pid("99999999999").is_err());
    }

    #[test]
    fn ring_sizes_are_powers_of_two_in_range() {
        assert_eq!(parse_ring_size("4K"), Ok(4096));
        assert_eq!(parse_ring_size("8M"), Ok(8 << 20));
        assert_eq!(parse_ring_size("64kb"), Ok(64 << 10));
        assert_eq!(parse_ring_size("1G"), Ok(1 << 30));
        for bad in ["3K", "2K", "2G", "", "M", "-8M", "eight"] {
            assert!(parse_ring_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn samples_are_whole_numbers_from_one() {
        assert_eq!(parse_fault_sample("1"), Ok(1));
        assert_eq!(parse_fault_sample("100"), Ok(100));
        assert_eq!(
            parse_fault_sample("0"),
            Err(
                "--sample takes a whole number from 1 (every fault) up; 0 would trace nothing"
                    .into()
            )
        );
        for bad in ["-1", "1.5", "lots", ""] {
            let error = parse_fault_sample(bad).unwrap_err();
            assert!(error.contains("is not a whole number"), "{bad}: {error}");
        }
        assert!(parse_stack_sample("0")
            .unwrap_err()
            .contains("every allocation"));
        assert!(parse_sample_bytes("0")
            .unwrap_err()
            .starts_with("--sample-bytes"));
    }

    #[test]
    fn durations_are_human() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
