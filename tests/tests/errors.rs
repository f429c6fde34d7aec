//! memtrace's errors: each case checks the exit code (0 ok, 1 runtime failure, 2 usage or bad
//! input, 127 command not found) and the words of the message on stderr.
//!
//! Cases rejected by the argument parser do not need root; the others do (memtrace checks its
//! privileges before the target).

use std::{fs, os::unix::process::ExitStatusExt, path::Path, process::Command};

use tests::{memtrace, memtrace_bin, run_command, serial, spawn_memtrace, Run, TempDir};

/// Runs `memtrace faults <args>` and checks its exit code and that stderr contains every one of
/// `words`; returns the run.
fn expect_failure(args: &[&str], code: i32, words: &[&str]) -> Run {
    let mut argv = vec!["faults"];
    argv.extend(args.iter().copied());
    let run = memtrace(&argv);
    assert_eq!(
        run.code(),
        code,
        "memtrace {argv:?}: expected exit {code}\n{}",
        run.describe()
    );
    for word in words {
        assert!(
            run.stderr.contains(word),
            "memtrace {argv:?}: stderr lacks {word:?}\n{}",
            run.describe()
        );
    }
    run
}

/// A valid pid with no process: near pid_max, checked against /proc.
fn unused_pid() -> u32 {
    let max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("/proc/sys/kernel/pid_max")
        .trim()
        .parse()
        .expect("pid_max");
    (1..max)
        .rev()
        .find(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        .expect("a free pid")
}

#[test]
fn missing_pid() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let pid = unused_pid().to_string();
    expect_failure(
        &["--pid", &pid],
        2,
        &[&format!("memtrace: no process with pid {pid}")],
    );
}

#[test]
fn malformed_pids() {
    let _serial = serial();
    expect_failure(&["--pid", "0"], 2, &["0 is not a process id", "positive"]);
    // clap takes `-5` for an option...
    expect_failure(&["--pid", "-5"], 2, &["-5"]);
    // ...and with `=` it reaches the pid parser.
    expect_failure(&["--pid=-5"], 2, &["-5 is not a process id", "positive"]);
    expect_failure(
        &["--pid", "abc"],
        2,
        &["abc is not a process id", "expected a number"],
    );
    expect_failure(&["--pid", "99999999999"], 2, &["99999999999"]);
}

/// A kernel thread's pid: kthreadd (2) where visible, else any with PF_KTHREAD in /proc.
fn kernel_thread() -> Option<u32> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let is_kthread = |pid: u32| {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let flags: u64 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(6)?
            .parse()
            .ok()?;
        Some(flags & PF_KTHREAD != 0)
    };
    if is_kthread(2) == Some(true) {
        return Some(2);
    }
    fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| is_kthread(pid) == Some(true))
}

#[test]
fn kernel_thread_pid() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let Some(pid) = kernel_thread() else {
        panic!("no kernel thread visible in /proc (a pid namespace?); cannot test --pid on one");
    };
    let pid = pid.to_string();
    expect_failure(
        &["--pid", &pid],
        2,
        &[&format!("memtrace: pid {pid} is a kernel thread")],
    );
}

#[test]
fn bad_thrashing_thresholds() {
    let _serial = serial();
    for (flag, words) in [
        ("--thrash-rate=-5", "-5 is not a positive number"),
        ("--thrash-rate=lots", "lots is not a positive number"),
        ("--thrash-psi-full=0", "0 is not a positive number"),
        ("--thrash-intervals=0", "0 is not in 1.."),
    ] {
        let run = memtrace(&["swap", flag]);
        assert_eq!(run.code(), 2, "memtrace swap {flag}\n{}", run.describe());
        assert!(
            run.stderr.contains(words),
            "memtrace swap {flag}: stderr lacks {words:?}\n{}",
            run.describe()
        );
    }
}

#[test]
fn bad_durations_and_sample() {
    let _serial = serial();
    expect_failure(&["--duration", "soon"], 2, &["\"soon\" is not a duration"]);
    expect_failure(
        &["--duration", "0s"],
        2,
        &["a duration must be more than zero"],
    );
    expect_failure(&["--duration", "-1s"], 2, &["-1"]);
    expect_failure(&["--duration=-1s"], 2, &["\"-1s\" is not a duration"]);
    expect_failure(
        &["--interval", "0s"],
        2,
        &["a duration must be more than zero"],
    );
    expect_failure(
        &["--sample", "0"],
        2,
        &["--sample takes a whole number from 1 (every fault) up; 0 would trace nothing"],
    );
    expect_failure(
        &["--sample", "lots"],
        2,
        &["lots is not a whole number: --sample takes one from 1 (every fault) up"],
    );
    for (subcommand, flag, words) in [
        (
            "pages",
            "--sample",
            "--sample takes a whole number from 1 (a stack for every",
        ),
        (
            "malloc",
            "--sample-bytes",
            "--sample-bytes takes a whole number from 1",
        ),
    ] {
        let run = memtrace(&[subcommand, flag, "0"]);
        assert_eq!(
            run.code(),
            2,
            "memtrace {subcommand} {flag} 0\n{}",
            run.describe()
        );
        assert!(
            run.stderr.contains(words),
            "memtrace {subcommand} {flag} 0: stderr lacks {words:?}\n{}",
            run.describe()
        );
    }
    for size in ["lots", "3K", "--ring-buffer=-8M", "2G"] {
        let args: Vec<&str> = if size.starts_with("--") {
            vec![size]
        } else {
            vec!["--ring-buffer", size]
        };
        expect_failure(&args, 2, &["is not a ring buffer size", "a power of two"]);
    }
}

/// The subcommands whose usage (their `--help`) ends in `[-- <COMMAND>...]`, from memtrace's
/// own list of subcommands.
fn subcommands_taking_a_command() -> Vec<String> {
    let help = memtrace(&["--help"]);
    let listed = help
        .stdout
        .split_once("Commands:")
        .unwrap_or_else(|| panic!("no Commands: in --help\n{}", help.describe()))
        .1;
    let names = listed
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help");
    names
        .filter(|name| {
            memtrace(&[name, "--help"])
                .stdout
                .contains("[-- <COMMAND>...]")
        })
        .map(str::to_owned)
        .collect()
}

/// `--` with nothing after it names no command: every subcommand that takes `-- COMMAND` says
/// so and exits 2 (it would otherwise trace the whole system, or ask for --pid), root or not.
#[test]
fn a_bare_double_dash_is_a_usage_error() {
    let _serial = serial();
    let subcommands = subcommands_taking_a_command();
    assert!(
        subcommands.iter().any(|name| name == "faults"),
        "faults takes -- COMMAND, but the help said only {subcommands:?}"
    );
    for subcommand in &subcommands {
        // Bounded, should the `--` be taken for no command at all.
        let run = memtrace(&[subcommand, "--duration", "2s", "--"]);
        assert_eq!(
            run.code(),
            2,
            "memtrace {subcommand} --: expected exit 2\n{}",
            run.describe()
        );
        for words in [
            "memtrace: nothing follows `--`: put the command to trace after it".to_owned(),
            format!("(memtrace {subcommand} -- ./load-test.sh), or leave `--` out"),
        ] {
            assert!(
                run.stderr.contains(&words),
                "memtrace {subcommand} --: stderr lacks {words:?}\n{}",
                run.describe()
            );
        }
        assert!(
            !run.stderr.contains("tracing"),
            "memtrace {subcommand} -- traced\n{}",
            run.describe()
        );
    }
}

#[test]
fn command_not_found() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    expect_failure(
        &["--", "/nonexistent/cmd"],
        127,
        &["memtrace: /nonexistent/cmd: command not found"],
    );
    expect_failure(
        &["--", "definitely-not-a-command-xyz"],
        127,
        &["memtrace: definitely-not-a-command-xyz: command not found"],
    );
}

#[test]
fn unwritable_output() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let run = expect_failure(
        &["--output", "/nonexistent-dir/x.json", "--", "true"],
        2,
        &[
            "memtrace: --output /nonexistent-dir/x.json",
            "cannot write it",
        ],
    );
    assert!(
        !run.stderr.contains("tracing"),
        "memtrace traced before checking its output file\n{}",
        run.describe()
    );
    let dir = TempDir::new("output_dir");
    let dir_arg = dir.path().to_str().unwrap();
    expect_failure(
        &["--output", dir_arg, "--duration", "1s"],
        2,
        &[
            &format!("memtrace: --output {dir_arg}: is a directory"),
            "give a file name",
        ],
    );
    expect_failure(
        &["--output", "/tmp", "--duration", "1s"],
        2,
        &["memtrace: --output /tmp: is a directory"],
    );
    expect_failure(
        &["--flamegraph", "/nonexistent-dir/f.svg", "--", "true"],
        2,
        &["--flamegraph /nonexistent-dir/f.svg", "cannot write it"],
    );
    expect_failure(
        &["--pprof", "/nonexistent-dir/f.pb.gz", "--", "true"],
        2,
        &["--pprof /nonexistent-dir/f.pb.gz", "cannot write it"],
    );
}

#[test]
fn not_a_cgroup() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let mount = cgroup_mounts()
        .into_iter()
        .find(|(fstype, _)| fstype == "cgroup2")
        .map(|(_, dir)| format!("this host mounts cgroup2 at {dir};"))
        .unwrap_or_else(|| "this host has no cgroup2 mount".to_owned());
    expect_failure(
        &["--cgroup", "/tmp"],
        2,
        &["memtrace: /tmp is not a cgroup v2 directory", &mount],
    );
    expect_failure(
        &["--cgroup", "/nonexistent-cgroup"],
        2,
        &["memtrace: cgroup /nonexistent-cgroup"],
    );
}

/// (fstype, mount point) of each cgroup mount in /proc/self/mountinfo.
fn cgroup_mounts() -> Vec<(String, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("/proc/self/mountinfo");
    text.lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let fstype = tail.split(' ').next()?;
            let dir = head.split(' ').nth(4)?;
            fstype
                .starts_with("cgroup")
                .then(|| (fstype.to_owned(), dir.to_owned()))
        })
        .collect()
}

/// A named cgroup v1 hierarchy mounted for a test where the host has none, unmounted on drop.
struct V1Mount(TempDir);

impl Drop for V1Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_cgroup_v1_path_is_explained_with_the_cgroup2_mount() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let mounts = cgroup_mounts();
    let mut _mounted = None;
    let v1 = match mounts.iter().find(|(fstype, _)| fstype == "cgroup") {
        Some((_, dir)) => dir.clone(),
        None => {
            let dir = TempDir::new("cgroup-v1");
            let status = Command::new("mount")
                .args(["-t", "cgroup", "-o", "none,name=memtrace-test", "cgroup"])
                .arg(dir.path())
                .status()
                .expect("mount");
            assert!(
                status.success(),
                "cannot mount a cgroup v1 hierarchy: {status}"
            );
            let path = dir.path().to_str().unwrap().to_owned();
            _mounted = Some(V1Mount(dir));
            path
        }
    };
    let cgroup2 = mounts
        .iter()
        .find(|(fstype, _)| fstype == "cgroup2")
        .map(|(_, dir)| format!("this host mounts cgroup2 at {dir};"))
        .unwrap_or_else(|| "this host has no cgroup2 mount".to_owned());
    for command in ["swap", "faults"] {
        let run = memtrace(&[command, "--cgroup", &v1, "--duration", "1s"]);
        assert_eq!(run.code(), 2, "{}", run.describe());
        for words in [
            format!("memtrace: {v1} is a cgroup v1 directory"),
            "--cgroup takes a cgroup v2 one".to_owned(),
            cgroup2.clone(),
        ] {
            assert!(
                run.stderr.contains(&words),
                "stderr lacks {words:?}\n{}",
                run.describe()
            );
        }
    }
}

#[test]
fn unprivileged_user_is_told_what_to_do() {
    if !tests::require_root() {
        return;
    }
    if !tests::on_path("setpriv") {
        if tests::in_ci() {
            panic!("`setpriv` (util-linux) is not on PATH and CI=true");
        }
        eprintln!("skipped: `setpriv` (util-linux) is not on PATH");
        return;
    }
    let _serial = serial();
    let run = run_command(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(memtrace_bin())
            .args(["faults", "--duration", "1s"])
            .current_dir("/"),
    );
    assert_eq!(
        run.code(),
        1,
        "memtrace as nobody: expected exit 1\n{}",
        run.describe()
    );
    for word in ["memtrace: permission denied", "root", "CAP_BPF", "sudo"] {
        assert!(
            run.stderr.contains(word),
            "memtrace as nobody: stderr lacks {word:?}\n{}",
            run.describe()
        );
    }
}

#[test]
fn sigterm_while_tracing_system_wide_writes_the_report() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("sigterm");
    let out = dir.join("report.json");
    let mut tracer = spawn_memtrace(&[
        "faults",
        "--format",
        "json",
        "--output",
        out.to_str().unwrap(),
    ]);
    tracer.wait_attached();
    // Something to see: a workload faulting while memtrace traces the whole system.
    let workload = tests::run_workload("fault_touch", &["2000"]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let memtrace_pid = tracer.pid();
    tracer.signal(libc::SIGTERM);
    let run = tracer.wait();
    assert_eq!(run.code(), 0, "memtrace after SIGTERM\n{}", run.describe());
    let text = fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("no report at {}: {e}\n{}", out.display(), run.describe()));
    let report: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {text}\n{}", run.describe()));
    assert_eq!(report["command"], "faults", "{text}");
    assert_eq!(report["target"], "system-wide", "{text}");
    assert!(report["exit"].is_null(), "{text}");
    let pids: Vec<u64> = report["processes"]
        .as_array()
        .unwrap_or_else(|| panic!("no processes in {text}"))
        .iter()
        .filter_map(|row| row["pid"].as_u64())
        .collect();
    assert!(
        pids.contains(&u64::from(workload.pid)),
        "the workload {} is not in the system-wide report: {text}",
        workload.pid
    );
    // memtrace never traces itself: its work on events would make more events.
    assert!(
        !pids.contains(&u64::from(memtrace_pid)),
        "memtrace traced itself (pid {memtrace_pid}): {text}"
    );
}

#[test]
fn follow_children_needs_a_target() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    expect_failure(
        &["--follow-children", "--duration", "1s"],
        2,
        &["memtrace: --follow-children needs a target"],
    );
}

#[test]
fn pid_and_command_conflict() {
    let _serial = serial();
    expect_failure(&["--pid", "1", "--", "true"], 2, &["cannot be used with"]);
}

/// `--output` at a path where someone planted a symbolic link (say in /tmp, with memtrace
/// running as root): refused, and the link's target untouched.
#[test]
fn a_planted_symlink_is_not_written_through() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("planted-link");
    let victim = dir.join("victim");
    fs::write(&victim, "precious\n").unwrap();
    let link = dir.join("report.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let link_arg = link.to_str().unwrap();
    expect_failure(
        &["--output", link_arg, "--", "true"],
        2,
        &[
            &format!("--output {link_arg}: is a symbolic link"),
            "another path",
        ],
    );
    let me = std::process::id().to_string();
    let run = memtrace(&["stat", "--output", link_arg, &me]);
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
}

/// eBPF programs loaded now (bpftool's count).
fn programs_loaded() -> usize {
    let run = run_command(Command::new("bpftool").args(["prog", "list"]));
    assert_eq!(run.code(), 0, "{}", run.describe());
    run.stdout
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|id| id.ends_with(':'))
        })
        .count()
}

/// kill -9 of memtrace mid-trace: every program and link it loaded goes with it (the kernel
/// holds them by memtrace's file descriptors), and the traced process carries on.
#[test]
fn kill_9_leaves_no_program_behind_and_the_target_unharmed() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    // Earlier tests' memtraces leave their programs' detaching to a child: let it finish.
    tests::wait_for_detaching_memtraces();
    let before = programs_loaded();
    let mut workload = tests::spawn_waiting("fault_touch", &["20000"]);
    let pid = workload.pid.to_string();
    let mut tracer = spawn_memtrace(&["faults", "--pid", &pid, "--duration", "60s"]);
    tracer.wait_attached();
    let during = programs_loaded();
    assert!(
        during > before,
        "{during} programs while tracing, {before} before"
    );
    tracer.signal(libc::SIGKILL);
    let run = tracer.wait();
    assert_eq!(
        run.status.signal(),
        Some(libc::SIGKILL),
        "{}",
        run.describe()
    );
    // The kernel frees them as the last reference goes; give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut after = programs_loaded();
    while after != before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        after = programs_loaded();
    }
    assert_eq!(
        after, before,
        "{during} while tracing, {before} before, {after} after"
    );
    // The target runs its phase and exits cleanly.
    let report = workload.go();
    assert!(report.phase_minflt >= 20_000, "{report:?}");
    workload.finish();
}

/// A 4 KiB RLIMIT_MEMLOCK, too small for any map on kernels that still charge maps to it:
/// memtrace lifts it itself (as bpftrace does) and traces as usual.
#[test]
fn a_tiny_memlock_limit_is_lifted() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let run = run_command(
        Command::new("prlimit")
            .arg("--memlock=4096:4096")
            .arg(memtrace_bin())
            .args(["faults", "--", "true"]),
    );
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert!(run.stdout.contains("PROCESSES"), "{}", run.describe());
}

/// SIGTERM and Ctrl-C (SIGINT) during every tracing command: the report is still written,
/// whole, and memtrace exits 0.
#[test]
fn every_command_writes_its_report_when_stopped() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let mut workload = tests::spawn_waiting("fault_touch", &["2000"]);
    let pid = workload.pid.to_string();
    let commands: [&[&str]; 6] = [
        &["faults", "--pid", &pid],
        &["swap", "--pid", &pid],
        &["malloc", "--pid", &pid],
        &["pages", "--pid", &pid],
        &["oom"],
        &["diagnose", "--pid", &pid],
    ];
    for (i, command) in commands.iter().enumerate() {
        let signal = if i % 2 == 0 {
            libc::SIGTERM
        } else {
            libc::SIGINT
        };
        let dir = TempDir::new("stopped");
        let out = dir.join("report.json");
        let mut argv: Vec<&str> = command.to_vec();
        argv.extend(["--format", "json", "--output", out.to_str().unwrap()]);
        let mut tracer = spawn_memtrace(&argv);
        tracer.wait_attached();
        std::thread::sleep(std::time::Duration::from_millis(300));
        tracer.signal(signal);
        let run = tracer.wait();
        assert_eq!(
            run.code(),
            0,
            "memtrace {argv:?} after signal {signal}\n{}",
            run.describe()
        );
        let text = fs::read_to_string(&out)
            .unwrap_or_else(|e| panic!("memtrace {argv:?}: no report ({e})\n{}", run.describe()));
        let report: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("memtrace {argv:?}: not JSON ({e}): {text}"));
        assert_eq!(report["command"], command[0], "{text}");
    }
    workload.go();
    workload.finish();
}

/// A binary without symbols: its frames are shown as addresses, in its module; nothing fails.
#[test]
fn a_stripped_binary_shows_module_and_offset() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("stripped");
    let stripped = dir.join("fault_touch_stripped");
    fs::copy(tests::workload("fault_touch"), &stripped).unwrap();
    let strip = run_command(Command::new("strip").arg(&stripped));
    assert_eq!(strip.code(), 0, "{}", strip.describe());
    let out = dir.join("report.json");
    let run = memtrace(&[
        "faults",
        "--format",
        "json",
        "--output",
        out.to_str().unwrap(),
        "--",
        stripped.to_str().unwrap(),
        "20000",
    ]);
    assert_eq!(run.code(), 0, "{}", run.describe());
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&out).unwrap()).unwrap();
    let top = &report["stacks"][0];
    let frame = &top["frames_detail"][0];
    assert!(
        frame["function"].is_null(),
        "a name in a stripped binary? {top}"
    );
    assert_eq!(frame["module"], "fault_touch_stripped", "{top}");
    // Named by its module and its offset in the file.
    let offset = frame["offset"].as_u64().unwrap();
    assert_eq!(
        top["frames"][0],
        format!("fault_touch_stripped+{offset:#x}"),
        "{top}"
    );
}

/// Puts tracefs back at /sys/kernel/tracing if it is missing, whatever the test did.
struct TracefsBack;

impl Drop for TracefsBack {
    fn drop(&mut self) {
        if !Path::new("/sys/kernel/tracing/events").is_dir() {
            let _ = Command::new("mount")
                .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
                .status();
        }
    }
}

/// tracefs unmounted: memtrace mounts it again itself (as bpftrace does), says so with -v,
/// and traces.
#[test]
fn tracefs_unmounted_is_mounted_again() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let _back = TracefsBack;
    let umount = run_command(Command::new("umount").arg("/sys/kernel/tracing"));
    assert_eq!(umount.code(), 0, "{}", umount.describe());
    assert!(!Path::new("/sys/kernel/tracing/events").is_dir());
    let run = memtrace(&["-v", "faults", "--", "true"]);
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert!(run.stderr.contains("mounted tracefs"), "{}", run.describe());
    assert!(Path::new("/sys/kernel/tracing/events").is_dir());
}

/// `memtrace <argv>` with its tables cut to `entries` (MEMTRACE_MAX_MAP_ENTRIES), its JSON
/// report and its table report's stdout.
fn with_tiny_tables(entries: &str, argv: &[&str]) -> (serde_json::Value, String) {
    let dir = TempDir::new("tiny-tables");
    let out = dir.join("report.json");
    let json = |format: &str, output: Option<&Path>| {
        let mut command = Command::new(memtrace_bin());
        command.env("MEMTRACE_MAX_MAP_ENTRIES", entries);
        command.args(&argv[..1]).args(["--format", format]);
        if let Some(path) = output {
            command.arg("--output").arg(path);
        }
        let run = run_command(command.args(&argv[1..]));
        assert_eq!(run.code(), 0, "{}", run.describe());
        run
    };
    json("json", Some(&out));
    let table = json("table", None);
    let report = serde_json::from_str(&fs::read_to_string(&out).unwrap()).unwrap();
    (report, table.stdout)
}

/// Tables too small for what is traced (two entries): the stacks and counts that did not fit
/// are counted, and both reports say so.
#[test]
fn full_tables_are_counted_and_reported() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    // A shell running a command: dozens of distinct stacks and kinds of page allocation.
    let shell = ["--", "sh", "-c", "ls -R /usr/share/doc > /dev/null"];
    let mut faults = vec!["faults"];
    faults.extend(shell);
    let (report, table) = with_tiny_tables("2", &faults);
    let errors = report["stack_errors"].as_u64().unwrap();
    assert!(errors > 0, "{report}");
    assert!(table.contains("stacks could not be stored"), "{table}");
    let mut pages = vec!["pages", "--stacks", "none"];
    pages.extend(shell);
    let (report, table) = with_tiny_tables("2", &pages);
    let full = report["counts_full"].as_u64().unwrap();
    assert!(full > 0, "{report}");
    assert!(table.contains("lower bound"), "{table}");
    // A bad value is refused before anything is traced.
    let run = run_command(
        Command::new(memtrace_bin())
            .env("MEMTRACE_MAX_MAP_ENTRIES", "many")
            .args(["faults", "--", "true"]),
    );
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(
        run.stderr.contains("MEMTRACE_MAX_MAP_ENTRIES=many"),
        "{}",
        run.describe()
    );
}
