//! `memtrace swap` on real swap: a swap file and a memory cgroup made by the test (cgroup v1
//! `memory.limit_in_bytes` or v2 `memory.max`, whichever the machine has), removed even when a
//! test fails. The oracles are the kernel's /proc/vmstat deltas and the workload's own VmSwap.

use std::{
    fs,
    os::unix::process::ExitStatusExt,
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    cgroup2::{cgroup2_mount, TestCgroup},
    memtrace, parse_report, serial, spawn_memtrace,
    swap_env::{MemoryCgroup, SwapFile},
    traced::{self, u64_of, Traced},
    workload, TempDir,
};

const LIMIT_MIB: u64 = 64;
/// Twice the limit, as the issue asks.
const WORKLOAD_MIB: u64 = 128;

/// A swap run: memtrace's JSON report, the workload's own figures, and the kernel's swap
/// counters read by the test itself around the run.
struct SwapRun {
    traced: Traced,
    /// (pswpin, pswpout) deltas from /proc/vmstat over the run.
    vmstat: (u64, u64),
}

impl std::ops::Deref for SwapRun {
    type Target = Traced;
    fn deref(&self) -> &Traced {
        &self.traced
    }
}

/// /proc/vmstat's (pswpin, pswpout).
fn vmstat_swap() -> (u64, u64) {
    let text = fs::read_to_string("/proc/vmstat").expect("/proc/vmstat");
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    };
    (get("pswpin"), get("pswpout"))
}

/// `memtrace swap <extra> --format json -- swap_cycle MIB <workload_args>` (PASSES [unmap]),
/// the workload put into `cgroup` before it execs.
fn trace_swap(cgroup: &MemoryCgroup, extra: &[&str], workload_args: &str) -> SwapRun {
    let script = format!(
        "echo $$ > {} && exec {} {WORKLOAD_MIB} {workload_args}",
        cgroup.procs().display(),
        workload("swap_cycle").display()
    );
    let before = vmstat_swap();
    let traced = traced::trace("swap", extra, &["sh", "-c", &script]);
    let after = vmstat_swap();
    SwapRun {
        traced,
        vmstat: (after.0 - before.0, after.1 - before.1),
    }
}

/// `trace_swap` on a swap file and in a memory cgroup made for it (both removed before this
/// returns), holding the serial lock; None when not root outside CI (see `require_root`).
fn swap_run(extra: &[&str], workload_args: &str) -> Option<SwapRun> {
    swap_run_after(extra, workload_args, 100.0)
}

/// As `swap_run`, once the machine's PSI memory "full" avg10 is below `calm` percent (waiting
/// at most a minute): the average decays over about ten seconds, so a run that follows a
/// thrashing one would otherwise inherit its pressure, and `--thrash-psi-full` judges it.
fn swap_run_after(extra: &[&str], workload_args: &str, calm: f64) -> Option<SwapRun> {
    if !tests::require_root() {
        return None;
    }
    let _serial = serial();
    let deadline = Instant::now() + Duration::from_secs(60);
    while psi_full_avg10() >= calm && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    let _swap = SwapFile::create(512);
    let cgroup = MemoryCgroup::create(LIMIT_MIB);
    Some(trace_swap(&cgroup, extra, workload_args))
}

/// PSI memory "full" avg10 of the whole machine, in percent (0 where PSI is off).
fn psi_full_avg10() -> f64 {
    let text = fs::read_to_string("/proc/pressure/memory").unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("full "))
        .and_then(|fields| fields.split_whitespace().next())
        .and_then(|avg10| avg10.strip_prefix("avg10="))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// The workload's swap-in is the kernel's pswpin over the run, within 10%.
fn assert_swap_in_matches_pswpin(t: &SwapRun) {
    let (swap_in, pswpin) = (u64_of(t.process(), "swap_in_pages"), t.vmstat.0);
    assert!(
        within(swap_in, pswpin, 0.10),
        "workload swapped in {swap_in} pages, /proc/vmstat pswpin says {pswpin}\n{}",
        t.context()
    );
}

fn within(measured: u64, expected: u64, fraction: f64) -> bool {
    (measured as f64 - expected as f64).abs() <= expected as f64 * fraction
}

/// /proc/vmstat's swap counters: pages read and written, and the zero-filled pages swapped
/// without I/O (None on kernels before 6.12, which have no such lines).
#[derive(Debug, Clone, Copy)]
struct VmSwap {
    pswpin: u64,
    pswpout: u64,
    swpin_zero: Option<u64>,
    swpout_zero: Option<u64>,
}

impl VmSwap {
    fn read() -> Self {
        let text = fs::read_to_string("/proc/vmstat").expect("/proc/vmstat");
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
        };
        Self {
            pswpin: get("pswpin").unwrap_or(0),
            pswpout: get("pswpout").unwrap_or(0),
            swpin_zero: get("swpin_zero"),
            swpout_zero: get("swpout_zero"),
        }
    }

    fn since(&self, before: &Self) -> Self {
        let zero = |now: Option<u64>, then: Option<u64>| Some(now? - then?);
        Self {
            pswpin: self.pswpin - before.pswpin,
            pswpout: self.pswpout - before.pswpout,
            swpin_zero: zero(self.swpin_zero, before.swpin_zero),
            swpout_zero: zero(self.swpout_zero, before.swpout_zero),
        }
    }
}

/// A number in the report that may be null.
fn opt_u64(value: &Value, key: &str) -> Option<u64> {
    let field = &value[key];
    assert!(
        field.is_null() || field.is_u64(),
        "{key} is neither a count nor null: {value}"
    );
    field.as_u64()
}

#[test]
fn swap_traffic_is_credited_to_the_owner() {
    // The gate must fire on this workload: exit 3, report still written.
    let Some(t) = swap_run(&["--max-swap-in-rate", "1"], "2") else {
        return;
    };
    assert_eq!(
        t.run.code(),
        3,
        "the swap-in gate should fail\n{}",
        t.context()
    );
    let row = t.process();
    let system = &t.report["system"];
    // The system line is the kernel's own counters over the run.
    let (vm_in, vm_out) = t.vmstat;
    assert!(
        within(u64_of(system, "pswpin"), vm_in, 0.01)
            && within(u64_of(system, "pswpout"), vm_out, 0.01),
        "system line differs from /proc/vmstat deltas (pswpin {vm_in}, pswpout {vm_out})\n{}",
        t.context()
    );
    let (out, pswpout) = (u64_of(row, "swap_out_pages"), u64_of(system, "pswpout"));
    assert!(pswpout > 0, "nothing swapped out\n{}", t.context());
    assert!(
        within(out, pswpout, 0.10),
        "workload swapped out {out} pages, /proc/vmstat pswpout says {pswpout}\n{}",
        t.context()
    );
    assert_swap_in_matches_pswpin(&t);
    let swap_in = u64_of(row, "swap_in_pages");
    // Pages moved to swap minus pages brought back is what it still has in swap.
    let unmapped = u64_of(row, "swap_out_unmapped_pages");
    let still_out_kb = unmapped.saturating_sub(swap_in) * 4;
    let vmswap_kb = t.workload.u64("vmswap_kb");
    assert!(
        within(still_out_kb, vmswap_kb, 0.10),
        "moved out - brought back = {still_out_kb} KiB, the workload's VmSwap is {vmswap_kb} KiB\n{}",
        t.context()
    );
    // Nobody else (kswapd included) is credited with its pages.
    let others: u64 = t.report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["pid"] != t.workload.pid)
        .map(|r| u64_of(r, "swap_out_pages"))
        .sum();
    assert!(
        others * 100 <= pswpout,
        "{others} pages credited to others\n{}",
        t.context()
    );
    let stacks = t.report["stacks"].as_array().unwrap();
    assert!(
        stacks.iter().any(|s| s["frames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "read_back")),
        "no swap-in stack names read_back\n{}",
        t.context()
    );
    assert_eq!(t.report["thrashing"], true, "{}", t.context());
    let gate = &t.report["gates"][0];
    assert_eq!(gate["gate"], "max-swap-in-rate", "{}", t.context());
    assert_eq!(gate["failed"], true, "{}", t.context());
}

#[test]
fn swapping_out_once_is_not_thrashing() {
    // Its own swap-out adds a few percent of PSI full; what a thrashing test before it left
    // must not make up the rest of the default 10%.
    let Some(t) = swap_run_after(
        &["--max-swap-in-rate", "1000000000", "--fail-on-thrashing"],
        "0",
        3.0,
    ) else {
        return;
    };
    assert_eq!(t.run.code(), 0, "no gate should fail\n{}", t.context());
    assert!(u64_of(t.process(), "swap_out_pages") > 0, "{}", t.context());
    assert_eq!(t.report["thrashing"], false, "{}", t.context());
    assert!(
        t.report["gates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["failed"] == false),
        "{}",
        t.context()
    );
}

#[test]
fn unmapped_swap_is_freed_not_swapped_in() {
    // Swapped out once, then munmap'd: the process's own context drops its swap entries, in a
    // syscall, not in a fault.
    let Some(t) = swap_run(&[], "0 unmap") else {
        return;
    };
    assert_eq!(t.run.code(), 0, "{}", t.context());
    let row = t.process();
    let vmswap_kb = t.workload.u64("vmswap_kb");
    assert!(vmswap_kb > 0, "nothing was in swap\n{}", t.context());
    assert!(
        t.workload.u64("vmswap_after_kb") * 100 <= vmswap_kb,
        "munmap left swap\n{}",
        t.context()
    );
    let freed_kb = u64_of(row, "swap_freed_pages") * 4;
    assert!(
        within(freed_kb, vmswap_kb, 0.10),
        "freed {freed_kb} KiB, the workload had {vmswap_kb} KiB in swap before munmap\n{}",
        t.context()
    );
    let (swap_in, pswpin) = (u64_of(row, "swap_in_pages"), t.vmstat.0);
    assert!(
        within(swap_in, pswpin, 0.10) || swap_in <= 100,
        "{swap_in} pages counted as swap-in, /proc/vmstat pswpin says {pswpin}\n{}",
        t.context()
    );
}

#[test]
fn swap_ins_inside_syscalls_are_counted() {
    // read(2) into swapped-out memory: the kernel faults the pages back in inside the syscall.
    let Some(t) = swap_run(&[], "1 syscall") else {
        return;
    };
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert!(
        t.vmstat.0 > 1000,
        "too little swap-in to judge\n{}",
        t.context()
    );
    assert_swap_in_matches_pswpin(&t);
}

#[test]
fn cgroup_filter_credits_only_its_processes() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let _swap = SwapFile::create(512);
    let memory = MemoryCgroup::create(LIMIT_MIB);
    // The cgroup memtrace watches: below the memory cgroup where that is cgroup v2, beside it
    // in the v2 hierarchy where memory is on cgroup v1. Both workloads swap in the memory
    // cgroup; only one is in the watched one.
    let watched = match cgroup2_mount() {
        Some(mount) if memory.dir.starts_with(&mount) => TestCgroup::create_under(&memory.dir),
        _ => TestCgroup::create(),
    };
    let dir = TempDir::new("swap-cgroup");
    let out = dir.join("report.json");
    let mut tracer = spawn_memtrace(&[
        "swap",
        "--cgroup",
        watched.dir.to_str().unwrap(),
        "--format",
        "json",
        "--output",
        out.to_str().unwrap(),
    ]);
    tracer.wait_attached();
    // Both at once: each one's reclaim also takes the other's pages, so credit must follow
    // the owner, not the task that reclaims.
    let swap_cycle = |cgroups: &[&Path]| {
        let joins: String = cgroups
            .iter()
            .map(|c| format!("echo $$ > {} && ", c.join("cgroup.procs").display()))
            .collect();
        let script = format!(
            "{joins}exec {} {WORKLOAD_MIB} 1",
            workload("swap_cycle").display()
        );
        std::process::Command::new("sh")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh")
    };
    let finish = |child: std::process::Child| {
        let output = child.wait_with_output().expect("waiting for a workload");
        parse_report(&String::from_utf8_lossy(&output.stdout))
            .unwrap_or_else(|e| panic!("workload: {e:#} ({})", output.status))
    };
    let (inside, outside) = (
        swap_cycle(&[&memory.dir, &watched.dir]),
        swap_cycle(&[&memory.dir]),
    );
    let (inside, outside) = (finish(inside), finish(outside));
    tracer.signal(libc::SIGINT);
    let run = tracer.wait();
    let text =
        fs::read_to_string(&out).unwrap_or_else(|e| panic!("no report ({e})\n{}", run.describe()));
    let report: Value = serde_json::from_str(&text).unwrap();
    let context = format!("{}\n--- report ---\n{text}", run.describe());
    let row = |pid: u32| {
        report["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["pid"] == pid)
    };
    let row_in =
        row(inside.pid).unwrap_or_else(|| panic!("no row for the watched workload\n{context}"));
    // Its own figures: what it moved to swap minus what came back is its VmSwap.
    let still_out_kb = u64_of(row_in, "swap_out_unmapped_pages")
        .saturating_sub(u64_of(row_in, "swap_in_pages"))
        * 4;
    let vmswap_kb = inside.u64("vmswap_kb");
    assert!(
        vmswap_kb > 0 && within(still_out_kb, vmswap_kb, 0.10),
        "moved out - brought back = {still_out_kb} KiB, its VmSwap is {vmswap_kb} KiB\n{context}"
    );
    assert!(
        row(outside.pid).is_none(),
        "the workload outside the cgroup was credited\n{context}"
    );
}

#[test]
fn thrashing_thresholds_are_the_users() {
    // The cycling workload thrashes by the defaults (see swap_traffic_is_credited_to_the_owner);
    // thresholds above anything it reaches must say it does not.
    let Some(t) = swap_run(
        &[
            "--thrash-rate",
            "1000000000",
            "--thrash-psi-full",
            "100",
            "--thrash-intervals",
            "3",
        ],
        "2",
    ) else {
        return;
    };
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert!(u64_of(t.process(), "swap_in_pages") > 0, "{}", t.context());
    assert_eq!(t.report["thrashing"], false, "{}", t.context());
    let thresholds = &t.report["thrashing_thresholds"];
    assert_eq!(thresholds["thrash_rate"], 1e9, "{}", t.context());
    assert_eq!(thresholds["thrash_intervals"], 3, "{}", t.context());
    assert_eq!(thresholds["thrash_psi_full"], 100.0, "{}", t.context());
}

#[test]
fn no_swap_is_said_plainly() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
    if swaps.lines().count() > 1 {
        eprintln!("note: this machine has swap configured; the no-swap message is not checked");
        return;
    }
    let run = memtrace(&["swap", "--duration", "1s", "--format", "json"]);
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert!(
        run.stderr.contains("no swap is configured"),
        "no plain message\n{}",
        run.describe()
    );
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e})\n{}", run.describe()));
    assert_eq!(
        report["system"]["swap_configured"],
        false,
        "{}",
        run.describe()
    );
}

/// Of every 4 pages the workload fills, 1 is zero-filled: the kernel neither writes nor reads
/// it (6.12+). memtrace's out, its zero pages and what was written, in and its zero pages and
/// what was read, are each the matching /proc/vmstat delta, per process and system-wide, and
/// the workload's mix.
#[test]
fn zero_pages_are_told_apart_from_written_and_read_ones() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let _swap = SwapFile::create(512);
    let cgroup = MemoryCgroup::create(LIMIT_MIB);
    let script = format!(
        "echo $$ > {} && exec {} {WORKLOAD_MIB} 1 1",
        cgroup.procs().display(),
        workload("swap_zero").display()
    );
    let before = VmSwap::read();
    let t = traced::trace("swap", &[], &["sh", "-c", &script]);
    let vm = VmSwap::read().since(&before);
    assert_eq!(t.run.code(), 0, "{}", t.context());
    let context = || format!("/proc/vmstat over the run: {vm:?}\n{}", t.context());
    let system = &t.report["system"];
    let row = t.process();

    // The system's figures are the kernel's counters, in the processes' terms.
    let (zero_out, zero_in) = (vm.swpout_zero, vm.swpin_zero);
    assert_eq!(u64_of(system, "pswpout"), vm.pswpout, "{}", context());
    assert_eq!(
        opt_u64(system, "swap_out_zero_pages"),
        zero_out,
        "{}",
        context()
    );
    assert_eq!(
        opt_u64(system, "swap_in_zero_pages"),
        zero_in,
        "{}",
        context()
    );
    assert_eq!(
        u64_of(system, "swap_out_pages"),
        vm.pswpout + zero_out.unwrap_or(0),
        "{}",
        context()
    );
    assert_eq!(
        u64_of(system, "swap_in_pages"),
        vm.pswpin + zero_in.unwrap_or(0),
        "{}",
        context()
    );

    // The process's: all pages, then written and read, within 10% of the kernel's.
    let (out, into) = (u64_of(row, "swap_out_pages"), u64_of(row, "swap_in_pages"));
    let vm_out = vm.pswpout + zero_out.unwrap_or(0);
    let vm_in = vm.pswpin + zero_in.unwrap_or(0);
    assert!(
        vm_out > 1000 && vm_in > 1000,
        "too little swap\n{}",
        context()
    );
    assert!(
        within(out, vm_out, 0.10) && within(into, vm_in, 0.10),
        "out {out} and in {into}: the kernel's are {vm_out} and {vm_in}\n{}",
        context()
    );
    let counted = tests::tracepoint_exists("memcg/count_memcg_events") && zero_out.is_some();
    assert_eq!(t.report["per_process_zero_pages"], counted, "{}", context());
    let (out_zero, in_zero) = (
        opt_u64(row, "swap_out_zero_pages"),
        opt_u64(row, "swap_in_zero_pages"),
    );
    if !counted {
        assert_eq!((out_zero, in_zero), (None, None), "{}", context());
        return;
    }
    let (out_zero, in_zero) = (out_zero.unwrap(), in_zero.unwrap());
    let (vm_out_zero, vm_in_zero) = (zero_out.unwrap(), zero_in.unwrap());
    for (what, measured, kernel) in [
        ("zero pages out", out_zero, vm_out_zero),
        ("pages written", out - out_zero, vm.pswpout),
        ("zero pages in", in_zero, vm_in_zero),
        ("pages read", into - in_zero, vm.pswpin),
    ] {
        assert!(
            within(measured, kernel, 0.10),
            "{what}: memtrace {measured}, /proc/vmstat {kernel}\n{}",
            context()
        );
    }
    // The workload's mix: a quarter of any stretch of its memory is zero-filled, and it has
    // no more zero pages than it filled (each goes out at most once per pass, plus the fill).
    let (pages, zero_pages) = (t.workload.u64("pages"), t.workload.u64("zero_pages"));
    assert_eq!(zero_pages * 4, pages, "{}", context());
    for (what, zero, all) in [("out", out_zero, out), ("in", in_zero, into)] {
        let share = zero as f64 / all as f64;
        assert!(
            (share - 0.25).abs() <= 0.03,
            "{what}: {zero} of {all} pages zero-filled, the workload filled a quarter\n{}",
            context()
        );
        assert!(zero <= 2 * zero_pages, "{}", context());
    }
    // On every line, the traced process's figures are within the system's. The two are
    // read a moment apart (the programs' counts at the drain, /proc/vmstat after it), so a
    // line may tip by a few pages either way: 1%, and 16 pages for short lines (the last
    // one, cut by the workload's exit, may last a few ms).
    for interval in t.report["intervals"].as_array().unwrap() {
        let system = &interval["system"];
        for key in [
            "swap_out_pages",
            "swap_out_zero_pages",
            "swap_in_zero_pages",
        ] {
            let (process, whole) = (u64_of(interval, key), u64_of(system, key));
            assert!(
                process <= whole + whole / 100 + 16,
                "at {}s the workload's {key} {process} exceeds the system's {whole}\n{}",
                interval["t"],
                context()
            );
        }
    }
}

/// An OOM kill of the traced command during a swap run is listed (pid, name, memory cgroup,
/// when); a kill of an untraced process at the same time is not. The oracle: the SIGKILL the
/// command died of, and the kernel's own count of OOM kills in each memory cgroup.
#[test]
fn oom_kills_of_traced_processes_are_listed() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let traced_cgroup = MemoryCgroup::without_swap(32);
    let other = MemoryCgroup::create_named(&format!("memtrace-other-{}", std::process::id()), 32);
    let _ = fs::write(
        other.dir.join("memory.memsw.limit_in_bytes"),
        (32u64 << 20).to_string(),
    );
    let _ = fs::write(other.dir.join("memory.swap.max"), "0");
    let dir = TempDir::new("swap-oom");
    let (out, go) = (dir.join("report.json"), dir.join("go"));
    // The traced command waits until the untraced victim is dead, then is killed itself.
    let script = format!(
        "echo $$ > {} && while [ ! -e {} ]; do sleep 0.05; done; exec {} {}",
        traced_cgroup.procs().display(),
        go.display(),
        workload("fault_touch").display(),
        (64u64 << 20) / 4096
    );
    let mut tracer = spawn_memtrace(&[
        "swap",
        "--format",
        "json",
        "--output",
        out.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    tracer.wait_attached();
    let untraced = other.oom_victim().status().expect("sh");
    fs::write(&go, "").unwrap();
    let run = tracer.wait();
    let text =
        fs::read_to_string(&out).unwrap_or_else(|e| panic!("no report ({e})\n{}", run.describe()));
    let report: Value = serde_json::from_str(&text).unwrap();
    let context = format!("{}\n--- report ---\n{text}", run.describe());
    assert_eq!(untraced.signal(), Some(libc::SIGKILL), "{context}");
    assert_eq!(run.code(), 0, "{context}");
    assert_eq!(report["exit"]["signal"], libc::SIGKILL, "{context}");
    assert_eq!(oom_kills(&traced_cgroup), 1, "{context}");
    assert_eq!(oom_kills(&other), 1, "{context}");
    let kills = report["oom_kills"].as_array().unwrap();
    assert_eq!(kills.len(), 1, "only the traced command's kill\n{context}");
    let kill = &kills[0];
    assert_eq!(kill["pid"], report["exit"]["pid"], "{context}");
    assert_eq!(kill["comm"], "fault_touch", "{context}");
    let name = traced_cgroup.dir.file_name().unwrap().to_str().unwrap();
    assert!(
        kill["memcg"].as_str().is_some_and(|m| m.ends_with(name)),
        "memory cgroup is not {name}\n{context}"
    );
    let at = kill["at_s"].as_f64().unwrap();
    assert!(
        at > 0.0 && at <= report["duration_s"].as_f64().unwrap(),
        "{context}"
    );
}

/// The kernel's count of OOM kills in a memory cgroup (v1 memory.oom_control, v2
/// memory.events).
fn oom_kills(cgroup: &MemoryCgroup) -> u64 {
    ["memory.oom_control", "memory.events"]
        .iter()
        .filter_map(|file| fs::read_to_string(cgroup.dir.join(file)).ok())
        .find_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        })
        .expect("the memory cgroup's OOM kill count")
}
