//! Where CPython keeps what the stack walk and the code reader need, per version: offsets
//! in its runtime, thread, frame and code objects (from the version's own headers, checked
//! against the interpreter's DWARF in the tests). A version without a table keeps native
//! stacks.
use memtrace_common::python::PythonProcess;

use super::code::{CodeLayout, LAYOUT_3_11};

/// One CPython version's layout.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Offsets in `_PyRuntime` of `gilstate.tstate_current` and `interpreters.head`.
    pub runtime_tstate_current: u64,
    pub runtime_interpreters_head: u64,
    /// The rest of what the walk reads (its two addresses left 0).
    pub walk: PythonProcess,
    pub code: CodeLayout,
}

impl Layout {
    /// What the walk is given for an interpreter whose `_PyRuntime` is at `runtime`.
    pub fn process(&self, runtime: u64) -> PythonProcess {
        PythonProcess {
            tstate_current: runtime + self.runtime_tstate_current,
            interpreters_head: runtime + self.runtime_interpreters_head,
            ..self.walk
        }
    }
}

/// CPython 3.11 (Include/internal/pycore_runtime.h, pycore_interp.h, cpython/pystate.h,
/// pycore_frame.h, cpython/code.h).
pub const PYTHON_3_11: Layout = Layout {
    runtime_tstate_current: 576,
    runtime_interpreters_head: 40,
    walk: PythonProcess {
        tstate_current: 0,
        interpreters_head: 0,
        interpreter_threads: 16,
        thread_next: 8,
        thread_native_id: 160,
        thread_cframe: 56,
        cframe_current_frame: 8,
        frame_code: 32,
        frame_previous: 48,
        frame_prev_instr: 56,
        frame_is_entry: 68,
        code_instructions: 184,
        code_filename: 112,
        _pad: 0,
    },
    code: LAYOUT_3_11,
};

/// The layout of CPython `major.minor`, if memtrace has one.
pub fn for_version(major: u8, minor: u8) -> Option<&'static Layout> {
    match (major, minor) {
        (3, 11) => Some(&PYTHON_3_11),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtrace_common::python::{FRAME_BYTES, THREAD_STATE_BYTES};

    #[test]
    fn the_walk_reads_every_field_within_its_copies() {
        let walk = PYTHON_3_11.walk;
        for offset in [walk.thread_next, walk.thread_native_id, walk.thread_cframe] {
            assert!(offset as usize + 8 <= THREAD_STATE_BYTES && offset % 8 == 0);
        }
        for offset in [walk.frame_code, walk.frame_previous, walk.frame_prev_instr] {
            assert!(offset as usize + 8 <= FRAME_BYTES && offset % 8 == 0);
        }
        assert!((walk.frame_is_entry as usize) < FRAME_BYTES);
        assert!(for_version(3, 12).is_none());
    }
}
