//! CPython interpreter frames in user stacks. The loader finds each Python process's
//! interpreter (`_PyRuntime`) and gives the walk where its objects' fields are
//! ([`PythonProcess`]); after the native walk, the eBPF programs follow the thread's
//! interpreter frames, store them as a [`PythonStack`] (two [`frame`] words per frame) in
//! their own table, and end the native stack with a [`frame::reference`] to it: Python
//! stacks run deeper than the native ones, and a table of their own keeps the native one's
//! size. Userspace reads the code objects the frames name and puts each group of Python
//! frames in place of the native interpreter frame (`_PyEval_EvalFrameDefault`) that ran
//! them.

/// Where a Python process's interpreter state is, and the offsets of the fields the walk
/// reads, for its version (one table per supported version in the loader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PythonProcess {
    /// Address of `_PyRuntime.gilstate.tstate_current`: the thread state holding the GIL.
    pub tstate_current: u64,
    /// Address of `_PyRuntime.interpreters.head`: the first interpreter.
    pub interpreters_head: u64,
    /// `PyInterpreterState.threads.head`.
    pub interpreter_threads: u32,
    /// `PyThreadState.next`.
    pub thread_next: u32,
    /// `PyThreadState.native_thread_id`: the thread's kernel tid.
    pub thread_native_id: u32,
    /// `PyThreadState.cframe`: the innermost C-level call of the interpreter.
    pub thread_cframe: u32,
    /// `PyThreadState.datastack_chunk`: the memory the thread's newest frames are in.
    pub thread_datastack_chunk: u32,
    /// `_PyCFrame.current_frame`.
    pub cframe_current_frame: u32,
    /// `_PyInterpreterFrame.f_code`, `.previous`, `.prev_instr`, `.is_entry`.
    pub frame_code: u32,
    pub frame_previous: u32,
    pub frame_prev_instr: u32,
    pub frame_is_entry: u32,
    /// `PyCodeObject.co_code_adaptive`: the code object's first instruction.
    pub code_instructions: u32,
    /// `PyCodeObject.co_filename`, followed by `co_name`: what [`frame::check`] is made of.
    pub code_filename: u32,
}

/// Bytes of a `PyThreadState` and of a `_PyInterpreterFrame` the walk reads at once: every
/// offset in [`PythonProcess`] is below them.
pub const THREAD_STATE_BYTES: usize = 304;
pub const FRAME_BYTES: usize = 72;

/// Python frames a stack keeps (deeper ones are cut, and counted).
pub const MAX_PYTHON_FRAMES: usize = 160;
pub const PYTHON_STACK_WORDS: usize = 2 * MAX_PYTHON_FRAMES;

/// A stack's Python frames, innermost first, two words each (see [`frame`]); zeros after the
/// last. Stored in `PYTHON_STACKS` under the key its native stack's reference holds.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PythonStack {
    pub words: [u64; PYTHON_STACK_WORDS],
}

/// Python processes the walk knows at once.
pub const MAX_PYTHON_PROCESSES: u32 = 4096;
/// Threads whose thread state the walk remembers.
pub const MAX_PYTHON_THREADS: u32 = 16384;
/// Thread states the walk looks through for one thread (the interpreter's list).
pub const MAX_THREAD_STATES: usize = 32;

/// One Python frame in a stack: two words. The first is [`frame::PYTHON`] | the instruction
/// index + 1 (0: the frame has not started) << [`frame::INDEX_SHIFT`] | the code object's
/// address; with [`frame::ENTRY`] on the frame a C-level call of the interpreter started at
/// (the last of its group). The second is [`frame::CHECK`] | [`frame::check`] of the code
/// object as it was then: an address whose code object was freed (a module's, once
/// imported) can hold another by the time userspace reads it, which must not name the frame.
pub mod frame {
    pub const PYTHON: u64 = 1 << 62;
    pub const ENTRY: u64 = 1 << 61;
    pub const INDEX_SHIFT: u32 = 47;
    /// Instruction indexes past this are stored as it (their line is not known).
    pub const INDEX_MAX: u64 = (1 << 13) - 1;
    pub const CODE_MASK: u64 = (1 << 47) - 1;
    /// Marks the second word.
    pub const CHECK: u64 = 1 << 60;
    /// The key of a [`super::PythonStack`], in the reference word ending a native stack.
    pub const KEY_MASK: u64 = (1 << 56) - 1;

    /// The word that ends a native stack whose Python frames are stored under `key`.
    pub const fn reference(key: u64) -> u64 {
        PYTHON | key & KEY_MASK
    }

    /// The key a reference word holds.
    pub const fn referenced(word: u64) -> u64 {
        word & KEY_MASK
    }
    pub const CHECK_MASK: u64 = (1 << 48) - 1;

    /// The check word of a code object whose `co_filename` and `co_name` are these objects.
    pub const fn check(filename: u64, name: u64) -> u64 {
        PYTHON | CHECK | (filename.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ name) & CHECK_MASK
    }

    pub const fn is_check(word: u64) -> bool {
        is_python(word) && word & CHECK != 0
    }

    /// The frame word of a code object at `code`, at instruction `index_plus_one`.
    pub const fn encode(code: u64, index_plus_one: u64, entry: bool) -> u64 {
        let index = if index_plus_one > INDEX_MAX {
            INDEX_MAX
        } else {
            index_plus_one
        };
        PYTHON | (entry as u64) << 61 | index << INDEX_SHIFT | code & CODE_MASK
    }

    pub const fn is_python(word: u64) -> bool {
        word & PYTHON != 0 && word & (1 << 63) == 0
    }

    /// The code object's address, the instruction index (None: not started, or past
    /// `INDEX_MAX`) and whether the frame is an entry frame.
    pub const fn decode(word: u64) -> (u64, Option<u32>, bool) {
        let index = (word >> INDEX_SHIFT) & INDEX_MAX;
        let index = if index == 0 || index == INDEX_MAX {
            None
        } else {
            Some(index as u32 - 1)
        };
        (word & CODE_MASK, index, word & ENTRY != 0)
    }
}
