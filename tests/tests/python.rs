//! Python frames in every stack (issue 18): each CPython interpreter frame of a user stack is
//! named `qualname (file:line)` in place of the native `_PyEval_EvalFrameDefault` that runs it,
//! with the native frames it called below it and the interpreter's entry above it.
//!
//! The workloads are Python scripts in `tests/workloads/python/`, run by Debian's CPython 3.11
//! ([`PYTHON`]); their oracles are Python's own: `tracemalloc`'s bytes by line, `getrusage`'s
//! minor faults around a function's call. Default unwinding (the unwind tables).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

use serde_json::Value;
use tests::{
    chains::frames,
    pprof_raw::RawProfile,
    python_workload, serial, spawn_waiting_command,
    traced::{self, u64_of, Traced},
    PYTHON,
};

/// `--top` above any report's number of rows: every row is needed.
const ALL_ROWS: &str = "1000000";

const MIB: u64 = 1 << 20;

/// What memtrace shows for a Python frame whose code object it could not read.
const UNREADABLE: &str = "<python frame>";

/// A named Python frame, `qualname (file:line)`: file is the basename of `co_filename`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct PyFrame {
    qualname: String,
    file: String,
    line: u64,
}

/// `frame` as a named Python frame, if it is one (`Cache.build (alloc_lines.py:42)`,
/// `<module> (alloc_lines.py:80)`); native frames (`malloc`, `python3.11+0xa1d1f`, `[stack
/// ends: ...]`) are not.
fn python_frame(frame: &str) -> Option<PyFrame> {
    let inner = frame.strip_suffix(')')?;
    let open = inner.rfind(" (")?;
    let (qualname, place) = (&inner[..open], &inner[open + 2..]);
    let (file, line) = place.rsplit_once(':')?;
    let line = line.parse().ok()?;
    if qualname.is_empty() || file.is_empty() || file.contains('/') {
        return None;
    }
    Some(PyFrame {
        qualname: qualname.to_owned(),
        file: file.to_owned(),
        line,
    })
}

/// Whether `frame` is a Python frame, named or not.
fn is_python(frame: &str) -> bool {
    frame == UNREADABLE || python_frame(frame).is_some()
}

/// The rows of `report[key]` (`stacks`, `outstanding`) of process `pid`.
fn rows_of<'a>(report: &'a Value, key: &str, pid: u32) -> Vec<&'a Value> {
    report[key]
        .as_array()
        .unwrap_or_else(|| panic!("no array {key:?} in the report"))
        .iter()
        .filter(|row| row["pid"].as_u64() == Some(u64::from(pid)))
        .collect()
}

/// The basename of a path as Python names it (`co_filename`).
fn basename(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path)
}

/// A number of the workload's line, or a panic naming it.
fn workload_u64(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key:?} in the workload's {value}"))
}

/// The workload's `lines` (`{marker: line}`), each marker of `markers` present.
fn marked_lines(t: &Traced, markers: &[&str]) -> BTreeMap<String, u64> {
    let lines: BTreeMap<String, u64> = t
        .workload
        .extra
        .get("lines")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no lines in the workload's line\n{}", t.run.describe()))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("a line number")))
        .collect();
    for marker in markers {
        assert!(
            lines.contains_key(*marker),
            "the workload marks no {marker} line: {lines:?}"
        );
    }
    lines
}

/// The workload's `file` (its code objects' `co_filename`).
fn workload_file(t: &Traced) -> String {
    t.workload
        .extra
        .get("file")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no file in the workload's line\n{}", t.run.describe()))
        .to_owned()
}

/// The heaviest `limit` rows by `weight`, one per line (`weight  f0 <- f1 <- ...`), for
/// failure messages.
fn describe_rows(rows: &[&Value], weight: &str, limit: usize) -> String {
    let mut sorted: Vec<&&Value> = rows.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r[weight].as_u64().unwrap_or(0)));
    sorted
        .iter()
        .take(limit)
        .map(|r| {
            format!(
                "{:>10}  {}",
                r[weight].as_u64().unwrap_or(0),
                frames(r).join(" <- ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a failure shows: the run (memtrace's stderr, the workload's line), the report's
/// `unwind` object and its heaviest rows (the whole report of a Python run is megabytes).
fn report_context(t: &Traced, rows: &[&Value], weight: &str) -> String {
    format!(
        "{}\n--- unwind ---\n{}\n--- heaviest rows of the workload ---\n{}",
        t.run.describe(),
        t.report["unwind"],
        describe_rows(rows, weight, 25)
    )
}

/// `memtrace <subcommand> --format json <extra> -- /usr/bin/python3.11 <script>`.
fn trace_script(subcommand: &str, extra: &[&str], script: &str) -> Traced {
    let path = python_workload(script);
    let t = traced::trace(subcommand, extra, &[PYTHON, path.to_str().unwrap()]);
    assert_eq!(
        t.run.code(),
        0,
        "memtrace {subcommand} -- {PYTHON} {script} failed\n{}",
        t.run.describe()
    );
    t
}

/// `|measured - expected| <= fraction * expected`.
fn within(measured: u64, expected: u64, fraction: f64) -> bool {
    (measured as f64 - expected as f64).abs() <= fraction * expected as f64
}

/// Outstanding bytes by the innermost Python frame of their stacks: (file, line) for a named
/// frame; rows with no Python frame, or an unreadable innermost one, are summed apart.
struct BytesByLine {
    lines: BTreeMap<(String, u64), u64>,
    unreadable: u64,
    native_only: u64,
}

fn bytes_by_line(rows: &[&Value]) -> BytesByLine {
    let mut by = BytesByLine {
        lines: BTreeMap::new(),
        unreadable: 0,
        native_only: 0,
    };
    for row in rows {
        let bytes = u64_of(row, "bytes");
        match frames(row).into_iter().find(|f| is_python(f)) {
            Some(UNREADABLE) => by.unreadable += bytes,
            Some(frame) => {
                let frame = python_frame(frame).unwrap();
                *by.lines.entry((frame.file, frame.line)).or_default() += bytes;
            }
            None => by.native_only += bytes,
        }
    }
    by
}

/// alloc_lines.py allocates from a function three calls deep, a class method, a generator,
/// a lambda and a thread, blocks of 4 KiB to 2 MiB, all kept to the end; it prints
/// tracemalloc's statistics by line for its own file and ends without tearing down the
/// interpreter. memtrace's outstanding bytes, summed by the innermost Python frame's line,
/// agree with tracemalloc's within 5% on every line over 1 MiB (tracemalloc also counts the
/// few small objects CPython takes from its own arenas, which malloc never sees, and memtrace
/// the entries tracemalloc mallocs to record each block; both are under 2% here).
#[test]
fn malloc_bytes_by_python_line_match_tracemalloc() {
    if !tests::require_root() || !tests::require_python() {
        return;
    }
    let _serial = serial();
    let t = trace_script("malloc", &["--leaks", "--top", ALL_ROWS], "alloc_lines.py");
    let file = workload_file(&t);
    let name = basename(&file).to_owned();
    let markers = ["depth3", "method", "generator", "lambda", "thread", "large"];
    let lines = marked_lines(&t, &markers);
    let rows = rows_of(&t.report, "outstanding", t.workload.pid);
    let ours = bytes_by_line(&rows);
    let theirs: BTreeMap<u64, u64> = t
        .workload
        .extra
        .get("tracemalloc")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no tracemalloc statistics\n{}", t.run.describe()))
        .iter()
        .filter(|s| s["filename"].as_str().map(basename) == Some(name.as_str()))
        .map(|s| (workload_u64(s, "lineno"), workload_u64(s, "size")))
        .collect();
    let ours_in_file = |line: u64| ours.lines.get(&(name.clone(), line)).copied().unwrap_or(0);
    let table = || {
        let all: BTreeSet<u64> = (theirs.keys().copied())
            .chain(
                (ours.lines.keys())
                    .filter(|(f, _)| *f == name)
                    .map(|(_, l)| *l),
            )
            .collect();
        let mut text = format!("{:>6} {:>12} {:>12}\n", "line", "tracemalloc", "memtrace");
        for line in all {
            let marker = (lines.iter())
                .find(|(_, l)| **l == line)
                .map_or("", |(m, _)| m.as_str());
            text += &format!(
                "{line:>6} {:>12} {:>12}  {marker}\n",
                theirs.get(&line).copied().unwrap_or(0),
                ours_in_file(line)
            );
        }
        text += &format!(
            "outstanding bytes under an unreadable Python frame: {}; with no Python frame: {}",
            ours.unreadable, ours.native_only
        );
        text
    };
    let context = || {
        format!(
            "{}\n--- bytes by line ---\n{}",
            report_context(&t, &rows, "bytes"),
            table()
        )
    };

    let heavy: Vec<u64> = (theirs.iter())
        .filter(|(_, size)| **size > MIB)
        .map(|(line, _)| *line)
        .collect();
    // The workload's own allocations are what tracemalloc shows over 1 MiB: each marked line.
    for marker in markers {
        assert!(
            heavy.contains(&lines[marker]),
            "tracemalloc shows no {marker} line ({}) over 1 MiB: the workload is not what this \
             test expects\n{}",
            lines[marker],
            context()
        );
    }
    for line in &heavy {
        let (size, found) = (theirs[line], ours_in_file(*line));
        assert!(
            within(found, size, 0.05),
            "{name}:{line}: memtrace has {found} bytes outstanding, tracemalloc {size}\n{}",
            context()
        );
    }
}

/// The workload's `faults` figures: {function: minor faults it measured around its calls}.
fn measured_faults(t: &Traced) -> BTreeMap<String, u64> {
    t.workload
        .extra
        .get("faults")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no faults in the workload's line\n{}", t.run.describe()))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("a fault count")))
        .collect()
}

/// Whether `frame` is the Python frame of function `qualname` in file `name`.
fn is_frame_of(frame: &str, qualname: &str, name: &str) -> bool {
    python_frame(frame).is_some_and(|f| f.qualname == qualname && f.file == name)
}

/// touch_pages.py's functions each fill a fresh bytearray (8, 32, 16 MiB; touch_outer calls
/// touch_inner and fills 4 MiB of its own), and measure their minor faults with getrusage
/// around each call. The minor faults whose stacks pass through a function's Python frame are
/// those it measured, within 2%; and touch_inner's frame is always called from touch_outer's.
/// touch_two_sites calls touch_leaf, which faults once, from two lines by turns: the faults
/// under each line are those it measured, within 2% (each stack differs from the one before
/// in the caller's instruction only, which a replayed walk must still see).
#[test]
fn faults_land_on_the_python_functions_that_touch_pages() {
    if !tests::require_root() || !tests::require_python() {
        return;
    }
    let _serial = serial();
    let t = trace_script("faults", &["--top", ALL_ROWS], "touch_pages.py");
    let file = workload_file(&t);
    let name = basename(&file).to_owned();
    let rows: Vec<&Value> = rows_of(&t.report, "stacks", t.workload.pid)
        .into_iter()
        .filter(|r| r["kind"] == "minor")
        .collect();
    let context = || report_context(&t, &rows, "count");
    let measured = measured_faults(&t);
    let page_size = t.workload.u64("page_size");
    let sizes = &t.workload.extra["bytes"];
    for function in ["touch_small", "touch_large", "touch_inner", "touch_outer"] {
        let Some(&expected) = measured.get(function) else {
            panic!("the workload measured no {function}\n{}", t.run.describe());
        };
        // The workload touched every page it allocated (or the comparison would say little).
        let pages = workload_u64(sizes, function) / page_size;
        assert!(
            expected >= pages,
            "{function} filled {pages} pages but measured {expected} faults only (transparent \
             huge pages?)\n{}",
            t.run.describe()
        );
        let counted: u64 = (rows.iter())
            .filter(|r| frames(r).iter().any(|f| is_frame_of(f, function, &name)))
            .map(|r| u64_of(r, "count"))
            .sum();
        assert!(
            within(counted, expected, 0.02),
            "{function}: memtrace puts {counted} minor faults under its Python frame, the \
             workload measured {expected}\n{}",
            context()
        );
    }
    // The same leaf called from two lines of one caller by turns, a fault a call: each line
    // has its own faults, though only the caller's instruction differs between the stacks.
    let sites = &t.workload.extra["sites"];
    for (site, line) in marked_lines(&t, &["first_site", "second_site"]) {
        let expected = workload_u64(sites, &site);
        let through_site = |row: &&&Value| {
            let python = python_part(row);
            let leaf = python
                .iter()
                .position(|f| is_frame_of(f, "touch_leaf", &name));
            leaf.and_then(|at| python.get(at + 1))
                .and_then(|caller| python_frame(caller))
                .is_some_and(|caller| caller.qualname == "touch_two_sites" && caller.line == line)
        };
        let counted: u64 = (rows.iter())
            .filter(through_site)
            .map(|r| u64_of(r, "count"))
            .sum();
        assert!(
            within(counted, expected, 0.02),
            "touch_two_sites line {line} ({site}): memtrace puts {counted} minor faults under \
             touch_leaf called from it, the workload measured {expected}\n{}",
            context()
        );
    }
    // In place and in order: the next Python frame out of touch_inner's is touch_outer's.
    for row in &rows {
        let python: Vec<&str> = frames(row).into_iter().filter(|f| is_python(f)).collect();
        if let Some(at) = (python.iter()).position(|f| is_frame_of(f, "touch_inner", &name)) {
            assert!(
                python
                    .get(at + 1)
                    .is_some_and(|f| is_frame_of(f, "touch_outer", &name)),
                "touch_inner not called from touch_outer: {}\n{}",
                frames(row).join(" <- "),
                context()
            );
        }
    }
}

/// The Python frames of a row, innermost first (named or not).
fn python_part(row: &Value) -> Vec<String> {
    frames(row)
        .into_iter()
        .filter(|f| is_python(f))
        .map(str::to_owned)
        .collect()
}

/// Outstanding bytes by the Python part of their stacks.
fn bytes_by_python_part(rows: &[&Value]) -> BTreeMap<Vec<String>, u64> {
    let mut by: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for row in rows {
        *by.entry(python_part(row)).or_default() += u64_of(row, "bytes");
    }
    by
}

/// alloc_lines.py once started under memtrace, once started first and waiting, memtrace then
/// attached by `--pid` (the code objects are read from a process that has been running): the
/// Python parts of the stacks holding over 1 MiB are the same in both, each holding the same
/// bytes within 5%, and the innermost frame of each marked line's stack is that line.
#[test]
fn attaching_to_a_running_interpreter_gives_the_same_stacks() {
    if !tests::require_root() || !tests::require_python() {
        return;
    }
    let _serial = serial();
    let extra = ["--leaks", "--top", ALL_ROWS];
    let started = trace_script("malloc", &extra, "alloc_lines.py");

    let script = python_workload("alloc_lines.py");
    let mut command = Command::new(PYTHON);
    command.arg(&script);
    let mut waiting = spawn_waiting_command(command);
    let attached = traced::trace_running("malloc", &extra, &mut waiting);
    waiting.finish();
    assert_eq!(attached.run.code(), 0, "{}", attached.run.describe());

    let started_rows = rows_of(&started.report, "outstanding", started.workload.pid);
    let attached_rows = rows_of(&attached.report, "outstanding", attached.workload.pid);
    let heavy = |rows: &[&Value]| -> BTreeMap<Vec<String>, u64> {
        bytes_by_python_part(rows)
            .into_iter()
            .filter(|(part, bytes)| !part.is_empty() && *bytes > MIB)
            .collect()
    };
    let (ours_started, ours_attached) = (heavy(&started_rows), heavy(&attached_rows));
    let describe = |by: &BTreeMap<Vec<String>, u64>| {
        by.iter()
            .map(|(part, bytes)| format!("{bytes:>10}  {}", part.join(" <- ")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let context = || {
        format!(
            "--- started under memtrace ---\n{}\n--- attached ---\n{}\n\
             --- heavy Python parts, started ---\n{}\n--- heavy Python parts, attached ---\n{}",
            report_context(&started, &started_rows, "bytes"),
            report_context(&attached, &attached_rows, "bytes"),
            describe(&ours_started),
            describe(&ours_attached)
        )
    };

    // Each marked line is the innermost frame of a heavy stack in both runs, named.
    let file = workload_file(&started);
    let name = basename(&file).to_owned();
    let lines = marked_lines(
        &started,
        &["depth3", "method", "generator", "lambda", "thread", "large"],
    );
    for (marker, line) in &lines {
        for (run, by) in [("started", &ours_started), ("attached", &ours_attached)] {
            assert!(
                by.keys().any(|part| part
                    .first()
                    .and_then(|f| python_frame(f))
                    .is_some_and(|f| f.file == name && f.line == *line)),
                "{run}: no stack over 1 MiB has {name}:{line} ({marker}) innermost\n{}",
                context()
            );
        }
    }
    let started_parts: BTreeSet<&Vec<String>> = ours_started.keys().collect();
    let attached_parts: BTreeSet<&Vec<String>> = ours_attached.keys().collect();
    assert_eq!(
        started_parts,
        attached_parts,
        "the heavy stacks' Python parts differ\n{}",
        context()
    );
    for (part, bytes) in &ours_started {
        let other = ours_attached[part];
        assert!(
            within(other, *bytes, 0.05),
            "{}: {bytes} bytes started under memtrace, {other} attached\n{}",
            part.join(" <- "),
            context()
        );
    }
}

/// Whether frame `at` of `row` is libz's (a deflate function, or the module libz.so...).
fn is_zlib(row: &Value, at: usize) -> bool {
    let name = frames(row)[at];
    let module = row["frames_detail"][at]["module"].as_str().unwrap_or("");
    name.contains("deflate") || module.starts_with("libz.so")
}

/// The native frames of the interpreter's entry, one of which is outside `<module>`'s frame.
const ENTRY: &[&str] = &["PyEval_EvalCode", "Py_RunMain", "Py_BytesMain", "main"];

/// zlib_frames.py's squeeze() calls zlib.compress, whose deflateInit2_ (libz) mallocs. Those
/// stacks read, innermost first: libz's frames (and CPython's allocator and zlib module
/// below them), then squeeze's Python frame at the line of the call, the module's frame at
/// the line calling squeeze, then the interpreter's entry; squeeze's `frames_detail` names the
/// function and its source as Python has them.
#[test]
fn native_extension_frames_sit_above_the_python_caller() {
    if !tests::require_root() || !tests::require_python() {
        return;
    }
    let _serial = serial();
    let t = trace_script("malloc", &["--top", ALL_ROWS], "zlib_frames.py");
    let file = workload_file(&t);
    let name = basename(&file).to_owned();
    let lines = marked_lines(&t, &["compress", "caller"]);
    let rows = rows_of(&t.report, "stacks", t.workload.pid);
    let zlib_rows: Vec<&Value> = (rows.iter().copied())
        .filter(|r| (0..frames(r).len()).any(|at| is_zlib(r, at)))
        .collect();
    let context = || {
        format!(
            "{}\n--- rows through libz ---\n{}",
            report_context(&t, &rows, "bytes"),
            describe_rows(&zlib_rows, "bytes", 25)
        )
    };
    assert!(
        !zlib_rows.is_empty(),
        "no stack through libz\n{}",
        context()
    );
    let squeeze = format!("squeeze ({name}:{})", lines["compress"]);
    let module = format!("<module> ({name}:{})", lines["caller"]);

    // Wherever libz's frames appear with Python frames, they are innermost of them all.
    for row in &zlib_rows {
        let names = frames(row);
        let last_zlib = (0..names.len()).rev().find(|at| is_zlib(row, *at)).unwrap();
        assert!(
            !names[..last_zlib].iter().any(|f| is_python(f)),
            "a Python frame inside libz's: {}\n{}",
            names.join(" <- "),
            context()
        );
    }
    // The whole picture, on at least one stack.
    let whole = zlib_rows.iter().find(|row| {
        let names = frames(row);
        let Some(at) = names.iter().position(|f| is_python(f)) else {
            return false;
        };
        names[at] == squeeze
            && names.get(at + 1) == Some(&module.as_str())
            && !names[at + 2..].iter().any(|f| is_python(f))
            && names[at + 2..].iter().any(|f| ENTRY.contains(f))
    });
    let Some(row) = whole else {
        panic!(
            "no stack through libz reads `libz ... <- {squeeze} <- {module} <- ... <- \
             (one of {ENTRY:?})`\n{}",
            context()
        );
    };
    let at = frames(row).iter().position(|f| *f == squeeze).unwrap();
    let detail = &row["frames_detail"][at];
    assert_eq!(detail["function"], "squeeze", "{detail}\n{}", context());
    assert_eq!(
        detail["source"]["file"],
        file.as_str(),
        "{detail}\n{}",
        context()
    );
    assert_eq!(
        detail["source"]["line"],
        lines["compress"],
        "{detail}\n{}",
        context()
    );
}

/// The parser of Python frame names, on the forms the tests meet.
/// Go's pprof is the oracle for what a profile says: each Python frame must be a location
/// whose function is the Python function, in its source file, at its line, carrying the
/// bytes the JSON report gives that line.
#[test]
fn pprof_has_python_functions_with_their_files_and_lines() {
    if !tests::require_root() || !tests::require_python() {
        return;
    }
    let _serial = serial();
    let dir = tests::TempDir::new("python-pprof");
    let profile = dir.path().join("heap.pb.gz");
    let t = trace_script(
        "malloc",
        &[
            "--leaks",
            "--top",
            ALL_ROWS,
            "--pprof",
            profile.to_str().unwrap(),
        ],
        "alloc_lines.py",
    );
    let file = workload_file(&t);
    let lines = marked_lines(&t, &["large", "method"]);
    let rows = rows_of(&t.report, "outstanding", t.workload.pid);
    let Some(raw) = RawProfile::read(&profile, dir.path()) else {
        return;
    };
    for marker in ["large", "method"] {
        let line = lines[marker];
        // The JSON's rows whose innermost Python frame is at that line, and that frame's name.
        let at_line: Vec<(&Value, PyFrame)> = (rows.iter())
            .filter_map(|row| {
                let frame = frames(row).into_iter().find_map(python_frame)?;
                (frame.line == line).then_some((*row, frame))
            })
            .collect();
        assert!(
            !at_line.is_empty(),
            "no row at line {line}\n{}",
            t.run.describe()
        );
        let qualname = at_line[0].1.qualname.clone();
        let json_bytes: u64 = at_line.iter().map(|(row, _)| u64_of(row, "bytes")).sum();
        // Go's view: locations of that function, in that file, at that line.
        let ids: BTreeSet<u64> = (raw.locations.iter())
            .filter(|(_, l)| {
                l.function.as_deref() == Some(qualname.as_str())
                    && l.file.as_deref() == Some(file.as_str())
                    && l.line == line as i64
            })
            .map(|(&id, _)| id)
            .collect();
        assert!(
            !ids.is_empty(),
            "go tool pprof shows no location {qualname} {file}:{line}\n{}",
            raw.text
        );
        // Samples whose innermost Python location is at that line (the first location of a
        // Python function in the sample, innermost first).
        let is_python_location = |id: &u64| {
            (raw.locations.get(id)).is_some_and(|l| l.file.as_deref() == Some(file.as_str()))
        };
        let pprof_bytes: i64 = (raw.samples.iter())
            .filter(|s| {
                let first = s.locations.iter().find(|id| is_python_location(id));
                first.is_some_and(|id| ids.contains(id))
            })
            .map(|s| raw.value_of(s, "inuse_space/bytes"))
            .sum();
        // Within 1%: the JSON's rows merge stacks by their frames' names, the profile keeps
        // each stack (a few hundred bytes of the interpreter's own blocks differ).
        assert!(
            within(pprof_bytes as u64, json_bytes, 0.01),
            "{marker} (line {line}): pprof's {pprof_bytes} in-use bytes against the JSON's \
             {json_bytes}\n{}",
            raw.text
        );
    }
}

#[test]
fn python_frames_are_told_from_native_ones() {
    let frame = python_frame("Cache.build (alloc_lines.py:42)").unwrap();
    assert_eq!(
        frame,
        PyFrame {
            qualname: "Cache.build".into(),
            file: "alloc_lines.py".into(),
            line: 42
        }
    );
    assert_eq!(
        python_frame("<lambda> (alloc_lines.py:50)")
            .unwrap()
            .qualname,
        "<lambda>"
    );
    assert_eq!(
        python_frame("Thread._bootstrap (threading.py:995)")
            .unwrap()
            .file,
        "threading.py"
    );
    assert!(is_python(UNREADABLE));
    for native in [
        "malloc",
        "python3.11+0xa1d1f",
        "_PyEval_EvalFrameDefault",
        "[stack ends: code with no unwind table]",
        "std::rt::lang_start::{{closure}}",
    ] {
        assert!(!is_python(native), "{native}");
    }
}

/// `PY_VERSION_HEX` of CPython 3.12.0 (final), which memtrace has no layout for.
const PYTHON_3_12_0: u32 = 0x030c_00f0;

/// A little-endian integer of `N` bytes at `at` in `image`.
fn le<const N: usize>(image: &[u8], at: usize) -> u64 {
    let bytes: [u8; N] = image[at..at + N].try_into().unwrap();
    bytes
        .iter()
        .rev()
        .fold(0, |value, byte| value << 8 | u64::from(*byte))
}

/// What the test reads of an ELF64 section header.
struct Section {
    address: u64,
    offset: u64,
    size: u64,
    link: usize,
    kind: u64,
    entry_size: u64,
}

/// The section headers of an ELF64 image.
fn sections(image: &[u8]) -> Vec<Section> {
    assert_eq!(&image[..5], b"\x7fELF\x02", "not an ELF64 file");
    let (table, entry, count) = (
        le::<8>(image, 0x28),
        le::<2>(image, 0x3a),
        le::<2>(image, 0x3c),
    );
    (0..count)
        .map(|index| {
            let at = (table + index * entry) as usize;
            Section {
                kind: le::<4>(image, at + 4),
                address: le::<8>(image, at + 16),
                offset: le::<8>(image, at + 24),
                size: le::<8>(image, at + 32),
                link: le::<4>(image, at + 40) as usize,
                entry_size: le::<8>(image, at + 56),
            }
        })
        .collect()
}

/// The file offset of dynamic symbol `name`'s value: its address in the section holding it.
fn dynamic_symbol_offset(image: &[u8], name: &str) -> usize {
    const SHT_DYNSYM: u64 = 11;
    let sections = sections(image);
    let dynsym = (sections.iter())
        .find(|s| s.kind == SHT_DYNSYM)
        .expect("a dynamic symbol table");
    let strings = &sections[dynsym.link];
    let name_at = |symbol: usize| {
        let start = (strings.offset + le::<4>(image, symbol)) as usize;
        let end = start + image[start..].iter().position(|b| *b == 0).unwrap();
        &image[start..end]
    };
    let symbol = (0..dynsym.size / dynsym.entry_size)
        .map(|index| (dynsym.offset + index * dynsym.entry_size) as usize)
        .find(|symbol| name_at(*symbol) == name.as_bytes())
        .unwrap_or_else(|| panic!("no dynamic symbol {name}"));
    let address = le::<8>(image, symbol + 8);
    let holder = &sections[le::<2>(image, symbol + 6) as usize];
    assert!(
        (holder.address..holder.address + holder.size).contains(&address),
        "{name} at {address:#x} is outside its section"
    );
    (address - holder.address + holder.offset) as usize
}

/// What the interpreter says its `PY_VERSION_HEX` is.
fn hexversion(python: &str) -> u64 {
    let out = Command::new(python)
        .args(["-c", "import sys; print(sys.hexversion)"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    said.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{python} said {said:?}"))
}

/// A copy of [`PYTHON`] in `dir` whose `Py_Version` (the version memtrace reads from the
/// binary) says 3.12.0. The interpreter itself does not read it: it runs as 3.11, and finds
/// its standard library from anywhere (Debian compiles its prefix in).
fn python_saying_3_12(dir: &tests::TempDir) -> std::path::PathBuf {
    let mut image = std::fs::read(PYTHON).unwrap();
    let at = dynamic_symbol_offset(&image, "Py_Version");
    let version = le::<4>(&image, at);
    assert_eq!(
        version,
        hexversion(PYTHON),
        "Py_Version is not at {at:#x} of {PYTHON}"
    );
    image[at..at + 4].copy_from_slice(&PYTHON_3_12_0.to_le_bytes());
    let copy = dir.join("python3.11");
    // Copied first for its mode (executable), then overwritten.
    std::fs::copy(PYTHON, &copy).unwrap();
    std::fs::write(&copy, &image).unwrap();
    copy
}

/// An interpreter whose `Py_Version` says 3.12.0 (a copy of Debian's 3.11, patched): memtrace
/// says once that it cannot read its frames, counts it as unsupported, walks none of its
/// Python frames, and its stacks stay native: the heavy ones pass through the interpreter's
/// `_PyEval_EvalFrameDefault`, and none holds a Python frame.
#[test]
fn an_unsupported_python_version_is_said_once_and_its_stacks_stay_native() {
    if !tests::require_root() || !tests::require_python() {
        return;
    }
    let _serial = serial();
    let dir = tests::TempDir::new("python-3.12");
    let python = python_saying_3_12(&dir);
    let script = python_workload("alloc_lines.py");
    let command = [python.to_str().unwrap(), script.to_str().unwrap()];
    let t = traced::trace("malloc", &["--top", ALL_ROWS], &command);
    assert_eq!(t.run.code(), 0, "{}", t.run.describe());
    let rows = rows_of(&t.report, "stacks", t.workload.pid);
    let context = || report_context(&t, &rows, "bytes");

    let said: Vec<&str> = (t.run.stderr.lines())
        .filter(|line| line.contains("3.12.0"))
        .collect();
    assert_eq!(
        t.run.stderr.matches("3.12.0").count(),
        1,
        "memtrace should say once that it cannot read Python 3.12.0\n{}",
        context()
    );
    assert!(
        said[0].contains("cannot read"),
        "{:?} does not say memtrace cannot read the frames\n{}",
        said[0],
        context()
    );
    let python_figures = &t.report["unwind"]["python"];
    assert_eq!(python_figures["unsupported_processes"], 1, "{}", context());
    assert_eq!(python_figures["processes"], 0, "{}", context());
    assert_eq!(python_figures["walks"], 0, "{}", context());

    let heavy: Vec<&Value> = (rows.iter().copied())
        .filter(|row| u64_of(row, "bytes") > MIB)
        .collect();
    assert!(!heavy.is_empty(), "no stack over 1 MiB\n{}", context());
    for row in &heavy {
        assert!(
            frames(row).contains(&"_PyEval_EvalFrameDefault"),
            "a heavy stack without the interpreter's native frame: {}\n{}",
            frames(row).join(" <- "),
            context()
        );
    }
    for row in &rows {
        assert!(
            !frames(row).iter().any(|f| is_python(f)),
            "a Python frame in a stack of an unsupported interpreter: {}\n{}",
            frames(row).join(" <- "),
            context()
        );
    }
}
