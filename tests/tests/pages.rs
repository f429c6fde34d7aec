//! `memtrace pages` against what the workload did: pages it touched (one fresh page each,
//! huge pages off for the region), and pages a kernel thread allocated for it (a loop device's
//! worker writing the backing file's page cache), which must not be credited to it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use tests::{
    serial, spawn_memtrace,
    traced::{self, u64_of},
    workload, TempDir,
};

/// PF_KTHREAD in /proc/PID/stat's flags (field 9).
const PF_KTHREAD: u64 = 0x0020_0000;

fn rows<'a>(report: &'a Value, key: &str) -> &'a Vec<Value> {
    report[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} array in {report:#}"))
}

#[test]
fn touched_pages_are_credited_to_the_toucher() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let pages = 20_000u64;
    let path = workload("fault_touch");
    let t = traced::trace(
        "pages",
        &["--top", "20"],
        &[path.to_str().unwrap(), &pages.to_string()],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    let pid = u64::from(t.workload.pid);
    let credited: u64 = rows(&t.report, "processes")
        .iter()
        .filter(|p| u64_of(p, "pid") == pid && p["context"] == "process")
        .map(|p| u64_of(p, "pages"))
        .sum();
    let low = pages * 95 / 100;
    let high = pages * 3 / 2;
    assert!(
        (low..=high).contains(&credited),
        "{credited} pages credited, touched {pages}\n{}",
        t.context()
    );
    // The stack with the most pages is the touching loop's, through the fault handler.
    let top = &rows(&t.report, "stacks")[0];
    assert_eq!(top["frames"][0], "touch_pages", "{}", t.context());
    let kernel: Vec<&str> = top["kernel_frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        kernel.iter().any(|f| f.contains("fault")),
        "kernel frames {kernel:?}\n{}",
        t.context()
    );
    // Order 0 dominates.
    let orders = rows(&t.report, "orders");
    let total: u64 = orders.iter().map(|o| u64_of(o, "allocations")).sum();
    let order0: u64 = orders
        .iter()
        .filter(|o| o["order"] == 0)
        .map(|o| u64_of(o, "allocations"))
        .sum();
    assert!(order0 * 10 >= total * 9, "{}", t.context());
    // Anonymous memory of a process: the kernel's name for it.
    assert!(
        rows(&t.report, "gfp")[0]["flags"]
            .as_str()
            .unwrap()
            .starts_with("GFP_HIGHUSER_MOVABLE"),
        "{}",
        t.context()
    );
}

/// A loop device whose backing file lives in a temporary directory; detached on drop.
struct LoopDevice {
    device: PathBuf,
    _dir: TempDir,
}

impl LoopDevice {
    fn new(mib: u64) -> Self {
        let dir = TempDir::new("pages-loop");
        let backing = dir.join("backing");
        std::fs::File::create(&backing)
            .and_then(|f| f.set_len(mib << 20))
            .expect("backing file");
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&backing)
            .output()
            .expect("losetup");
        assert!(out.status.success(), "losetup: {out:?}");
        let device = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Self { device, _dir: dir }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// Whether `pid` is a kernel thread (None: gone).
fn is_kernel_thread(pid: u64) -> Option<bool> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the ")" that ends comm: state is field 3, flags field 9.
    let after = &stat[stat.rfind(')')? + 2..];
    let flags: u64 = after.split_whitespace().nth(6)?.parse().ok()?;
    Some(flags & PF_KTHREAD != 0)
}

/// dd writes to a loop device with O_DIRECT: the loop worker, a kernel thread, writes the
/// backing file and allocates its page cache. Those pages are the kernel thread's, not dd's;
/// and every row's context agrees with what /proc says the pid is.
#[test]
fn kernel_thread_allocations_are_not_credited_to_the_process() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    if !Path::new("/dev/loop-control").exists() {
        assert!(
            !tests::in_ci(),
            "no loop devices (/dev/loop-control) on a CI machine"
        );
        eprintln!("skipped: no loop devices here");
        return;
    }
    let mib = 64u64;
    let device = LoopDevice::new(mib);
    let dir = TempDir::new("pages-kthread");
    let out = dir.join("report.json");
    let mut tracer = spawn_memtrace(&[
        "pages",
        "--stacks",
        "none",
        "--duration",
        "6s",
        "--format",
        "json",
        "--output",
        out.to_str().unwrap(),
    ]);
    tracer.wait_attached();
    let dd = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", device.device.display()))
        .args(["bs=1M", &format!("count={mib}"), "oflag=direct"])
        .output()
        .expect("dd");
    assert!(dd.status.success(), "dd: {dd:?}");
    let run = tracer.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let context = || format!("{}\n{report:#}", run.describe());
    let written = mib * 256;
    let processes = rows(&report, "processes");
    let dd_pages: u64 = processes
        .iter()
        .filter(|p| p["comm"] == "dd")
        .map(|p| u64_of(p, "pages"))
        .sum();
    let kernel_threads: u64 = processes
        .iter()
        .filter(|p| p["context"] == "kernel thread")
        .map(|p| u64_of(p, "pages"))
        .sum();
    assert!(
        dd_pages < written / 4,
        "{dd_pages} pages credited to dd, which wrote {written} pages with O_DIRECT\n{}",
        context()
    );
    assert!(
        kernel_threads >= written * 9 / 10,
        "{kernel_threads} pages in kernel threads, the loop worker cached {written}\n{}",
        context()
    );
    for row in processes {
        let expected = match row["context"].as_str() {
            Some("kernel thread") => true,
            Some("process") => false,
            _ => continue,
        };
        if let Some(actual) = is_kernel_thread(u64_of(row, "pid")) {
            assert_eq!(actual, expected, "row {row}\n{}", context());
        }
    }
}
