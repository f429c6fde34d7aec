//! memtrace's developer and CI chores: `cargo xtask <setup|demo|test|ci|bench>`.

mod bench;
mod bench_exit;
mod bench_heap;
mod bench_python;
mod bench_support;
mod bench_unwind;
mod fuzz;
mod setup;
mod soak;
mod vm_test;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode, ExitStatus},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "memtrace's developer and CI chores")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing (Debian packages, nightly rust-src, bpf-linker, tracefs mount).
    Setup,
    /// Build memtrace and the workloads, then run `memtrace faults` on the demo (needs root).
    Demo,
    /// Setup, build memtrace (release), run all tests, and with no args the eBPF smoke tests on
    /// Debian's 6.1 and 6.12 kernels (vm-test); args after `--` go to `cargo test`.
    Test {
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// fmt check, setup, clippy (-D warnings), each fuzz target for 20 s, then the same as
    /// `test`.
    Ci {
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Overhead benchmarks, side by side with bpftrace and perf (needs root); writes BENCHMARKS.md.
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The eBPF smoke tests on Debian's 6.1 and 6.12 kernels under QEMU (needs root; downloads
    /// the kernels with apt). Name kernels (6.1, 6.12) to boot only those.
    VmTest { kernels: Vec<String> },
    /// Fuzz the ring-buffer record decoders and the /proc, /sys and BTF parsers (cargo fuzz).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Targets to run (default: all): ring_records, proc_text, btf.
        targets: Vec<String>,
    },
}

fn main() -> ExitCode {
    let task = Cli::parse().task;
    let result = match task {
        Task::Setup => setup::setup().map(|()| ExitCode::SUCCESS),
        Task::Demo => demo(),
        Task::Test { cargo_test_args } => setup::setup().and_then(|()| test(&cargo_test_args)),
        Task::Ci { cargo_test_args } => ci(&cargo_test_args),
        Task::Bench { args } => bench::bench(&args).map(|()| ExitCode::SUCCESS),
        Task::Fuzz { seconds, targets } => {
            fuzz::fuzz(seconds, &targets).map(|()| ExitCode::SUCCESS)
        }
        Task::VmTest { kernels } => vm_test::vm_test(&kernels).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("xtask: error: {e:#}");
        ExitCode::FAILURE
    })
}

fn demo() -> Result<ExitCode> {
    if !is_root() && !setup::in_path("sudo") {
        bail!("the demo needs root (eBPF) and sudo is not installed: run it as root");
    }
    setup::setup()?;
    run(&mut cargo("build --release -p memtrace -p tests"))?;
    let target = target_dir();
    let mut memtrace = setup::privileged(&target.join("release/memtrace").to_string_lossy());
    memtrace
        .args(["faults", "--"])
        .arg(target.join("workloads/demo"));
    status(&mut memtrace)
}

/// The packages' own tests, with memtrace built in release mode for the integration tests.
/// The eBPF crate is left out: it builds for the bpf target only (memtrace's build.rs does it).
fn test(cargo_test_args: &[String]) -> Result<ExitCode> {
    run(&mut cargo("build --release -p memtrace"))?;
    let mut test = cargo("test --workspace --exclude memtrace-ebpf --release");
    test.args(cargo_test_args);
    test.env("MEMTRACE_BIN", target_dir().join("release/memtrace"));
    println!("$ {}", show(&test));
    let mut child = test
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", show(&test)))?;
    // Stream the output, adding up every binary's "test result:" line, so the run closes on
    // one plain total rather than on the last (often empty) binary's line.
    let mut totals = Totals::default();
    let stdout = child.stdout.take().context("no stdout")?;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line?;
        println!("{line}");
        totals.add(&line);
    }
    let code = child.wait()?.code();
    let mut vm_failed = false;
    if cargo_test_args.is_empty() {
        // The whole suite: the smoke tests again on the other supported kernels.
        vm_failed = vm_totals(&mut totals);
    }
    println!("{} passed, {} failed", totals.passed, totals.failed);
    Ok(match code {
        Some(_) if vm_failed => ExitCode::FAILURE,
        Some(code) => ExitCode::from(code.clamp(0, 255) as u8),
        None => ExitCode::FAILURE,
    })
}

/// Runs `vm-test` on every kernel, adding each guest's results to `totals` (a kernel that
/// gave none counts as one failure); true when anything failed.
fn vm_totals(totals: &mut Totals) -> bool {
    match vm_test::boot_all(&[]) {
        Ok(outcomes) => {
            for outcome in &outcomes {
                match &outcome.result_line {
                    Some(line) => totals.add(line),
                    None => totals.failed += 1,
                }
            }
            outcomes.iter().any(|o| !o.passed)
        }
        Err(err) => {
            eprintln!("xtask: vm-test: {err:#}");
            totals.failed += 1;
            true
        }
    }
}

/// Sums of cargo test's `test result: ok. N passed; M failed; ...` lines.
#[derive(Default, Debug, PartialEq)]
struct Totals {
    passed: u64,
    failed: u64,
}

impl Totals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        let count = |word: &str| {
            rest.split(['.', ';'])
                .find_map(|part| part.trim().strip_suffix(word)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        self.passed += count(" passed");
        self.failed += count(" failed");
    }
}

fn ci(cargo_test_args: &[String]) -> Result<ExitCode> {
    run(&mut cargo("fmt --all --check"))?;
    setup::setup()?;
    // Two clippy runs, as aya-template does: checked together, memtrace's `user` feature of
    // memtrace-common (aya, std) would be unified into the no_std eBPF crate.
    let lints = "--all-targets -- -D warnings";
    run(&mut cargo(&format!(
        "clippy --workspace --exclude memtrace-ebpf {lints}"
    )))?;
    run(&mut cargo(&format!("clippy -p memtrace-ebpf {lints}")))?;
    // Before the tests, so the run still closes on their total.
    fuzz::fuzz(CI_FUZZ_SECONDS, &[])?;
    test(cargo_test_args)
}

/// Each fuzz target's time in CI (the corpus starts from the seeds each run).
const CI_FUZZ_SECONDS: u64 = 20;

pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// `$CARGO_TARGET_DIR` (relative to the workspace root) or `<workspace>/target`.
fn target_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
    workspace_root().join(dir)
}

/// `cargo` with `args` (split on spaces), run in the workspace root.
fn cargo(args: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(args.split_whitespace())
        .current_dir(workspace_root());
    cmd
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `cmd` as a shell would show it, environment overrides first.
pub fn show(cmd: &Command) -> String {
    let envs = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v?.to_str()?)));
    let words = std::iter::once(cmd.get_program()).chain(cmd.get_args());
    let words = words.map(|w| w.to_string_lossy().into_owned());
    envs.chain(words).collect::<Vec<_>>().join(" ")
}

/// Runs `cmd` (printing it first).
fn exec(cmd: &mut Command) -> Result<ExitStatus> {
    println!("$ {}", show(cmd));
    cmd.status()
        .with_context(|| format!("cannot run {}", show(cmd)))
}

/// Runs `cmd`, returning its exit code.
fn status(cmd: &mut Command) -> Result<ExitCode> {
    Ok(match exec(cmd)?.code() {
        Some(code) => ExitCode::from(code.clamp(0, 255) as u8),
        None => ExitCode::FAILURE, // killed by a signal
    })
}

/// Runs `cmd` and fails unless it succeeds.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = exec(cmd)?;
    if !status.success() {
        bail!("`{}` failed: {status}", show(cmd));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_args_after_double_dash_go_to_cargo_test() {
        let cli = Cli::try_parse_from(["xtask", "test", "--", "--test", "t", "--", "--nocapture"]);
        let Task::Test { cargo_test_args } = cli.unwrap().task else {
            panic!("not the test task");
        };
        assert_eq!(cargo_test_args, ["--test", "t", "--", "--nocapture"]);
    }

    #[test]
    fn totals_add_up_test_result_lines() {
        let mut totals = Totals::default();
        totals.add("test result: ok. 13 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 5.81s");
        totals
            .add("test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        totals.add("running 3 tests");
        assert_eq!(
            totals,
            Totals {
                passed: 15,
                failed: 1
            }
        );
    }

    #[test]
    fn commands_show_as_in_a_shell() {
        let mut cmd = Command::new("cargo");
        cmd.env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .args(["install", "bpf-linker@0.13.0"]);
        assert_eq!(
            show(&cmd),
            "LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker@0.13.0"
        );
    }
}
