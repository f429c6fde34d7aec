//! Unwind tables for the eBPF stack walk (memtrace-ebpf's `unwind`): built here from each
//! binary's `.eh_frame` (`rows`), written into the kernel's arrays once per binary
//! (`store`), and listed per process by its executable mappings (`processes`), when the
//! programs ask (a process they have not seen, code outside its known mappings).
pub mod processes;
pub mod rows;
pub mod store;
pub mod vdso;

pub use processes::Unwinder;

/// How user stacks are walked (`--unwind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnwindMode {
    /// With each binary's unwind tables (.eh_frame), frame pointers where there is none.
    Dwarf,
    /// By the frame-pointer chain only: stops at the first function built without one.
    Fp,
}
