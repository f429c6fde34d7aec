//! The report every subcommand produces and every output sink consumes. Sinks only read it; the
//! aggregator and symbolizer fill it. Field names of the `Serialize` types are the public JSON
//! contract: keep them, add freely.
use std::sync::Arc;

use serde::Serialize;

use crate::{
    kernel::tables::KernelCounters,
    python::processes::PythonFigures,
    unwind::{processes::UnwindFigures, UnwindMode},
};

/// One symbolized stack frame.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Frame {
    /// Instruction address (absolute, in the process or the kernel).
    pub address: u64,
    /// Function name, demangled; `None` when no symbol covers the address.
    pub function: Option<String>,
    /// Offset of `address` from the function's start; without a function, its offset in
    /// the module's file.
    pub offset: u64,
    /// Binary or library file name (`libc.so.6`, `[kernel]`, `[vdso]`), when known.
    pub module: Option<String>,
    /// The file mapping the user frame's code came from (none for kernel frames, anonymous
    /// code and the vdso): what lets a pprof server symbolize the frame again.
    #[serde(skip)]
    pub mapping: Option<CodeMapping>,
    /// For a Python frame: its source file (as the interpreter names it) and line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceLine>,
}

/// Where a Python frame is in its source.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct SourceLine {
    pub file: String,
    /// None when the code object's line table names none for the instruction.
    pub line: Option<u32>,
}

impl SourceLine {
    /// `app.py:42`: the file's last component, as Python tracebacks are read at a glance.
    pub fn short(&self) -> String {
        let name = self.file.rsplit('/').next().unwrap_or(&self.file);
        match self.line {
            Some(line) => format!("{name}:{line}"),
            None => name.to_owned(),
        }
    }
}

/// An executable file mapping as a process had it (`Mapping` in pprof's profile.proto).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CodeMapping {
    pub start: u64,
    /// Exclusive.
    pub end: u64,
    /// The file offset mapped at `start`.
    pub offset: u64,
    pub file: Arc<CodeFile>,
}

impl CodeMapping {
    /// Where `address` (in this mapping) is in the file: the same in every process.
    pub fn file_offset(&self, address: u64) -> u64 {
        address.wrapping_sub(self.start).wrapping_add(self.offset)
    }
}

/// A mapped file as profile servers name it: its path and its GNU build id (hex).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CodeFile {
    pub path: String,
    pub build_id: Option<String>,
}

impl Frame {
    /// The frame's name as JSON `frames` and folded stacks show it: the function; where no
    /// symbol covers it, the module and the offset in its file (`python3.11+0x5cfbeb`), or
    /// the address in hex outside any known mapping.
    pub fn name(&self) -> String {
        if let (Some(function), Some(source)) = (&self.function, &self.source) {
            return format!("{function} ({})", source.short());
        }
        match (&self.function, &self.module) {
            (Some(function), _) => function.clone(),
            (None, Some(module)) => format!("{module}+{:#x}", self.offset),
            (None, None) => format!("{:#x}", self.address),
        }
    }

    /// The last frame of a user stack whose table walk ended early, saying why (None for a
    /// whole stack, or one walked by frame pointers): stacks show it in every format, as
    /// perf shows `[unknown]`.
    pub fn stack_end(end: u64) -> Option<Frame> {
        use memtrace_common::unwind::walk_end;
        let why = match end & 0xff {
            walk_end::NO_TABLE => "[stack ends: code with no unwind table]",
            walk_end::INVALID => "[stack ends: unwind rule not followed]",
            walk_end::READ_FAILED => "[stack ends: stack unreadable]",
            walk_end::TRUNCATED => "[stack ends: 127-frame limit]",
            _ => return None,
        };
        Some(Frame {
            address: 0,
            function: Some(why.to_owned()),
            offset: 0,
            module: None,
            mapping: None,
            source: None,
        })
    }

    /// The frame as tables show it: `function+0xoff (module)`, or the name above (alone for
    /// a `stack_end` marker, which has no address).
    pub fn line(&self) -> String {
        if self.source.is_some() {
            return self.name();
        }
        match (&self.function, &self.module) {
            (Some(function), Some(module)) => format!("{function}+{:#x} ({module})", self.offset),
            (Some(function), None) if self.address != 0 => {
                format!("{function}+{:#x}", self.offset)
            }
            _ => self.name(),
        }
    }
}

/// One call stack with how much was seen on it.
#[derive(Clone, Debug, Serialize)]
pub struct StackRow {
    pub pid: u32,
    pub comm: String,
    /// What was counted: "minor" / "major" for faults.
    pub kind: String,
    /// Events on this stack (rescaled when sampled).
    pub count: u64,
    /// User frames, innermost first: names only (the JSON contract).
    pub frames: Vec<String>,
    /// Kernel frames, innermost first: names only.
    pub kernel_frames: Vec<String>,
    /// The same frames with address, offset and module.
    #[serde(rename = "frames_detail")]
    pub user_detail: Vec<Frame>,
    #[serde(rename = "kernel_frames_detail")]
    pub kernel_detail: Vec<Frame>,
    /// With `--group-by comm`: every process whose stacks the row merges (`pid` is the one
    /// whose stack it shows).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
}

impl StackRow {
    pub fn new(
        pid: u32,
        comm: String,
        kind: &str,
        count: u64,
        user: Vec<Frame>,
        kernel: Vec<Frame>,
    ) -> Self {
        Self {
            pid,
            comm,
            kind: kind.to_owned(),
            count,
            frames: user.iter().map(Frame::name).collect(),
            kernel_frames: kernel.iter().map(Frame::name).collect(),
            user_detail: user,
            kernel_detail: kernel,
            pids: Vec::new(),
        }
    }
}

/// How a `-- CMD` target ended.
#[derive(Clone, Debug, Serialize)]
pub struct CommandExit {
    pub pid: u32,
    /// The command line as given.
    pub command: Vec<String>,
    /// Exit code when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal number when a signal ended it.
    pub signal: Option<i32>,
}

/// What tracing cost memtrace itself, so users can judge the price of leaving it on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TracerCost {
    /// From memtrace's start until the eBPF programs were attached.
    pub attach_ms: f64,
    /// memtrace's own CPU time (user + system), whole run.
    pub cpu_s: f64,
    /// memtrace's own peak resident memory.
    pub max_rss_kb: u64,
    /// Time the kernel spent running memtrace's eBPF programs, and how many runs: only when
    /// the kernel keeps these statistics (`sysctl kernel.bpf_stats_enabled=1`, which costs
    /// every eBPF program on the machine a little, so memtrace does not turn it on).
    pub bpf_run_s: Option<f64>,
    pub bpf_runs: Option<u64>,
}

/// What every traced report starts with, flattened into its JSON: the subcommand, what was
/// traced for how long, what the kernel could not deliver, how a traced command ended, and
/// what tracing cost memtrace itself.
#[derive(Clone, Debug, Serialize)]
pub struct ReportHeader {
    pub command: &'static str,
    pub duration_s: f64,
    /// Events the kernel could not deliver (ring buffer full): when non-zero, every figure is a
    /// lower bound.
    pub lost_events: u64,
    /// What was traced, in words ("pid 123", "cgroup /sys/fs/cgroup/x", "system-wide").
    pub target: String,
    pub exit: Option<CommandExit>,
    pub tracer: TracerCost,
    /// How user stacks were walked and how complete they are (None: no user stacks taken).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unwind: Option<UnwindReport>,
}

/// How user stacks were walked, and how each walk ended: a user always knows when stacks are
/// partial and why.
#[derive(Clone, Debug, Serialize)]
pub struct UnwindReport {
    pub mode: UnwindMode,
    /// Stack walks with the unwind tables (one per event with a user stack).
    pub walks: u64,
    /// Walks that reached the outermost frame (`_start`, a thread's `clone3`).
    pub reached_root: u64,
    /// Walks that stepped over code with no table by frame pointer (JIT, anonymous code).
    pub used_frame_pointers: u64,
    /// Walks that ended at code with no table and no frame pointer to follow.
    pub ended_without_table: u64,
    /// Walks that ended at a table row they cannot follow (a gap, an rbp that was lost).
    pub ended_at_invalid_rule: u64,
    /// Walks that ended because the stack could not be read.
    pub ended_at_failed_read: u64,
    /// Walks cut at the depth limit (127 frames).
    pub truncated: u64,
    /// Frames the walks found.
    pub frames: u64,
    /// Walks that were the same stack as their CPU's walk before (same thread, registers and
    /// stack words), taken from it instead of walked again: a loop's faults or mallocs.
    pub replayed: u64,
    /// The tables in the kernel (dwarf only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tables: Option<UnwindFigures>,
    /// Python frames, when a Python process was traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<PythonReport>,
}

/// How the Python frames of the stacks were found and named.
#[derive(Clone, Debug, Serialize)]
pub struct PythonReport {
    /// Walks that found a thread's Python frames, and those frames.
    pub walks: u64,
    pub frames: u64,
    /// Walks in a Python process of a thread with no Python thread state (a thread that
    /// never ran Python code): their stacks are native.
    pub threads_without_state: u64,
    /// Walks whose Python frames stopped early (a read failed, the depth limit).
    pub incomplete: u64,
    /// Walks found the same as the CPU's last one by comparing each frame's fields (also in
    /// `walks`).
    pub replayed: u64,
    #[serde(flatten)]
    pub processes: PythonFigures,
}

impl UnwindReport {
    pub fn new(
        mode: UnwindMode,
        counters: &KernelCounters,
        tables: Option<UnwindFigures>,
        python: Option<PythonFigures>,
    ) -> Self {
        let [root, no_table, invalid, read_failed, truncated] = counters.walks_ended;
        let python = python
            .filter(|figures| figures.processes + figures.unsupported_processes > 0)
            .map(|processes| PythonReport {
                walks: counters.python_walks,
                frames: counters.python_frames,
                threads_without_state: counters.python_no_thread_state,
                incomplete: counters.python_incomplete,
                replayed: counters.python_walks_replayed,
                processes,
            });
        Self {
            mode,
            walks: counters.walks_ended.iter().sum(),
            reached_root: root,
            used_frame_pointers: counters.walks_used_frame_pointers,
            ended_without_table: no_table,
            ended_at_invalid_rule: invalid,
            ended_at_failed_read: read_failed,
            truncated,
            frames: counters.walk_frames,
            replayed: counters.walks_replayed,
            tables,
            python,
        }
    }
}

#[cfg(test)]
mod frame_tests {
    use super::Frame;
    use memtrace_common::unwind::walk_end;

    #[test]
    fn a_stack_end_marker_is_shown_without_an_offset() {
        let marker = Frame::stack_end(walk_end::NO_TABLE).unwrap();
        assert_eq!(marker.line(), "[stack ends: code with no unwind table]");
        assert!(Frame::stack_end(walk_end::ROOT).is_none());
        let kernel = Frame {
            address: 0xffff_ffff_8100_0000,
            function: Some("do_user_addr_fault".into()),
            offset: 0x1a,
            module: None,
            mapping: None,
            source: None,
        };
        assert_eq!(kernel.line(), "do_user_addr_fault+0x1a");
    }
}
