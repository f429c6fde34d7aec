//! `cargo xtask bench agent-soak`: `memtrace agent`, everything on, for ten minutes
//! (MEMTRACE_SOAK_SECONDS) beside a fault storm run over and over, a churn of short-lived
//! processes with a thousand names, and a malloc storm under heap profiling, restarted over
//! and over (its probes attached and detached each time). Every 30 s it records the agent's
//! RSS, the entries of its kernel tables, the processes it holds and the heap profiles' size;
//! at the end, the fault counts the agent served for the storm against the storm's own
//! getrusage, and whether the heap profile names the malloc storm's function. Figures go to
//! BENCHMARKS.md.
use std::{
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::bench_support::{cpu_seconds, prepare, today, write_section_as, Scratch};

const LISTEN: &str = "127.0.0.1:9478";
const SAMPLE_EVERY: Duration = Duration::from_secs(30);
/// Names the churning processes cycle through: more than the agent's series bound.
const CHURN_NAMES: usize = 1000;

pub fn soak() -> Result<()> {
    let (target, memtrace) = prepare()?;
    let seconds: u64 = std::env::var("MEMTRACE_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let scratch = Scratch::new("soak")?;
    std::fs::create_dir_all(scratch.join("names"))?;
    for i in 0..CHURN_NAMES {
        std::os::unix::fs::symlink("/bin/true", scratch.join(format!("names/churn{i}")))?;
    }
    let config = scratch.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{LISTEN}\"\npage_allocations = true\nswap = true\n\
             [heap]\nprocesses = [\"malloc_leak\"]\noom_profiles = \"\"\n"
        ),
    )?;
    let mut agent = Command::new(&memtrace)
        .args(["agent", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(scratch.join("agent.log"))?)
        .spawn()
        .context("starting the agent")?;
    let agent_pid = agent.id();
    wait_for_agent()?;

    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let stop = Arc::clone(&stop);
        let storm = target.join("workloads/fault_storm");
        thread::spawn(move || storm_until(&storm, &stop))
    };
    let heap = {
        let stop = Arc::clone(&stop);
        let workload = target.join("workloads/malloc_leak");
        thread::spawn(move || heap_storm_until(&workload, &stop))
    };
    // The storm is the host's long-running service: it gets its series before the churn.
    thread::sleep(Duration::from_secs(3));
    let mut churn = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "n=0; while :; do i=0; while [ $i -lt {CHURN_NAMES} ]; do {}/names/churn$i; \
             i=$((i+1)); done; n=$((n+{CHURN_NAMES})); echo $n > {}/churned; done",
            scratch.display(),
            scratch.display()
        ))
        .stdout(Stdio::null())
        .spawn()?;

    let started = Instant::now();
    let cpu_before = cpu_seconds(agent_pid)?;
    let mut rows = Vec::new();
    let mut next = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(seconds) {
        if started.elapsed() >= next {
            let metrics = get_metrics()?;
            let churned = std::fs::read_to_string(scratch.join("churned"))
                .ok()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0u64);
            rows.push(Row::read(started.elapsed(), &metrics, churned));
            eprint!(
                "soak: {}",
                rows.last().map(Row::markdown).unwrap_or_default()
            );
            next += SAMPLE_EVERY;
        }
        thread::sleep(Duration::from_millis(200));
    }
    let cpu = cpu_seconds(agent_pid)? - cpu_before;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = churn.kill();
    let _ = churn.wait();
    let (storm_runs, storm_minflt) = storm
        .join()
        .map_err(|_| anyhow::anyhow!("storm thread"))??;
    let heap_runs = heap
        .join()
        .map_err(|_| anyhow::anyhow!("heap storm thread"))??;
    // The last storm's exit, then the agent's next read.
    thread::sleep(Duration::from_secs(3));
    let metrics = get_metrics()?;
    rows.push(Row::read(
        started.elapsed(),
        &metrics,
        rows.last().map_or(0, |r| r.churned),
    ));
    let pprof_names_storm = storm_in_profile(&scratch)?;
    let heap_names_churn = heap_storm_in_profile(&scratch)?;
    let served = sum_series(
        &metrics,
        "memtrace_page_faults_total",
        &["kind=\"minor\"", "comm=\"fault_storm\""],
    );
    // SAFETY: kill has no memory-safety preconditions; the child is ours and not reaped.
    unsafe { libc::kill(agent_pid as i32, libc::SIGTERM) };
    let status = agent.wait()?;
    if !status.success() {
        bail!("the agent exited with {status}");
    }

    let mut table = String::from(
        "| time | agent RSS | page_counts entries | swap_counts entries | processes held | \
         stack-table clears | profile stacks | processes churned | heap blocks | heap stacks |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in &rows {
        table += &row.markdown();
    }
    table += &format!(
        "\nThe agent used {:.2}% of one CPU over the soak. The storm ran {storm_runs} times: \
         {storm_minflt} minor faults by its own getrusage, {served:.0} in \
         memtrace_page_faults_total{{comm=\"fault_storm\"}} ({:+.3}%). At the end, \
         `go tool pprof -top` on /pprof/faults?last=120 {} the storm's `storm_touch`.\n",
        cpu / elapsed * 100.0,
        (served - storm_minflt as f64) / storm_minflt.max(1) as f64 * 100.0,
        if pprof_names_storm {
            "names"
        } else {
            "does NOT name"
        }
    );
    table += &format!(
        "\nThe malloc storm ran {heap_runs} times under heap profiling (each a process hooked \
         at the agent's next pass, and unhooked at its exit); `go tool pprof -top` on \
         /debug/pprof/allocs at the end {} its `churn`.\n",
        if heap_names_churn {
            "names"
        } else {
            "does NOT name"
        }
    );
    println!("{table}");
    let header = format!(
        "Measured by `MEMTRACE_SOAK_SECONDS={seconds} cargo xtask bench agent-soak` on {}: \
         `memtrace agent` with page_allocations and swap on and heap profiling of \
         malloc_leak, beside `fault_storm 64 4` run over and over, a shell starting /bin/true \
         under {CHURN_NAMES} names in a loop, and `malloc_leak {HEAP_STORM}` run over and over.",
        today()
    );
    write_section_as("agent-soak", &header, &table)
}

/// What the agent reported at one moment.
struct Row {
    at: Duration,
    rss_bytes: f64,
    page_entries: f64,
    swap_entries: f64,
    held: f64,
    clears: f64,
    stacks: f64,
    churned: u64,
    heap_blocks: f64,
    heap_stacks: f64,
}

impl Row {
    fn read(at: Duration, metrics: &str, churned: u64) -> Self {
        Self {
            at,
            rss_bytes: sum_series(metrics, "memtrace_agent_rss_bytes", &[]),
            page_entries: sum_series(
                metrics,
                "memtrace_bpf_map_entries",
                &["map=\"page_counts\""],
            ),
            swap_entries: sum_series(
                metrics,
                "memtrace_bpf_map_entries",
                &["map=\"swap_counts\""],
            ),
            held: sum_series(metrics, "memtrace_agent_processes_held", &[]),
            clears: sum_series(metrics, "memtrace_stack_table_clears_total", &[]),
            stacks: sum_series(metrics, "memtrace_profile_stacks", &[]),
            churned,
            heap_blocks: sum_series(metrics, "memtrace_heap_blocks_followed", &[]),
            heap_stacks: sum_series(metrics, "memtrace_heap_stacks", &[]),
        }
    }

    fn markdown(&self) -> String {
        format!(
            "| {:.0} s | {:.1} MiB | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} |\n",
            self.at.as_secs_f64(),
            self.rss_bytes / (1 << 20) as f64,
            self.page_entries,
            self.swap_entries,
            self.held,
            self.clears,
            self.stacks,
            self.churned,
            self.heap_blocks,
            self.heap_stacks
        )
    }
}

/// Runs the storm until told to stop: how many runs, and their minor faults by getrusage.
fn storm_until(storm: &Path, stop: &AtomicBool) -> Result<(u64, u64)> {
    let (mut runs, mut minflt) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let out = Command::new(storm).args(["64", "4"]).output()?;
        let report: serde_json::Value = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .context("the storm's report")?;
        minflt += report["minflt"].as_u64().context("minflt")?;
        runs += 1;
    }
    Ok((runs, minflt))
}

/// The malloc storm's arguments: 1000 blocks of 64 bytes leaked, 5 million malloc/free pairs
/// (about 12 s with every call trapping).
const HEAP_STORM: &str = "1000 64 5000000";

/// Runs the malloc storm until told to stop, each run held back a moment (`--wait`) so the
/// agent's next pass over /proc hooks it first: how many runs.
fn heap_storm_until(workload: &Path, stop: &AtomicBool) -> Result<u64> {
    let mut runs = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut child = Command::new(workload)
            .args(HEAP_STORM.split(' '))
            .arg("--wait")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        thread::sleep(Duration::from_millis(1500));
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, b"\n")?;
        }
        child.wait()?;
        runs += 1;
    }
    Ok(runs)
}

/// Whether `go tool pprof -top` finds the malloc storm's `churn` in the agent's allocations.
fn heap_storm_in_profile(scratch: &Path) -> Result<bool> {
    let profile = scratch.join("allocs.pb.gz");
    std::fs::write(&profile, get("/debug/pprof/allocs")?)?;
    let top = tests::go_pprof_top(&profile, &[], scratch).context("go is not installed")?;
    Ok(top.stdout.contains("churn"))
}

/// Whether `go tool pprof -top` finds the storm's function in the agent's fault profile.
fn storm_in_profile(scratch: &Path) -> Result<bool> {
    let profile = scratch.join("faults.pb.gz");
    std::fs::write(&profile, get("/pprof/faults?last=120")?)?;
    let top = tests::go_pprof_top(&profile, &[], scratch).context("go is not installed")?;
    Ok(top.stdout.contains("storm_touch"))
}

fn wait_for_agent() -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_metrics().is_err() {
        if Instant::now() > deadline {
            bail!("the agent did not start serving on {LISTEN}");
        }
        thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn get_metrics() -> Result<String> {
    Ok(String::from_utf8_lossy(&get("/metrics")?).into_owned())
}

/// The body of GET `path` on the agent.
fn get(path: &str) -> Result<Vec<u8>> {
    let (status, body) = tests::http_get(LISTEN, path)?;
    anyhow::ensure!(status.starts_with("HTTP/1.1 200"), "GET {path}: {status}");
    Ok(body)
}

/// The sum of `metric`'s samples whose labels contain all of `labels`.
fn sum_series(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
