//! CPython frames, walked after the native stack (see memtrace-common's `python`). The
//! thread's `PyThreadState` is found by its kernel thread id (remembered per thread, else the
//! GIL holder's, else the interpreter's list of threads); from its innermost C-level call
//! (`cframe`), each `_PyInterpreterFrame` names its code object and instruction and links to
//! the frame that called it. Userspace reads the code objects.
use aya_ebpf::helpers::{bpf_probe_read_user, generated};
use memtrace_common::{
    counter,
    python::{
        frame, PythonProcess, PythonStack, FRAME_BYTES, MAX_THREAD_STATES, PYTHON_STACK_WORDS,
        THREAD_STATE_BYTES,
    },
};

use crate::{
    maps::{add, count, LAST_PYTHON_STACK, PYTHON_PROCESSES, PYTHON_STACKS, PYTHON_THREADS},
    ustack,
};

const THREAD_WORDS: usize = THREAD_STATE_BYTES / 8;
const FRAME_WORDS: usize = FRAME_BYTES / 8;
/// Interpreter objects live in user memory below this.
const USER_ADDRESS_END: u64 = 1 << 47;

/// One walk's Python state, inside the stack walk's per-CPU state (see `unwind::Walk`).
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
    /// The frames walked (stored in `PYTHON_STACKS` at the end).
    stack: PythonStack,
}

/// EEXIST, from a map insert of a key present.
const EEXIST: i32 = -17;
const BPF_NOEXIST: u64 = 1;

/// Starts the Python walk of thread `tid` of `tgid`, when the process is Python and the
/// thread is in Python code; false otherwise.
#[inline(always)]
pub fn start(state: &mut PythonWalk, tgid: u32, tid: u32) -> bool {
    let Some(process) = (unsafe { PYTHON_PROCESSES.get(tgid) }) else {
        return false;
    };
    state.process = *process;
    state.depth = 0;
    state.hash = ustack::SEED;
    state.frames = 0;
    state.incomplete = 0;
    state.next = 0;
    if thread_state(state, tid).is_none() {
        count(counter::PYTHON_NO_THREAD_STATE);
        return false;
    }
    let cframe = word(&state.thread, state.process.thread_cframe);
    if cframe == 0 || cframe >= USER_ADDRESS_END {
        return false;
    }
    let current = cframe + state.process.cframe_current_frame as u64;
    let Ok(first) = (unsafe { bpf_probe_read_user(current as *const u64) }) else {
        return false;
    };
    state.next = first;
    first != 0
}

/// Records the frame at `state.next` and moves to its caller; false when the walk ends.
#[inline(always)]
pub fn step(state: &mut PythonWalk) -> bool {
    let at = state.next;
    if at == 0 {
        return false;
    }
    let depth = core::hint::black_box(state.depth as usize);
    if depth + 1 >= PYTHON_STACK_WORDS || at >= USER_ADDRESS_END || !read_frame(state, at) {
        state.incomplete = 1;
        return false;
    }
    let process = &state.process;
    let code = word(&state.frame, process.frame_code);
    let previous = word(&state.frame, process.frame_previous);
    let prev_instr = word(&state.frame, process.frame_prev_instr);
    let entry = byte(&state.frame, process.frame_is_entry) != 0;
    // `prev_instr` is the code unit before the next instruction: one before the first while
    // the frame has not started.
    let first = code + process.code_instructions as u64;
    let index_plus_one = if prev_instr + 2 >= first && prev_instr >= code {
        (prev_instr + 2 - first) / 2
    } else {
        0
    };
    let value = frame::encode(code, index_plus_one, entry);
    let names = code + process.code_filename as u64;
    let Ok([filename, name]) = (unsafe { bpf_probe_read_user(names as *const [u64; 2]) }) else {
        state.incomplete = 1;
        return false;
    };
    let check = frame::check(filename, name);
    let frames = &mut state.stack.words;
    if let Some(slot) = frames.get_mut(depth) {
        *slot = value;
    }
    if let Some(slot) = frames.get_mut(depth + 1) {
        *slot = check;
    }
    if let Some(slot) = frames.get_mut(depth + 2) {
        *slot = 0;
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
    let key = frame::referenced(ustack::mix(state.hash, state.incomplete)) | 1;
    let (stored, new) = store(&state.stack, key);
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

#[inline(always)]
fn read_frame(state: &mut PythonWalk, at: u64) -> bool {
    let read = unsafe {
        generated::bpf_probe_read_user(
            state.frame.as_mut_ptr().cast(),
            FRAME_BYTES as u32,
            at as *const _,
        )
    };
    read == 0
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
