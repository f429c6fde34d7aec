//! User stacks unwound with the binaries' own unwind tables (built by the loader from
//! `.eh_frame`, see memtrace-common's `unwind`), so code built without frame pointers (most
//! distributions' binaries) still gives whole stacks. Per frame: find the process's mapping
//! that holds the address, its binary's row for it (from the rows this CPU found last, else
//! a binary search of one 4 KiB page's rows), and follow the row's rule to the caller's CFA,
//! return address and rbp. Code with no table (JIT, anonymous memory) is stepped over by
//! frame pointer. A walk that starts where this CPU's last one did, on unchanged stack
//! words, is that walk's stack (see `Memo`). One `bpf_loop` callback walks for every
//! program, so the verifier checks one frame's work once.
use aya_ebpf::helpers::{
    bpf_probe_read_user,
    generated::{self, bpf_loop},
};
use memtrace_common::{
    counter,
    python::MAX_PYTHON_FRAMES,
    unwind::{
        rule, walk_end, ProcessMappings, UnwindMapping, UnwindRow, EXACT_PC, PAGE_SHIFT, RBP_LOST,
    },
    UserStack, USER_STACK_DEPTH,
};

use crate::{
    maps::{
        add, count, PYTHON_WALK, STACK_TOPS, UNWIND_EMPTY, UNWIND_PAGES, UNWIND_PROCESSES,
        UNWIND_ROWS, UNWIND_TABLES, WALK_STATE,
    },
    python::{self, PythonWalk, Start},
    ustack::{self, UserRegs},
};

/// User code lives below this (x86-64's 47-bit user half).
const USER_ADDRESS_END: u64 = 1 << 47;
/// A frame pointer further than this above the stack pointer is not on this thread's stack.
const MAX_STACK_SPAN: u64 = 1 << 30;
/// Binary search steps: mappings (up to 256) and one page's rows (up to 4097).
const MAPPING_STEPS: usize = 8;
const ROW_STEPS: usize = 13;
/// Where a signal frame's `ucontext` keeps the interrupted rbp, rsp and rip, from the stack
/// pointer at `__restore_rt` (uc_flags, uc_link, uc_stack, then gregs: REG_RBP is 10th,
/// REG_RSP 15th, REG_RIP 16th).
const SIGNAL_RBP: u64 = 40 + 10 * 8;
const SIGNAL_RSP: u64 = 40 + 15 * 8;
const SIGNAL_RIP: u64 = 40 + 16 * 8;
const BPF_NOEXIST: u64 = 1;
/// Stack bytes read at once (see `Walk::window`).
const WINDOW_WORDS: usize = 1024;
const WINDOW_BYTES: u64 = WINDOW_WORDS as u64 * 8;
const PAGE_BYTES: u64 = 4096;
/// Rows this CPU found last (see `Walk::found_rows`): a power of two.
const FOUND_ROW_SLOTS: usize = 512;
/// Stack words a walk may read and still be replayed (see `Memo`): two a frame.
const MEMO_READS: usize = 2 * USER_STACK_DEPTH + 2;
/// Reads a replay checks per bpf_loop call (each call costs an indirect jump).
const CHECKS_PER_CALL: usize = 8;

/// One walk's state, in a per-CPU map value rather than on the stack: the verifier tracks
/// stack values exactly, so the frame count on the stack would make each of the loop's
/// iterations a new state to verify (over its limit); a map value's fields are just numbers
/// to it, and one iteration's check covers all.
#[repr(C)]
pub struct Walk {
    pc: u64,
    sp: u64,
    bp: u64,
    hash: u64,
    /// `walk_end` bits, once known.
    end: u64,
    tgid: u32,
    /// The thread whose stack this is.
    tid: u32,
    /// Reads of the stack stay below this (see `STACK_TOPS`); u64::MAX when not known.
    stack_top: u64,
    /// Frames written so far.
    depth: u32,
    /// 1: `pc` is where execution stopped (the first frame, or a signal's interrupted frame),
    /// not a return address, whose call is the instruction before it.
    exact: u32,
    /// 1: the loader must read this process's mappings (see `ProcessMappings::stale`).
    request: u32,
    /// 1: the first frame is a system call's wrapper, a leaf that made no frame (see
    /// `UserRegs::leaf`): where it has no table, its return address is on top of the stack.
    leaf: u32,
    /// 1: `bp` is still the starting register's value.
    bp_from_regs: u32,
    /// 1: `bp` was read from the stack at `bp_read_at`, and no frame used it yet. Code
    /// built without frame pointers keeps anything in rbp (a loop's pointer): the word a
    /// replay compares only once a CFA was found from it.
    bp_unused_read: u32,
    bp_read_at: u64,
    /// The mapping the last frame was in, and its binary's table: frames of one binary
    /// follow each other, and need no lookup of the process's mappings (valid for one walk).
    cached: CachedMapping,
    /// `window_bytes` of the stack from `window_base` up. A read of user memory costs about
    /// 250 ns on the test VMs, most of it fixed (a 4 KiB read ~230 ns more than none, an
    /// 8 KiB one ~300 ns), so the walk reads the stack 8 KiB at a time (once per walk for
    /// most stacks: the storm's 15 frames span 5 KiB), not a word at a time (a 15-frame
    /// walk made 10-20 reads and cost twice as much).
    window_base: u64,
    /// 0 when no window could be read.
    window_bytes: u64,
    window: [u64; WINDOW_WORDS],
    /// The rows this CPU's walks found last, by table and address: a hot stack's frames
    /// repeat, and a hit costs one slot's compare where a search costs about seven steps
    /// (20 ns a frame on the storm). Kept across walks: tables are never rewritten while
    /// memtrace runs.
    found_rows: [FoundRow; FOUND_ROW_SLOTS],
    /// The frames walked so far (stored in `USER_STACKS` at the end): the native frames,
    /// then the Python frames (see `python`).
    stack: UserStack,
    memo: Memo,
    /// What the last Python walk found (see `python_frames`).
    python_new: u64,
    python_incomplete: u64,
}

/// This CPU's last walk, what it started from and every stack word it read. A walk's result
/// depends only on those (and on tables, which do not change): when the next walk starts from
/// the same thread and registers and the words still hold the same values, it is the same
/// stack, and one compare per word replaces the walk (a fault storm's faults, a loop's
/// mallocs). Walks whose end depended on anything else (a failed read, a mapping not known
/// yet, code without a table) are not kept.
#[repr(C)]
struct Memo {
    /// 1: the fields describe a walk that can be replayed.
    valid: u32,
    tid: u32,
    tgid: u32,
    leaf: u32,
    /// 1: a frame's CFA was found from the starting rbp, so a replay compares it (code built
    /// without frame pointers keeps anything there). Noted during the walk, like the reads.
    used_bp: u32,
    pc: u64,
    sp: u64,
    bp: u64,
    /// The native frames' hash, and the key the whole stack (with its Python frames) was
    /// stored under last.
    hash: u64,
    stored: u64,
    end: u64,
    depth: u64,
    /// Words read, or more than `MEMO_READS`: the walk is not kept.
    reads: u64,
    read_at: [u64; MEMO_READS],
    read_value: [u64; MEMO_READS],
    /// The highest address read.
    highest: u64,
    /// 1: a replay found a word changed.
    changed: u64,
    /// 1: the stack stored last has Python frames after the native ones.
    python: u64,
}

/// One slot of `Walk::found_rows`.
#[repr(C)]
#[derive(Clone, Copy)]
struct FoundRow {
    /// `row_key` of the address (0: empty).
    key: u64,
    row: UnwindRow,
}

/// A mapping and its table, as the walk last found them.
#[repr(C)]
#[derive(Clone, Copy)]
struct CachedMapping {
    start: u64,
    end: u64,
    bias: u64,
    table_base: u64,
    /// Index in `UNWIND_TABLES`.
    table: u32,
    first_row: u32,
    first_page: u32,
    pages: u32,
    /// 1: the mapping has no table (code walked by frame pointer).
    no_table: u32,
}

const NO_MAPPING: CachedMapping = CachedMapping {
    start: 0,
    end: 0,
    bias: 0,
    table_base: 0,
    table: 0,
    first_row: 0,
    first_page: 0,
    pages: 0,
    no_table: 0,
};

/// What the table says of one address.
enum Found {
    Row(UnwindRow),
    /// Code with no table, or outside every mapping the loader gave.
    NoTable,
}

/// What a walk gives the event.
#[derive(Default)]
pub struct Walked {
    /// The stack's key in `USER_STACKS`.
    pub key: u64,
    /// The loader must be asked for this process's mappings.
    pub ask_for_tables: bool,
    /// A stack with Python frames stored for the first time: the loader reads the code
    /// objects it names while they exist (a module's code lives only while it is imported),
    /// so the event wakes it.
    pub new_python_stack: bool,
}

impl Walked {
    /// A stack walked by frame pointers (no tables, no Python frames).
    #[inline(always)]
    pub fn of(key: u64) -> Self {
        Walked {
            key,
            ..Walked::default()
        }
    }
}

/// Walks the user stack from `regs` (see `Walked`).
#[inline(always)]
pub fn walk(regs: &UserRegs, tgid: u32, tid: u32) -> Walked {
    let Some(walk) = WALK_STATE.get_ptr_mut(0) else {
        return Walked::default();
    };
    let walk = unsafe { &mut *walk };
    walk.pc = regs.ip;
    walk.sp = regs.sp;
    walk.bp = regs.fp;
    walk.hash = ustack::SEED;
    walk.end = 0;
    walk.tgid = tgid;
    walk.tid = tid;
    walk.stack_top = unsafe { STACK_TOPS.get(tid) }.copied().unwrap_or(u64::MAX);
    walk.depth = 0;
    walk.exact = 1;
    walk.request = 0;
    walk.leaf = u32::from(regs.leaf);
    walk.bp_from_regs = 1;
    walk.bp_unused_read = 0;
    // No mapping cached (two stores: a whole-struct copy is a byte loop in BPF).
    walk.cached.start = 0;
    walk.cached.end = 0;
    // A replay reads only as far as the words it checks.
    let same_start = replayable(walk);
    let window_end = if same_start {
        walk.memo.highest + 8
    } else {
        u64::MAX
    };
    fill_window(walk, regs.sp & !7, window_end);
    // The callbacks find the walk through their context (a pointer on this stack), with no
    // lookup per frame.
    let mut context: *mut Walk = walk;
    let context_pointer = (&mut context as *mut *mut Walk).cast();
    let mut replayed = false;
    if same_start && (walk.window_bytes != 0 || walk.memo.reads == 0) {
        walk.memo.changed = 0;
        let groups = (walk.memo.reads as u32).div_ceil(CHECKS_PER_CALL as u32);
        unsafe { bpf_loop(groups, check_reads as *mut _, context_pointer, 0) };
        replayed = walk.memo.changed == 0;
    }
    // The native frames: the last walk's, still in `walk.stack` (see `Memo`), or walked now.
    let (hash, end, depth) = if replayed {
        count(counter::WALKS_REPLAYED);
        (walk.memo.hash, walk.memo.end, walk.memo.depth)
    } else {
        walk.memo.valid = 0;
        walk.memo.used_bp = 0;
        walk.memo.reads = 0;
        walk.memo.highest = 0;
        unsafe {
            bpf_loop(
                USER_STACK_DEPTH as u32 + 1,
                step as *mut _,
                context_pointer,
                0,
            )
        };
        (walk.hash, walk.end, walk.depth as u64)
    };
    count_walk(end, depth);
    // One place walks Python frames, for both: the verifier checks that code once.
    let (key, new_python_stack) = match with_python(walk, hash, end, depth, replayed) {
        Some(stored) => stored,
        // A replayed stack stored alone last time is stored still.
        None if replayed && walk.memo.python == 0 => (walk.memo.stored, false),
        None => (store_native(walk, hash, end, depth), false),
    };
    if replayed {
        walk.memo.stored = key;
    } else {
        remember(walk, regs, hash, key);
    }
    Walked {
        key,
        ask_for_tables: !replayed && walk.request != 0,
        new_python_stack,
    }
}

/// Walks the thread's Python frames (stored apart, see `python`) and stores the native frames
/// (`depth` of them, hashed to `hash`, ended as `end`) ending with the reference to them:
/// the stack's key, and whether its Python frames are new; None when the thread is not in
/// Python code (the native stack is then stored alone).
#[inline(always)]
fn with_python(
    walk: &mut Walk,
    hash: u64,
    end: u64,
    depth: u64,
    replayed: bool,
) -> Option<(u64, bool)> {
    if depth as usize + 1 >= USER_STACK_DEPTH {
        return None;
    }
    let reference = python_frames(walk, u64::from(replayed));
    if reference == 0 {
        return None;
    }
    let (new, incomplete) = (walk.python_new != 0, walk.python_incomplete != 0);
    let end = if incomplete {
        end | walk_end::PYTHON_INCOMPLETE
    } else {
        end
    };
    // The reference, then the 0 that ends the stack (indexes opaque, see `read_word`).
    for (next, word) in [(0, reference), (1, 0)] {
        let index = core::hint::black_box(depth as usize + next);
        if let Some(frame) = walk.stack.frames.get_mut(index) {
            *frame = word;
        }
    }
    walk.stack.end = end;
    walk.memo.python = 1;
    let key = ustack::store(
        &mut walk.stack,
        ustack::mix(ustack::mix(hash, reference), end),
    );
    Some((key, new))
}

/// Walks the thread's Python frames and stores them; returns the word that refers to them
/// (0: none), with `python_new` and `python_incomplete` set. Not inlined: its locals stay off
/// the calling program's stack, whose size with its callbacks' must stay within the 512
/// bytes older kernels (6.1) allow, each frame rounded up to 32.
#[inline(never)]
fn python_frames(walk: &mut Walk, replayed: u64) -> u64 {
    let Some(state) = PYTHON_WALK.get_ptr_mut(0) else {
        return 0;
    };
    let state = unsafe { &mut *state };
    let again = match replayed != 0 {
        true => python::current_frame_again(state, walk.tgid, walk.tid),
        false => None,
    };
    let at = match again {
        Some(at) => at,
        None => {
            python::forget_last(state);
            match python::current_frame_at(state, walk.tgid, walk.tid) {
                Some(at) => at,
                None => return 0,
            }
        }
    };
    // The innermost C-level call of the interpreter is a local of its native frame: most
    // often in the stack window already read.
    let Some(first) = read_word(walk, at) else {
        return 0;
    };
    let mut context: *mut PythonWalk = state;
    let context_pointer: *mut core::ffi::c_void = (&mut context as *mut *mut PythonWalk).cast();
    match python::start(state, first, again.is_some()) {
        Start::Nothing => {
            python::forget_last(state);
            return 0;
        }
        Start::Replay => {
            // Most stacks' frames are compared here, in a loop the verifier unrolls (no call
            // a frame); deeper ones go on in bpf_loop's calls.
            for _ in 0..REPLAY_INLINE_FRAMES {
                if !python::replay_step(state) {
                    break;
                }
            }
            if python::replay_goes_on(state) {
                unsafe {
                    bpf_loop(
                        (MAX_PYTHON_FRAMES / REPLAY_FRAMES_PER_CALL) as u32 + 1,
                        python_replay_step as *mut _,
                        context_pointer,
                        0,
                    )
                };
            }
            if let Some((reference, new)) = python::replayed(state) {
                walk.python_new = u64::from(new);
                walk.python_incomplete = 0;
                return reference;
            }
        }
        Start::Walk => {}
    }
    unsafe {
        bpf_loop(
            MAX_PYTHON_FRAMES as u32 + 1,
            python_step as *mut _,
            context_pointer,
            0,
        )
    };
    let (reference, new, incomplete) = python::finish(state);
    walk.python_new = u64::from(new);
    walk.python_incomplete = u64::from(incomplete);
    reference
}

/// Stores the native frames alone (`depth` of them, hashed to `hash`, ended as `end`).
#[inline(always)]
fn store_native(walk: &mut Walk, hash: u64, end: u64, depth: u64) -> u64 {
    walk.memo.python = 0;
    if let Some(frame) = walk
        .stack
        .frames
        .get_mut(core::hint::black_box(depth as usize))
    {
        *frame = 0;
    }
    walk.stack.end = end;
    ustack::store(&mut walk.stack, ustack::mix(hash, end))
}

/// bpf_loop's callback: one Python frame. Returns 1 to stop.
extern "C" fn python_step(_index: u32, context: *mut core::ffi::c_void) -> i64 {
    let state = unsafe { &mut **(context as *mut *mut PythonWalk) };
    i64::from(!python::step(state))
}

/// Python frames a replay compares before its bpf_loop: a call and its return cost about as
/// much as a frame's comparison (return thunks, on CPUs that need them), and the verifier's
/// work (attaching) grows with this.
const REPLAY_INLINE_FRAMES: usize = 16;

/// Python frames a replay's bpf_loop callback compares: a call and its return cost about as
/// much as a frame's comparison (return thunks, on CPUs that need them); more per call would
/// make the verifier's work, and attaching, longer for little.
const REPLAY_FRAMES_PER_CALL: usize = 2;

/// bpf_loop's callback: the next Python frames compared with the last walk's. Returns 1 to
/// stop.
extern "C" fn python_replay_step(_index: u32, context: *mut core::ffi::c_void) -> i64 {
    let state = unsafe { &mut **(context as *mut *mut PythonWalk) };
    for _ in 0..REPLAY_FRAMES_PER_CALL {
        if !python::replay_step(state) {
            return 1;
        }
    }
    0
}

/// Counts a walk by how it ended, and its frames.
#[inline(always)]
fn count_walk(end: u64, depth: u64) {
    let reason = end & 0xff;
    if (walk_end::ROOT..=walk_end::TRUNCATED).contains(&reason) {
        count(counter::WALKS + reason as u32 - 1);
    }
    if end & walk_end::USED_FRAME_POINTERS != 0 {
        count(counter::WALKS_USED_FRAME_POINTERS);
    }
    add(counter::WALK_FRAMES, depth);
}

/// Whether this CPU's last walk started where this one does (see `Memo`).
#[inline(always)]
fn replayable(walk: &Walk) -> bool {
    let memo = &walk.memo;
    memo.valid != 0
        && memo.tid == walk.tid
        && memo.tgid == walk.tgid
        && memo.leaf == walk.leaf
        && memo.pc == walk.pc
        && memo.sp == walk.sp
        && (memo.used_bp == 0 || memo.bp == walk.bp)
        // Its stack is still stored: userspace empties the stack tables (the agent, each
        // profile period) and this CPU's note of the last one with them.
        && memo.stored == ustack::last_stored()
}

/// Keeps the walk just made for the next, if its end depended on nothing but its start and
/// the words it read (see `Memo`); `walk.pc`, `sp` and `bp` have moved, `regs` has not.
/// `hash` is its native frames', `key` the whole stack's.
#[inline(always)]
fn remember(walk: &mut Walk, regs: &UserRegs, hash: u64, key: u64) {
    let end = walk.end & 0xff;
    let determined = matches!(
        end,
        walk_end::ROOT | walk_end::INVALID | walk_end::TRUNCATED
    ) && walk.end & walk_end::USED_FRAME_POINTERS == 0
        && walk.request == 0
        && walk.memo.reads <= MEMO_READS as u64
        && key != 0;
    if !determined {
        return;
    }
    let memo = &mut walk.memo;
    memo.tid = walk.tid;
    memo.tgid = walk.tgid;
    memo.leaf = walk.leaf;
    memo.pc = regs.ip;
    memo.sp = regs.sp;
    memo.bp = regs.fp;
    memo.hash = hash;
    memo.stored = key;
    memo.end = walk.end;
    memo.depth = walk.depth as u64;
    memo.valid = 1;
}

/// bpf_loop's callback for a replay: whether the last walk's reads `group * CHECKS_PER_CALL`
/// on still hold what they held, in this walk's first window. Returns 1 to stop (a word
/// changed, or the last read was checked).
extern "C" fn check_reads(group: u32, context: *mut core::ffi::c_void) -> i64 {
    let walk = unsafe { &mut **(context as *mut *mut Walk) };
    let first = group as u64 * CHECKS_PER_CALL as u64;
    for step in 0..CHECKS_PER_CALL as u64 {
        let index = first + step;
        if index >= walk.memo.reads {
            return 1;
        }
        if !read_unchanged(walk, index as usize) {
            walk.memo.changed = 1;
            return 1;
        }
    }
    0
}

/// Whether the last walk's read `index` holds the same value in this walk's window. A read
/// above the window moves the window up to it (a stack deeper than a window: the
/// interpreter's frames are large).
#[inline(always)]
fn read_unchanged(walk: &mut Walk, index: usize) -> bool {
    let index = core::hint::black_box(index);
    let (Some(&at), Some(&value)) = (
        walk.memo.read_at.get(index),
        walk.memo.read_value.get(index),
    ) else {
        return false;
    };
    if at & 7 == 0 && at > walk.window_base && at - walk.window_base >= walk.window_bytes {
        fill_window(walk, at, walk.memo.highest + 8);
    }
    let offset = at.wrapping_sub(walk.window_base);
    let word = core::hint::black_box((offset >> 3) as usize);
    offset & 7 == 0 && offset < walk.window_bytes && walk.window.get(word) == Some(&value)
}

/// bpf_loop's callback: one frame. Returns 1 to stop.
extern "C" fn step(_index: u32, context: *mut core::ffi::c_void) -> i64 {
    let walk = unsafe { *(context as *mut *mut Walk) };
    match step_frame(unsafe { &mut *walk }) {
        Some(()) => 0,
        None => 1,
    }
}

/// Records the frame at `walk.pc` and moves to its caller; None when the walk ends (`end`
/// says why).
#[inline(always)]
fn step_frame(walk: &mut Walk) -> Option<()> {
    let depth = core::hint::black_box(walk.depth as usize);
    if depth >= USER_STACK_DEPTH {
        return finish(walk, walk_end::TRUNCATED);
    }
    let frames = &mut walk.stack.frames;
    frames[depth] = if walk.exact != 0 && depth > 0 {
        walk.pc | EXACT_PC
    } else {
        walk.pc
    };
    // One 0 ends the stack (frames past it are not cleared).
    if depth + 1 < USER_STACK_DEPTH {
        frames[depth + 1] = 0;
    }
    walk.depth += 1;
    walk.hash = ustack::mix(walk.hash, walk.pc);
    let lookup = if walk.exact != 0 {
        walk.pc
    } else {
        walk.pc - 1
    };
    let row = match find_row(walk, lookup) {
        Found::Row(row) => row,
        Found::NoTable => return frame_pointer_step(walk),
    };
    if row.kind == rule::CFA_RBP {
        walk.memo.used_bp |= walk.bp_from_regs;
        if walk.bp_unused_read != 0 {
            walk.bp_unused_read = 0;
            note_read(walk, walk.bp_read_at, walk.bp);
        }
    }
    let cfa = match row.kind {
        rule::CFA_RSP => walk.sp + row.cfa_offset as u64,
        rule::CFA_RBP if walk.bp != 0 => walk.bp + row.cfa_offset as u64,
        rule::PLT => {
            let pushed = if walk.pc & 15 >= row.cfa_offset as u64 {
                8
            } else {
                0
            };
            walk.sp + 8 + pushed
        }
        rule::END => return finish(walk, walk_end::ROOT),
        rule::SIGNAL => {
            // The handler returned to the trampoline's first byte: named as it is.
            if let Some(frame) = walk.stack.frames.get_mut(depth) {
                *frame = walk.pc | EXACT_PC;
            }
            return signal_step(walk);
        }
        _ => return finish(walk, walk_end::INVALID),
    };
    let return_address_at = cfa - 8;
    let saved_bp_at = cfa.wrapping_add((row.rbp as i64 * 8) as u64);
    let bp_saved = row.rbp != 0 && row.rbp != RBP_LOST;
    // The frame's lowest word read: callers' frames lie above, so the window moves up to it
    // (here only: each place that may read a window multiplies the verifier's work).
    let lowest = if bp_saved && saved_bp_at < return_address_at {
        saved_bp_at
    } else {
        return_address_at
    };
    move_window_up_to(walk, lowest);
    let Some(return_address) = read_stack(walk, return_address_at) else {
        return finish(walk, walk_end::READ_FAILED);
    };
    if row.rbp != 0 {
        walk.bp_from_regs = 0;
        walk.bp_unused_read = 0;
    }
    let saved_bp = match row.rbp {
        0 => walk.bp,
        RBP_LOST => 0,
        _ => {
            let Some(bp) = read_word(walk, saved_bp_at) else {
                return finish(walk, walk_end::READ_FAILED);
            };
            walk.bp_unused_read = 1;
            walk.bp_read_at = saved_bp_at;
            bp
        }
    };
    move_to_caller(walk, return_address, cfa, saved_bp)
}

/// The stack word at `address`, noted for a replay (see `Memo`).
#[inline(always)]
fn read_stack(walk: &mut Walk, address: u64) -> Option<u64> {
    let value = read_word(walk, address)?;
    note_read(walk, address, value);
    Some(value)
}

/// The stack word at `address`: from the window when it holds it, else read alone.
#[inline(always)]
fn read_word(walk: &mut Walk, address: u64) -> Option<u64> {
    let offset = address.wrapping_sub(walk.window_base);
    if offset & 7 == 0 && offset < walk.window_bytes {
        // Opaque to the compiler, so the bound the verifier sees is checked on the index
        // actually used.
        let word = core::hint::black_box((offset >> 3) as usize);
        return walk.window.get(word).copied();
    }
    unsafe { bpf_probe_read_user(address as *const u64) }.ok()
}

/// Notes a word the walk's result depends on, for a replay (see `Memo`); past `MEMO_READS`,
/// only counted (the walk is then not kept).
#[inline(always)]
fn note_read(walk: &mut Walk, address: u64, value: u64) {
    let read = core::hint::black_box(walk.memo.reads as usize);
    if let (Some(at), Some(held)) = (
        walk.memo.read_at.get_mut(read),
        walk.memo.read_value.get_mut(read),
    ) {
        *at = address;
        *held = value;
    }
    walk.memo.reads += 1;
    if address > walk.memo.highest {
        walk.memo.highest = address;
    }
}

/// Reads a new window at `address` when it lies above the current one.
#[inline(always)]
fn move_window_up_to(walk: &mut Walk, address: u64) {
    if address & 7 == 0
        && address > walk.window_base
        && address - walk.window_base >= walk.window_bytes
    {
        fill_window(walk, address, u64::MAX);
    }
}

/// Reads the window at `base` (8-byte aligned), up to `end` (u64::MAX: as far as a window
/// goes) and the thread's known stack top. A read that fails ran past the stack's mapping
/// into the window's last page: that page's start becomes the thread's stack top (one
/// failure per thread; this walk reads word by word). A top at or below `base` was not the
/// stack's top (a read failed on a page the thread never touched, inside a large frame, and
/// the thread's stack is shallower now): it is forgotten, or every later walk from above it
/// would read word by word and none could be replayed.
#[inline(always)]
fn fill_window(walk: &mut Walk, base: u64, end: u64) {
    walk.window_base = base;
    walk.window_bytes = 0;
    if walk.stack_top <= base {
        walk.stack_top = u64::MAX;
    }
    let room = walk.stack_top.min(end).saturating_sub(base);
    let length = if room < WINDOW_BYTES {
        room & !7
    } else {
        WINDOW_BYTES
    };
    if length == 0 || length > WINDOW_BYTES {
        return;
    }
    let read = unsafe {
        generated::bpf_probe_read_user(
            walk.window.as_mut_ptr().cast(),
            length as u32,
            base as *const _,
        )
    };
    if read == 0 {
        walk.window_bytes = length;
    } else {
        walk.stack_top = (base + length - 1) & !(PAGE_BYTES - 1);
        let _ = STACK_TOPS.insert(walk.tid, walk.stack_top, 0);
    }
}

/// Steps into the caller at `return_address`, whose stack pointer is `sp`.
#[inline(always)]
fn move_to_caller(walk: &mut Walk, return_address: u64, sp: u64, bp: u64) -> Option<()> {
    if return_address == 0 {
        return finish(walk, walk_end::ROOT);
    }
    if return_address >= USER_ADDRESS_END || sp <= walk.sp {
        return finish(walk, walk_end::INVALID);
    }
    walk.pc = return_address;
    walk.sp = sp;
    walk.bp = bp;
    walk.exact = 0;
    Some(())
}

/// Code with no table: the frame-pointer record at rbp, if there plausibly is one; for a
/// system call's wrapper, the return address on top of the stack.
#[inline(always)]
fn frame_pointer_step(walk: &mut Walk) -> Option<()> {
    if walk.leaf != 0 && walk.depth == 1 {
        let Some(return_address) = read_stack(walk, walk.sp) else {
            return finish(walk, walk_end::NO_TABLE);
        };
        walk.end |= walk_end::USED_FRAME_POINTERS;
        let (sp, bp) = (walk.sp + 8, walk.bp);
        return move_to_caller(walk, return_address, sp, bp);
    }
    let bp = walk.bp;
    if bp & 7 != 0 || bp < walk.sp || bp - walk.sp > MAX_STACK_SPAN {
        return finish(walk, walk_end::NO_TABLE);
    }
    let (Some(next_bp), Some(return_address)) = (read_stack(walk, bp), read_stack(walk, bp + 8))
    else {
        return finish(walk, walk_end::NO_TABLE);
    };
    walk.end |= walk_end::USED_FRAME_POINTERS;
    if return_address == 0 {
        return finish(walk, walk_end::ROOT);
    }
    if return_address >= USER_ADDRESS_END || next_bp != 0 && next_bp <= bp {
        return finish(walk, walk_end::NO_TABLE);
    }
    move_to_caller(walk, return_address, bp + 16, next_bp)
}

/// A signal trampoline: the interrupted code's registers are in the signal frame.
#[inline(always)]
fn signal_step(walk: &mut Walk) -> Option<()> {
    let sp = walk.sp;
    let (Some(bp), Some(interrupted_sp), Some(pc)) = (
        read_stack(walk, sp + SIGNAL_RBP),
        read_stack(walk, sp + SIGNAL_RSP),
        read_stack(walk, sp + SIGNAL_RIP),
    ) else {
        return finish(walk, walk_end::READ_FAILED);
    };
    if pc == 0 || pc >= USER_ADDRESS_END {
        return finish(walk, walk_end::INVALID);
    }
    walk.pc = pc;
    walk.sp = interrupted_sp;
    walk.bp = bp;
    walk.bp_from_regs = 0;
    walk.bp_unused_read = 0;
    // Interrupted anywhere, not at a call.
    walk.exact = 1;
    Some(())
}

#[inline(always)]
fn finish(walk: &mut Walk, end: u64) -> Option<()> {
    walk.end |= end;
    None
}

/// The row for `pc` (a return address minus 1 past the first frame) in the current process.
#[inline(always)]
fn find_row(walk: &mut Walk, pc: u64) -> Found {
    let cached = walk.cached.start <= pc && pc < walk.cached.end;
    if !cached && !cache_mapping(walk, pc) {
        return Found::NoTable;
    }
    let mapping = walk.cached;
    if mapping.no_table != 0 {
        return Found::NoTable;
    }
    let address = pc.wrapping_sub(mapping.bias);
    let offset = address.wrapping_sub(mapping.table_base);
    let page = offset >> PAGE_SHIFT;
    if address < mapping.table_base || page >= mapping.pages as u64 {
        return Found::Row(UnwindRow::default());
    }
    let key = row_key(mapping.table, offset as u32);
    let slot = found_row_slot(key);
    if let Some(found) = walk.found_rows.get(slot) {
        if found.key == key {
            return Found::Row(found.row);
        }
    }
    let row = search_rows(&mapping, offset as u32, page as u32);
    if let Some(found) = walk.found_rows.get_mut(slot) {
        found.key = key;
        found.row = row;
    }
    Found::Row(row)
}

/// `Walk::found_rows`' key of a table's address: never 0.
#[inline(always)]
fn row_key(table: u32, offset: u32) -> u64 {
    (u64::from(table) + 1) << 32 | u64::from(offset)
}

/// The slot of `key` in `Walk::found_rows` (a multiplicative hash's top bits).
#[inline(always)]
fn found_row_slot(key: u64) -> usize {
    let bits = FOUND_ROW_SLOTS.trailing_zeros();
    // Opaque to the compiler, so the verifier sees the mask on the index actually used.
    core::hint::black_box((key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize)
        & (FOUND_ROW_SLOTS - 1)
}

/// The last row at or below `offset` in `mapping`'s table: a binary search of the rows of
/// `offset`'s page.
#[inline(always)]
fn search_rows(mapping: &CachedMapping, offset: u32, page: u32) -> UnwindRow {
    let first_page = mapping.first_page + page;
    let (Some(&low), Some(&high)) = (
        UNWIND_PAGES.get(first_page),
        UNWIND_PAGES.get(first_page + 1),
    ) else {
        return UnwindRow::default();
    };
    let (low, high) = (low as u32, high as u32);
    // The last row at or below `offset`, among rows low..=high.
    let first_row = mapping.first_row;
    let (mut low, mut high) = (low, high + 1);
    for _ in 0..ROW_STEPS {
        if high - low <= 1 {
            break;
        }
        let middle = low + (high - low) / 2;
        match UNWIND_ROWS.get(first_row + middle) {
            Some(row) if row.pc <= offset => low = middle,
            Some(_) => high = middle,
            None => return UnwindRow::default(),
        }
    }
    match UNWIND_ROWS.get(first_row + low) {
        Some(row) if row.pc <= offset => *row,
        _ => UnwindRow::default(),
    }
}

/// Finds the process's mapping that holds `pc` and its table, into `walk.cached`; false when
/// the process or the mapping is not known (then asks the loader, once).
#[inline(always)]
fn cache_mapping(walk: &mut Walk, pc: u64) -> bool {
    let Some(process) = UNWIND_PROCESSES.get_ptr_mut(walk.tgid) else {
        // Not known yet: ask the loader once (a placeholder marks the request made).
        if let Some(empty) = UNWIND_EMPTY.get_ptr(0) {
            // By reference: the 4 KiB value would not fit on the 512-byte BPF stack.
            #[allow(clippy::needless_borrows_for_generic_args)]
            let inserted = UNWIND_PROCESSES.insert(walk.tgid, unsafe { &*empty }, BPF_NOEXIST);
            if inserted.is_ok() {
                walk.request = 1;
            }
        }
        return false;
    };
    let process = unsafe { &mut *process };
    let Some(mapping) = find_mapping(process, pc) else {
        if process.stale == 0 {
            process.stale = 1;
            walk.request = 1;
        }
        return false;
    };
    let mut cached = CachedMapping {
        start: mapping.start,
        end: mapping.end,
        bias: mapping.bias,
        no_table: 1,
        ..NO_MAPPING
    };
    if let Some(table) = UNWIND_TABLES.get(mapping.table) {
        cached.table_base = table.base;
        cached.table = mapping.table;
        cached.first_row = table.first_row;
        cached.first_page = table.first_page;
        cached.pages = table.pages;
        cached.no_table = 0;
    }
    walk.cached = cached;
    true
}

/// The mapping holding `pc`.
#[inline(always)]
fn find_mapping(process: &ProcessMappings, pc: u64) -> Option<UnwindMapping> {
    let mut low = 0usize;
    let mut high = process.count as usize;
    for _ in 0..MAPPING_STEPS {
        if low >= high {
            return None;
        }
        let middle = core::hint::black_box((low + high) / 2);
        let mapping = process.mappings.get(middle)?;
        if pc < mapping.start {
            high = middle;
        } else if pc >= mapping.end {
            low = middle + 1;
        } else {
            return Some(*mapping);
        }
    }
    None
}
