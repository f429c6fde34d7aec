//! The tables user stacks are unwound with, built by the loader from each binary's `.eh_frame`
//! (memtrace's `unwind`) and searched by the eBPF programs per frame (memtrace-ebpf's
//! `unwind`). One table per binary, shared by every process that maps it; each process has a
//! sorted list of its executable mappings, each naming its binary's table.

/// How to find the caller's frame from one address range of a binary, x86-64 only. The return
/// address is always at CFA - 8 (the System V ABI; rows whose CIE says otherwise are
/// [`rule::INVALID`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRow {
    /// The first address the row covers, as an offset from its table's `base`.
    pub pc: u32,
    /// CFA = rsp or rbp + this ([`rule::CFA_RSP`], [`rule::CFA_RBP`]); for [`rule::PLT`], the
    /// instruction offset (pc & 15) from which the PLT entry has pushed its extra word.
    pub cfa_offset: u16,
    /// Where the caller's rbp was saved, in 8-byte words from the CFA (-2: at CFA - 16);
    /// 0: rbp was not changed; [`RBP_LOST`]: not recoverable.
    pub rbp: i8,
    /// One of [`rule`].
    pub kind: u8,
}

/// [`UnwindRow::rbp`] when the caller's rbp cannot be found (kept in another register, or
/// described by an expression): a later frame whose CFA is rbp-based ends the walk.
pub const RBP_LOST: i8 = i8::MIN;

/// [`UnwindRow::kind`].
pub mod rule {
    /// No unwind information covers the address (a gap between functions): the walk ends.
    pub const INVALID: u8 = 0;
    pub const CFA_RSP: u8 = 1;
    pub const CFA_RBP: u8 = 2;
    /// A PLT entry: CFA = rsp + 8, plus 8 once the entry has pushed its word (the expression
    /// every x86-64 linker writes for .plt).
    pub const PLT: u8 = 3;
    /// The return address is undefined: the outermost frame (`_start`, a thread's `clone3`).
    pub const END: u8 = 4;
    /// A signal trampoline (`__restore_rt`): the interrupted registers are in the
    /// `ucontext` the stack pointer points to.
    pub const SIGNAL: u8 = 5;
}

/// Rows are indexed by 4 KiB page of a binary's code: a search looks at one page's rows.
pub const PAGE_SHIFT: u32 = 12;

/// One binary's table: its rows and page index in the global arrays.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindTable {
    /// The binary's address (as in its file's program headers) that row pcs are offsets from;
    /// page-aligned.
    pub base: u64,
    /// Index of its first row in `UNWIND_ROWS`.
    pub first_row: u32,
    pub rows: u32,
    /// Index of its first page entry in `UNWIND_PAGES`: entry p holds the index (from
    /// `first_row`) of the row that covers `base + p * 4096`; entry `pages` is `rows`.
    pub first_page: u32,
    pub pages: u32,
}

/// One executable mapping of a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindMapping {
    pub start: u64,
    pub end: u64,
    /// Subtracted from an address in the mapping to give its binary's address (the load bias).
    pub bias: u64,
    /// Index into `UNWIND_TABLES`; [`NO_TABLE`]: the walk steps by frame pointer here.
    pub table: u32,
    pub _pad: u32,
}

/// [`UnwindMapping::table`] of code without a table (JIT, anonymous code, a binary whose table
/// did not fit).
pub const NO_TABLE: u32 = u32::MAX;

/// Executable mappings kept per process; a process with more has the rest walked by frame
/// pointer (counted by the loader).
pub const MAX_MAPPINGS: usize = 192;

/// A process's executable mappings, sorted by address, in `UNWIND_PROCESSES` by tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessMappings {
    pub count: u32,
    /// Set by the programs when a walk met an address outside every mapping (a library
    /// loaded since, or an exec): the loader reads the process's maps again and clears it.
    pub stale: u32,
    pub mappings: [UnwindMapping; MAX_MAPPINGS],
}

impl ProcessMappings {
    pub const EMPTY: ProcessMappings = ProcessMappings {
        count: 0,
        stale: 0,
        mappings: [UnwindMapping {
            start: 0,
            end: 0,
            bias: 0,
            table: 0,
            _pad: 0,
        }; MAX_MAPPINGS],
    };
}

/// Set on a recorded frame (past the first) that is where execution stopped, not a return
/// address: a signal's interrupted code, and the signal trampoline the handler returns to
/// (whose first byte the return address is). Userspace symbolizes the others at the byte
/// before, inside their call.
pub const EXACT_PC: u64 = 1 << 63;

/// How a walk ended, in [`crate::UserStack::end`] (low byte) with [`USED_FRAME_POINTERS`].
pub mod walk_end {
    /// The outermost frame: its return address is undefined or 0.
    pub const ROOT: u64 = 1;
    /// An address with no table, and no frame-pointer record to step by.
    pub const NO_TABLE: u64 = 2;
    /// The table's rule for an address cannot be followed (a gap, an rbp that was lost).
    pub const INVALID: u64 = 3;
    /// Reading the stack failed (a page not present, a corrupt stack pointer).
    pub const READ_FAILED: u64 = 4;
    /// The depth limit was reached.
    pub const TRUNCATED: u64 = 5;
    /// Walked by frame pointers only (`--unwind fp`): where the chain ended is not known.
    pub const FRAME_POINTERS: u64 = 6;
    /// Some frame was found by frame pointer (code with no table).
    pub const USED_FRAME_POINTERS: u64 = 1 << 8;
    /// Python frames were walked but stopped early: the stack's outer Python frames are
    /// missing.
    pub const PYTHON_INCOMPLETE: u64 = 1 << 9;
}
