//! A stack's Python frames put in place: the walk appends them after the native frames, in
//! groups, each ended by the frame a C-level call of the interpreter started at. That call
//! is one native `_PyEval_EvalFrameDefault` frame, innermost first like the groups, so the
//! n-th such native frame is replaced by the n-th group.
use memtrace_common::python::frame;

use super::{code::CodeObject, CodeObjects};
use crate::report::{Frame, SourceLine};

/// The interpreter's function that runs Python frames (3.11).
const EVAL_FUNCTION: &str = "_PyEval_EvalFrameDefault";
/// How a frame whose code object could not be read is shown.
pub const UNREADABLE: &str = "<python frame>";

/// `native` with each interpreter frame replaced by the Python frames it ran (`words`: two
/// per frame, innermost first), named by their code objects in `codes`. Groups left over
/// (the native walk stopped early) go last, outermost.
pub fn place(native: Vec<Frame>, words: &[u64], codes: Option<&CodeObjects>) -> Vec<Frame> {
    let python: Vec<(u64, u64)> = pairs(words).collect();
    if python.is_empty() {
        return native;
    }
    let named: Vec<Frame> = (python.iter())
        .map(|&(word, check)| {
            let code = codes.and_then(|codes| codes.get(frame::decode(word).0, check));
            python_frame(word, code.map(|code| &**code))
        })
        .collect();
    let entries: Vec<bool> = python
        .iter()
        .map(|&(word, _)| frame::decode(word).2)
        .collect();
    let mut groups = groups(&entries).into_iter().map(|range| &named[range]);
    let mut placed = Vec::with_capacity(native.len() + named.len());
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

/// The Python words of a stack as (frame word, check word) pairs; the check is 0 where it
/// is missing.
pub fn pairs(words: &[u64]) -> impl Iterator<Item = (u64, u64)> + '_ {
    (words.iter().enumerate())
        .filter(|&(_, &word)| !frame::is_check(word))
        .map(|(index, &word)| {
            let check = words.get(index + 1).copied();
            (word, check.filter(|&c| frame::is_check(c)).unwrap_or(0))
        })
}

/// The frames' index ranges, split after each entry frame.
fn groups(entries: &[bool]) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    for (index, &entry) in entries.iter().enumerate() {
        if entry {
            groups.push(start..index + 1);
            start = index + 1;
        }
    }
    if start < entries.len() {
        groups.push(start..entries.len());
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
        let mut codes = CodeObjects::default();
        let check = |n| frame::check(n, n);
        for (address, name) in [(0x100, "inner"), (0x200, "outer"), (0x300, "<module>")] {
            codes.insert(address, check(address), code(name));
        }
        // The code object at 0x400 when the walk read it is not the one read since.
        codes.insert(0x400, check(1), code("other"));
        // inner and outer ran in one C-level call (outer is its entry), <module> in another.
        let words = [
            frame::encode(0x100, 0, false),
            check(0x100),
            frame::encode(0x200, 0, true),
            check(0x200),
            frame::encode(0x300, 0, true),
            check(0x300),
            frame::encode(0x400, 0, true),
            check(0x400),
        ];
        let stack = vec![
            native("malloc"),
            native(EVAL_FUNCTION),
            native("PyObject_Call"),
            native(EVAL_FUNCTION),
            native("main"),
        ];
        let names: Vec<String> = place(stack, &words, Some(&codes))
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
