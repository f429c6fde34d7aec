//! `cargo xtask fuzz [--seconds N] [TARGET...]`: memtrace's fuzz targets (memtrace/fuzz, cargo
//! fuzz on the nightly toolchain), each for a bounded time. A target's corpus lives in
//! target/fuzz-corpus/<target>, seeded from memtrace/fuzz/seeds/<target>; libFuzzer's output
//! goes to target/fuzz-logs/<target>.log. Fails if any target crashes, with the input in hex.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{run, show, target_dir, workspace_root};

/// cargo-fuzz, pinned (installed with --locked when missing or another version).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// The targets in memtrace/fuzz/fuzz_targets, run in this order.
pub const TARGETS: [&str; 3] = ["ring_records", "proc_text", "btf"];
/// An input that takes longer than this is a hang, reported like a crash.
const INPUT_TIMEOUT_S: u64 = 10;
/// Bytes of a crashing input shown in hex.
const HEX_LIMIT: usize = 4096;

pub fn fuzz(seconds: u64, targets: &[String]) -> Result<()> {
    let targets = chosen(targets)?;
    if seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .output();
    if !nightly.is_ok_and(|out| out.status.success()) {
        bail!("cargo fuzz needs the nightly toolchain: run `cargo xtask setup` first");
    }
    install_cargo_fuzz()?;
    let fuzz_dir = workspace_root().join("memtrace/fuzz");

    let started = Instant::now();
    // All targets in one build. memtrace's build.rs skips the eBPF object, which the targets
    // do not use and which would not build with the sanitizer flags.
    run(&mut cargo_fuzz(&fuzz_dir, &["build"]))?;
    let build_time = started.elapsed();
    println!("fuzz: build took {}", secs(build_time));

    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(fuzz_one(&fuzz_dir, target, seconds)?);
    }

    println!(
        "\nfuzz: {seconds} s per target, build {}, total {}",
        secs(build_time),
        secs(started.elapsed())
    );
    println!(
        "{:<14} {:>12} {:>14} {:>8}  result",
        "target", "runs", "corpus", "time"
    );
    for o in &outcomes {
        println!(
            "{:<14} {:>12} {:>14} {:>8}  {}",
            o.target,
            o.runs.map_or("?".to_string(), |r| r.to_string()),
            format!("{} ({} KiB)", o.corpus_files, o.corpus_bytes / 1024),
            secs(o.time),
            if o.crashed { "CRASH" } else { "ok" }
        );
    }
    let crashed: Vec<&str> = (outcomes.iter().filter(|o| o.crashed))
        .map(|o| o.target)
        .collect();
    if !crashed.is_empty() {
        bail!("fuzz: crash in {} (see above)", crashed.join(", "));
    }
    Ok(())
}

/// The targets to run: all, or those named (each must exist).
fn chosen(names: &[String]) -> Result<Vec<&'static str>> {
    if names.is_empty() {
        return Ok(TARGETS.to_vec());
    }
    names
        .iter()
        .map(|name| {
            TARGETS
                .iter()
                .find(|t| *t == name)
                .copied()
                .with_context(|| {
                    format!(
                        "unknown fuzz target {name:?}; available: {}",
                        TARGETS.join(", ")
                    )
                })
        })
        .collect()
}

fn install_cargo_fuzz() -> Result<()> {
    let version = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned());
    if version
        .as_deref()
        .is_some_and(|v| v.split_whitespace().any(|w| w == CARGO_FUZZ_VERSION))
    {
        return Ok(());
    }
    println!("fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about 2 minutes)");
    run(Command::new("cargo").args([
        "install",
        "--locked",
        &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
    ]))
}

/// `cargo +nightly fuzz ARGS` in memtrace/fuzz, without the eBPF build.
fn cargo_fuzz(fuzz_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz"])
        .args(args)
        .env("MEMTRACE_SKIP_EBPF", "1")
        .current_dir(fuzz_dir);
    cmd
}

struct Outcome {
    target: &'static str,
    runs: Option<u64>,
    corpus_files: usize,
    corpus_bytes: u64,
    time: Duration,
    crashed: bool,
}

fn fuzz_one(fuzz_dir: &Path, target: &'static str, seconds: u64) -> Result<Outcome> {
    let corpus = target_dir().join("fuzz-corpus").join(target);
    let seeds = fuzz_dir.join("seeds").join(target);
    let seeded = seed(&seeds, &corpus)?;
    let logs = target_dir().join("fuzz-logs");
    fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("{target}.log"));
    let log = fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;

    let corpus_arg = corpus.to_string_lossy();
    let mut cmd = cargo_fuzz(fuzz_dir, &["run", target, &corpus_arg]);
    cmd.args([
        "--".to_string(),
        format!("-max_total_time={seconds}"),
        format!("-timeout={INPUT_TIMEOUT_S}"),
        "-print_final_stats=1".to_string(),
    ]);
    println!(
        "\nfuzz: {target} for {seconds} s ({seeded} new seed(s)); log: {}",
        log_path.display()
    );
    println!("$ {}", show(&cmd));
    let started = Instant::now();
    let status = cmd
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .status()
        .with_context(|| format!("cannot run {}", show(&cmd)))?;
    let time = started.elapsed();
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let (corpus_files, corpus_bytes) = corpus_size(&corpus);
    let outcome = Outcome {
        target,
        runs: runs(&text),
        corpus_files,
        corpus_bytes,
        time,
        crashed: !status.success(),
    };
    println!(
        "fuzz: {target}: {} runs in {}, corpus {corpus_files} inputs, {}",
        outcome.runs.map_or("?".to_string(), |r| r.to_string()),
        secs(time),
        if outcome.crashed {
            format!("FAILED ({status})")
        } else {
            "ok".to_string()
        }
    );
    if outcome.crashed {
        report_crash(&text);
    }
    Ok(outcome)
}

/// Copies the seeds the corpus does not have yet (or has an older version of); returns how
/// many.
fn seed(seeds: &Path, corpus: &Path) -> Result<usize> {
    fs::create_dir_all(corpus).with_context(|| format!("cannot create {}", corpus.display()))?;
    let Ok(entries) = fs::read_dir(seeds) else {
        return Ok(0);
    };
    let mut copied = 0;
    for entry in entries.flatten() {
        let to = corpus.join(format!("seed-{}", entry.file_name().to_string_lossy()));
        if !entry.file_type()?.is_file() {
            continue;
        }
        let bytes = fs::read(entry.path())?;
        if fs::read(&to).ok().as_ref() != Some(&bytes) {
            fs::write(&to, bytes)?;
            copied += 1;
        }
    }
    Ok(copied)
}

fn corpus_size(corpus: &Path) -> (usize, u64) {
    let Ok(entries) = fs::read_dir(corpus) else {
        return (0, 0);
    };
    let sizes: Vec<u64> = entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .collect();
    (sizes.len(), sizes.iter().sum())
}

/// Inputs run, from libFuzzer's final statistics or its "Done N runs" line.
fn runs(log: &str) -> Option<u64> {
    let number = |text: &str| text.split_whitespace().next()?.parse().ok();
    log.lines()
        .rev()
        .find_map(|l| number(l.strip_prefix("stat::number_of_executed_units:")?))
        .or_else(|| {
            log.lines()
                .rev()
                .find_map(|l| number(l.strip_prefix("Done ")?))
        })
}

/// What crashed and on which input: the panic or sanitizer report and the input in hex.
fn report_crash(log: &str) {
    let lines: Vec<&str> = log.lines().collect();
    let from = lines
        .iter()
        .position(|l| l.contains("panicked at") || l.starts_with("==") || l.contains("ERROR:"))
        .unwrap_or(lines.len().saturating_sub(30));
    eprintln!("--- libFuzzer output (from the failure) ---");
    for line in lines[from..].iter().take(60) {
        eprintln!("{line}");
    }
    eprintln!("---");
    let artifact = lines
        .iter()
        .find_map(|l| Some(l.split_once("Test unit written to ")?.1.trim()))
        .map(PathBuf::from);
    let Some(artifact) = artifact else {
        eprintln!("fuzz: no crashing input was written (see the log)");
        return;
    };
    eprintln!("fuzz: crashing input: {}", artifact.display());
    match fs::read(&artifact) {
        Ok(bytes) => eprint!("{}", hex_dump(&bytes, HEX_LIMIT)),
        Err(err) => eprintln!("fuzz: cannot read it: {err}"),
    }
}

/// `bytes` as 16 hex bytes a line, with their ASCII, up to `limit` bytes.
fn hex_dump(bytes: &[u8], limit: usize) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes[..bytes.len().min(limit)].chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk
            .iter()
            .map(|&b| match b {
                0x20..=0x7e => b as char,
                _ => '.',
            })
            .collect();
        out.push_str(&format!("{:08x}  {:<47}  {ascii}\n", i * 16, hex.join(" ")));
    }
    if bytes.len() > limit {
        out.push_str(&format!("... {} more bytes\n", bytes.len() - limit));
    }
    if bytes.is_empty() {
        out.push_str("(empty input)\n");
    }
    out
}

fn secs(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_come_from_the_final_stats() {
        let log = "#2\tINITED cov: 1\nDone 9126 runs in 2 second(s)\n\
                   stat::number_of_executed_units: 9127\nstat::average_exec_per_sec: 4563\n";
        assert_eq!(runs(log), Some(9127));
        assert_eq!(runs("Done 12 runs in 1 second(s)\n"), Some(12));
        assert_eq!(runs("nothing"), None);
    }

    #[test]
    fn hex_dumps_show_bytes_and_ascii() {
        let dump = hex_dump(b"ab\x00\xff", 4096);
        assert_eq!(dump, format!("00000000  {:<47}  ab..\n", "61 62 00 ff"));
        assert!(hex_dump(&[0; 40], 16).ends_with("... 24 more bytes\n"));
    }

    #[test]
    fn unknown_targets_are_refused() {
        assert_eq!(chosen(&[]).unwrap(), TARGETS);
        assert_eq!(chosen(&["btf".to_string()]).unwrap(), ["btf"]);
        assert!(chosen(&["nope".to_string()]).is_err());
    }
}
