//! `cargo xtask bench heap`: what heap profiling costs a real server (issue 19). Debian's
//! redis-server (jemalloc, which memtrace finds by itself) serves redis-benchmark's SET and GET
//! of 1 KiB values, untraced and under `memtrace malloc --pid REDIS --sample-bytes 524288`,
//! interleaved round by round. The figures: requests per second each way, the traced over the
//! untraced, and the cost of an allocator call: the time a request takes more traced, over
//! the allocator calls a request makes (memtrace's estimate; every call traps into the
//! kernel, sampled or not, so this is the probes' cost, not the sampling's).
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{
    bench::{median, rounds, write_section},
    bench_support::{prepare, wait_for_detaching_memtraces, Scratch},
};

/// Requests of each test (SET, GET) a run.
const REQUESTS: u64 = 200_000;
const SAMPLE_BYTES: &str = "524288";

pub fn heap() -> Result<()> {
    let (_target, memtrace) = prepare()?;
    let scratch = Scratch::new("heap")?;
    let redis = tests::redis::Redis::start();
    let (pid, port) = (redis.pid(), redis.port());
    let (mut untraced, mut traced) = (vec![], vec![]);
    for round in 0..rounds() {
        // The last round's memtrace leaves its probes to a child that detaches them: until
        // it ends, redis still traps.
        wait_for_detaching_memtraces();
        untraced.push(benchmark(port)?);
        let report = scratch.join(format!("malloc-{round}.json"));
        let (rps, _) = traced_run(
            &memtrace,
            pid,
            port,
            &["--sample-bytes", SAMPLE_BYTES],
            &report,
        )?;
        traced.push(rps);
        println!(
            "round {}: untraced {:.0}/{:.0} req/s, traced {:.0}/{:.0} req/s (SET/GET)",
            round + 1,
            untraced[round].0,
            untraced[round].1,
            rps.0,
            rps.1
        );
    }
    let column = |runs: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        median(&runs.iter().map(pick).collect::<Vec<_>>())
    };
    let mut table = String::from(
        "| test | untraced (req/s) | traced (req/s) | traced / untraced | allocator calls a \
         request (SET and GET) | cost a call |\n|---|---:|---:|---:|---:|---:|\n",
    );
    // Sampled counts of small blocks are rough (a sampled 16-byte block stands for 32768
    // calls): the calls a request makes are counted exactly, in one more run unsampled.
    let (_, calls) = traced_run(
        &memtrace,
        pid,
        port,
        &[],
        &scratch.join("malloc-every.json"),
    )?;
    let calls = calls / (2 * REQUESTS) as f64;
    println!("allocator calls a request: {calls:.2} (counted in a run without sampling)");
    for (test, pick) in [
        ("SET", (|r: &(f64, f64)| r.0) as fn(&(f64, f64)) -> f64),
        ("GET", |r: &(f64, f64)| r.1),
    ] {
        let (before, after) = (column(&untraced, pick), column(&traced, pick));
        let per_call_us = (1.0 / after - 1.0 / before) / calls * 1e6;
        table += &format!(
            "| {test} | {before:.0} | {after:.0} | {:.2}x | {calls:.1} | {per_call_us:.2} µs |\n",
            after / before
        );
    }
    write_section(
        "heap",
        &format!(
            "redis-server (Debian's, jemalloc) under `redis-benchmark -t set,get -d 1024 -n \
             {REQUESTS}` (50 clients), untraced and under `memtrace malloc --pid REDIS \
             --sample-bytes {SAMPLE_BYTES}`; allocator calls a request counted by one more run \
             without sampling"
        ),
        &table,
    )
}

/// One redis-benchmark run: SET's and GET's requests per second.
fn benchmark(port: u16) -> Result<(f64, f64)> {
    let output = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "set,get",
            "-d",
            "1024",
            "--csv",
            "-q",
        ])
        .args(["-n", &REQUESTS.to_string()])
        .output()
        .context("running redis-benchmark")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let rps = |test: &str| -> Result<f64> {
        (text.lines())
            .find_map(|line| {
                let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
                (fields.first() == Some(&test)).then(|| fields.get(1)?.parse().ok())?
            })
            .with_context(|| format!("no {test} line in redis-benchmark's output:\n{text}"))
    };
    Ok((rps("SET")?, rps("GET")?))
}

/// A benchmark run with `memtrace malloc --pid REDIS OPTIONS` attached: the requests per
/// second, and the allocator calls memtrace counted in redis meanwhile.
fn traced_run(
    memtrace: &str,
    pid: u32,
    port: u16,
    options: &[&str],
    report: &Path,
) -> Result<((f64, f64), f64)> {
    wait_for_detaching_memtraces();
    let log = report.with_extension("log");
    let mut tracer = Command::new(memtrace)
        .args(["malloc", "--pid", &pid.to_string()])
        .args(options)
        .args(["--format", "json", "--output"])
        .arg(report)
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)?.contains("attached in") {
        if Instant::now() > deadline || tracer.try_wait()?.is_some() {
            bail!(
                "memtrace did not attach:\n{}",
                std::fs::read_to_string(&log)?
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rps = benchmark(port)?;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let status = tracer.wait()?;
    if !status.success() {
        bail!("memtrace: {status}\n{}", std::fs::read_to_string(&log)?);
    }
    let text = std::fs::read_to_string(report)?;
    let report: Value = serde_json::from_str(&text)?;
    let process = (report["processes"].as_array().into_iter().flatten())
        .find(|p| p["pid"] == pid)
        .with_context(|| {
            format!("no redis-server row (pid {pid}) in memtrace's report:\n{text}")
        })?;
    let calls: f64 = (process.as_object().into_iter().flatten())
        .filter(|(key, _)| key.ends_with("_calls"))
        .filter_map(|(_, value)| value.as_f64())
        .sum();
    Ok((rps, calls))
}
