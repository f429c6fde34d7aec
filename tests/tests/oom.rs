//! `memtrace oom` against a real OOM kill: a workload in a memory cgroup (v1 or v2, no swap)
//! touching twice its limit is killed by the kernel; the oracle is the SIGKILL `waitpid` saw,
//! with the pid, the name and the cgroup the test gave it.

use std::os::unix::process::ExitStatusExt;

use serde_json::Value;
use tests::{serial, spawn_memtrace, swap_env::MemoryCgroup, traced, workload, TempDir};

const LIMIT_MIB: u64 = 32;

#[test]
fn a_cgroup_oom_kill_is_reported_with_its_victim() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let cgroup = MemoryCgroup::without_swap(LIMIT_MIB);
    let dir = TempDir::new("oom");
    let out = dir.join("report.json");
    let mut tracer =
        spawn_memtrace(&["oom", "--format", "json", "--output", out.to_str().unwrap()]);
    tracer.wait_attached();
    let mut victim = cgroup.oom_victim().spawn().expect("sh");
    let pid = victim.id();
    let status = victim.wait().expect("wait");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the workload was not OOM-killed: {status}"
    );
    tracer.signal(libc::SIGINT);
    let run = tracer.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let kills = report["kills"].as_array().unwrap();
    let kill = kills
        .iter()
        .find(|k| k["pid"] == pid)
        .unwrap_or_else(|| panic!("no kill of pid {pid}\n{report:#}\n{}", run.describe()));
    assert_eq!(kill["comm"], "fault_touch", "{report:#}");
    let name = cgroup.dir.file_name().unwrap().to_str().unwrap();
    assert!(
        kill["cgroup"].as_str().unwrap().ends_with(name),
        "cgroup {} is not {name}\n{report:#}",
        kill["cgroup"]
    );
    assert_eq!(kill["constraint"], "cgroup", "{report:#}");
    assert_eq!(kill["cgroup_limit_bytes"], LIMIT_MIB << 20, "{report:#}");
    // The victim held about the limit in anonymous memory when it was chosen.
    let anon_kb = kill["anon_rss_kb"].as_u64().unwrap();
    assert!(
        anon_kb > (LIMIT_MIB << 10) / 2 && anon_kb <= LIMIT_MIB << 10,
        "anon_rss_kb {anon_kb}\n{report:#}"
    );
}

#[test]
fn a_run_without_oom_reports_no_kill() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let path = workload("fault_touch");
    let (run, report) = traced::run_json("oom", &[], &[path.to_str().unwrap(), "100"]);
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert_eq!(report["kills"], Value::Array(Vec::new()), "{report:#}");
}
