//! `memtrace faults` against the workloads, checked against their own getrusage figures (the
//! JSON line each prints) and /proc. Every test that runs memtrace holds `tests::serial()`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde_json::Value;
use tests::{
    cgroup2::TestCgroup,
    memtrace, parse_report, scratch_path, serial, spawn_memtrace, spawn_waiting,
    traced::{self, u64_of},
    workload, Report, Run, TempDir,
};

/// A memtrace run with its JSON report (from `--output`) and the workload's JSON line (from
/// memtrace's stdout, which the `-- COMMAND` inherits).
struct Traced {
    run: Run,
    report: Value,
    workload: Report,
}

impl Traced {
    /// Everything needed to understand a failure.
    fn context(&self) -> String {
        format!(
            "{}\n--- report ---\n{}\n--- workload ---\n{:?}",
            self.run.describe(),
            serde_json::to_string_pretty(&self.report).unwrap(),
            self.workload
        )
    }
}

/// `memtrace faults --format json --output FILE <extra> -- <workload> <args>`; checks that it
/// succeeded and parses both reports.
fn trace_command(extra: &[&str], name: &str, args: &[&str]) -> Traced {
    let program = workload(name);
    let mut command = vec![program.to_str().unwrap()];
    command.extend_from_slice(args);
    trace_argv(extra, &command)
}

/// The same for any command whose last stdout line is a workload line.
fn trace_argv(extra: &[&str], command: &[&str]) -> Traced {
    let (run, report) = trace_json(extra, command);
    let workload = parse_report(&run.stdout)
        .unwrap_or_else(|e| panic!("workload line: {e:#}\n{}", run.describe()));
    Traced {
        run,
        report,
        workload,
    }
}

/// `memtrace faults --format json --output FILE <extra> -- <command>`; checks that it succeeded
/// and returns the run and its JSON report.
fn trace_json(extra: &[&str], command: &[&str]) -> (Run, Value) {
    let (run, report) = traced::run_json("faults", extra, command);
    assert_eq!(
        run.code(),
        0,
        "memtrace faults {extra:?} -- {command:?} failed\n{}",
        run.describe()
    );
    (run, report)
}

fn read_json(path: &Path, run: &Run) -> Value {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no report at {}: {e}\n{}", path.display(), run.describe()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {text}\n{}", run.describe()))
}

fn array<'a>(report: &'a Value, key: &str) -> &'a Vec<Value> {
    report[key]
        .as_array()
        .unwrap_or_else(|| panic!("no array {key:?} in report {report}"))
}

/// The `processes` row of `pid`, if any.
fn process_row(report: &Value, pid: u32) -> Option<&Value> {
    array(report, "processes")
        .iter()
        .find(|row| row["pid"].as_u64() == Some(u64::from(pid)))
}

/// `kind` ("minor"/"major") of the `processes` row of `pid`; panics if there is no row.
fn process_count(t: &Traced, pid: u32, kind: &str) -> u64 {
    let row = process_row(&t.report, pid)
        .unwrap_or_else(|| panic!("no process row for pid {pid}\n{}", t.context()));
    u64_of(row, kind)
}

/// The stack of `kind` with the highest count (of `pid` when given).
fn top_stack<'a>(t: &'a Traced, kind: &str, pid: Option<u32>) -> &'a Value {
    array(&t.report, "stacks")
        .iter()
        .filter(|s| s["kind"] == kind)
        .filter(|s| pid.is_none_or(|pid| s["pid"].as_u64() == Some(u64::from(pid))))
        .max_by_key(|s| u64_of(s, "count"))
        .unwrap_or_else(|| panic!("no {kind} stack\n{}", t.context()))
}

/// The names in a stack's `frames` (user frames, innermost first).
fn frames(stack: &Value) -> Vec<&str> {
    stack["frames"]
        .as_array()
        .unwrap_or_else(|| panic!("stack without frames: {stack}"))
        .iter()
        .map(|f| f.as_str().expect("frame name"))
        .collect()
}

fn has_frame(stack: &Value, function: &str) -> bool {
    frames(stack).iter().any(|f| f.contains(function))
}

/// The `regions` row of `pid` with the most faults of `kind`.
fn top_region<'a>(t: &'a Traced, pid: u32, kind: &str) -> &'a Value {
    array(&t.report, "regions")
        .iter()
        .filter(|r| r["pid"].as_u64() == Some(u64::from(pid)))
        .max_by_key(|r| u64_of(r, kind))
        .unwrap_or_else(|| panic!("no region rows for pid {pid}\n{}", t.context()))
}

/// `|measured - expected| <= fraction * expected`.
fn within(measured: u64, expected: u64, fraction: f64) -> bool {
    (measured as f64 - expected as f64).abs() <= fraction * expected as f64
}

#[test]
fn minor_faults_match_getrusage_for_command() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let t = trace_command(&[], "fault_touch", &["20000"]);
    let pid = t.workload.pid;
    assert_eq!(u64_of(&t.report, "lost_events"), 0, "{}", t.context());
    let minor = process_count(&t, pid, "minor");
    assert!(
        within(minor, t.workload.minflt, 0.02),
        "memtrace counted {minor} minor faults for pid {pid}, getrusage says {} (more than 2% \
         apart)\n{}",
        t.workload.minflt,
        t.context()
    );
    let stack = top_stack(&t, "minor", Some(pid));
    assert!(
        has_frame(stack, "touch_pages"),
        "top minor stack lacks touch_pages: {stack}\n{}",
        t.context()
    );
    let region = top_region(&t, pid, "minor");
    assert_eq!(
        region["region"],
        "[anon]",
        "region with most minor faults\n{}",
        t.context()
    );
    let exit = &t.report["exit"];
    assert_eq!(exit["exit_code"], 0, "exit\n{}", t.context());
    assert_eq!(exit["pid"], pid, "exit.pid\n{}", t.context());
}

/// Removes a file on drop (the test may fail before its end).
struct RemoveFile(PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn major_faults_match_getrusage() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let file = RemoveFile(scratch_path("major_faults"));
    let path = file.0.to_str().unwrap();
    let t = trace_command(&["--kind", "major"], "fault_file", &[path, "4096", "4"]);
    let pid = t.workload.pid;
    let resident = t.workload.u64("resident_before");
    assert_eq!(
        resident,
        0,
        "fault_file could not drop {path} from the page cache ({resident} pages still resident), \
         so its reads were not all major faults; is {path} on tmpfs?\n{}",
        t.context()
    );
    assert_eq!(u64_of(&t.report, "lost_events"), 0, "{}", t.context());
    let major = process_count(&t, pid, "major");
    assert!(
        within(major, t.workload.majflt, 0.02),
        "memtrace counted {major} major faults for pid {pid}, getrusage says {} (more than 2% \
         apart)\n{}",
        t.workload.majflt,
        t.context()
    );
    assert!(
        major >= t.workload.u64("reads"),
        "fewer major faults ({major}) than pages read\n{}",
        t.context()
    );
    let stack = top_stack(&t, "major", Some(pid));
    assert!(
        has_frame(stack, "read_file_pages"),
        "top major stack lacks read_file_pages: {stack}\n{}",
        t.context()
    );
    let region = top_region(&t, pid, "major");
    let name = region["region"].as_str().unwrap_or_default();
    // /proc/PID/maps names the file by its real path (the target dir may be behind a symlink).
    let real = fs::canonicalize(&file.0).unwrap();
    assert!(
        name.starts_with(path) || name.starts_with(real.to_str().unwrap()),
        "region with most major faults is {name:?}, not {path:?}\n{}",
        t.context()
    );
}

#[test]
fn pid_of_running_process() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let mut w = spawn_waiting("fault_touch", &["20000"]);
    let pid = w.pid.to_string();
    let t = trace_running(&mut w, &["--pid", &pid]);
    assert_touch_phase_traced(&t, w.pid);
    w.finish();
}

/// Traces the waiting workload `w` with `memtrace faults <target> --format json`: waits until
/// memtrace is attached, releases the workload, stops memtrace with SIGINT once the workload
/// reported, and checks memtrace exited 0.
fn trace_running(w: &mut tests::Waiting, target: &[&str]) -> Traced {
    let dir = TempDir::new("trace_running");
    let out = dir.join("report.json");
    let mut args = vec!["faults"];
    args.extend_from_slice(target);
    args.extend_from_slice(&["--format", "json", "--output", out.to_str().unwrap()]);
    let mut tracer = spawn_memtrace(&args);
    tracer.wait_attached();
    let workload = w.go();
    tracer.signal(libc::SIGINT);
    let run = tracer.wait();
    assert_eq!(run.code(), 0, "memtrace after SIGINT\n{}", run.describe());
    Traced {
        report: read_json(&out, &run),
        run,
        workload,
    }
}

/// The touch phase of fault_touch `pid` was counted, on a stack that names touch_pages.
fn assert_touch_phase_traced(t: &Traced, pid: u32) {
    assert_phase_counted(t, pid);
    let stack = top_stack(t, "minor", Some(pid));
    assert!(
        has_frame(stack, "touch_pages"),
        "top minor stack lacks touch_pages: {stack}\n{}",
        t.context()
    );
}

/// For a process traced only around its main phase: memtrace saw the phase's faults and little
/// else (the workload's own stdin/stdout work around the phase).
fn assert_phase_counted(t: &Traced, pid: u32) {
    let phase = t.workload.phase_minflt;
    let minor = process_count(t, pid, "minor");
    let most = (phase as f64 * 1.02) as u64 + 50;
    assert!(
        minor >= phase && minor <= most,
        "memtrace counted {minor} minor faults for pid {pid}; the phase had {phase} (by \
         getrusage), so expected {phase}..={most}\n{}",
        t.context()
    );
}

#[test]
fn command_exits_before_report_keeps_symbols() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let t = trace_command(&[], "fault_touch", &["5000"]);
    let pid = t.workload.pid;
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the workload should be gone (reaped by memtrace)"
    );
    let stack = top_stack(&t, "minor", Some(pid));
    for function in ["touch_pages", "main"] {
        assert!(
            frames(stack).contains(&function),
            "top minor stack lacks {function}: {stack}\n{}",
            t.context()
        );
    }
}

#[test]
fn threads() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let t = trace_command(&[], "fault_threads", &["4", "5000"]);
    let pid = t.workload.pid;
    let rows = array(&t.report, "processes");
    assert_eq!(
        rows.len(),
        1,
        "expected one process row (the thread group {pid}), not one per thread\n{}",
        t.context()
    );
    assert_eq!(rows[0]["pid"], pid, "{}", t.context());
    for tid in t.workload.pids("tids") {
        assert!(
            process_row(&t.report, tid).is_none(),
            "a row for thread {tid}\n{}",
            t.context()
        );
    }
    let minor = process_count(&t, pid, "minor");
    assert!(
        within(minor, t.workload.minflt, 0.02),
        "memtrace counted {minor} minor faults for pid {pid}, getrusage says {} (more than 2% \
         apart)\n{}",
        t.workload.minflt,
        t.context()
    );
    let stack = top_stack(&t, "minor", Some(pid));
    assert!(
        has_frame(stack, "thread_touch_pages"),
        "top minor stack lacks thread_touch_pages: {stack}\n{}",
        t.context()
    );
}

#[test]
fn follow_children() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let t = trace_command(&["--follow-children"], "fault_fork", &["3", "5000"]);
    let children = t.workload.pids("children");
    assert_eq!(children.len(), 3, "{}", t.context());
    assert_eq!(u64_of(&t.report, "lost_events"), 0, "{}", t.context());
    let sum: u64 = children
        .iter()
        .map(|&child| process_count(&t, child, "minor"))
        .sum();
    let expected = t.workload.u64("children_minflt");
    assert!(
        within(sum, expected, 0.02),
        "the children's rows add up to {sum} minor faults, getrusage(RUSAGE_CHILDREN) says \
         {expected} (more than 2% apart)\n{}",
        t.context()
    );
    let stack = top_stack(&t, "minor", None);
    assert!(
        has_frame(stack, "child_touch_pages"),
        "top minor stack lacks child_touch_pages: {stack}\n{}",
        t.context()
    );

    // With --no-follow-children only the command itself is traced (a command's children are
    // followed by default).
    let t = trace_command(&["--no-follow-children"], "fault_fork", &["3", "5000"]);
    assert!(
        process_row(&t.report, t.workload.pid).is_some(),
        "no row for the command itself\n{}",
        t.context()
    );
    for child in t.workload.pids("children") {
        assert!(
            process_row(&t.report, child).is_none(),
            "child {child} was traced with --no-follow-children\n{}",
            t.context()
        );
    }
}

/// A shell forks a child that execs the workload. Before its exec the child runs the shell's
/// code in a copy of the shell's memory (its copy-on-write faults hit the shell's pages); those
/// faults must be classified in that address space, not in the workload's that replaces it.
#[test]
fn forked_child_faults_before_exec_are_in_the_parents_address_space() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let bash = fs::canonicalize("/bin/bash").expect("bash is installed");
    // `; true` keeps bash from exec'ing the workload in place: it forks a child first.
    let script = format!("{} 3000; true", workload("fault_touch").display());
    let (run, report) = trace_json(
        &["--follow-children", "--top", "1000"],
        &["bash", "-c", &script],
    );
    let t = Traced {
        report,
        workload: parse_report(&run.stdout)
            .unwrap_or_else(|e| panic!("workload line: {e:#}\n{}", run.describe())),
        run,
    };
    let child = t.workload.pid;
    assert!(
        within(process_count(&t, child, "minor"), t.workload.minflt, 0.02),
        "the forked child's faults differ from its getrusage by more than 2%\n{}",
        t.context()
    );
    let shell_region = array(&t.report, "regions")
        .iter()
        .any(|row| row["pid"] == child && row["region"].as_str() == bash.to_str());
    assert!(
        shell_region,
        "no faults of the child {child} in {} (its copy-on-write faults before exec)\n{}",
        bash.display(),
        t.context()
    );
    let stack = top_stack(&t, "minor", Some(child));
    assert!(
        has_frame(stack, "touch_pages"),
        "top minor stack lacks touch_pages: {stack}\n{}",
        t.context()
    );
}

/// `read()` into a fresh 8 MiB buffer: the kernel's copy takes every one of its 2048 page
/// faults, in kernel mode, so those stacks carry kernel frames (the read path).
#[test]
fn kernel_frames_for_faults_taken_in_the_kernel() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let (run, report) = trace_json(
        &["--kind", "minor", "--top", "1000"],
        &[
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=8M",
            "count=1",
            "status=none",
        ],
    );
    let in_read = |s: &&Value| {
        s["kernel_frames"].as_array().is_some_and(|k| {
            k.iter()
                .any(|f| f.as_str().is_some_and(|f| f.contains("vfs_read")))
        })
    };
    let faults: u64 = array(&report, "stacks")
        .iter()
        .filter(in_read)
        .map(|s| u64_of(s, "count"))
        .sum();
    let pages = 8 * 1024 * 1024 / 4096;
    assert!(
        (pages..=pages + pages / 50).contains(&faults),
        "{faults} faults on stacks through vfs_read, expected the buffer's {pages} pages\n{}\n{}",
        serde_json::to_string_pretty(&report).unwrap(),
        run.describe()
    );
}

/// Without stacks the counts are the same, and no stack is reported.
#[test]
fn stacks_none_still_counts_exactly() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let t = trace_command(&["--stacks", "none"], "fault_touch", &["20000"]);
    let minor = process_count(&t, t.workload.pid, "minor");
    assert!(
        within(minor, t.workload.minflt, 0.02),
        "{minor} minor faults, getrusage says {}\n{}",
        t.workload.minflt,
        t.context()
    );
    assert!(array(&t.report, "stacks").is_empty(), "{}", t.context());
    assert_eq!(
        top_region(&t, t.workload.pid, "minor")["region"],
        "[anon]",
        "{}",
        t.context()
    );
}

#[test]
fn no_lost_events_at_storm_rate() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let t = trace_command(&[], "fault_storm", &["256", "2"]);
    let pid = t.workload.pid;
    assert_eq!(
        u64_of(&t.report, "lost_events"),
        0,
        "events lost at {:.0} faults/s\n{}",
        t.workload.phase_minflt as f64 / t.workload.elapsed_s,
        t.context()
    );
    let minor = process_count(&t, pid, "minor");
    assert!(
        within(minor, t.workload.minflt, 0.02),
        "memtrace counted {minor} minor faults for pid {pid}, getrusage says {} (more than 2% \
         apart)\n{}",
        t.workload.minflt,
        t.context()
    );
}

/// Runs `memtrace faults <extra> -- fault_touch 5000`, the report to `out`; returns the run
/// (whose stdout holds the workload's JSON line).
fn trace_touch_to(extra: &[&str]) -> Run {
    let mut argv = vec!["faults"];
    argv.extend(extra.iter().copied());
    let touch = workload("fault_touch");
    argv.extend(["--", touch.to_str().unwrap(), "5000"]);
    let run = memtrace(&argv);
    assert_eq!(
        run.code(),
        0,
        "memtrace {argv:?} failed\n{}",
        run.describe()
    );
    run
}

#[test]
fn folded_output_parses() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("folded");
    let out = dir.join("faults.folded");
    let run = trace_touch_to(&["--format", "folded", "--output", out.to_str().unwrap()]);
    let text = fs::read_to_string(&out).unwrap();
    let context = || format!("--- folded ---\n{text}\n{}", run.describe());
    let mut lines = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        lines += 1;
        let (stack, count) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no count in folded line {line:?}\n{}", context()));
        let count: u64 = count.parse().unwrap_or_else(|_| {
            panic!("count {count:?} is not a number in {line:?}\n{}", context())
        });
        assert!(count > 0, "zero count in {line:?}\n{}", context());
        for frame in stack.split(';') {
            assert!(
                !frame.is_empty() && frame.trim() == frame,
                "empty frame or spaces around `;` in {line:?}\n{}",
                context()
            );
        }
    }
    assert!(lines > 0, "no folded lines\n{}", context());
    assert!(
        text.lines().any(|l| l.contains("touch_pages")),
        "no folded stack with touch_pages\n{}",
        context()
    );
}

#[test]
fn flamegraph_svg_is_well_formed() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("flamegraph");
    let svg = dir.join("faults.svg");
    let run = trace_touch_to(&[
        "--format",
        "json",
        "--output",
        dir.join("report.json").to_str().unwrap(),
        "--flamegraph",
        svg.to_str().unwrap(),
    ]);
    let text = fs::read_to_string(&svg).unwrap_or_else(|e| {
        panic!(
            "no flame graph at {}: {e}\n{}",
            svg.display(),
            run.describe()
        )
    });
    let start = text.trim_start();
    assert!(
        start.starts_with("<?xml") || start.starts_with("<svg"),
        "not an SVG: {:?}\n{}",
        &text[..text.len().min(200)],
        run.describe()
    );
    assert!(text.contains("</svg>"), "no </svg>\n{}", run.describe());
    assert!(
        text.contains("touch_pages"),
        "flame graph lacks touch_pages\n{}",
        run.describe()
    );
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&text, options).unwrap_or_else(|e| {
        panic!(
            "flame graph is not well-formed XML: {e}\n{}",
            run.describe()
        )
    });
    assert_eq!(doc.root_element().tag_name().name(), "svg");
}

#[test]
fn pprof_is_readable_by_go_tool_pprof() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("pprof");
    let profile = dir.join("faults.pb.gz");
    let run = trace_touch_to(&[
        "--format",
        "json",
        "--output",
        dir.join("report.json").to_str().unwrap(),
        "--pprof",
        profile.to_str().unwrap(),
    ]);
    let Some(pprof) = tests::go_pprof_top(&profile, &[], dir.path()) else {
        return;
    };
    assert_eq!(
        pprof.code(),
        0,
        "go tool pprof -top failed\n{}\n--- memtrace ---\n{}",
        pprof.describe(),
        run.describe()
    );
    assert!(
        pprof.stdout.contains("touch_pages"),
        "go tool pprof -top does not show touch_pages\n{}\n--- memtrace ---\n{}",
        pprof.describe(),
        run.describe()
    );
}

#[test]
fn sampling_rescales() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let t = trace_command(&["--sample", "10"], "fault_touch", &["20000"]);
    let pid = t.workload.pid;
    assert_eq!(t.report["sampled"], true, "{}", t.context());
    assert_eq!(t.report["sample_period"], 10, "{}", t.context());
    let minor = process_count(&t, pid, "minor");
    assert!(
        within(minor, t.workload.minflt, 0.10),
        "sampled estimate {minor} is more than 10% from getrusage's {}\n{}",
        t.workload.minflt,
        t.context()
    );
}

#[test]
fn interval_lines() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    // 256 MiB six times (~400k faults): over a second here, several 200 ms intervals even on a
    // much faster machine, with a modest peak of memory.
    let t = trace_command(&["--interval", "200ms"], "fault_storm", &["256", "6"]);
    assert!(
        t.workload.elapsed_s > 0.25,
        "the storm took only {} s, barely one 200 ms interval: the test needs a bigger workload \
         on this machine\n{}",
        t.workload.elapsed_s,
        t.context()
    );
    let lines: Vec<&str> = t
        .run
        .stderr
        .lines()
        .filter(|l| l.contains("minor/s"))
        .collect();
    assert!(
        !lines.is_empty(),
        "no `minor/s` interval line on stderr over {} s of faults\n{}",
        t.workload.elapsed_s,
        t.context()
    );
    let pid = t.workload.pid.to_string();
    assert!(
        lines.iter().any(|l| l.contains(&pid)),
        "no interval line names pid {pid}\n{}",
        t.context()
    );
}

#[test]
fn cgroup() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let mut w = spawn_waiting("fault_touch", &["20000"]);
    // Declared after the workload, so dropped first: the workload leaves the cgroup before it
    // is killed.
    let mut cgroup = TestCgroup::create();
    cgroup.enter(w.pid);
    let t = trace_running(&mut w, &["--cgroup", cgroup.dir.to_str().unwrap()]);
    assert_touch_phase_traced(&t, w.pid);
    drop(cgroup);
    w.finish();
}

/// A ring buffer of one page, four threads faulting on two CPUs: the ring overflows. Every
/// fault is either received or counted lost, exactly (their sum is the workload's
/// getrusage), and the report says its figures are lower bounds.
#[test]
fn a_full_ring_loses_events_it_counts_exactly() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let threads = workload("fault_threads");
    let command = [threads.to_str().unwrap(), "4", "20000"];
    let t = traced::trace(
        "faults",
        &["--ring-buffer", "4K", "--stacks", "none"],
        &command,
    );
    let lost = t.report["lost_events"].as_u64().unwrap();
    let received = u64_of(t.process(), "minor");
    let faults = t.workload.minflt;
    assert!(lost > 0, "the ring did not overflow\n{}", t.context());
    assert!(
        (received + lost).abs_diff(faults) * 200 <= faults,
        "received {received} + lost {lost} vs {faults} faults by getrusage\n{}",
        t.context()
    );
    let run = memtrace(&[
        "faults",
        "--ring-buffer",
        "4K",
        "--stacks",
        "none",
        "--",
        command[0],
        "4",
        "20000",
    ]);
    assert!(run.stdout.contains("lower bounds"), "{}", run.describe());
}

/// A traced pid that execs another program mid-trace: its row takes the new program's name,
/// and its faults after the exec are symbolized in the new binary.
#[test]
fn a_target_that_execs_is_reported_as_the_new_program() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let touch = workload("fault_touch");
    // A shell that waits for a line on stdin, then becomes fault_touch.
    let mut shell = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("read go; exec {} 20000", touch.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sh");
    let pid = shell.id().to_string();
    let dir = TempDir::new("exec-target");
    let out = dir.join("report.json");
    let mut tracer = spawn_memtrace(&[
        "faults",
        "--pid",
        &pid,
        "--format",
        "json",
        "--output",
        out.to_str().unwrap(),
    ]);
    tracer.wait_attached();
    {
        use std::io::Write;
        let mut stdin = shell.stdin.take().unwrap();
        writeln!(stdin, "go").unwrap();
    }
    let output = shell.wait_with_output().expect("the workload");
    assert!(output.status.success(), "{output:?}");
    let figures = parse_report(&String::from_utf8_lossy(&output.stdout)).unwrap();
    // memtrace stops by itself once its target is gone.
    let run = tracer.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    let report: Value = serde_json::from_str(&fs::read_to_string(&out).unwrap()).unwrap();
    let row = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pid"] == figures.pid)
        .unwrap_or_else(|| panic!("no row for {}: {report}", figures.pid));
    assert_eq!(row["comm"], "fault_touch", "{row}");
    assert!(row["minor"].as_u64().unwrap() >= 20_000, "{row}");
    let named = report["stacks"].as_array().unwrap().iter().any(|s| {
        s["frames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "touch_pages")
    });
    assert!(named, "no stack names touch_pages: {report}");
}

/// Workload `name` started as `spawn_waiting` does, but with pid `pid` (free again): the kernel
/// gives a new process the pid after /proc/sys/kernel/ns_last_pid.
fn spawn_with_pid(pid: u32, name: &str, args: &[&str]) -> tests::Waiting {
    for _ in 0..100 {
        fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("writing /proc/sys/kernel/ns_last_pid (needs root)");
        let w = spawn_waiting(name, args);
        if w.pid == pid {
            return w;
        }
    }
    panic!("no new process got pid {pid} in 100 tries");
}

/// A traced process exits, and a new process gets its pid while memtrace still traces (held
/// stopped meanwhile, so the new one surely runs before memtrace notices the exit): the new
/// process is not the target and none of its faults count. Alone (the single-process filter)
/// and beside a second traced process (the set).
#[test]
fn a_reused_pid_is_not_traced() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    for with_second in [false, true] {
        let mut first = spawn_waiting("fault_touch", &["2000"]);
        let mut second = with_second.then(|| spawn_waiting("fault_touch", &["10"]));
        let dir = TempDir::new("pid-reuse");
        let out = dir.join("report.json");
        let pid = first.pid.to_string();
        let mut args = vec!["faults", "--pid", &pid];
        let second_pid = second.as_ref().map(|w| w.pid.to_string());
        if let Some(second_pid) = &second_pid {
            args.extend(["--pid", second_pid]);
        }
        args.extend(["--format", "json", "--output", out.to_str().unwrap()]);
        let mut tracer = spawn_memtrace(&args);
        tracer.wait_attached();
        let figures = first.go();
        tracer.signal(libc::SIGSTOP);
        let first_pid = first.pid;
        first.finish();
        let mut reuse = spawn_with_pid(first_pid, "fault_touch", &["20000"]);
        let reused = reuse.go();
        reuse.finish();
        tracer.signal(libc::SIGCONT);
        if let Some(mut second) = second.take() {
            second.go();
            second.finish();
        }
        // memtrace stops by itself once its targets are gone.
        let run = tracer.wait();
        assert_eq!(run.code(), 0, "{}", run.describe());
        let t = Traced {
            report: read_json(&out, &run),
            run,
            workload: figures,
        };
        assert!(reused.phase_minflt >= 20_000, "{reused:?}");
        assert_phase_counted(&t, first_pid);
    }
}

/// A python3 script (a real program, not ours) that touches 64 MiB and prints its own
/// getrusage figures as a workload line.
const PYTHON_TOUCHES: &str = "import json, os, resource, time\n\
b = bytearray(64 << 20)\n\
r = resource.getrusage(resource.RUSAGE_SELF)\n\
print(json.dumps({'pid': os.getpid(), 'minflt': r.ru_minflt, 'majflt': r.ru_majflt, \
'phase_minflt': 0, 'phase_majflt': 0, 'elapsed_s': 0}))\n";

#[test]
fn a_commands_children_are_traced_unless_told_not_to() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("faults-children");
    let script = dir.join("touch.py");
    std::fs::write(&script, PYTHON_TOUCHES).unwrap();
    // The shell does little; its child, python3, takes the faults.
    let shell = format!("python3 {}; true", script.display());
    let t = trace_argv(&[], &["sh", "-c", &shell]);
    let python = t.workload.pid;
    let minor = process_count(&t, python, "minor");
    // Its own count is read before it exits; the exit adds a few.
    assert!(
        within(minor, t.workload.minflt, 0.02),
        "memtrace counted {minor} minor faults for python3 (pid {python}), its getrusage says \
         {}\n{}",
        t.workload.minflt,
        t.context()
    );
    assert!(t.workload.minflt >= 16384, "{:?}", t.workload);

    let alone = trace_argv(&["--no-follow-children"], &["sh", "-c", &shell]);
    assert!(
        process_row(&alone.report, alone.workload.pid).is_none(),
        "--no-follow-children traced the child\n{}",
        alone.context()
    );
}

/// (who, kind, user frames, kernel frames) of each stack row: what tells rows apart.
fn row_identities(report: &Value, who: &str) -> Vec<String> {
    array(report, "stacks")
        .iter()
        .map(|s| {
            format!(
                "{}|{}|{}|{}",
                s[who], s["kind"], s["frames"], s["kernel_frames"]
            )
        })
        .collect()
}

fn has_duplicates(items: &[String]) -> bool {
    let set: std::collections::HashSet<&String> = items.iter().collect();
    set.len() < items.len()
}

#[test]
fn stack_rows_are_counted_whole_and_merged_by_function() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let args = ["3", "3000"];
    // --top 2 shows 2 rows of all there are.
    let top2 = trace_command(&["--top", "2"], "fault_fork", &args);
    assert_eq!(array(&top2.report, "stacks").len(), 2, "{}", top2.context());
    assert!(
        u64_of(&top2.report, "stacks_total") > 2,
        "{}",
        top2.context()
    );

    // All rows: as many as the total says, no two through the same functions, and every
    // fault on one of them.
    let all = trace_command(&["--top", "100000"], "fault_fork", &args);
    let stacks = array(&all.report, "stacks");
    assert_eq!(
        stacks.len() as u64,
        u64_of(&all.report, "stacks_total"),
        "{}",
        all.context()
    );
    assert!(
        !has_duplicates(&row_identities(&all.report, "pid")),
        "{}",
        all.context()
    );
    let faults: u64 = array(&all.report, "processes")
        .iter()
        .map(|p| u64_of(p, "minor") + u64_of(p, "major"))
        .sum();
    let on_stacks: u64 = stacks.iter().map(|s| u64_of(s, "count")).sum();
    assert_eq!(on_stacks, faults, "{}", all.context());

    // --by-address keeps apart stacks that differ only in instruction addresses.
    let exact = trace_command(&["--top", "100000", "--by-address"], "fault_fork", &args);
    assert!(
        has_duplicates(&row_identities(&exact.report, "pid")),
        "no two stacks through the same functions\n{}",
        exact.context()
    );

    // --group-by comm: the three children running the same code are one row.
    let by_comm = trace_command(
        &["--top", "100000", "--group-by", "comm"],
        "fault_fork",
        &args,
    );
    assert!(
        !has_duplicates(&row_identities(&by_comm.report, "comm")),
        "{}",
        by_comm.context()
    );
    let touch = array(&by_comm.report, "stacks")
        .iter()
        .find(|s| s["frames"][0] == "child_touch_pages")
        .unwrap_or_else(|| panic!("no child_touch_pages row\n{}", by_comm.context()));
    let mut children = by_comm.workload.pids("children");
    children.sort_unstable();
    let pids: Vec<u32> = touch["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(pids, children, "{}", by_comm.context());
    assert!(u64_of(touch, "count") >= 3 * 3000, "{}", by_comm.context());
}
