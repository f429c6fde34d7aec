//! `memtrace diagnose`: one workload per verdict, each with a memory shape known in
//! advance, and workloads that deserve none. The verdicts' evidence is checked against the
//! workload's own figures where it has them.

use serde_json::Value;
use tests::{
    serial,
    swap_env::{MemoryCgroup, SwapFile},
    traced::{self, Traced},
    workload, TempDir,
};

/// `memtrace diagnose --format json <extra> -- memory_shape ARGS`.
fn diagnose(extra: &[&str], shape: &[&str]) -> Traced {
    let program = workload("memory_shape");
    let mut command = vec![program.to_str().unwrap()];
    command.extend_from_slice(shape);
    traced::trace("diagnose", extra, &command)
}

/// The same, for a command given whole (a shell that moves itself into a cgroup first).
fn diagnose_command(extra: &[&str], command: &[&str]) -> Traced {
    traced::trace("diagnose", extra, command)
}

fn verdict<'a>(t: &'a Traced, id: &str) -> Option<&'a Value> {
    t.report["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == id)
}

/// The verdicts other than information.
fn raised(t: &Traced) -> Vec<String> {
    t.report["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["severity"] != "info")
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn steady_growth_is_heap_growth_at_its_rate() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    // 400 KiB every 100 ms for 6 s: 234 MiB/min.
    let t = diagnose(&[], &["grow", "400", "60"]);
    assert_eq!(t.run.code(), 3, "{}", t.context());
    let v = verdict(&t, "heap-growth").unwrap_or_else(|| panic!("{}", t.context()));
    assert_eq!(v["severity"], "warning", "{}", t.context());
    let slope = v["evidence"]["slope_mib_per_min"].as_f64().unwrap();
    let wanted = 400.0 * 10.0 * 60.0 / 1024.0;
    assert!(
        (slope - wanted).abs() <= wanted * 0.2,
        "slope {slope} MiB/min, the workload grows {wanted:.0}\n{}",
        t.context()
    );
    assert!(
        v["evidence"]["r2"].as_f64().unwrap() >= 0.9,
        "{}",
        t.context()
    );
    let advice = v["advice"].as_str().unwrap();
    assert!(
        advice.contains(&format!("memtrace malloc --leaks --pid {}", t.workload.pid)),
        "{advice}"
    );
    // Every page its anonymous memory grew by came from the kernel's page allocator, which
    // the kernel-side count saw.
    let samples = t.report["samples"].as_array().unwrap();
    let (first, last) = (&samples[0], &samples[samples.len() - 1]);
    let grew_kb = last["rss_anon_kb"].as_u64().unwrap() - first["rss_anon_kb"].as_u64().unwrap();
    let allocated_kb = 4
        * (last["pages_allocated"].as_u64().unwrap() - first["pages_allocated"].as_u64().unwrap());
    assert!(
        allocated_kb as f64 >= grew_kb as f64 * 0.9,
        "{allocated_kb} KiB allocated, anonymous memory grew {grew_kb} KiB\n{}",
        t.context()
    );
    // The JSON contract's sample keys.
    let sample = &t.report["samples"][0];
    for key in ["t", "rss_kb", "vsz_kb", "swap_kb", "minflt", "majflt"] {
        assert!(sample[key].is_number(), "{key}: {sample}");
    }
    assert_eq!(t.report["pid"], t.workload.pid, "{}", t.context());
}

#[test]
fn a_fixed_working_set_and_a_one_off_allocation_deserve_no_verdict() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let flat = diagnose(&[], &["flat", "64", "60"]);
    assert_eq!(raised(&flat), Vec::<String>::new(), "{}", flat.context());
    assert_eq!(flat.run.code(), 0, "{}", flat.context());
    let one_off = diagnose(&[], &["oneoff", "200", "60"]);
    assert!(
        verdict(&one_off, "heap-growth").is_none(),
        "{}",
        one_off.context()
    );
    assert_eq!(
        raised(&one_off),
        Vec::<String>::new(),
        "{}",
        one_off.context()
    );
}

#[test]
fn deep_recursion_is_near_the_stack_limit_and_shallow_is_not() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let deep = diagnose(&[], &["stack", "90", "20"]);
    let v = verdict(&deep, "stack-near-limit").unwrap_or_else(|| panic!("{}", deep.context()));
    let percent = v["evidence"]["percent"].as_f64().unwrap();
    assert!((85.0..95.0).contains(&percent), "{}", deep.context());
    assert_eq!(deep.run.code(), 3, "{}", deep.context());
    let shallow = diagnose(&[], &["stack", "20", "20"]);
    assert_eq!(
        raised(&shallow),
        Vec::<String>::new(),
        "{}",
        shallow.context()
    );
}

#[test]
fn a_process_at_its_cgroups_limit_is_near_an_oom_kill() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let cgroup = MemoryCgroup::without_swap(64);
    let script = format!(
        "echo $$ > {} && exec {} flat 60 40",
        cgroup.procs().display(),
        workload("memory_shape").display()
    );
    let t = diagnose_command(&[], &["sh", "-c", &script]);
    let v = verdict(&t, "rss-near-limit").unwrap_or_else(|| panic!("{}", t.context()));
    assert!(
        v["evidence"]["percent"].as_f64().unwrap() >= 90.0,
        "{}",
        t.context()
    );
    assert_eq!(v["evidence"]["limit_bytes"], 64u64 << 20, "{}", t.context());
    assert_eq!(t.run.code(), 3, "{}", t.context());
}

#[test]
fn reading_a_file_from_disk_again_and_again_is_major_faults() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("diagnose-major");
    let file = dir.join("data.bin");
    std::fs::write(&file, vec![7u8; 32 << 20]).unwrap();
    let t = diagnose(&[], &["filemajor", file.to_str().unwrap(), "40"]);
    let v = verdict(&t, "major-faults").unwrap_or_else(|| panic!("{}", t.context()));
    assert!(
        v["evidence"]["major_faults_per_s"].as_f64().unwrap() >= 5.0,
        "{}",
        t.context()
    );
    assert!(t.workload.majflt > 0, "{}", t.context());
}

#[test]
fn a_working_set_larger_than_memory_is_swap_thrashing() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let _swap = SwapFile::create(512);
    let cgroup = MemoryCgroup::create(64);
    let script = format!(
        "echo $$ > {} && exec {} 128 4",
        cgroup.procs().display(),
        workload("swap_cycle").display()
    );
    let t = diagnose_command(&["--interval", "250ms"], &["sh", "-c", &script]);
    let v = verdict(&t, "swap-thrashing").unwrap_or_else(|| panic!("{}", t.context()));
    assert_eq!(v["severity"], "critical", "{}", t.context());
    assert!(
        v["evidence"]["intervals"].as_u64().unwrap() >= 2,
        "{}",
        t.context()
    );
    assert_eq!(t.run.code(), 3, "{}", t.context());
}

/// The --html page opens in headless Chromium with no console errors, and the screenshot
/// shows the memory chart (its RSS line's blue) and the verdict table (a warning row's
/// yellow). The screenshot is kept in `target/test-artifacts/diagnose.png`.
#[test]
fn the_html_page_opens_in_chromium_with_its_chart_and_verdicts() {
    if !tests::require_root() {
        return;
    }
    if !tests::require_chromium() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("diagnose-html");
    let page = dir.join("diagnose.html");
    let t = diagnose(&["--html", page.to_str().unwrap()], &["grow", "400", "40"]);
    assert!(verdict(&t, "heap-growth").is_some(), "{}", t.context());
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing to fetch.
    for reference in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(reference), "an external asset: {reference}");
    }
    assert!(!html.contains("<script"), "a script in the page");
    let (screenshot, artefact) = tests::chromium_screenshot(&page, dir.path(), "diagnose.png");
    let pixels = |rgb: [u8; 3]| tests::count_pixels(&screenshot, rgb);
    let (chart, table) = (pixels([0x1f, 0x77, 0xb4]), pixels([0xfb, 0xee, 0xc2]));
    assert!(
        chart >= 200 && table >= 2000,
        "RSS line {chart} px, warning row {table} px in {}",
        artefact.display()
    );
}

#[test]
fn a_commands_tree_is_watched_and_its_largest_member_named() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    // The shell holds little; the process it starts leaks 234 MiB/min.
    let program = workload("memory_shape");
    let shell = format!("{} grow 400 60; true", program.display());
    let t = diagnose_command(&[], &["sh", "-c", &shell]);
    assert_eq!(t.run.code(), 3, "{}", t.context());
    let v = verdict(&t, "heap-growth").unwrap_or_else(|| panic!("{}", t.context()));
    let slope = v["evidence"]["slope_mib_per_min"].as_f64().unwrap();
    let wanted = 400.0 * 10.0 * 60.0 / 1024.0;
    assert!(
        (slope - wanted).abs() <= wanted * 0.2,
        "slope {slope} MiB/min, the workload grows {wanted:.0}\n{}",
        t.context()
    );
    let largest = &v["evidence"]["largest"];
    assert_eq!(largest["pid"], t.workload.pid, "{}", t.context());
    assert_eq!(largest["comm"], "memory_shape", "{}", t.context());
    assert_eq!(v["evidence"]["processes"], 2, "{}", t.context());
    let advice = v["advice"].as_str().unwrap();
    assert!(
        advice.contains(&format!("--pid {}", t.workload.pid)),
        "{advice}"
    );

    // The shell alone has nothing to say.
    let alone = diagnose_command(&["--no-follow-children"], &["sh", "-c", &shell]);
    assert!(raised(&alone).is_empty(), "{}", alone.context());
}
