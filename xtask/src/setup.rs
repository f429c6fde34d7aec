//! `cargo xtask setup`: installs what memtrace's build and tests need, when it is missing.
//! On Debian it installs; elsewhere it prints the commands and fails if anything is missing.

use std::{path::Path, process::Command};

use anyhow::{bail, Result};

use crate::{is_root, run, show};

/// Debian packages, each with a command that works once it is installed (for other systems).
const PACKAGES: &[(&str, &[&str])] = &[
    ("gcc", &["gcc", "--version"]),
    // libFuzzer's C++ sources (`cargo xtask fuzz`, through libfuzzer-sys).
    ("g++", &["g++", "--version"]),
    (
        "llvm-22-dev",
        &["/usr/lib/llvm-22/bin/llvm-config", "--version"],
    ),
    ("bpftrace", &["bpftrace", "--version"]),
    ("linux-perf", &["perf", "--version"]),
    ("bpftool", &["bpftool", "version"]),
    ("golang-go", &["go", "version"]),
    // A real Prometheus server scraping memtrace agent (tests).
    ("prometheus", &["prometheus", "--version"]),
    // Headless, it opens `memtrace diagnose --html` pages in the tests.
    ("chromium", &["chromium", "--version"]),
    // `cargo xtask vm-test`: other kernels under QEMU, in an initramfs with busybox.
    ("qemu-system-x86", &["qemu-system-x86_64", "--version"]),
    ("busybox-static", &["busybox", "true"]),
    ("cpio", &["cpio", "--version"]),
    // The other allocators memtrace malloc finds and hooks (tests, benchmarks).
    (
        "libjemalloc2",
        &["test", "-e", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"],
    ),
    (
        "libtcmalloc-minimal4",
        &[
            "test",
            "-e",
            "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
        ],
    ),
    (
        "libmimalloc2.0",
        &["test", "-e", "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"],
    ),
    // Real programs nobody here wrote, built as users' programs are (no frame pointers,
    // jemalloc, forking servers): the tests run memtrace on them.
    ("redis-server", &["redis-server", "--version"]),
    ("redis-tools", &["redis-cli", "--version"]),
    ("postgresql", &["pgbench", "--version"]),
    ("stress-ng", &["stress-ng", "--version"]),
    ("python3", &["python3", "--version"]),
    // The detached debug info of /usr/bin/python3.11: the layout test checks memtrace's
    // CPython offsets against its DWARF.
    ("python3.11-dbg", &["test", "-e", "/usr/bin/python3.11d"]),
    // The C library's local symbols (`__libc_start_call_main`, `start_thread`, `clone3`):
    // the unwinding tests name whole stacks down to them, as perf and gdb do.
    ("libc6-dbg", &["test", "-d", "/usr/lib/debug/.build-id"]),
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const TRACEFS: &str = "/sys/kernel/tracing";

pub fn setup() -> Result<()> {
    let mut setup = Setup {
        install: Path::new("/etc/debian_version").exists(),
        missing: Vec::new(),
    };
    setup.packages()?;
    setup.rust()?;
    setup.tracefs()?;
    if !setup.missing.is_empty() {
        eprintln!(
            "setup: this is not Debian; install what is missing yourself (Debian's commands):"
        );
        for cmd in &setup.missing {
            eprintln!("  {cmd}");
        }
        bail!("setup: {} thing(s) missing, see above", setup.missing.len());
    }
    println!("setup: done");
    Ok(())
}

struct Setup {
    /// True on Debian: run the commands; otherwise only collect them in `missing`.
    install: bool,
    missing: Vec<String>,
}

impl Setup {
    fn need(&mut self, what: &str, cmd: &mut Command) -> Result<()> {
        if self.install {
            println!("setup: installing {what}");
            run(cmd)
        } else {
            self.missing.push(show(cmd));
            Ok(())
        }
    }

    fn packages(&mut self) -> Result<()> {
        let missing: Vec<&str> = PACKAGES
            .iter()
            .filter(|(pkg, probe)| match self.install {
                true => !deb_installed(pkg),
                false => !succeeds(probe),
            })
            .map(|(pkg, _)| *pkg)
            .collect();
        if missing.is_empty() {
            let names: Vec<&str> = PACKAGES.iter().map(|(pkg, _)| *pkg).collect();
            println!("setup: ok: packages {}", names.join(" "));
            return Ok(());
        }
        if self.install {
            run(privileged("apt-get").arg("update"))?;
        }
        let mut install = privileged("apt-get");
        install.env("DEBIAN_FRONTEND", "noninteractive");
        install.args(["install", "-y"]).args(&missing);
        self.need(&missing.join(" "), &mut install)
    }

    fn rust(&mut self) -> Result<()> {
        let Some(toolchains) = stdout(&["rustup", "toolchain", "list"]) else {
            bail!("setup: rustup not found: install Rust with rustup first");
        };
        if !toolchains.lines().any(|l| l.starts_with("nightly")) {
            let mut cmd = Command::new("rustup");
            cmd.args(["toolchain", "install", "nightly", "--profile", "minimal"]);
            cmd.args(["--component", "rust-src"]);
            self.need("the nightly toolchain", &mut cmd)?;
        } else {
            let installed = &[
                "rustup",
                "component",
                "list",
                "--toolchain",
                "nightly",
                "--installed",
            ];
            if stdout(installed).is_some_and(|c| c.lines().any(|l| l.starts_with("rust-src"))) {
                println!("setup: ok: nightly with rust-src");
            } else {
                let mut cmd = Command::new("rustup");
                cmd.args(["component", "add", "rust-src", "--toolchain", "nightly"]);
                self.need("rust-src for nightly", &mut cmd)?;
            }
        }

        let linker = stdout(&["bpf-linker", "--version"]).unwrap_or_default();
        if linker.contains(BPF_LINKER_VERSION) {
            println!("setup: ok: {}", linker.trim());
            return Ok(());
        }
        // bpf-linker must use LLVM 22, like the nightly toolchain (0.13.0 defaults to LLVM 23).
        let mut cmd = Command::new("cargo");
        cmd.env("LLVM_PREFIX", "/usr/lib/llvm-22");
        cmd.args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}")]);
        cmd.args(["--no-default-features", "--features", "llvm-22"]);
        self.need("bpf-linker (about 2 minutes)", &mut cmd)
    }

    /// aya reads tracepoint ids from tracefs, which a fresh machine has not mounted.
    fn tracefs(&mut self) -> Result<()> {
        let mounts = std::fs::read_to_string("/proc/mounts")?;
        let mounted = mounts.lines().any(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.get(1) == Some(&TRACEFS) && fields.get(2) == Some(&"tracefs")
        });
        if mounted {
            println!("setup: ok: tracefs at {TRACEFS}");
            return Ok(());
        }
        let mut cmd = privileged("mount");
        cmd.args(["-t", "tracefs", "tracefs", TRACEFS]);
        self.need("a tracefs mount", &mut cmd)
    }
}

/// `program` as root: itself when we are root, else under sudo.
pub fn privileged(program: &str) -> Command {
    if is_root() {
        return Command::new(program);
    }
    let mut cmd = Command::new("sudo");
    cmd.arg(program);
    cmd
}

pub fn in_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}

fn deb_installed(pkg: &str) -> bool {
    stdout(&["dpkg-query", "-W", "-f=${Status}", pkg]).is_some_and(|s| s == "install ok installed")
}

fn succeeds(argv: &[&str]) -> bool {
    stdout(argv).is_some()
}

/// The stdout of `argv` if it ran and succeeded.
fn stdout(argv: &[&str]) -> Option<String> {
    let out = Command::new(argv[0]).args(&argv[1..]).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
