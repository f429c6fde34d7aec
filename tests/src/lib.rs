//! Helpers for memtrace's integration tests (`tests/tests/*.rs`): the C workloads built by
//! `build.rs`, their JSON oracle lines, the memtrace binary under test, and the root check.
//!
//! Tests panic with context rather than return `Result`.

pub mod cgroup2;
pub mod chains;
pub mod perf_script;
pub mod postgres;
pub mod pprof_raw;
pub mod readelf;
pub mod redis;
pub mod swap_env;
pub mod traced;

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde::Deserialize;

/// Folder holding the compiled workloads (`<workspace target>/workloads`).
pub const WORKLOADS_DIR: &str = env!("WORKLOADS_DIR");

/// The workspace's target folder (honours `CARGO_TARGET_DIR` at build time).
pub const TARGET_DIR: &str = env!("MEMTRACE_TARGET_DIR");

/// Path of the compiled workload `name` (e.g. `"fault_touch"`); panics if it is missing.
pub fn workload(name: &str) -> PathBuf {
    let path = PathBuf::from(WORKLOADS_DIR).join(name);
    assert!(
        path.is_file(),
        "workload {} not built (tests/build.rs builds it)",
        path.display()
    );
    path
}

/// Debian's CPython 3.11 (libpython linked in, no frame pointers), the interpreter the Python
/// tests run: not a `python3` earlier on PATH (pyenv's), whose layout may differ.
pub const PYTHON: &str = "/usr/bin/python3.11";

/// Path of the Python workload `name` (e.g. `"alloc_lines.py"`) in `tests/workloads/python/`;
/// panics if it is missing. Run it with [`PYTHON`].
pub fn python_workload(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("workloads/python")
        .join(name);
    assert!(path.is_file(), "no Python workload {}", path.display());
    path
}

/// True when [`PYTHON`] is installed. Otherwise: in CI panics (`cargo xtask setup` installs
/// python3); elsewhere prints a skip note and returns false.
pub fn require_python() -> bool {
    if Path::new(PYTHON).is_file() {
        return true;
    }
    assert!(
        !in_ci(),
        "no {PYTHON} and CI=true: `cargo xtask setup` installs python3"
    );
    eprintln!("skipped: no {PYTHON}");
    false
}

/// The memtrace binary under test: `$MEMTRACE_BIN` if set, else
/// `<workspace target>/<debug|release>/memtrace` (same profile as the tests). Building it is the
/// caller's concern.
pub fn memtrace_bin() -> PathBuf {
    match std::env::var_os("MEMTRACE_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => PathBuf::from(TARGET_DIR)
            .join(env!("MEMTRACE_PROFILE"))
            .join("memtrace"),
    }
}

/// True when the tests run as root. Otherwise: in CI (`CI=true`) panics, since a test that lacks
/// privileges must fail there, never skip; elsewhere prints a skip note and returns false.
///
/// Use as `if !tests::require_root() { return; }`.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("this test needs root (eBPF) and CI=true: run the tests as root, CI never skips");
    }
    eprintln!("skipped: this test needs root (eBPF); run as root to include it");
    false
}

/// The JSON line a workload prints at its end. `phase_*` are the deltas of its own
/// `getrusage(RUSAGE_SELF)` around its main phase; `minflt`/`majflt` are the totals at the end.
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    pub pid: u32,
    pub minflt: u64,
    pub majflt: u64,
    pub phase_minflt: u64,
    pub phase_majflt: u64,
    pub elapsed_s: f64,
    /// Workload-specific members (`pages`, `reads`, `children`, `tids`, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    /// A workload-specific number, e.g. `report.u64("children_minflt")`; panics if absent.
    pub fn u64(&self, key: &str) -> u64 {
        self.extra
            .get(key)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("no number {key:?} in workload report {self:?}"))
    }

    /// A workload-specific real number, e.g. `report.f64("at_once_max_us")`; panics if absent.
    pub fn f64(&self, key: &str) -> f64 {
        self.extra
            .get(key)
            .and_then(|v| v.as_f64())
            .unwrap_or_else(|| panic!("no number {key:?} in workload report {self:?}"))
    }

    /// A workload-specific list of pids, e.g. `report.pids("children")` or `report.pids("tids")`.
    pub fn pids(&self, key: &str) -> Vec<u32> {
        let list = self.extra.get(key).and_then(|v| v.as_array());
        let list = list.unwrap_or_else(|| panic!("no list {key:?} in workload report {self:?}"));
        list.iter()
            .map(|v| v.as_u64().expect("pid") as u32)
            .collect()
    }
}

/// Parses a workload's report: the last line of `stdout` that starts with `{`.
pub fn parse_report(stdout: &str) -> anyhow::Result<Report> {
    let Some(line) = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
    else {
        bail!("no JSON line in workload output: {stdout:?}");
    };
    serde_json::from_str(line).with_context(|| format!("bad workload JSON line: {line}"))
}

/// Runs workload `name` with `args` to completion (no tracer) and returns its report; panics
/// with its stderr if it fails.
pub fn run_workload(name: &str, args: &[&str]) -> Report {
    let out = Command::new(workload(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run workload {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "workload {name} {args:?} failed: {}\n{stderr}",
        out.status
    );
    parse_report(&stdout).unwrap_or_else(|e| panic!("workload {name}: {e:#}\nstderr: {stderr}"))
}

/// A workload started with `--wait` (and `--linger` by default): it has printed `ready <pid>`
/// and waits for [`Waiting::go`], so a tracer can be attached to [`Waiting::pid`] first.
pub struct Waiting {
    pub pid: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

/// Starts workload `name` with `args` plus `--wait --linger` and waits for its `ready` line.
pub fn spawn_waiting(name: &str, args: &[&str]) -> Waiting {
    let mut command = Command::new(workload(name));
    command.args(args);
    spawn_waiting_command(command)
}

/// Starts `command`, a workload that takes `--wait` and `--linger` as the C workloads do (a
/// Python one: [`PYTHON`] with its script), with those two flags added, and waits for its
/// `ready` line.
pub fn spawn_waiting_command(mut command: Command) -> Waiting {
    let mut child = command
        .args(["--wait", "--linger"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run workload {command:?}: {e}"));
    let stdin = child.stdin.take();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let pid = line
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("workload {command:?}: expected `ready <pid>`, got {line:?}"));
    Waiting {
        pid,
        child,
        stdin,
        stdout,
    }
}

impl Waiting {
    /// Releases the workload into its main phase and returns its report, read once the phase
    /// is over; the process stays alive (lingering) until [`Waiting::finish`] or drop.
    pub fn go(&mut self) -> Report {
        self.release();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        parse_report(&line).unwrap_or_else(|e| panic!("workload {}: {e:#}", self.pid))
    }

    /// Releases the workload and reads what it prints until it ends (a workload that never
    /// prints its report: one killed on the way); its exit status and output.
    pub fn go_to_the_end(mut self) -> (std::process::ExitStatus, String) {
        self.release();
        drop(self.stdin.take());
        let mut output = String::new();
        self.stdout.read_to_string(&mut output).unwrap();
        (self.child.wait().unwrap(), output)
    }

    /// Lets the lingering workload exit and checks that it succeeded.
    pub fn finish(mut self) {
        self.release();
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "workload {} failed: {status}", self.pid);
    }

    fn release(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            // The workload may already be gone; finish() reports its status then.
            let _ = stdin.write_all(b"\n").and_then(|()| stdin.flush());
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        // A panicking test leaves no process behind (a no-op after finish()).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch file path under `<workspace target>/tmp/` (disk-backed, unlike a tmpfs /tmp, so
/// `fault_file` gets real major faults). The caller removes the file.
pub fn scratch_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(TARGET_DIR).join("tmp");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.{}", std::process::id()))
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Serializes the tests that run memtrace (each run attaches to every CPU, and a concurrent
/// run's workload would disturb the counts). Hold the guard for the whole test; a test that
/// panicked while holding it does not poison the others.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A scratch directory under `<workspace target>/tmp/`, removed (with its contents) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A fresh, empty directory named after `name`, this process and a counter.
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = scratch_path(&format!("{name}.d{n}"));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// How long any one memtrace run in the tests may take before it is killed as hung.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A finished process: its status and everything it wrote.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The exit code; panics (with the output) if a signal ended the process.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {}\n{}", self.status, self.describe()))
    }

    /// Status, stdout and stderr, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Reads all of `pipe` on a thread.
fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for `child` until `timeout`; on timeout kills it and returns None.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `cmd` to completion (stdin null, output captured); panics with the output if it takes
/// longer than [`RUN_TIMEOUT`].
pub fn run_command(cmd: &mut Command) -> Run {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let status = wait_timeout(&mut child, RUN_TIMEOUT);
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    match status {
        Some(status) => Run {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{cmd:?} hung for {RUN_TIMEOUT:?} and was killed\n--- stdout ---\n{stdout}\n\
             --- stderr ---\n{stderr}"
        ),
    }
}

/// Runs the memtrace binary under test with `args` to completion.
pub fn memtrace<S: AsRef<OsStr>>(args: &[S]) -> Run {
    run_command(Command::new(memtrace_bin()).args(args))
}

/// A memtrace started in the background (stdin null, stdout and stderr captured), e.g. to trace
/// a pid or a cgroup until it is sent SIGINT. Killed on drop if still running.
pub struct Background {
    child: Child,
    stderr_lines: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    stderr_thread: Option<JoinHandle<()>>,
    stdout_thread: Option<JoinHandle<String>>,
}

/// Starts memtrace with `args` in the background.
pub fn spawn_memtrace<S: AsRef<OsStr>>(args: &[S]) -> Background {
    let mut command = Command::new(memtrace_bin());
    command.args(args);
    spawn_background(command)
}

/// `command` (memtrace, or a wrapper that runs it) in the background, as `spawn_memtrace`.
pub fn spawn_background(mut command: Command) -> Background {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (send, stderr_lines) = mpsc::channel();
    let stderr_thread = std::thread::spawn(move || {
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    Background {
        child,
        stderr_lines,
        stderr_seen: Vec::new(),
        stderr_thread: Some(stderr_thread),
        stdout_thread: Some(stdout),
    }
}

impl Background {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to a minute) for memtrace's `memtrace: tracing ...` line on stderr, printed
    /// once its eBPF programs are attached; panics with its stderr if it exits or hangs first.
    pub fn wait_attached(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    let attached = line.starts_with("memtrace: tracing");
                    self.stderr_seen.push(line);
                    if attached {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "memtrace printed no `memtrace: tracing` line within a minute; stderr so \
                     far:\n{}",
                    self.stderr_seen.join("\n")
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().unwrap();
                    panic!(
                        "memtrace ended ({status}) before attaching; stderr:\n{}",
                        self.stderr_seen.join("\n")
                    )
                }
            }
        }
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) to memtrace.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet, so its
        // pid cannot have been reused.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(
            rc,
            0,
            "kill({}, {signal}): {}",
            self.child.id(),
            std::io::Error::last_os_error()
        );
    }

    /// Waits for memtrace to exit (killing it after [`RUN_TIMEOUT`]) and returns its output.
    pub fn wait(mut self) -> Run {
        let status = wait_timeout(&mut self.child, RUN_TIMEOUT);
        if let Some(thread) = self.stderr_thread.take() {
            let _ = thread.join();
        }
        self.stderr_seen.extend(self.stderr_lines.try_iter());
        let stdout = self
            .stdout_thread
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default();
        let mut stderr = self.stderr_seen.join("\n");
        if !stderr.is_empty() {
            stderr.push('\n');
        }
        match status {
            Some(status) => Run {
                status,
                stdout,
                stderr,
            },
            None => panic!(
                "memtrace hung for {RUN_TIMEOUT:?} after it was told to stop, and was killed\n\
                 --- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            ),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // A panicking test leaves no tracer behind (a no-op after wait()).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes a named pipe at `path` (its opener for writing waits for a reader, and the reverse).
pub fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo has no other preconditions.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(
        rc,
        0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// True when `name` is an executable file in a directory of `$PATH`.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let candidate = dir.join(name);
            candidate.is_file()
                && std::fs::metadata(&candidate).is_ok_and(|m| {
                    std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                })
        })
    })
}

/// True when running in CI (`CI=true`), where missing tools fail tests instead of skipping them.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `go tool pprof -top <args> PROFILE`, a real pprof reader (Debian's golang-go), with its
/// caches in `scratch`. None when go is missing outside CI; under CI=true, a panic.
pub fn go_pprof_top(profile: &Path, args: &[&str], scratch: &Path) -> Option<Run> {
    go_pprof(&["-top"], profile, args, scratch)
}

/// `go tool pprof <mode> <args> PROFILE` (see [`go_pprof_top`]).
pub fn go_pprof(mode: &[&str], profile: &Path, args: &[&str], scratch: &Path) -> Option<Run> {
    if !on_path("go") {
        if in_ci() {
            panic!("`go` is not on PATH and CI=true: `cargo xtask setup` installs golang-go");
        }
        eprintln!("skipped: `go` is not on PATH (install golang-go to include this test)");
        return None;
    }
    let home = scratch.join("home");
    std::fs::create_dir_all(&home).unwrap();
    Some(run_command(
        Command::new("go")
            .args(["tool", "pprof"])
            .args(mode)
            .args(args)
            .arg(profile)
            .env("HOME", &home)
            .env("GOCACHE", home.join("gocache"))
            .env("PPROF_TMPDIR", &home)
            .env("GOTOOLCHAIN", "local"),
    ))
}

/// A field of /proc/PID/status in KiB (`VmRSS:`, `VmSwap:`, ...), the kernel's own figure.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix(" kB")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// GET `path` from an HTTP server on `addr` (the agent): its status line and body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(String, Vec<u8>)> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("GET {path}: no end of headers")))?;
    let status = String::from_utf8_lossy(&response[..end])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok((status, response[end + 4..].to_vec()))
}

/// Whether the kernel has tracepoint `category/name` (tracefs, which memtrace mounts when
/// missing, or its old place under debugfs).
pub fn tracepoint_exists(event: &str) -> bool {
    [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|root| Path::new(root).join(event).is_dir())
}

/// Waits (up to 30 s) until no memtrace process runs: each leaves the kernel's detaching of
/// its programs to a child that outlives it by a few seconds (`Tracer::hand_off_detach`).
pub fn wait_for_detaching_memtraces() {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && memtrace_running() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a live process named memtrace exists (zombies left to an init that does not reap
/// them do not count).
fn memtrace_running() -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        stat.contains("(memtrace)") && is_live(&stat)
    })
}

/// Whether `pid` is a running process (not gone, not a zombie).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| is_live(&stat))
}

/// Whether a /proc/PID/stat line is a live process's: its state (after the parenthesised
/// comm, which may hold spaces) is neither zombie nor dead.
fn is_live(stat: &str) -> bool {
    let state = stat
        .rsplit(") ")
        .next()
        .and_then(|rest| rest.chars().next());
    state.is_some_and(|s| s != 'Z' && s != 'X')
}

/// Whether `chromium` is here to check HTML pages; with CI=true its absence fails the test.
pub fn require_chromium() -> bool {
    if on_path("chromium") {
        return true;
    }
    assert!(
        !in_ci(),
        "`chromium` is not on PATH and CI=true: `cargo xtask setup` installs it"
    );
    eprintln!("skipped: no `chromium` (install Debian's chromium package)");
    false
}

/// Opens `page` in headless Chromium and takes a screenshot (`name`, in `scratch`), which
/// is also kept in `target/test-artifacts/`: (the screenshot, the kept copy). Chromium must
/// exit cleanly and log nothing on its console (a page error, an asset it failed to load).
pub fn chromium_screenshot(page: &Path, scratch: &Path, name: &str) -> (PathBuf, PathBuf) {
    let screenshot = scratch.join(name);
    let run = run_command(
        Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1000,1800",
            ])
            .arg(format!(
                "--user-data-dir={}",
                scratch.join("chromium-profile").display()
            ))
            .arg(format!("--screenshot={}", screenshot.display()))
            .arg(format!("file://{}", page.display())),
    );
    assert_eq!(run.code(), 0, "{}", run.describe());
    let console: Vec<&str> = (run.stderr.lines())
        .filter(|l| l.contains("CONSOLE") || l.contains("Failed to load"))
        .collect();
    assert!(console.is_empty(), "console: {console:#?}");
    let artefact = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-artifacts")
        .join(name);
    std::fs::create_dir_all(artefact.parent().unwrap()).unwrap();
    std::fs::copy(&screenshot, &artefact).unwrap();
    (screenshot, artefact)
}

/// Pixels of exactly this color in a PNG.
pub fn count_pixels(path: &Path, rgb: [u8; 3]) -> usize {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buffer).unwrap();
    let channels = info.color_type.samples();
    buffer[..info.buffer_size()]
        .chunks(channels)
        .filter(|p| p.len() >= 3 && p[..3] == rgb)
        .count()
}
