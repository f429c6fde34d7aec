//! perf's view of the same events, the oracle for user stacks: `perf record --call-graph
//! dwarf` (which copies the stack at each event and unwinds it afterwards from .eh_frame,
//! with elfutils or libunwind) on a pid or a command, and `perf script`'s callchains parsed
//! into chains of function names with counts.
use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::{in_ci, on_path, run_command, TempDir};

/// perf's name for a frame it has no symbol for (and for a failed unwinding step).
pub const UNKNOWN: &str = "[unknown]";

/// One frame of a callchain as `perf script -F ip,sym,dso` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub address: u64,
    /// The function, without a symbol version (`__libc_start_main`, not
    /// `__libc_start_main@@GLIBC_2.34`); [`UNKNOWN`] when perf has none.
    pub symbol: String,
    /// The file the address is in (`[kernel.kallsyms]` for the kernel, `[unknown]`).
    pub module: String,
}

impl Frame {
    /// A kernel frame; also perf's marker of a failed unwinding step (address all ones),
    /// which is no user frame.
    pub fn is_kernel(&self) -> bool {
        self.module.starts_with("[kernel") || self.address >= 0xffff_8000_0000_0000
    }
}

/// One event with its callchain, innermost frame first (kernel frames, then user frames).
#[derive(Debug, Clone)]
pub struct Sample {
    pub comm: String,
    pub pid: u32,
    pub tid: u32,
    /// The event's weight (1 per event with `-c 1`).
    pub period: u64,
    pub event: String,
    pub frames: Vec<Frame>,
}

impl Sample {
    /// The user frames' function names, innermost first.
    pub fn user_chain(&self) -> Vec<String> {
        self.frames
            .iter()
            .filter(|f| !f.is_kernel())
            .map(|f| f.symbol.clone())
            .collect()
    }
}

/// A symbol without its version: `malloc@@GLIBC_2.2.5` → `malloc`.
fn unversioned(symbol: &str) -> &str {
    match symbol.find('@') {
        Some(at) if at > 0 => &symbol[..at],
        _ => symbol,
    }
}

/// Parses `perf script -F comm,pid,tid,period,event,ip,sym,dso --no-inline` output: a header
/// line per sample (`COMM PID/TID PERIOD EVENT:`, the comm may hold spaces), then one
/// indented line per frame (`ADDRESS SYMBOL (MODULE)`), then a blank line.
pub fn parse(text: &str) -> anyhow::Result<Vec<Sample>> {
    let mut samples: Vec<Sample> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let context = || format!("perf script line {}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let Some(sample) = samples.last_mut() else {
                bail!("a frame before any sample header: {}", context());
            };
            sample
                .frames
                .push(parse_frame(line.trim()).with_context(context)?);
        } else {
            samples.push(parse_header(line).with_context(context)?);
        }
    }
    Ok(samples)
}

/// `unwind_chain 16668/16668          1 page-faults: `
fn parse_header(line: &str) -> anyhow::Result<Sample> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let Some(at) = fields.iter().position(|f| {
        f.split_once('/')
            .is_some_and(|(pid, tid)| pid.parse::<u32>().is_ok() && tid.parse::<u32>().is_ok())
    }) else {
        bail!("no PID/TID field");
    };
    let (pid, tid) = fields[at].split_once('/').unwrap();
    let [period, event, ..] = fields[at + 1..] else {
        bail!("no period and event after PID/TID");
    };
    Ok(Sample {
        // Spaces inside a comm are kept as single spaces, which is all a test compares.
        comm: fields[..at].join(" "),
        pid: pid.parse()?,
        tid: tid.parse()?,
        period: period.parse().context("period")?,
        event: event.trim_end_matches(':').to_owned(),
        frames: Vec::new(),
    })
}

/// `55555555517a touch_pages (/path/to/unwind_chain)`; the symbol may hold spaces and
/// parentheses (C++, Rust), the module is the last parenthesised group.
fn parse_frame(line: &str) -> anyhow::Result<Frame> {
    let Some((address, rest)) = line.split_once(' ') else {
        bail!("no symbol after the address");
    };
    let address = u64::from_str_radix(address, 16).context("address")?;
    let rest = rest.trim();
    let (symbol, module) = match rest.rfind(" (") {
        Some(open) if rest.ends_with(')') => (&rest[..open], &rest[open + 2..rest.len() - 1]),
        _ => (rest, UNKNOWN),
    };
    Ok(Frame {
        address,
        symbol: unversioned(symbol.trim()).to_owned(),
        module: module.to_owned(),
    })
}

/// Samples of `pid` grouped by user chain: (chain, summed period), heaviest first (ties by
/// chain, so the order is stable). Samples without user frames (faults the kernel took on
/// its own behalf, e.g. in execve) are left out.
pub fn user_chains(samples: &[Sample], pid: Option<u32>) -> Vec<(Vec<String>, u64)> {
    let mut counts: HashMap<Vec<String>, u64> = HashMap::new();
    for sample in samples.iter().filter(|s| pid.is_none_or(|p| s.pid == p)) {
        let chain = sample.user_chain();
        if !chain.is_empty() {
            *counts.entry(chain).or_default() += sample.period;
        }
    }
    let mut chains: Vec<_> = counts.into_iter().collect();
    chains.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    chains
}

/// Average number of user frames per event, weighted by period.
pub fn average_depth(chains: &[(Vec<String>, u64)]) -> f64 {
    let events: u64 = chains.iter().map(|(_, n)| n).sum();
    let frames: u64 = chains.iter().map(|(c, n)| c.len() as u64 * n).sum();
    frames as f64 / events.max(1) as f64
}

/// Whether a chain of perf's names the same functions as `other`, frame by frame, by `same`
/// (e.g. `chains::Aliases::same`, or `==`); a frame perf could not name ([`UNKNOWN`]) matches
/// any.
pub fn same_functions<S: AsRef<str>>(
    perf: &[String],
    other: &[S],
    same: impl Fn(&str, &str) -> bool,
) -> bool {
    perf.len() == other.len()
        && perf
            .iter()
            .zip(other)
            .all(|(p, o)| p == UNKNOWN || same(p, o.as_ref()))
}

/// True when perf is installed. Otherwise: under `CI=true` panics (`cargo xtask setup`
/// installs linux-perf), elsewhere prints a skip note and returns false.
pub fn require_perf() -> bool {
    if on_path("perf") {
        return true;
    }
    assert!(
        !in_ci(),
        "`perf` is not on PATH and CI=true: `cargo xtask setup` installs linux-perf"
    );
    eprintln!("skipped: `perf` is not on PATH (install linux-perf to include this test)");
    false
}

/// perf's buffer: 64 MiB per CPU (with its default, perf drops most samples of a burst).
const BUFFER_PAGES: &str = "16384";

/// How perf records: one sample per event (`-c 1`), each with a copy of `stack_bytes` of the
/// user stack. The copy ends early at a stack page that is not present (perf copies without
/// faulting), and perf's unwinding stops where the copy ends; every copy costs its size.
fn record_args(event: &str, stack_bytes: u32, data: &Path) -> Vec<String> {
    if event.contains(':') {
        mount_tracefs();
    }
    vec![
        "record".into(),
        "-q".into(),
        "-e".into(),
        event.into(),
        "-c".into(),
        "1".into(),
        "--call-graph".into(),
        format!("dwarf,{stack_bytes}"),
        "-m".into(),
        BUFFER_PAGES.into(),
        "-o".into(),
        data.to_str().unwrap().into(),
    ]
}

/// perf finds a tracepoint's id in tracefs, which a fresh machine has not mounted (memtrace
/// mounts it when it needs it, perf does not).
fn mount_tracefs() {
    const TRACEFS: &str = "/sys/kernel/tracing";
    if Path::new(TRACEFS).join("events").is_dir() {
        return;
    }
    let run = run_command(Command::new("mount").args(["-t", "tracefs", "tracefs", TRACEFS]));
    assert!(run.status.success(), "mounting tracefs: {}", run.describe());
}

/// `perf script` on `data`: every sample, kernel and user frames, inlined functions left
/// out (one frame per address, as memtrace names them).
pub fn script(data: &Path) -> Vec<Sample> {
    let run = run_command(
        Command::new("perf")
            .args([
                "script",
                "--no-inline",
                "-F",
                "comm,pid,tid,period,event,ip,sym,dso",
            ])
            .arg("-i")
            .arg(data),
    );
    assert!(run.status.success(), "perf script: {}", run.describe());
    parse(&run.stdout).unwrap_or_else(|e| panic!("{e:#}\n{}", run.describe()))
}

/// `perf record -e EVENT ... -- COMMAND` to its end: the samples and the command's stdout.
pub fn record_command(event: &str, stack_bytes: u32, command: &[&str]) -> (Vec<Sample>, String) {
    let dir = TempDir::new("perf-record");
    let data = dir.join("perf.data");
    let run = run_command(
        Command::new("perf")
            .args(record_args(event, stack_bytes, &data))
            .arg("--")
            .args(command),
    );
    assert!(run.status.success(), "perf record: {}", run.describe());
    (script(&data), run.stdout)
}

/// `perf record` attached to a running process, its events enabled only once perf has
/// attached (perf's control fifo acknowledges the `enable`).
pub struct PerfRecord {
    child: Child,
    data: PathBuf,
    /// Holds the data and the control fifos; removed on drop.
    _dir: TempDir,
}

impl PerfRecord {
    /// Starts recording `event` (e.g. `page-faults`, `kmem:mm_page_alloc`) in `pid`'s threads
    /// (see [`record_command`] for `stack_bytes`), and returns once the events are enabled.
    pub fn attach(event: &str, pid: u32, stack_bytes: u32) -> Self {
        let dir = TempDir::new("perf-attach");
        let data = dir.join("perf.data");
        let (control, ack) = (dir.join("control"), dir.join("ack"));
        for fifo in [&control, &ack] {
            crate::mkfifo(fifo);
        }
        let child = Command::new("perf")
            .args(record_args(event, stack_bytes, &data))
            .args(["-D", "-1", "--control"])
            .arg(format!("fifo:{},{}", control.display(), ack.display()))
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run perf: {e}"));
        let mut perf = Self {
            child,
            data,
            _dir: dir,
        };
        // Opening a fifo blocks until perf opens its other end: a thread does it, bounded.
        let (send, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let acked = (|| -> std::io::Result<String> {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&control)?
                    .write_all(b"enable\n")?;
                let mut line = String::new();
                BufReader::new(std::fs::File::open(&ack)?).read_line(&mut line)?;
                Ok(line)
            })();
            let _ = send.send(acked);
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match receive.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(line)) if line.trim() == "ack" => return perf,
                Ok(result) => panic!("perf's control fifo answered {result:?}"),
                Err(_) => {
                    if let Some(status) = perf.child.try_wait().unwrap() {
                        panic!("perf record -p {pid} ended ({status}) before enabling its events");
                    }
                    assert!(
                        Instant::now() < deadline,
                        "perf record -p {pid} did not enable its events in 30 s"
                    );
                }
            }
        }
    }

    /// Stops perf (SIGINT, as Ctrl-C) and returns its samples.
    pub fn stop(mut self) -> Vec<Sample> {
        // SAFETY: kill has no memory-safety preconditions; perf is not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let status = self.child.wait().unwrap();
        // perf writes its data, then ends by the signal it was stopped with.
        let stopped = std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGINT);
        assert!(status.success() || stopped, "perf record: {status}");
        script(&self.data)
    }
}

impl Drop for PerfRecord {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
unwind_chain 16668/16668          1 page-faults: 
\tffffffff8177c8da elf_load ([kernel.kallsyms])
\tffffffff81000130 entry_SYSCALL_64_after_hwframe ([kernel.kallsyms])

unwind_chain 16832/16832          1 page-faults: 
\t            1964 touch_pages (/tmp/uc/unwind_chain)
\t            1a9e level_alloca (/tmp/uc/unwind_chain)
\t    7f572270c0ab __libc_start_main@@GLIBC_2.34 (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t    7f572270d000 [unknown] ([unknown])
\tffffffffffffffff [unknown] ([unknown])

Web Content 7/9          3 kmem:mm_page_alloc: 
\t    55d0 <alloc::vec::Vec<T> as core::ops::Drop>::drop (/bin/a b)
\t    55e0 operator new(unsigned long) (/usr/lib/libstdc++.so.6)
";

    #[test]
    fn parses_headers_and_frames() {
        let samples = parse(OUTPUT).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].comm, "unwind_chain");
        assert_eq!((samples[0].pid, samples[0].tid), (16668, 16668));
        assert!(samples[0].user_chain().is_empty());
        assert_eq!(
            samples[1].user_chain(),
            ["touch_pages", "level_alloca", "__libc_start_main", UNKNOWN]
        );
        assert_eq!(samples[1].frames[0].address, 0x1964);
        assert_eq!(
            samples[1].frames[2].module,
            "/usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        let odd = &samples[2];
        assert_eq!((odd.comm.as_str(), odd.pid, odd.tid), ("Web Content", 7, 9));
        assert_eq!((odd.period, odd.event.as_str()), (3, "kmem:mm_page_alloc"));
        assert_eq!(
            odd.user_chain(),
            [
                "<alloc::vec::Vec<T> as core::ops::Drop>::drop",
                "operator new(unsigned long)"
            ]
        );
        assert_eq!(odd.frames[0].module, "/bin/a b");
    }

    #[test]
    fn chains_are_counted_and_compared() {
        let samples = parse(OUTPUT).unwrap();
        let chains = user_chains(&samples, None);
        assert_eq!(chains.len(), 2);
        assert_eq!(chains[0].1, 3, "heaviest first: {chains:?}");
        assert_eq!(average_depth(&chains), (3.0 * 2.0 + 4.0) / 4.0);
        assert!(user_chains(&samples, Some(16668)).is_empty());
        let perf = &chains[1].0;
        let eq = |a: &str, b: &str| a == b;
        let expected = ["touch_pages", "level_alloca", "__libc_start_main", "_start"];
        assert!(same_functions(perf, &expected, eq));
        assert!(!same_functions(perf, &expected[..2], eq));
        let other = ["touch_pages", "big_frame", "__libc_start_main", "_start"];
        assert!(!same_functions(perf, &other, eq));
    }

    #[test]
    fn a_frame_without_a_header_is_an_error() {
        assert!(parse("\t1964 touch_pages (/x)\n").is_err());
    }
}
