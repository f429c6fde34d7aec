//! CPython frames, walked after the native stack (see memtrace-common's `python`). The
//! thread's `PyThreadState` is found by its kernel thread id (remembered per thread, else the
//! GIL holder's, else the interpreter's list of threads); from its innermost C-level call
//! (`cframe`), each `_PyInterpreterFrame` names its code object and instruction and links to
//! the frame that called it. Userspace reads the code objects.
//!
//! A walk costs reads of user memory (about 100-250 ns each on the test VMs, most of it
//! fixed), so it makes few: the thread state once; the thread's newest frames in one window
//! (frames are pushed on a per-thread stack of chunks, so a call chain's frames lie side by
//! side below the newest); and each code object's check only for a (frame, code) pair this
//! CPU has not seen (see `CheckSlot`).
//!
//! Most events of a thread come while the same Python code runs. When the native stack is
//! the CPU's last one replayed, the frames read are first compared with the last walk's (see
//! `replay_step`): no code object check looked up, nothing written.
use aya_ebpf::helpers::{bpf_probe_read_user, generated};
use memtrace_common::{
    counter,
    python::{
        frame, PythonProcess, PythonStack, FRAME_BYTES, MAX_PYTHON_FRAMES, MAX_THREAD_STATES,
        PYTHON_STACK_WORDS, THREAD_STATE_BYTES,
    },
};

use crate::{
    maps::{add, count, LAST_PYTHON_STACK, PYTHON_PROCESSES, PYTHON_STACKS, PYTHON_THREADS},
    ustack,
};

const THREAD_WORDS: usize = THREAD_STATE_BYTES / 8;
const FRAME_WORDS: usize = FRAME_BYTES / 8;
/// The frames read at once, below the newest (see `PythonWalk::window`).
const WINDOW_WORDS: usize = 512;
// A power of two: indexes into the window are masked (see `window_fields`).
const _: () = assert!(WINDOW_WORDS.is_power_of_two());
const WINDOW_BYTES: u64 = WINDOW_WORDS as u64 * 8;
/// Checks this CPU remembers (see `CheckSlot`): a power of two.
const CHECK_SLOTS: usize = 256;
/// Interpreter objects live in user memory below this.
const USER_ADDRESS_END: u64 = 1 << 47;

/// One walk's Python state, in a per-CPU map value (`PYTHON_WALK`; for the same reasons as
/// `unwind::Walk`).
#[repr(C)]
pub struct PythonWalk {
    process: PythonProcess,
    /// The thread state and the frame last read.
    thread: [u64; THREAD_WORDS],
    frame: [u64; FRAME_WORDS],
    /// The next interpreter frame to read (0: none).
    next: u64,
    /// Words written so far.
    depth: u64,
    hash: u64,
    /// Python frames written.
    frames: u64,
    /// 1: the walk stopped before the outermost frame.
    incomplete: u64,
    /// The newest frame, and 1 while every frame walked was read from the window.
    first: u64,
    in_window: u64,
    /// A replay: the frames found the same so far, and 1 once one differs.
    replay_index: u64,
    replay_differs: u64,
    /// The lowest frame this walk read.
    lowest: u64,
    /// This CPU's last walk: its thread, where its current frame was named, and its lowest
    /// frame (see `current_frame_again`).
    last_tgid: u64,
    last_tid: u64,
    last_current_at: u64,
    last_lowest: u64,
    /// This CPU's last walk, for a replay (see `start`): its newest frame, its frames, the key
    /// they are stored under, and 1 when it can be replayed (it ended at the outermost frame,
    /// and each frame was read from the window).
    last_first: u64,
    last_frames: u64,
    last_key: u64,
    last_replayable: u64,
    /// Where each frame walked was (`stack` has what it ran).
    frame_at: [u64; MAX_PYTHON_FRAMES],
    /// The frames walked (stored in `PYTHON_STACKS` at the end).
    stack: PythonStack,
    /// `window_bytes` of the thread's frame stack up to its newest frame's end, from
    /// `window_base` (0 bytes: not read).
    window_base: u64,
    window_bytes: u64,
    window: [u64; WINDOW_WORDS],
    /// Kept across walks.
    checks: [CheckSlot; CHECK_SLOTS],
}

/// What `start` found.
pub enum Start {
    /// The thread is not in Python code.
    Nothing,
    /// Walk the frames (`step`, then `finish`).
    Walk,
    /// Compare the frames with the last walk's (`replay_step`, then `replayed`).
    Replay,
}

/// A code object's check as this CPU's walks took it, for a frame at `frame` running the code
/// at `code`. A frame holds its code object alive, so while a frame at that address runs that
/// code, the check stands; the one way it could go stale is a frame popped, its code freed,
/// and a new code object at the same address run by a new frame at the same address, between
/// two walks of this CPU.
#[repr(C)]
#[derive(Clone, Copy)]
struct CheckSlot {
    frame: u64,
    code: u64,
    check: u64,
}

/// EEXIST, from a map insert of a key present.
const EEXIST: i32 = -17;
const BPF_NOEXIST: u64 = 1;

/// Where the current frame of thread `tid` of `tgid` is named (its innermost C-level call's
/// `current_frame`), when the process is Python and the thread has a thread state.
#[inline(always)]
pub fn current_frame_at(state: &mut PythonWalk, tgid: u32, tid: u32) -> Option<u64> {
    let process = unsafe { PYTHON_PROCESSES.get(tgid) }?;
    state.process = *process;
    if thread_state(state, tid).is_none() {
        count(counter::PYTHON_NO_THREAD_STATE);
        return None;
    }
    let cframe = word(&state.thread, state.process.thread_cframe);
    if cframe == 0 || cframe >= USER_ADDRESS_END {
        return None;
    }
    let at = cframe + state.process.cframe_current_frame as u64;
    state.last_tgid = tgid as u64;
    state.last_tid = tid as u64;
    state.last_current_at = at;
    Some(at)
}

/// `current_frame_at` for a walk whose native stack is this CPU's last one, replayed (same
/// thread, registers and stack words): the thread state's innermost C-level call is a local
/// of the innermost interpreter frame on that native stack, so it is where it was, and the
/// thread state need not be read again. Its `current_frame` is read anew.
#[inline(always)]
pub fn current_frame_again(state: &mut PythonWalk, tgid: u32, tid: u32) -> Option<u64> {
    (state.last_current_at != 0 && state.last_tgid == tgid as u64 && state.last_tid == tid as u64)
        .then_some(state.last_current_at)
}

/// Forgets this CPU's last walk (its native stack was not a replay, or it found no frame).
#[inline(always)]
pub fn forget_last(state: &mut PythonWalk) {
    state.last_current_at = 0;
}

/// Starts the walk at the thread's current frame `first` (from `current_frame_at`, or
/// `current_frame_again` when `again`), and reads the window. A replay when `again` and the
/// last walk, replayable, started at the same frame.
#[inline(always)]
pub fn start(state: &mut PythonWalk, first: u64, again: bool) -> Start {
    state.depth = 0;
    state.hash = ustack::SEED;
    state.frames = 0;
    state.incomplete = 0;
    state.next = first;
    state.first = first;
    state.in_window = 1;
    state.replay_index = 0;
    state.replay_differs = 0;
    state.window_bytes = 0;
    state.lowest = u64::MAX;
    let replay = again && state.last_replayable != 0 && state.last_first == first;
    // A walk rewrites the last one's frames.
    state.last_replayable = 0;
    if first == 0 || first >= USER_ADDRESS_END {
        return Start::Nothing;
    }
    // The frames below the newest one, within its chunk of the thread's frame stack; when
    // the stack is likely the last one, only as low as its frames went (a read costs less
    // the less it copies).
    let end = first + FRAME_BYTES as u64;
    let chunk = word(&state.thread, state.process.thread_datastack_chunk);
    let lowest = if again && state.last_lowest <= first && end - state.last_lowest < WINDOW_BYTES {
        state.last_lowest
    } else {
        end.saturating_sub(WINDOW_BYTES)
    };
    let base = if chunk <= first && chunk > lowest {
        chunk
    } else {
        lowest
    } & !7;
    let length = end - base;
    if length > WINDOW_BYTES || length < FRAME_BYTES as u64 {
        return Start::Walk;
    }
    let read = unsafe {
        generated::bpf_probe_read_user(
            state.window.as_mut_ptr().cast(),
            length as u32,
            base as *const _,
        )
    };
    if read != 0 {
        return Start::Walk;
    }
    state.window_base = base;
    state.window_bytes = length;
    if replay {
        state.last_replayable = 1;
        Start::Replay
    } else {
        Start::Walk
    }
}

/// Compares the frame at `state.next`, read from the window, with the last walk's frame as
/// deep; false when the replay ends (every frame compared, or one differs).
///
/// A frame at the same address running the same code object at the same instruction, with
/// the same entry flag, is written as it was, with the same check (see `CheckSlot`); if every
/// frame is, so is the stack.
#[inline(always)]
pub fn replay_step(state: &mut PythonWalk) -> bool {
    let index = core::hint::black_box(state.replay_index as usize);
    let at = state.next;
    if index as u64 >= state.last_frames {
        return false;
    }
    let same = match (state.frame_at.get(index), window_fields(state, at)) {
        (Some(&last_at), Some([code, previous, prev_instr, entry])) if last_at == at => {
            let value = frame_value(&state.process, code, prev_instr, entry);
            let word = core::hint::black_box(2 * index);
            state.next = previous;
            state.stack.words.get(word) == Some(&value)
        }
        _ => false,
    };
    if !same {
        state.replay_differs = 1;
        return false;
    }
    state.replay_index += 1;
    true
}

/// Whether the replay has frames left to compare, all compared so far the same.
#[inline(always)]
pub fn replay_goes_on(state: &PythonWalk) -> bool {
    state.replay_differs == 0 && state.replay_index < state.last_frames
}

/// After the replay steps: the reference to the frames and whether they were stored anew
/// (userspace may have emptied the tables) when every frame was the last walk's, and the
/// walk ended where it did; else None, and the walk starts again at the newest frame.
#[inline(always)]
pub fn replayed(state: &mut PythonWalk) -> Option<(u64, bool)> {
    let same =
        state.replay_differs == 0 && state.replay_index == state.last_frames && state.next == 0;
    let stored = match same {
        true => store(&state.stack, state.last_key),
        false => (false, false),
    };
    let (true, new) = stored else {
        state.last_replayable = 0;
        state.next = state.first;
        return None;
    };
    count(counter::PYTHON_WALKS);
    count(counter::PYTHON_WALKS_REPLAYED);
    add(counter::PYTHON_FRAMES, state.last_frames);
    Some((frame::reference(state.last_key), new))
}

/// A frame's first word in the stack: its code object, the index of its instruction and
/// whether a C-level call started there.
#[inline(always)]
fn frame_value(process: &PythonProcess, code: u64, prev_instr: u64, entry: u64) -> u64 {
    // `prev_instr` is the code unit before the next instruction: one before the first while
    // the frame has not started.
    let first = code + process.code_instructions as u64;
    let index_plus_one = if prev_instr + 2 >= first && prev_instr >= code {
        (prev_instr + 2 - first) / 2
    } else {
        0
    };
    frame::encode(code, index_plus_one, entry != 0)
}

/// Records the frame at `state.next` and moves to its caller; false when the walk ends.
#[inline(always)]
pub fn step(state: &mut PythonWalk) -> bool {
    let at = state.next;
    if at == 0 {
        return false;
    }
    let depth = core::hint::black_box(state.depth as usize);
    let fields = match depth + 1 < PYTHON_STACK_WORDS && at < USER_ADDRESS_END {
        true => frame_fields(state, at),
        false => None,
    };
    let Some([code, previous, prev_instr, entry]) = fields else {
        state.incomplete = 1;
        return false;
    };
    if at < state.lowest {
        state.lowest = at;
    }
    let value = frame_value(&state.process, code, prev_instr, entry);
    let index = core::hint::black_box(state.frames as usize);
    if let Some(slot) = state.frame_at.get_mut(index) {
        *slot = at;
    }
    let Some(check) = code_check(state, at, code) else {
        state.incomplete = 1;
        return false;
    };
    // The frame's two words, then the 0 that ends the stack.
    for (next, word) in [(0, value), (1, check), (2, 0)] {
        let index = core::hint::black_box(depth + next);
        if let Some(slot) = state.stack.words.get_mut(index) {
            *slot = word;
        }
    }
    state.depth += 2;
    state.frames += 1;
    state.hash = ustack::mix(ustack::mix(state.hash, value), check);
    state.next = previous;
    previous != 0
}

/// Stores the frames walked; returns the word that refers to them (0 when they could not be
/// stored), whether they were stored for the first time, and whether the walk stopped early.
#[inline(always)]
pub fn finish(state: &mut PythonWalk) -> (u64, bool, bool) {
    count(counter::PYTHON_WALKS);
    add(counter::PYTHON_FRAMES, state.frames);
    let incomplete = state.incomplete != 0;
    if incomplete {
        count(counter::PYTHON_INCOMPLETE);
    }
    state.last_lowest = state.lowest;
    let key = frame::referenced(ustack::mix(state.hash, state.incomplete)) | 1;
    let (stored, new) = store(&state.stack, key);
    state.last_first = state.first;
    state.last_frames = state.frames;
    state.last_key = key;
    state.last_replayable = u64::from(stored && !incomplete && state.in_window != 0);
    (
        if stored { frame::reference(key) } else { 0 },
        new,
        incomplete,
    )
}

/// Stores `stack` under `key` unless this CPU stored it last or it is there: whether it is
/// stored, and whether it is new.
#[inline(always)]
fn store(stack: &PythonStack, key: u64) -> (bool, bool) {
    let Some(last) = LAST_PYTHON_STACK.get_ptr_mut(0) else {
        return (false, false);
    };
    let last = unsafe { &mut *last };
    if *last == key || unsafe { PYTHON_STACKS.get(key) }.is_some() {
        *last = key;
        return (true, false);
    }
    match PYTHON_STACKS.insert(key, stack, BPF_NOEXIST) {
        Ok(()) => {
            *last = key;
            (true, true)
        }
        Err(err) if err == EEXIST => {
            *last = key;
            (true, false)
        }
        Err(_) => {
            count(counter::STACK_ERRORS);
            (false, false)
        }
    }
}

/// The thread's `PyThreadState` (read into `state.thread`), or None when it has none.
#[inline(always)]
fn thread_state(state: &mut PythonWalk, tid: u32) -> Option<u64> {
    // Remembered (0: it had none when last looked for; only the GIL holder is checked).
    let (known, remembered) = match unsafe { PYTHON_THREADS.get(tid) } {
        Some(&thread) => (true, thread),
        None => (false, 0),
    };
    if remembered != 0 && is_thread(state, remembered, tid) {
        return Some(remembered);
    }
    let holder = unsafe { bpf_probe_read_user(state.process.tstate_current as *const u64) };
    let holder = holder.unwrap_or(0);
    if holder != remembered && is_thread(state, holder, tid) {
        let _ = PYTHON_THREADS.insert(tid, holder, 0);
        return Some(holder);
    }
    if known && remembered == 0 {
        return None;
    }
    let found = search_threads(state, tid);
    let _ = PYTHON_THREADS.insert(tid, found.unwrap_or(0), 0);
    found
}

/// The interpreter's list of thread states, searched for `tid`'s.
#[inline(always)]
fn search_threads(state: &mut PythonWalk, tid: u32) -> Option<u64> {
    let head = state.process.interpreters_head as *const u64;
    let interpreter = unsafe { bpf_probe_read_user(head) }.ok()?;
    if interpreter == 0 || interpreter >= USER_ADDRESS_END {
        return None;
    }
    let threads = interpreter + state.process.interpreter_threads as u64;
    let mut thread = unsafe { bpf_probe_read_user(threads as *const u64) }.ok()?;
    for _ in 0..MAX_THREAD_STATES {
        if is_thread(state, thread, tid) {
            return Some(thread);
        }
        if state.thread[0] == u64::MAX {
            return None;
        }
        thread = word(&state.thread, state.process.thread_next);
    }
    None
}

/// Reads the thread state at `thread` into `state.thread`; whether it is `tid`'s. A failed
/// read marks the copy (its first word, the reference count, u64::MAX).
#[inline(always)]
fn is_thread(state: &mut PythonWalk, thread: u64, tid: u32) -> bool {
    if thread == 0 || thread >= USER_ADDRESS_END {
        state.thread[0] = u64::MAX;
        return false;
    }
    let read = unsafe {
        generated::bpf_probe_read_user(
            state.thread.as_mut_ptr().cast(),
            THREAD_STATE_BYTES as u32,
            thread as *const _,
        )
    };
    if read != 0 {
        state.thread[0] = u64::MAX;
        return false;
    }
    word(&state.thread, state.process.thread_native_id) == tid as u64
}

/// The check of the code object at `code` run by the frame at `frame`: remembered, or read.
#[inline(always)]
fn code_check(state: &mut PythonWalk, frame: u64, code: u64) -> Option<u64> {
    let slot = core::hint::black_box(
        ((frame ^ code.rotate_left(17)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize,
    ) & (CHECK_SLOTS - 1);
    if let Some(known) = state.checks.get(slot) {
        if known.frame == frame && known.code == code {
            return Some(known.check);
        }
    }
    let names = code + state.process.code_filename as u64;
    let [filename, name] = unsafe { bpf_probe_read_user(names as *const [u64; 2]) }.ok()?;
    let check = frame::check(filename, name);
    if let Some(known) = state.checks.get_mut(slot) {
        *known = CheckSlot { frame, code, check };
    }
    Some(check)
}

/// The frame at `at`'s code object, previous frame, `prev_instr` and `is_entry`: from the
/// window when it holds the frame, else read.
#[inline(always)]
fn frame_fields(state: &mut PythonWalk, at: u64) -> Option<[u64; 4]> {
    if let Some(fields) = window_fields(state, at) {
        return Some(fields);
    }
    state.in_window = 0;
    let read = unsafe {
        generated::bpf_probe_read_user(
            state.frame.as_mut_ptr().cast(),
            FRAME_BYTES as u32,
            at as *const _,
        )
    };
    let process = &state.process;
    (read == 0).then(|| {
        [
            word(&state.frame, process.frame_code),
            word(&state.frame, process.frame_previous),
            word(&state.frame, process.frame_prev_instr),
            byte(&state.frame, process.frame_is_entry),
        ]
    })
}

/// `frame_fields` from the window, when it holds the frame at `at`.
#[inline(always)]
fn window_fields(state: &PythonWalk, at: u64) -> Option<[u64; 4]> {
    let offset = at.wrapping_sub(state.window_base);
    let in_window = at & 7 == 0
        && offset < state.window_bytes
        && state.window_bytes - offset >= FRAME_BYTES as u64;
    if !in_window {
        return None;
    }
    let first = (offset >> 3) as usize;
    let process = &state.process;
    let field = |at: u32| {
        // Masked, not compared: the frame lies in the window (above), and 6.1's verifier
        // keeps a mask's bound where it can lose a comparison's (a register spilled before
        // the comparison and reloaded after it).
        let index = (first + (at >> 3) as usize) & (WINDOW_WORDS - 1);
        state.window[index] >> ((at & 7) * 8)
    };
    Some([
        field(process.frame_code),
        field(process.frame_previous),
        field(process.frame_prev_instr),
        field(process.frame_is_entry) & 0xff,
    ])
}

/// The 8-byte field at byte `offset` of a copied object (0 past its end).
#[inline(always)]
fn word<const N: usize>(words: &[u64; N], offset: u32) -> u64 {
    let index = core::hint::black_box((offset >> 3) as usize);
    words.get(index).copied().unwrap_or(0)
}

/// The byte at `offset` of a copied object.
#[inline(always)]
fn byte<const N: usize>(words: &[u64; N], offset: u32) -> u64 {
    (word(words, offset & !7) >> ((offset & 7) * 8)) & 0xff
}
