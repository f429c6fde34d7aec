//! `cargo xtask bench exit`: how long each subcommand takes to exit once its report is out
//! (the report file's last write, to the moment memtrace's process is reaped). The kernel's
//! detaching of uprobes (about 0.1 s each) is left to a child of memtrace's, so this stays
//! short for malloc too.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context, Result};

use crate::bench_support::{prepare, Scratch};

const ROUNDS: usize = 5;

pub fn exit() -> Result<()> {
    let (target, memtrace) = prepare()?;
    let scratch = Scratch::new("bench-exit")?;
    let touch = target.join("workloads/fault_touch");
    let leak = target.join("workloads/malloc_leak");
    let jemalloc = target.join("workloads/malloc_leak_jemalloc");
    let runs: [(&str, &[&str], Vec<String>); 7] = [
        ("faults", &[], vec![path(&touch), "2000".into()]),
        ("pages", &[], vec![path(&touch), "2000".into()]),
        ("swap", &[], vec![path(&touch), "2000".into()]),
        ("oom", &[], vec![path(&touch), "2000".into()]),
        (
            "diagnose",
            &["--duration", "1s"],
            vec![path(&touch), "2000".into()],
        ),
        ("malloc", &["--leaks"], argv(&leak, &["100", "100", "1000"])),
        (
            "malloc",
            &["--leaks"],
            argv(&jemalloc, &["100", "100", "1000"]),
        ),
    ];
    let mut table = String::from(
        "| subcommand | command | report to exit (median) | slowest |\n|---|---|---:|---:|\n",
    );
    for (subcommand, options, command) in &runs {
        let mut delays = Vec::new();
        for round in 0..ROUNDS {
            let report = scratch.join(format!("{subcommand}{round}.out"));
            let started = Instant::now();
            let status = Command::new(&memtrace)
                .arg(subcommand)
                .args(*options)
                .arg("--output")
                .arg(&report)
                .arg("--")
                .args(command)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .with_context(|| format!("running memtrace {subcommand}"))?;
            let exited = SystemTime::now();
            // diagnose exits 3 when it has a verdict; that is still a report.
            if !matches!(status.code(), Some(0 | 3)) {
                bail!("memtrace {subcommand} failed: {status}");
            }
            let written = std::fs::metadata(&report)?.modified()?;
            let delay = exited.duration_since(written).unwrap_or(Duration::ZERO);
            eprintln!(
                "  {subcommand} {}: {:.0} ms after the report ({:.1} s in all)",
                name(command),
                delay.as_secs_f64() * 1e3,
                started.elapsed().as_secs_f64()
            );
            delays.push(delay.as_secs_f64());
        }
        delays.sort_by(f64::total_cmp);
        table += &format!(
            "| {subcommand} {} | `{}` | {:.0} ms | {:.0} ms |\n",
            options.join(" "),
            name(command),
            delays[delays.len() / 2] * 1e3,
            delays[delays.len() - 1] * 1e3,
        );
    }
    println!("{table}");
    let header = format!(
        "Measured by `cargo xtask bench exit` on {}: {ROUNDS} runs each, from the report \
         file's last write to memtrace's exit (the goal: within 0.3 s).",
        crate::bench_support::today()
    );
    crate::bench_support::write_section_as("exit", &header, &table)
}

fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

fn argv(program: &std::path::Path, args: &[&str]) -> Vec<String> {
    std::iter::once(path(program))
        .chain(args.iter().map(|a| a.to_string()))
        .collect()
}

/// The workload's file name and arguments, for the table.
fn name(command: &[String]) -> String {
    let program = std::path::Path::new(&command[0])
        .file_name()
        .map_or_else(|| command[0].clone(), |n| n.to_string_lossy().into_owned());
    std::iter::once(program)
        .chain(command[1..].iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}
