//! `cargo xtask vm-test`: the eBPF smoke tests (tests/tests/smoke.rs) on Debian's other
//! kernels. Each kernel (a `linux-image-*-unsigned` package, downloaded with apt and cached in
//! `target/vm/`) boots under QEMU with an initramfs holding busybox, memtrace, the smoke-test
//! binary and the workloads, at the paths they have here; its init runs the tests and
//! `memtrace check`, prints to the serial port, and powers off. The host's own kernel is the
//! third, tested by `cargo xtask test`.

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{cargo, run, target_dir};

/// Debian packages to boot, by `apt-cache search --names-only` pattern; the newest match wins.
const KERNELS: &[(&str, &str)] = &[
    ("6.1", r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$"),
    ("6.12", r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$"),
];

/// A kernel's boot and tests may take this long under emulation before it counts as hung.
const BOOT_LIMIT: Duration = Duration::from_secs(900);
/// With KVM the init's first line comes within seconds; none by then means KVM does not run
/// guests here (nested virtualisation), and emulation takes over.
const KVM_PROBE: Duration = Duration::from_secs(20);

/// How QEMU runs the guest.
#[derive(Clone, Copy, PartialEq)]
enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg (emulated)",
        }
    }
}

pub struct Outcome {
    kernel: String,
    accel: Accel,
    seconds: f64,
    summary: String,
    /// cargo test's `test result:` line from the guest, if it got that far.
    pub result_line: Option<String>,
    pub passed: bool,
}

/// `cargo xtask vm-test [KERNEL...]`: fails unless every kernel passed.
pub fn vm_test(args: &[String]) -> Result<()> {
    let outcomes = boot_all(args)?;
    if outcomes.iter().any(|o| !o.passed) {
        bail!("vm-test: smoke tests failed on a kernel (see its log)");
    }
    Ok(())
}

/// Boots each kernel (all, or those named: 6.1, 6.12) with the smoke tests; prints a table.
pub fn boot_all(args: &[String]) -> Result<Vec<Outcome>> {
    let wanted: Vec<&str> = args.iter().map(String::as_str).collect();
    let dir = target_dir().join("vm");
    fs::create_dir_all(&dir)?;
    let smoke = build()?;
    let initrd = initramfs(&dir, &smoke)?;
    let mut accel = if Path::new("/dev/kvm").exists() {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    let mut outcomes = Vec::new();
    for (series, pattern) in KERNELS {
        if !wanted.is_empty() && !wanted.contains(series) {
            continue;
        }
        let (package, vmlinuz) = kernel(&dir, pattern)?;
        let log = dir.join(format!("{package}.log"));
        let started = Instant::now();
        let outcome = match boot(&vmlinuz, &initrd, &log, accel)? {
            Some(text) => text,
            None => {
                println!("vm-test: KVM started no guest within {KVM_PROBE:?}; emulating instead");
                accel = Accel::Tcg;
                boot(&vmlinuz, &initrd, &log, accel)?.context("emulated boot gave nothing")?
            }
        };
        outcomes.push(judge(&package, accel, started.elapsed(), &outcome));
        println!("vm-test: log of {package}: {}", log.display());
    }
    println!("\nvm-test: kernel                         accel           time   smoke tests");
    for o in &outcomes {
        println!(
            "         {:<30} {:<15} {:>4.0} s  {}",
            o.kernel,
            o.accel.name(),
            o.seconds,
            o.summary
        );
    }
    Ok(outcomes)
}

/// Builds memtrace and the smoke tests (release); returns the test binary.
fn build() -> Result<PathBuf> {
    run(&mut cargo("build --release -p memtrace"))?;
    let out = cargo("test --release -p tests --test smoke --no-run --message-format=json")
        .stderr(Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the smoke tests failed");
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["target"]["name"] == "smoke")
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .context("cargo named no smoke-test executable")
}

/// The newest package matching `pattern`, downloaded and its vmlinuz extracted (both cached).
fn kernel(dir: &Path, pattern: &str) -> Result<(String, PathBuf)> {
    let mut packages = search(pattern)?;
    if packages.is_empty() {
        run(Command::new("apt-get").arg("update"))?;
        packages = search(pattern)?;
    }
    let package = packages
        .into_iter()
        .max_by_key(|name| version_key(name))
        .with_context(|| format!("no Debian package matches {pattern}"))?;
    let vmlinuz = dir.join(format!("{package}.vmlinuz"));
    if vmlinuz.exists() {
        return Ok((package, vmlinuz));
    }
    let debs = dir.join("debs");
    fs::create_dir_all(&debs)?;
    run(Command::new("apt-get")
        .args(["download", &package])
        .current_dir(&debs))?;
    let deb = fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
    let image = extract_vmlinuz(&deb)?;
    fs::write(&vmlinuz, image)?;
    Ok((package, vmlinuz))
}

fn search(pattern: &str) -> Result<Vec<String>> {
    let out = Command::new("apt-cache")
        .args(["search", "--names-only", pattern])
        .output()
        .context("apt-cache (Debian's) is needed to find kernels")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

/// The numbers in a package name, in order: compares Debian kernel ABI and upload versions.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// `boot/vmlinuz-*` from a kernel package (the modules are not needed: what memtrace uses is
/// built in).
fn extract_vmlinuz(deb: &Path) -> Result<Vec<u8>> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("dpkg-deb")?;
    let out = Command::new("tar")
        .args(["-xO", "--wildcards", "./boot/vmlinuz-*"])
        .stdin(dpkg.stdout.take().context("dpkg-deb stdout")?)
        .output()
        .context("tar")?;
    dpkg.wait()?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!("no boot/vmlinuz-* in {}", deb.display());
    }
    Ok(out.stdout)
}

/// The guest's init: mounts what memtrace needs, runs the smoke tests and `memtrace check`,
/// and powers off. /tmp stays the initramfs's own (writable) folder: the binaries may live
/// under it (a checkout in /tmp), and a tmpfs there would hide them. Lines starting with
/// `vm-test:` are read back from the serial log.
fn init_script(memtrace: &Path, smoke: &Path) -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
echo "vm-test: kernel $(uname -r)"
cd /
CI=true MEMTRACE_BIN={memtrace} {smoke} --test-threads=1
echo "vm-test: smoke exit $?"
{memtrace} check
echo "vm-test: check exit $?"
poweroff -f
"#,
        memtrace = memtrace.display(),
        smoke = smoke.display()
    )
}

/// Builds `initrd.gz`: busybox, the init, and each binary with the libraries it loads, all at
/// their host paths (the tests find the workloads at the path compiled into them).
fn initramfs(dir: &Path, smoke: &Path) -> Result<PathBuf> {
    let root = dir.join("root");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    for sub in ["bin", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(root.join(sub))?;
    }
    fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("/bin/busybox (Debian's busybox-static) is needed")?;
    let memtrace = target_dir().join("release/memtrace");
    let workloads = PathBuf::from(::tests::WORKLOADS_DIR);
    let mut binaries = vec![memtrace.clone(), smoke.to_path_buf()];
    for entry in fs::read_dir(&workloads)? {
        let path = entry?.path();
        if path.is_file() {
            binaries.push(path);
        }
    }
    for binary in &binaries {
        place(&root, binary)?;
        for library in libraries(binary)? {
            place(&root, &library)?;
        }
    }
    // Debug sections are not needed in the guest; the workloads keep theirs (their symbols are
    // asserted).
    for big in [&memtrace, &smoke.to_path_buf()] {
        run(Command::new("strip")
            .arg("--strip-debug")
            .arg(inside(&root, big)))?;
    }
    let init = root.join("init");
    fs::write(&init, init_script(&memtrace, smoke))?;
    run(Command::new("chmod").arg("+x").arg(&init))?;
    let initrd = dir.join("initrd.gz");
    run(Command::new("sh").current_dir(&root).arg("-c").arg(format!(
        "find . | cpio --quiet -o -H newc | gzip -1 > {}",
        initrd.display()
    )))?;
    Ok(initrd)
}

fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Copies `path` (following links) to the same path under `root`.
fn place(root: &Path, path: &Path) -> Result<()> {
    let to = inside(root, path);
    if to.exists() {
        return Ok(());
    }
    fs::create_dir_all(to.parent().context("a file has a folder")?)?;
    fs::copy(path, &to).with_context(|| format!("copying {}", path.display()))?;
    Ok(())
}

/// The shared libraries `binary` loads, and its loader (from ldd).
fn libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("ldd")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, resolved)) => resolved.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Boots `vmlinuz` and returns the serial log once the guest powers off; None when KVM was
/// asked for and the guest printed nothing in time.
fn boot(vmlinuz: &Path, initrd: &Path, log: &Path, accel: Accel) -> Result<Option<String>> {
    let _ = fs::remove_file(log);
    let (accel_arg, cpu) = match accel {
        Accel::Kvm => ("kvm", "host,-arch-capabilities"),
        // One host thread runs both vCPUs in turn: with a thread each, the guest's live code
        // patching (a tracepoint's static key turned on while the other CPU runs that code)
        // raced under emulation, and 6.12 died on an int3 in 3 boots of 11.
        Accel::Tcg => ("tcg,thread=single", "max"),
    };
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", accel_arg, "-cpu", cpu, "-m", "2048", "-smp", "2"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"]);
    println!("$ {}", crate::show(&qemu));
    let mut guest = qemu
        .stdin(Stdio::null())
        .spawn()
        .context("qemu-system-x86_64 (Debian's qemu-system-x86) is needed")?;
    let started = Instant::now();
    loop {
        if let Some(status) = guest.try_wait()? {
            let text = read_log(log);
            if !status.success() && !text.contains("vm-test: kernel") {
                bail!("qemu failed ({status}):\n{text}");
            }
            return Ok(Some(text));
        }
        let elapsed = started.elapsed();
        let silent = !read_log(log).contains("vm-test: kernel");
        if (accel == Accel::Kvm && silent && elapsed > KVM_PROBE) || elapsed > BOOT_LIMIT {
            guest.kill()?;
            guest.wait()?;
            if accel == Accel::Kvm && silent {
                return Ok(None);
            }
            bail!(
                "the guest ran past {BOOT_LIMIT:?}; its log: {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn read_log(log: &Path) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = fs::File::open(log) {
        let _ = file.read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// Reads the guest's verdict: cargo test's result line, and both exit codes.
fn judge(package: &str, accel: Accel, elapsed: Duration, log: &str) -> Outcome {
    let field = |prefix: &str| {
        log.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
    };
    let kernel = field("vm-test: kernel").unwrap_or_else(|| package.to_string());
    let result_line = log
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("test result:"))
        .map(str::to_string);
    let result = field("test result:").unwrap_or_else(|| "no test result".to_string());
    let smoke_ok = field("vm-test: smoke exit").as_deref() == Some("0");
    let check_ok = field("vm-test: check exit").as_deref() == Some("0");
    let mut summary = result.split(';').take(2).collect::<Vec<_>>().join(";");
    if !check_ok {
        summary.push_str("; memtrace check failed");
    }
    Outcome {
        kernel,
        accel,
        seconds: elapsed.as_secs_f64(),
        summary,
        result_line,
        passed: smoke_ok && check_ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_kernel_package_wins() {
        let names = [
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-image-6.1.0-56-amd64-unsigned",
            "linux-image-6.1.0-47-amd64-unsigned",
        ];
        let newest = names.iter().max_by_key(|n| version_key(n)).unwrap();
        assert_eq!(*newest, "linux-image-6.1.0-56-amd64-unsigned");
    }

    #[test]
    fn verdict_read_from_the_serial_log() {
        let log = "junk\r\nvm-test: kernel 6.1.0-56-amd64\r\ntest result: ok. 4 passed; 0 failed; 0 ignored\r\nvm-test: smoke exit 0\r\nvm-test: check exit 0\r\n";
        let o = judge("p", Accel::Tcg, Duration::from_secs(3), log);
        assert!(o.passed);
        assert_eq!(o.kernel, "6.1.0-56-amd64");
        assert_eq!(o.summary, "ok. 4 passed; 0 failed");
        let failed = log.replace("smoke exit 0", "smoke exit 101");
        assert!(!judge("p", Accel::Tcg, Duration::ZERO, &failed).passed);
    }
}
