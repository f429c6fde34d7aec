//! The workloads alone, without memtrace: each one's own JSON report must be sane.

use tests::{parse_report, run_workload, scratch_path, spawn_waiting};

#[test]
fn fault_touch_reports_one_fault_per_page() {
    let r = run_workload("fault_touch", &["300"]);
    assert!(r.phase_minflt >= 300, "{r:?}");
    assert!(r.phase_minflt < 300 + 50, "{r:?}");
    assert!(r.minflt >= r.phase_minflt && r.elapsed_s > 0.0, "{r:?}");
    assert_eq!(r.u64("pages"), 300);
}

#[test]
fn fault_file_reports_major_faults() {
    let path = scratch_path("fault_file");
    let r = run_workload("fault_file", &[path.to_str().unwrap(), "64", "4"]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(r.u64("reads"), 16);
    // Dropping the file from the page cache can fail (see resident_before); some faults stay.
    assert!(r.phase_majflt > 0 && r.phase_majflt <= 16, "{r:?}");
}

#[test]
fn fault_threads_reports_all_threads() {
    let r = run_workload("fault_threads", &["3", "100"]);
    assert!(r.phase_minflt >= 300, "{r:?}");
    let tids = r.pids("tids");
    assert_eq!(tids.len(), 3);
    assert!(tids.iter().all(|&t| t != r.pid && t > 0), "{r:?}");
}

#[test]
fn fault_fork_reports_children() {
    let r = run_workload("fault_fork", &["3", "100"]);
    assert!(r.u64("children_minflt") >= 300, "{r:?}");
    assert!(
        r.phase_minflt < 300,
        "children's faults are not the parent's: {r:?}"
    );
    assert_eq!(r.pids("children").len(), 3);
}

#[test]
fn fault_storm_counts_its_pages() {
    let r = run_workload("fault_storm", &["4", "2"]);
    assert_eq!(r.u64("pages_touched"), 2 * 4 * 256);
    assert!(r.phase_minflt >= 2 * 4 * 256, "{r:?}");
}

#[test]
fn demo_runs() {
    let r = run_workload("demo", &["5"]);
    assert_eq!(r.u64("requests"), 20);
    assert!(r.u64("leaked_bytes") > 0 && r.phase_minflt > 0, "{r:?}");
}

#[test]
fn wait_and_linger_keep_the_process_alive() {
    let mut w = spawn_waiting("fault_touch", &["50"]);
    let r = w.go();
    assert_eq!(r.pid, w.pid);
    assert!(r.phase_minflt >= 50, "{r:?}");
    assert!(
        std::path::Path::new(&format!("/proc/{}", w.pid)).exists(),
        "lingering"
    );
    w.finish();
}

#[test]
fn report_parsing_takes_the_json_line() {
    let out = "ready 7\n{\"pid\":7,\"minflt\":3,\"majflt\":0,\"phase_minflt\":1,\
               \"phase_majflt\":0,\"elapsed_s\":0.5,\"children\":[8,9]}\n";
    let r = parse_report(out).unwrap();
    assert_eq!((r.pid, r.minflt, r.phase_minflt), (7, 3, 1));
    assert_eq!(r.pids("children"), [8, 9]);
    assert!(parse_report("ready 7\n").is_err());
}

#[test]
fn unwind_chain_reports_each_mode() {
    for mode in ["faults", "pages", "malloc", "thread", "signal"] {
        let r = run_workload("unwind_chain", &[mode, "300"]);
        assert_eq!(r.extra["mode"], mode, "{r:?}");
        assert_eq!(r.u64("count"), 300, "{r:?}");
        // Touching faults each page, and so does populating (pages) as getrusage counts;
        // leaking (malloc) 300 blocks of 1000 bytes faults fewer pages.
        assert_eq!(r.phase_minflt >= 300, mode != "malloc", "{r:?}");
        assert_eq!(r.u64("handled"), u64::from(mode == "signal"), "{r:?}");
        assert_eq!(r.u64("tid") != u64::from(r.pid), mode == "thread", "{r:?}");
    }
}

#[test]
fn unwind_rust_reports_its_faults() {
    let r = run_workload("unwind_rust", &["faults", "300"]);
    assert!(r.phase_minflt >= 300 && r.phase_minflt < 300 + 50, "{r:?}");
    let r = run_workload("unwind_rust", &["malloc", "300"]);
    assert_eq!(r.u64("count"), 300, "{r:?}");
}
