//! A stack's Python frames put in place: the walk appends them after the native frames, in
//! groups, each ended by the frame a C-level call of the interpreter started at. That call
//! is one native `_PyEval_EvalFrameDefault` frame, innermost first like the groups, so the
//! n-th such native frame is replaced by the n-th group.
use std::sync::Arc;

use memtrace_common::python::frame;

use super::code::CodeObject;
use crate::report::{Frame, SourceLine};

/// The interpreter's function that runs Python frames (3.11).
const EVAL_FUNCTION: &str = "_PyEval_EvalFrameDefault";
/// How a frame whose code object could not be read is shown.
pub const UNREADABLE: &str = "<python frame>";

/// `native` with each interpreter frame replaced by the Python frames it ran (`words`,
/// innermost first), named by their code objects (`codes`, one per word, when read). Groups
/// left over (the native walk stopped early) go last, outermost.
pub fn place(native: Vec<Frame>, words: &[u64], codes: &[Option<Arc<CodeObject>>]) -> Vec<Frame> {
    if words.is_empty() {
        return native;
    }
    let named: Vec<Frame> = (words.iter().enumerate())
        .map(|(index, &word)| python_frame(word, codes.get(index).and_then(Option::as_deref)))
        .collect();
    let mut groups = groups(words).into_iter().map(|range| &named[range]);
    let mut placed = Vec::with_capacity(native.len() + words.len());
    for frame in native {
        if frame.function.as_deref() == Some(EVAL_FUNCTION) {
            if let Some(group) = groups.next() {
                placed.extend_from_slice(group);
                continue;
            }
        }
        placed.push(frame);
    }
    for group in groups {
        placed.extend_from_slice(group);
    }
    placed
}

/// The words' index ranges, split after each entry frame.
fn groups(words: &[u64]) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    for (index, &word) in words.iter().enumerate() {
        if frame::decode(word).2 {
            groups.push(start..index + 1);
            start = index + 1;
        }
    }
    if start < words.len() {
        groups.push(start..words.len());
    }
    groups
}

/// One Python frame: its function's qualified name, file and line.
fn python_frame(word: u64, code: Option<&CodeObject>) -> Frame {
    let (address, index, _) = frame::decode(word);
    let Some(code) = code else {
        return Frame {
            address,
            function: Some(UNREADABLE.to_owned()),
            offset: 0,
            module: None,
            mapping: None,
            source: None,
        };
    };
    // A frame that has not started is at its first line.
    let line = match index {
        Some(index) => code.line_of(index),
        None => Some(code.first_line),
    };
    Frame {
        address,
        function: Some(code.qualname.clone()),
        offset: 0,
        module: None,
        mapping: None,
        source: Some(SourceLine {
            file: code.filename.clone(),
            line,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn native(name: &str) -> Frame {
        Frame {
            address: 0x1000,
            function: Some(name.to_owned()),
            offset: 0,
            module: Some("python3.11".to_owned()),
            mapping: None,
            source: None,
        }
    }

    fn code(qualname: &str) -> CodeObject {
        CodeObject {
            name: qualname.to_owned(),
            qualname: qualname.to_owned(),
            filename: "/srv/app.py".to_owned(),
            first_line: 10,
            line_table: Vec::new(),
        }
    }

    #[test]
    fn each_interpreter_frame_becomes_the_python_frames_it_ran() {
        let codes = ["inner", "outer", "<module>"].map(|name| Some(Arc::new(code(name))));
        // inner and outer ran in one C-level call (outer is its entry), <module> in another.
        let words = [
            frame::encode(0x100, 0, false),
            frame::encode(0x200, 0, true),
            frame::encode(0x300, 0, true),
            frame::encode(0x400, 0, true),
        ];
        let stack = vec![
            native("malloc"),
            native(EVAL_FUNCTION),
            native("PyObject_Call"),
            native(EVAL_FUNCTION),
            native("main"),
        ];
        let names: Vec<String> = place(stack, &words, &codes)
            .iter()
            .map(Frame::name)
            .collect();
        assert_eq!(
            names,
            [
                "malloc",
                "inner (app.py:10)",
                "outer (app.py:10)",
                "PyObject_Call",
                "<module> (app.py:10)",
                "main",
                // The native walk stopped before the last group's interpreter frame.
                UNREADABLE,
            ]
        );
    }
}
