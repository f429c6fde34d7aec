//! `cargo xtask bench [faults]`: overhead measured as ratios in one run, side by side: the
//! workload untraced, under memtrace, and under bpftrace and perf doing the same work. Runs are
//! interleaved round by round so drift on the machine touches every tool alike. The workload
//! times its own loop, so tool start-up and report writing are not counted. Figures go to
//! BENCHMARKS.md between markers, replacing the previous run's.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::bench_support::{
    cpu_seconds, prepare, today, wait_for_detaching_memtraces, write_section_as, Scratch,
};

/// Interleaved rounds per configuration (MEMTRACE_BENCH_ROUNDS overrides: more rounds, less
/// noise from the VM).
const ROUNDS: usize = 5;

pub(crate) fn rounds() -> usize {
    std::env::var("MEMTRACE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(ROUNDS)
}
/// The fault storm of issue #2: 512 MiB of fresh anonymous memory touched 4 times (~524k faults).
const STORM_ARGS: [&str; 2] = ["512", "4"];

/// One way of running the workload.
pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) records: &'static str,
    /// argv before the workload's argv; empty for untraced.
    pub(crate) prefix: Vec<String>,
    /// memtrace's JSON report path, for its own cost figures.
    pub(crate) report: Option<PathBuf>,
}

impl Config {
    /// `memtrace SUBCOMMAND OPTIONS`, its JSON report in `scratch`.
    pub(crate) fn memtrace(
        memtrace: &str,
        scratch: &Path,
        subcommand: &str,
        options: &str,
        records: &'static str,
    ) -> Self {
        // A file name from the options (which may hold paths).
        let name: String = options
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let report = scratch.join(format!("{subcommand}{name}.json"));
        Self {
            name: format!("memtrace {subcommand} {options}")
                .trim_end()
                .to_owned(),
            records,
            prefix: [memtrace, subcommand]
                .into_iter()
                .chain(options.split_whitespace())
                .chain(["--format", "json", "--output"])
                .map(str::to_owned)
                .chain([report.to_string_lossy().into_owned(), "--".to_owned()])
                .collect(),
            report: Some(report),
        }
    }

    /// `bpftrace -e PROGRAM -c WORKLOAD`.
    fn bpftrace(name: &str, records: &'static str, program: &str) -> Self {
        Self {
            name: name.to_owned(),
            records,
            prefix: ["bpftrace", "-e", program, "-c"]
                .into_iter()
                .map(str::to_owned)
                .collect(),
            report: None,
        }
    }

    /// The workload alone: the baseline every ratio is taken against.
    /// bpftrace running an empty program on each of the workload's faults: what any eBPF
    /// program on every fault costs at least.
    fn fault_floor() -> Self {
        Self::bpftrace(
            "bpftrace, empty program",
            "nothing: the floor cost of running any eBPF program on every fault",
            "software:page-faults:1 /pid == cpid/ { }",
        )
    }

    pub(crate) fn untraced() -> Self {
        Self {
            name: "untraced".into(),
            records: "-",
            prefix: vec![],
            report: None,
        }
    }
}

#[derive(Default)]
pub(crate) struct Samples {
    pub(crate) elapsed: Vec<f64>,
    attach_ms: Vec<f64>,
    cpu_s: Vec<f64>,
    max_rss_kb: Vec<f64>,
    lost: u64,
    /// From one extra run with the kernel's eBPF run-time statistics on: (seconds in
    /// memtrace's programs, program runs, the workload's own time in that run).
    bpf: Option<(f64, u64, f64)>,
    /// The last run's eBPF statistics, when the kernel kept them.
    last_bpf: Option<(f64, u64)>,
    /// Every run in order: the timed rounds', then the statistics run's (when it was made).
    pub(crate) runs: Vec<Run>,
}

/// What one run left behind.
pub(crate) struct Run {
    /// The workload's own JSON line.
    pub(crate) figures: Value,
    /// memtrace's JSON report, for configs that write one.
    pub(crate) report: Option<Value>,
    /// The tool's and the workload's standard error.
    pub(crate) stderr: String,
}

pub fn bench(which: &[String]) -> Result<()> {
    match which.first().map(String::as_str) {
        None => faults()
            .and_then(|()| swap())
            .and_then(|()| malloc())
            .and_then(|()| allocators())
            .and_then(|()| pages())
            .and_then(|()| agent())
            .and_then(|()| diagnose())
            .and_then(|()| crate::bench_exit::exit())
            // Last: until memtrace has --unwind (issue 17) it stops here, the others written.
            .and_then(|()| crate::bench_unwind::unwind())
            // After it: it stops when memtrace has no --no-python-frames (issue 18).
            .and_then(|()| crate::bench_python::python())
            .and_then(|()| crate::bench_heap::heap()),
        Some("faults") => faults(),
        Some("swap") => swap(),
        Some("malloc") => malloc(),
        Some("allocators") => allocators(),
        Some("exit") => crate::bench_exit::exit(),
        Some("pages") => pages(),
        Some("agent") => agent(),
        Some("diagnose") => diagnose(),
        Some("unwind") => crate::bench_unwind::unwind(),
        Some("python") => crate::bench_python::python(),
        Some("heap") => crate::bench_heap::heap(),
        // Ten minutes: run on its own, never as part of the whole set.
        Some("agent-soak") => crate::soak::soak(),
        Some(other) => {
            bail!(
                "unknown benchmark {other:?}; available: faults, swap, malloc, allocators, \
                 pages, agent, agent-soak, diagnose, exit, unwind, python, heap"
            )
        }
    }
}

fn faults() -> Result<()> {
    let (target, memtrace) = prepare()?;
    let scratch = Scratch::new("bench")?;
    let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let memtrace_config =
        |options, records| Config::memtrace(&memtrace, &scratch, "faults", options, records);

    let configs = vec![
        Config::untraced(),
        memtrace_config("", "every fault: user + kernel stack, address, region"),
        memtrace_config("--stacks user", "every fault: user stack, address, region"),
        memtrace_config("--stacks none", "every fault: address, region (no stacks)"),
        memtrace_config(
            "--sample 100",
            "1 in 100 faults: user + kernel stack, address, region",
        ),
        Config::fault_floor(),
        Config::bpftrace(
            "bpftrace",
            "every fault: count per user + kernel stack",
            "software:page-faults:1 /pid == cpid/ { @[kstack, ustack] = count(); }",
        ),
        Config {
            name: "perf record -e page-faults -c 1 -g".into(),
            records: "every fault: user + kernel stack, address",
            prefix: words(&format!(
                "perf record -q -e page-faults -c 1 -g -o {} --",
                scratch.join("perf.data").display()
            )),
            report: None,
        },
    ];
    storm_section("faults", &configs, &target, "its own loop time")
}

/// `memtrace pages` on the fault storm (every fault allocates a page), beside bpftrace counting
/// kmem:mm_page_alloc by stack.
fn pages() -> Result<()> {
    let (target, memtrace) = prepare()?;
    let scratch = Scratch::new("bench")?;
    let memtrace_pages =
        |options, records| Config::memtrace(&memtrace, &scratch, "pages", options, records);
    let program =
        |action: &str| format!("tracepoint:kmem:mm_page_alloc /pid == cpid/ {{ {action} }}");
    let configs = [
        Config::untraced(),
        memtrace_pages(
            "",
            "per process, order, flags, migratetype (exact); every allocation's user + kernel stack",
        ),
        memtrace_pages(
            "--sample 100",
            "as above, stacks of 1 allocation in 100 (the other figures exact)",
        ),
        memtrace_pages(
            "--stacks user",
            "every allocation: user stack, order, flags, migratetype",
        ),
        memtrace_pages(
            "--stacks none",
            "per process, order, flags, migratetype: counted in the kernel",
        ),
        Config::bpftrace(
            "bpftrace, counting by stack",
            "every allocation: count per user + kernel stack",
            &program("@[kstack, ustack] = count();"),
        ),
        Config::bpftrace(
            "bpftrace, counting",
            "every allocation: count per order",
            &program("@[args->order] = count();"),
        ),
        Config::bpftrace(
            "bpftrace, empty program",
            "nothing: the floor cost of running any eBPF program on every allocation",
            &program(""),
        ),
    ];
    storm_section(
        "pages",
        &configs,
        &target,
        "its own loop time; every fault allocates a page",
    )
}

/// `memtrace diagnose` watching the fault storm: its /proc samples, the kernel's count of
/// the process's page allocations, and (with --html) the faults' sampled stacks.
fn diagnose() -> Result<()> {
    let (target, memtrace) = prepare()?;
    let scratch = Scratch::new("bench")?;
    let html = format!("--html {}", scratch.join("diagnose.html").display());
    let memtrace_diagnose = |options: &str, records| {
        Config::memtrace(&memtrace, &scratch, "diagnose", options, records)
    };
    let configs = [
        Config::untraced(),
        memtrace_diagnose(
            "",
            "/proc every 500 ms; page allocations counted in the kernel",
        ),
        Config {
            name: "memtrace diagnose --html FILE".into(),
            ..memtrace_diagnose(
                &html,
                "as above, and the stacks of 1 minor fault in 100 (the page's flame graph)",
            )
        },
        Config::fault_floor(),
    ];
    storm_section(
        "diagnose",
        &configs,
        &target,
        "its own loop time; every fault allocates a page",
    )
}

/// Where the agent listens during its benchmark (loopback; a port tests do not use).
const AGENT_LISTEN: &str = "127.0.0.1:9479";

/// `memtrace agent` running beside the fault storm, and on an idle machine (its own CPU time
/// and memory over ten seconds).
fn agent() -> Result<()> {
    let (target, memtrace) = prepare()?;
    let scratch = Scratch::new("bench")?;
    let log = scratch.join("agent.log");
    // A config file per variant: the agent's options are its config's.
    let config_file = |name: &str, text: &str| -> Result<String> {
        let path = scratch.join(name);
        std::fs::write(&path, text)?;
        Ok(format!("--config {}", path.display()))
    };
    let pages = config_file("pages.toml", "page_allocations = true\n")?;
    let swap = config_file("swap.toml", "swap = true\n")?;
    let everything = config_file("everything.toml", "page_allocations = true\nswap = true\n")?;
    // The agent starts, the workload runs once it has attached, then the agent stops.
    let beside = |options: &str| -> Vec<String> {
        let script = format!(
            "{memtrace} agent --listen {AGENT_LISTEN} {options} 2>{log} & agent=$!; i=0; \
             until grep -q 'memtrace: tracing' {log} || [ $i -ge 200 ]; do sleep 0.05; i=$((i+1)); done; \
             \"$@\"; kill -TERM $agent; wait $agent",
            log = log.display()
        );
        ["sh", "-c", script.as_str(), "sh"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    let agent_config = |name: &str, records: &'static str, options: &str| Config {
        name: name.to_owned(),
        records,
        prefix: beside(options),
        report: None,
    };
    let configs = [
        Config::untraced(),
        agent_config(
            "memtrace agent (defaults)",
            "faults per process (the kernel's counts); swap \"auto\": no swap on this host",
            "",
        ),
        agent_config(
            "memtrace agent, page_allocations = true",
            "+ page allocations per process (a program on each)",
            &pages,
        ),
        agent_config(
            "memtrace agent, swap = true",
            "+ swap traffic per owner (a program on each RSS counter change)",
            &swap,
        ),
        agent_config(
            "memtrace agent, page_allocations = true, swap = true",
            "faults, page allocations and swap per process",
            &everything,
        ),
        Config::fault_floor(),
    ];
    let samples = measure(&configs, &storm_argv(&target.join("workloads/fault_storm")))?;
    let idle = idle_agent(&memtrace, &log)?;
    let table = format!(
        "{}
{idle}
",
        table(&configs, &samples)
    );
    println!("{table}");
    let what = format!(
        "the workload `fault_storm {}` (its own loop time) with the agent running beside it",
        STORM_ARGS.join(" ")
    );
    write_section("agent", &what, &table)
}

/// The agent alone for ten seconds on a quiet machine: its CPU share and memory.
fn idle_agent(memtrace: &str, log: &Path) -> Result<String> {
    let mut agent = Command::new(memtrace)
        .args(["agent", "--listen", AGENT_LISTEN])
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("starting the agent")?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    let cpu = cpu_seconds;
    let before = cpu(agent.id())?;
    let window = 10.0;
    std::thread::sleep(std::time::Duration::from_secs_f64(window));
    let used = cpu(agent.id())? - before;
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.id()))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap_or("?")
        .trim()
        .to_owned();
    // SAFETY: kill has no memory-safety preconditions; the child is ours and not reaped.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    agent.wait()?;
    Ok(format!(
        "Idle machine, the agent alone for {window:.0} s: {:.2}% of one CPU, RSS {rss}.\n",
        used / window * 100.0
    ))
}

/// `memtrace swap` on the fault storm (every fault runs its rss_stat program) and on a swap
/// workload: twice a 64 MiB memory cgroup's limit touched, then read back twice, on a swap file.
fn swap() -> Result<()> {
    let (target, memtrace) = prepare()?;
    let scratch = Scratch::new("bench")?;
    let report = scratch.join("swap.json");
    let configs = [
        Config::untraced(),
        Config {
            name: "memtrace swap".into(),
            records: "swap out/in per owner, system lines each second, swap-in stacks",
            prefix: [memtrace.as_str(), "swap", "--format", "json", "--output"]
                .into_iter()
                .map(str::to_owned)
                .chain([report.to_string_lossy().into_owned(), "--".to_owned()])
                .collect(),
            report: Some(report),
        },
    ];
    let storm = measure(&configs, &storm_argv(&target.join("workloads/fault_storm")))?;
    let _swap_file = tests::swap_env::SwapFile::create(512);
    let cgroup = tests::swap_env::MemoryCgroup::create(64);
    let cycle = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        format!(
            "echo $$ > {} && exec {} 128 2",
            cgroup.procs().display(),
            target.join("workloads/swap_cycle").display()
        ),
    ];
    let swapping = measure(&configs, &cycle)?;
    let tables = format!(
        "On the fault storm (`fault_storm {}`):\n\n{}\nOn the swap workload (`swap_cycle 128 2` in a \
         64 MiB memory cgroup, 512 MiB swap file):\n\n{}",
        STORM_ARGS.join(" "),
        table(&configs, &storm),
        table(&configs, &swapping)
    );
    println!("{tables}");
    write_section("swap", "each workload's own run time", &tables)
}

/// malloc/free pairs in the malloc storm.
const MALLOC_PAIRS: u64 = 2_000_000;

/// `memtrace malloc` on a malloc storm (2M malloc/free pairs of 16-272 bytes), beside bpftrace
/// doing memleak's work (uprobe and uretprobe on malloc, uprobe on free, a live map) and bpftrace
/// merely counting malloc calls by user stack.
fn malloc() -> Result<()> {
    let (target, memtrace) = prepare()?;
    let scratch = Scratch::new("bench")?;
    let libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    let memtrace_malloc =
        |options, records| Config::memtrace(&memtrace, &scratch, "malloc", options, records);
    let configs = [
        Config::untraced(),
        memtrace_malloc(
            "--leaks",
            "every malloc and free: block, size, user stack; outstanding blocks",
        ),
        memtrace_malloc(
            "--leaks --sample-bytes 524288",
            "1 point per 512 KiB allocated: sampled blocks, estimates; outstanding blocks",
        ),
        Config::bpftrace(
            "bpftrace, memleak-style",
            "every malloc and free: size, live blocks (no stacks)",
            &format!(
                "uprobe:{libc}:malloc /pid == cpid/ {{ @size[tid] = arg0; }} \
                 uretprobe:{libc}:malloc /pid == cpid/ {{ @live[retval] = @size[tid]; delete(@size[tid]); }} \
                 uprobe:{libc}:free /pid == cpid/ {{ delete(@live[arg0]); }}"
            ),
        ),
        Config::bpftrace(
            "bpftrace, counting",
            "every malloc: count per user stack",
            &format!("uprobe:{libc}:malloc /pid == cpid/ {{ @[ustack] = count(); }}"),
        ),
    ];
    let storm = vec![
        target
            .join("workloads/malloc_leak")
            .to_string_lossy()
            .into_owned(),
        "0".into(),
        "16".into(),
        MALLOC_PAIRS.to_string(),
    ];
    let samples = measure(&configs, &storm)?;
    let untraced = median(&samples[0].elapsed);
    let mut table = table(&configs, &samples);
    table += "\nAbove untraced, per malloc/free pair (per probed call: half of it):\n\n";
    for (config, s) in configs[1..].iter().zip(&samples[1..]) {
        let pair = (median(&s.elapsed) - untraced) / MALLOC_PAIRS as f64;
        table += &format!(
            "- {}: {:.2} µs a pair, {:.0} ns a call\n",
            config.name,
            pair * 1e6,
            pair * 1e9 / 2.0
        );
    }
    table += "\nSide by side, the median of each round's ratio:\n\n";
    // configs[3] and [4]: the two bpftrace scripts, against memtrace --leaks.
    for (index, goal) in [(3, "0.10x"), (4, "1.5x")] {
        table += &format!(
            "- {} vs {}: {:.2}x (goal ≤ {goal})\n",
            configs[1].name,
            configs[index].name,
            round_ratio(&samples[1], &samples[index])
        );
    }
    println!("{table}");
    let what = format!(
        "the workload `malloc_leak 0 16 {MALLOC_PAIRS}` (its own loop time: {MALLOC_PAIRS} \
         malloc/free pairs of 16-272 bytes)"
    );
    write_section("malloc", &what, &table)
}

/// malloc/free pairs in each allocator's storm.
const ALLOCATOR_PAIRS: u64 = 500_000;

/// `memtrace malloc --leaks` on the malloc storm linked against each allocator (found without
/// --lib), beside the storm untraced: what a probed call costs on each, with the probes on
/// the first instruction uprobes emulate.
fn allocators() -> Result<()> {
    let (target, memtrace) = prepare()?;
    let scratch = Scratch::new("bench")?;
    let mut table = String::from(
        "| allocator | untraced loop | memtrace malloc --leaks loop | vs untraced | above untraced, per pair | per call |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for (allocator, build) in [
        ("glibc", "malloc_leak"),
        ("jemalloc", "malloc_leak_jemalloc"),
        ("tcmalloc", "malloc_leak_tcmalloc"),
        ("mimalloc", "malloc_leak_mimalloc"),
    ] {
        eprintln!("{allocator}:");
        let configs = [
            Config::untraced(),
            Config::memtrace(
                &memtrace,
                &scratch,
                "malloc",
                "--leaks",
                "every malloc and free: block, size, user stack; outstanding blocks",
            ),
        ];
        let storm = vec![
            target
                .join("workloads")
                .join(build)
                .to_string_lossy()
                .into_owned(),
            "0".into(),
            "16".into(),
            ALLOCATOR_PAIRS.to_string(),
        ];
        let samples = measure(&configs, &storm)?;
        let (untraced, traced) = (median(&samples[0].elapsed), median(&samples[1].elapsed));
        let pair = (traced - untraced) / ALLOCATOR_PAIRS as f64;
        table += &format!(
            "| {allocator} | {untraced:.3} s | {traced:.3} s | {:.0}x | {:.2} µs | {:.0} ns |\n",
            round_ratio(&samples[1], &samples[0]),
            pair * 1e6,
            pair * 1e9 / 2.0,
        );
    }
    println!("{table}");
    let what = format!(
        "the workload `malloc_leak 0 16 {ALLOCATOR_PAIRS}` ({ALLOCATOR_PAIRS} malloc/free pairs of \
         16-272 bytes, its own loop time) built against each allocator"
    );
    write_section("allocators", &what, &table)
}

/// Measures `configs` on the fault storm, prints their table and writes it as section `name`;
/// `how` says what was timed.
fn storm_section(name: &str, configs: &[Config], target: &Path, how: &str) -> Result<()> {
    let samples = measure(configs, &storm_argv(&target.join("workloads/fault_storm")))?;
    let table = table(configs, &samples);
    println!("{table}");
    let what = format!(
        "the workload `fault_storm {}` ({how})",
        STORM_ARGS.join(" ")
    );
    write_section(name, &what, &table)
}

fn storm_argv(storm: &Path) -> Vec<String> {
    std::iter::once(storm.to_string_lossy().into_owned())
        .chain(STORM_ARGS.iter().map(|s| s.to_string()))
        .collect()
}

/// Runs `workload` under every config, round by round; the samples per config. Every other
/// round runs the configs in reverse order: a run is affected by the one before it (memory
/// just freed, caches), and alternating cancels that out.
pub(crate) fn measure(configs: &[Config], workload: &[String]) -> Result<Vec<Samples>> {
    let mut samples: Vec<Samples> = configs.iter().map(|_| Samples::default()).collect();
    let rounds = rounds();
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}");
        let mut order: Vec<usize> = (0..configs.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for index in order {
            let (config, samples) = (&configs[index], &mut samples[index]);
            wait_for_detaching_memtraces();
            let elapsed = run_once(config, workload, samples)?;
            eprintln!("  {:<38} {elapsed:.3} s", config.name);
            samples.elapsed.push(elapsed);
        }
    }
    // The statistics cost every program a little, so they stay off for the timed rounds.
    for (config, samples) in configs.iter().zip(samples.iter_mut()) {
        if config.report.is_some() {
            wait_for_detaching_memtraces();
            let _stats = BpfStats::enable()?;
            let elapsed = run_once(config, workload, samples)?;
            samples.bpf = samples
                .last_bpf
                .take()
                .map(|(time, runs)| (time, runs, elapsed));
        }
    }
    Ok(samples)
}

/// kernel.bpf_stats_enabled on while alive; restored to its previous value on drop.
pub(crate) struct BpfStats {
    previous: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub(crate) fn enable() -> Result<Self> {
        let previous =
            std::fs::read_to_string(BPF_STATS).with_context(|| format!("reading {BPF_STATS}"))?;
        std::fs::write(BPF_STATS, "1").with_context(|| format!("writing {BPF_STATS}"))?;
        Ok(Self { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, self.previous.trim());
    }
}

/// Runs the workload once under `config`; returns its own phase time.
pub(crate) fn run_once(config: &Config, workload: &[String], samples: &mut Samples) -> Result<f64> {
    // bpftrace takes the command as one string after -c.
    let argv: Vec<String> = if config.prefix.first().is_some_and(|p| p == "bpftrace") {
        let mut argv = config.prefix.clone();
        argv.push(workload.join(" "));
        argv
    } else {
        config.prefix.iter().chain(workload).cloned().collect()
    };
    let output = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with("{\"pid\""))
        .with_context(|| {
            format!(
                "{}: no workload figures in its output; stderr: {}",
                config.name,
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let figures: Value = serde_json::from_str(line)?;
    let mut run = Run {
        figures: figures.clone(),
        report: None,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    if let Some(path) = &config.report {
        let report: Value = serde_json::from_str(&std::fs::read_to_string(path)?)
            .with_context(|| format!("{}: report unreadable", config.name))?;
        let tracer = &report["tracer"];
        samples
            .attach_ms
            .push(tracer["attach_ms"].as_f64().unwrap_or(f64::NAN));
        samples
            .cpu_s
            .push(tracer["cpu_s"].as_f64().unwrap_or(f64::NAN));
        samples
            .max_rss_kb
            .push(tracer["max_rss_kb"].as_f64().unwrap_or(f64::NAN));
        samples.lost += report["lost_events"].as_u64().unwrap_or(0);
        samples.last_bpf = tracer["bpf_run_s"]
            .as_f64()
            .zip(tracer["bpf_runs"].as_u64());
        run.report = Some(report);
    }
    samples.runs.push(run);
    figures["elapsed_s"]
        .as_f64()
        .context("workload JSON without elapsed_s")
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n => sorted[n / 2],
    }
}

/// The median of each round's ratio of `a`'s time to `b`'s.
pub(crate) fn round_ratio(a: &Samples, b: &Samples) -> f64 {
    let ratios: Vec<f64> = a
        .elapsed
        .iter()
        .zip(&b.elapsed)
        .map(|(a, b)| a / b)
        .collect();
    median(&ratios)
}

/// "vs untraced" is the median of each round's ratio to that round's untraced run: the VM's
/// speed drifts over a run by more than the smaller costs measured here, and a round's runs
/// are back to back.
pub(crate) fn table(configs: &[Config], samples: &[Samples]) -> String {
    let baseline = &samples[0];
    let mut table = String::from(
        "| tool | records | loop time (median) | vs untraced (median of rounds) | in eBPF programs | attach | CPU | peak RSS | lost |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (config, s) in configs.iter().zip(samples) {
        let time = median(&s.elapsed);
        let own = |values: &[f64], f: &dyn Fn(f64) -> String| {
            if values.is_empty() {
                "-".to_owned()
            } else {
                f(median(values))
            }
        };
        table += &format!(
            "| {} | {} | {:.3} s | {:.2}x | {} | {} | {} | {} | {} |\n",
            config.name,
            config.records,
            time,
            round_ratio(s, baseline),
            match s.bpf {
                Some((time, runs, elapsed)) => format!(
                    "{:.1}% ({:.0} ms, {} runs, {:.0} ns/run)",
                    time / elapsed * 100.0,
                    time * 1e3,
                    runs,
                    time / runs.max(1) as f64 * 1e9
                ),
                None => "-".to_owned(),
            },
            own(&s.attach_ms, &|v| format!("{v:.0} ms")),
            own(&s.cpu_s, &|v| format!("{v:.2} s")),
            own(&s.max_rss_kb, &|v| format!("{:.0} MiB", v / 1024.0)),
            if config.report.is_some() {
                s.lost.to_string()
            } else {
                "-".into()
            },
        );
    }
    table
}

/// Replaces the `name` section of BENCHMARKS.md (between its markers); `what` says what was
/// timed.
pub(crate) fn write_section(name: &str, what: &str, table: &str) -> Result<()> {
    let uname = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let header = format!(
        "Measured by `MEMTRACE_BENCH_ROUNDS={rounds} cargo xtask bench {name}` on {today}: \
         Linux {uname}, {cpus} CPUs; {what}, {rounds} interleaved rounds, medians. \
         attach, CPU and peak RSS are memtrace's own (from its report).",
        today = today(),
        rounds = rounds(),
    );
    write_section_as(name, &header, table)
}
