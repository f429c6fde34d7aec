//! A trace as a subcommand asks for it, checked and free of the command line: what to trace,
//! for how long, which hooks, and what the kernel side must keep. The CLI's arguments are
//! turned into one of these (`TargetArgs::request`); the agent, oom and diagnose build theirs
//! directly.
use std::{path::PathBuf, time::Duration};

use crate::kernel::{
    hooks::{Attachment, CommandHooks},
    layout::SwapLayout,
};

/// Ring buffer size for tracing every event: at a fault storm's ~500k events/s of 64 bytes,
/// 8 MiB holds a quarter second.
pub const RING_BYTES: u32 = 8 << 20;

/// Which processes, before they are checked against the system (`Target::resolve`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetRequest {
    /// The whole system.
    System,
    /// Running processes, all their threads.
    Pids(Vec<u32>),
    /// Every task in a cgroup v2 directory and below it.
    Cgroup(PathBuf),
    /// A command to start and trace from its first instruction.
    Command(Vec<String>),
}

impl TargetRequest {
    /// A command when one is given, else the whole system (oom).
    pub fn command_or_system(command: Vec<String>) -> Self {
        if command.is_empty() {
            Self::System
        } else {
            Self::Command(command)
        }
    }
}

/// Kernel memory for unwind tables unless `--unwind-memory` says otherwise.
pub const DEFAULT_UNWIND_MIB: u32 = 16;

/// What a trace asks of the kernel side beyond its hooks. Each subcommand states only what
/// differs from the defaults (every event, no stacks, an 8 MiB ring).
#[derive(Debug, Clone, Copy)]
pub struct KernelOptions {
    /// The event ring's size (a power of two).
    pub ring_bytes: u32,
    pub user_stacks: bool,
    pub kernel_stacks: bool,
    /// Name the file of each file fault in the kernel (see `KernelConfig::file_tags`); the
    /// pipeline attaches the tagger where the kernel has its tracepoint.
    pub file_tags: bool,
    /// Count swap traffic per owner, reading the kernel's counters where this layout (from
    /// BTF: [`swap_layout`]) says. Its hooks may be attached later (the agent's "auto").
    pub swap: Option<SwapLayout>,
    /// Heap allocations through uprobes: None when not traced; Some(N) samples 1 point per
    /// N bytes on average (0: every block).
    pub malloc: Option<u64>,
    /// Page allocations take stacks (as user_stacks and kernel_stacks say), or are counted only.
    pub page_stacks: bool,
    /// Take stacks for 1 event in N where a program samples itself (pages, counted faults).
    pub stack_sample_period: u64,
    /// User stacks are unwound with the binaries' tables, given this many MiB of kernel
    /// memory (None: by frame pointers only, `--unwind fp`).
    pub unwind_memory_mib: Option<u32>,
    /// With the tables: Python processes' stacks show their Python frames (`python`).
    pub python_frames: bool,
}

impl Default for KernelOptions {
    fn default() -> Self {
        Self {
            ring_bytes: RING_BYTES,
            user_stacks: false,
            kernel_stacks: false,
            file_tags: false,
            swap: None,
            malloc: None,
            page_stacks: false,
            stack_sample_period: 1,
            unwind_memory_mib: Some(DEFAULT_UNWIND_MIB),
            python_frames: true,
        }
    }
}

/// One trace, ready for `pipeline::trace`.
#[derive(Clone)]
pub struct TraceRequest {
    /// What the subcommand declares it hooks (its `HOOKS`, which `memtrace check` judges):
    /// the pipeline refuses an attachment outside it, so the two cannot drift apart.
    pub declared: &'static CommandHooks,
    pub target: TargetRequest,
    /// Also trace the processes the targets fork (added in the kernel, inside fork).
    pub follow_children: bool,
    /// Stop after this long (else at Ctrl-C, SIGTERM, or when the targets have exited).
    pub stop_after: Option<Duration>,
    pub kernel: KernelOptions,
    /// The hooks the subcommand needs, attached in this order after the pipeline's own.
    pub hooks: Vec<Attachment>,
}

/// Where this kernel keeps the counters swap counting reads, when memtrace can read them;
/// when not, says so (`instead`: what the subcommand still does without) and the subcommand
/// goes on without.
pub fn swap_layout(instead: &str) -> Option<SwapLayout> {
    match SwapLayout::discover() {
        Ok(layout) => Some(layout),
        Err(err) => {
            log::warn!("no per-process swap counts on this kernel ({err:#}); {instead}");
            None
        }
    }
}
