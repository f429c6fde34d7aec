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
        thread_datastack_chunk: 296,
        cframe_current_frame: 8,
        frame_code: 32,
        frame_previous: 48,
        frame_prev_instr: 56,
        frame_is_entry: 68,
        code_instructions: 184,
        code_filename: 112,
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
    use crate::python::dwarf_check;
    use memtrace_common::python::{FRAME_BYTES, THREAD_STATE_BYTES};
    use std::path::Path;

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

    /// The interpreter whose build the 3.11 table must match.
    const PYTHON: &str = "/usr/bin/python3.11";

    /// One field of the table: the DWARF query that gives it (see `dwarf_check`), its name
    /// and its value.
    macro_rules! field {
        ($query:literal, $field:ident) => {
            ($query, stringify!($field), u64::from($field))
        };
    }

    /// Every field of the 3.11 table. Its structs are taken apart whole, so that a field added
    /// to them does not compile until it is checked here too.
    fn fields() -> Vec<(&'static str, &'static str, u64)> {
        let Layout {
            runtime_tstate_current,
            runtime_interpreters_head,
            walk,
            code,
        } = PYTHON_3_11;
        // The two addresses are per process (`Layout::process`), not offsets.
        let PythonProcess {
            tstate_current: _,
            interpreters_head: _,
            interpreter_threads,
            thread_next,
            thread_native_id,
            thread_cframe,
            thread_datastack_chunk,
            cframe_current_frame,
            frame_code,
            frame_previous,
            frame_prev_instr,
            frame_is_entry,
            code_instructions,
            code_filename: walk_code_filename,
        } = walk;
        let CodeLayout {
            code_filename,
            code_name,
            code_qualname,
            code_linetable,
            code_firstlineno,
            code_code_adaptive,
            object_type,
            str_length,
            str_state,
            str_ascii_size,
            str_compact_size,
            bytes_size,
            bytes_data,
        } = code;
        vec![
            field!(
                "_PyRuntimeState.gilstate.tstate_current",
                runtime_tstate_current
            ),
            field!(
                "_PyRuntimeState.interpreters.head",
                runtime_interpreters_head
            ),
            field!("PyInterpreterState.threads.head", interpreter_threads),
            field!("PyThreadState.next", thread_next),
            field!("PyThreadState.native_thread_id", thread_native_id),
            field!("PyThreadState.cframe", thread_cframe),
            field!("PyThreadState.datastack_chunk", thread_datastack_chunk),
            field!("_PyCFrame.current_frame", cframe_current_frame),
            field!("_PyInterpreterFrame.f_code", frame_code),
            field!("_PyInterpreterFrame.previous", frame_previous),
            field!("_PyInterpreterFrame.prev_instr", frame_prev_instr),
            field!("_PyInterpreterFrame.is_entry", frame_is_entry),
            field!("PyCodeObject.co_code_adaptive", code_instructions),
            field!("PyCodeObject.co_filename", walk_code_filename),
            field!("PyCodeObject.co_filename", code_filename),
            field!("PyCodeObject.co_name", code_name),
            field!("PyCodeObject.co_qualname", code_qualname),
            field!("PyCodeObject.co_linetable", code_linetable),
            field!("PyCodeObject.co_firstlineno", code_firstlineno),
            field!("PyCodeObject.co_code_adaptive", code_code_adaptive),
            field!("PyObject.ob_type", object_type),
            field!("PyASCIIObject.length", str_length),
            field!("PyASCIIObject.state", str_state),
            field!("sizeof PyASCIIObject", str_ascii_size),
            field!("sizeof PyCompactUnicodeObject", str_compact_size),
            field!("PyBytesObject.ob_base.ob_size", bytes_size),
            field!("PyBytesObject.ob_sval", bytes_data),
        ]
    }

    /// The table was written from the 3.11 headers; the compiler's own record of the
    /// interpreter's structs (its DWARF, from python3.11-dbg) is the oracle.
    #[test]
    fn offsets_agree_with_the_interpreters_dwarf() {
        let debug = dwarf_check::debug_file(Path::new(PYTHON))
            .unwrap_or_else(|err| panic!("{PYTHON}: {err:#}"));
        assert!(
            debug.exists(),
            "{} (the debug info of {PYTHON}) is missing: run `cargo xtask setup`, which \
             installs python3.11-dbg",
            debug.display()
        );
        let fields = fields();
        let queries: Vec<&str> = fields.iter().map(|(query, ..)| *query).collect();
        let measured =
            dwarf_check::measure(&debug, &queries).unwrap_or_else(|err| panic!("{err:#}"));
        let wrong: Vec<String> = fields
            .iter()
            .filter(|(query, _, table)| measured[*query] != *table)
            .map(|(query, field, table)| {
                let dwarf = measured[*query];
                format!("{field} is {table}, but {query} is {dwarf} in the DWARF")
            })
            .collect();
        assert!(wrong.is_empty(), "offsets disagree:\n{}", wrong.join("\n"));
    }
}
