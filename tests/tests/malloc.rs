//! `memtrace malloc` against allocations known exactly: the workloads count their own calls and
//! the bytes they leak.

use serde_json::Value;
use tests::{
    memtrace,
    pprof_raw::RawProfile,
    serial,
    traced::{self, u64_of, Traced},
    workload, TempDir,
};

/// Outstanding rows whose innermost frame is `function`.
fn outstanding_in<'a>(t: &'a Traced, function: &str) -> Vec<&'a Value> {
    t.report["outstanding"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["frames"][0] == function)
        .collect()
}

/// `memtrace malloc <extra> --format json -- <workload> <args>`.
fn trace(extra: &[&str], name: &str, args: &[&str]) -> Traced {
    let path = workload(name);
    let mut command = vec![path.to_str().unwrap()];
    command.extend_from_slice(args);
    traced::trace("malloc", &[FRAME_POINTERS, extra].concat(), &command)
}

/// These tests count a command's calls by the stack of the function that made them, from its
/// first call on, so they walk by frame pointers (the workloads keep them): the table walk
/// cannot see a command's first milliseconds whole, before memtrace has listed the libraries
/// its loader maps (README; the table walk's malloc stacks are tested by pid in unwind.rs).
const FRAME_POINTERS: &[&str] = &["--unwind", "fp"];

/// libc allocates a few blocks of its own (stdio buffers) besides the workload's.
const LIBC_OWN_BLOCKS: u64 = 8;

#[test]
fn leaked_blocks_are_found_exactly() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let (leaks, size, churn) = (100u64, 1000u64, 20000u64);
    let t = trace(
        &["--leaks", "--top", "50"],
        "malloc_leak",
        &[&leaks.to_string(), &size.to_string(), &churn.to_string()],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    // The leak: exactly its blocks and bytes, on the stack of the function that made it.
    let leaked = outstanding_in(&t, "leaky_function");
    assert_eq!(leaked.len(), 1, "{}", t.context());
    assert_eq!(u64_of(leaked[0], "allocations"), leaks, "{}", t.context());
    assert_eq!(u64_of(leaked[0], "bytes"), leaks * size, "{}", t.context());
    assert_eq!(leaked[0]["frames"][1], "main", "{}", t.context());
    // Nothing the churn allocated is left, and little else is.
    assert!(outstanding_in(&t, "churn").is_empty(), "{}", t.context());
    let others: u64 = t.report["outstanding"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["frames"][0] != "leaky_function")
        .map(|r| u64_of(r, "allocations"))
        .sum();
    assert!(
        others <= LIBC_OWN_BLOCKS,
        "{others} other blocks outstanding\n{}",
        t.context()
    );
    // Calls: the workload's own count, plus libc's few.
    let process = t.process();
    let mallocs = t.workload.u64("mallocs");
    let counted = u64_of(process, "malloc_calls");
    assert!(
        (mallocs..=mallocs + LIBC_OWN_BLOCKS).contains(&counted),
        "{counted} malloc calls counted, the workload made {mallocs}\n{}",
        t.context()
    );
    let frees = u64_of(process, "free_calls");
    assert!(
        (churn..=churn + LIBC_OWN_BLOCKS).contains(&frees),
        "{frees} free calls counted, the workload made {churn}\n{}",
        t.context()
    );
    // Bytes: allocated minus freed is what is outstanding.
    let outstanding: u64 = t.report["outstanding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| u64_of(r, "bytes"))
        .sum();
    assert_eq!(
        u64_of(process, "bytes_allocated") - u64_of(process, "bytes_freed"),
        outstanding,
        "{}",
        t.context()
    );
}

/// An exec replaces the address space: blocks the old image never freed stay reported with
/// their stacks, even when the new image allocates and frees blocks at the same addresses
/// (address randomization off, so they coincide).
#[test]
fn blocks_left_by_an_exec_are_not_freed_by_the_new_image() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let (leaks, size) = (3u64, 100u64);
    let path = workload("malloc_leak");
    let t = traced::trace(
        "malloc",
        &[FRAME_POINTERS, &["--leaks", "--top", "100"]].concat(),
        &[
            "setarch",
            "-R",
            "env",
            "MALLOC_LEAK_THEN_EXEC=1",
            path.to_str().unwrap(),
            &leaks.to_string(),
            &size.to_string(),
            "0",
        ],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert_eq!(t.workload.u64("reused"), leaks, "{}", t.context());
    let leaked = outstanding_in(&t, "leaky_function");
    assert_eq!(leaked.len(), 1, "{}", t.context());
    assert_eq!(u64_of(leaked[0], "allocations"), leaks, "{}", t.context());
    assert_eq!(u64_of(leaked[0], "bytes"), leaks * size, "{}", t.context());
    assert!(
        outstanding_in(&t, "reused_function").is_empty(),
        "{}",
        t.context()
    );
    // The new image's frees are of its own blocks.
    assert_eq!(
        u64_of(t.process(), "frees_of_untraced_blocks"),
        0,
        "{}",
        t.context()
    );
}

/// Children that live a few milliseconds: each one's leak is found, and the frames in its
/// libraries (libc's, mapped after its exec) are named even though it exited before memtrace
/// could read its maps.
#[test]
fn short_lived_children_get_their_library_symbols() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let children = 5;
    let path = workload("malloc_leak");
    let script = format!(
        "for i in $(seq {children}); do {} 1 100 0 >/dev/null; done",
        path.display()
    );
    let (run, report) = traced::run_json(
        "malloc",
        &[
            FRAME_POINTERS,
            &["--leaks", "--follow-children", "--top", "1000"],
        ]
        .concat(),
        &["sh", "-c", &script],
    );
    assert_eq!(run.code(), 0, "{}", run.describe());
    let context = || format!("{}\n{report:#}", run.describe());
    let leaks: Vec<&Value> = report["outstanding"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["frames"][0] == "leaky_function")
        .collect();
    let pids: std::collections::HashSet<u64> = leaks.iter().map(|r| u64_of(r, "pid")).collect();
    assert_eq!(pids.len(), children, "{}", context());
    for leak in leaks {
        assert_eq!(leak["frames"][1], "main", "{}", context());
        // main's caller is in libc.
        let caller = leak["frames"][2].as_str().unwrap_or("");
        assert!(
            !caller.is_empty() && !caller.starts_with("0x"),
            "libc frame not named: {leak}\n{}",
            context()
        );
    }
}

/// Frames far apart on the stack, many of them: the walk reaches past its one read of the
/// stack's top and names every frame.
#[test]
fn deep_stacks_are_walked_whole() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let depth = 12;
    let t = trace(
        &["--leaks"],
        "malloc_leak",
        &["10", "100", "0", &depth.to_string()],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    let leaked = outstanding_in(&t, "leaky_function");
    assert_eq!(leaked.len(), 1, "{}", t.context());
    let frames: Vec<&str> = leaked[0]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let mut expected = vec!["leaky_function"];
    expected.extend(std::iter::repeat_n("descend", depth));
    expected.push("main");
    assert!(
        frames.starts_with(&expected),
        "frames {frames:?}, expected {expected:?} first\n{}",
        t.context()
    );
}

#[test]
fn leaks_as_flame_graph_and_pprof_space_profile() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("malloc-profiles");
    let (svg, profile) = (dir.join("leaks.svg"), dir.join("leaks.pb.gz"));
    let t = trace(
        &[
            "--leaks",
            "--flamegraph",
            svg.to_str().unwrap(),
            "--pprof",
            profile.to_str().unwrap(),
        ],
        "malloc_leak",
        &["100", "1000", "1000"],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    let graph = std::fs::read_to_string(&svg).unwrap();
    assert!(graph.contains("leaky_function"), "{}", t.context());
    let Some(pprof) = tests::go_pprof_top(&profile, &["-unit=B"], dir.path()) else {
        return;
    };
    // The leak, in bytes, on its function: exactly what leaked.
    assert!(
        pprof
            .stdout
            .lines()
            .any(|l| l.contains("leaky_function") && l.trim_start().starts_with("100000B")),
        "go tool pprof does not show 100000B in leaky_function\n{}\n{}",
        pprof.describe(),
        t.context()
    );
}

/// The four values of a heap profile's samples whose innermost user frame is `function`,
/// summed.
fn heap_values_in(profile: &RawProfile, function: &str) -> [i64; 4] {
    let mut sums = [0; 4];
    for sample in &profile.samples {
        let innermost = profile.innermost_user(sample);
        if innermost.and_then(|l| l.function.as_deref()) == Some(function) {
            for (sum, value) in sums.iter_mut().zip(&sample.values) {
                *sum += value;
            }
        }
    }
    sums
}

/// JSON rows of `key` (`stacks`, `outstanding`) whose innermost frame is `function`: the sums
/// of their `count_key` and `bytes`.
fn json_sums(t: &Traced, key: &str, count_key: &str, function: &str) -> [i64; 2] {
    let rows = t.report[key].as_array().unwrap();
    let mut sums = [0; 2];
    for row in rows.iter().filter(|r| r["frames"][0] == function) {
        sums[0] += u64_of(row, count_key) as i64;
        sums[1] += u64_of(row, "bytes") as i64;
    }
    sums
}

/// `--pprof` from malloc is a heap profile as Go writes one: go tool pprof reads four sample
/// types (`alloc_objects`, `alloc_space`, `inuse_objects`, `inuse_space`), period type
/// space/bytes, `inuse_space` shown first with --leaks and `alloc_space` without. Per function,
/// its values are the JSON's (allocations from `stacks`, what is still allocated from
/// `outstanding`), and those are what malloc_leak made: LEAKS blocks still allocated in
/// leaky_function, CHURN blocks allocated and freed in churn.
#[test]
fn pprof_is_a_heap_profile_with_gos_four_sample_types() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("malloc-heap-profile");
    let (leaks, size, churn) = (100i64, 4096i64, 2000i64);
    let workload_args = [leaks.to_string(), size.to_string(), churn.to_string()];
    let workload_args: Vec<&str> = workload_args.iter().map(String::as_str).collect();
    for with_leaks in [true, false] {
        let profile = dir.join(&format!("heap-{with_leaks}.pb.gz"));
        let mut extra = vec!["--top", "100000", "--pprof", profile.to_str().unwrap()];
        if with_leaks {
            extra.push("--leaks");
        }
        let t = trace(&extra, "malloc_leak", &workload_args);
        assert_eq!(t.run.code(), 0, "{}", t.context());
        let Some(raw) = RawProfile::read(&profile, dir.path()) else {
            return;
        };
        let context = || format!("{}\n{}", raw.text, t.context());
        assert_eq!(
            raw.sample_types,
            [
                "alloc_objects/count",
                "alloc_space/bytes",
                "inuse_objects/count",
                "inuse_space/bytes"
            ],
            "{}",
            context()
        );
        let shown = if with_leaks {
            "inuse_space/bytes"
        } else {
            "alloc_space/bytes"
        };
        assert_eq!(
            raw.default_sample_type.as_deref(),
            Some(shown),
            "{}",
            context()
        );
        assert_eq!(raw.period_type, "space/bytes", "{}", context());
        // The workload's own figures.
        let leaky = heap_values_in(&raw, "leaky_function");
        assert_eq!(
            leaky,
            [leaks, leaks * size, leaks, leaks * size],
            "{}",
            context()
        );
        let churned = heap_values_in(&raw, "churn");
        assert_eq!(
            [churned[0], churned[2], churned[3]],
            [churn, 0, 0],
            "{}",
            context()
        );
        // The JSON's, function by function.
        for function in ["leaky_function", "churn"] {
            let values = heap_values_in(&raw, function);
            let allocated = json_sums(&t, "stacks", "calls", function);
            assert_eq!(values[..2], allocated, "{function}\n{}", context());
            if with_leaks {
                let in_use = json_sums(&t, "outstanding", "allocations", function);
                assert_eq!(values[2..], in_use, "{function}\n{}", context());
            }
        }
    }
}

/// `go tool pprof -base` on two runs' heap profiles shows what the second did beyond the
/// first: malloc_leak leaking 300 blocks against 100, the difference is 200 blocks of SIZE in
/// leaky_function, and none in churn (both churned as much).
#[test]
fn heap_profiles_of_two_runs_diff_with_go_pprof_base() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("malloc-heap-base");
    let size = 4096i64;
    let profile_of = |leaks: i64| {
        let profile = dir.join(&format!("leaks-{leaks}.pb.gz"));
        let t = trace(
            &["--leaks", "--pprof", profile.to_str().unwrap()],
            "malloc_leak",
            &[&leaks.to_string(), &size.to_string(), "500"],
        );
        assert_eq!(t.run.code(), 0, "{}", t.context());
        profile
    };
    let (base, later) = (profile_of(100), profile_of(300));
    let base_arg = base.to_str().unwrap();
    let Some(run) = tests::go_pprof(
        &["-raw", "-symbolize=none", "-base", base_arg],
        &later,
        &[],
        dir.path(),
    ) else {
        return;
    };
    assert_eq!(run.code(), 0, "{}", run.describe());
    let diff = RawProfile::parse(&run.stdout);
    let leaky = heap_values_in(&diff, "leaky_function");
    assert_eq!(
        leaky,
        [200, 200 * size, 200, 200 * size],
        "{}",
        run.describe()
    );
    let churned = heap_values_in(&diff, "churn");
    assert_eq!([churned[0], churned[2]], [0, 0], "{}", run.describe());
}

/// Bytes of the `peak_stacks` rows that pass through `function`.
fn peak_bytes_through(t: &Traced, function: &str) -> u64 {
    (rows_through(&t.report, "peak_stacks", function).iter())
        .map(|r| u64_of(r, "bytes"))
        .sum()
}

/// The rows of the report's list `list` whose frames include `function`.
fn rows_through<'a>(report: &'a Value, list: &str, function: &str) -> Vec<&'a Value> {
    (report[list].as_array().unwrap().iter())
        .filter(|r| (r["frames"].as_array().unwrap().iter()).any(|frame| frame == function))
        .collect()
}

/// heap_peak allocates 300 blocks of 1 MiB (200 in grow_a, 100 in grow_b), frees down to 50
/// and grows to 200 in grow_c. memtrace's peak is the workload's own count within 1% (libc's
/// few blocks besides), its allocated bytes at the end too; and the stacks at the peak are
/// grow_a's and grow_b's as they were then, to the byte, and none of grow_c's (whose blocks
/// came after). The timeline never goes above the peak, and its allocation rates add up to
/// the bytes the workload allocated.
#[test]
fn the_peak_and_what_was_allocated_then() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let t = trace(&["--top", "1000"], "heap_peak", &[]);
    assert_eq!(t.run.code(), 0, "{}", t.context());
    let process = t.process();
    for (key, slack) in [("peak_bytes", 0.01), ("live_bytes", 0.01)] {
        let (ours, theirs) = (u64_of(process, key), t.workload.u64(key));
        assert!(
            ours >= theirs && (ours - theirs) as f64 <= theirs as f64 * slack,
            "{key}: memtrace says {ours}, the workload allocated {theirs}\n{}",
            t.context()
        );
    }
    let peak_at = process["peak_at_s"].as_f64().unwrap();
    let duration = t.report["duration_s"].as_f64().unwrap();
    assert!(
        peak_at > 0.0 && peak_at <= duration,
        "peak_at_s {peak_at} outside the trace's {duration} s\n{}",
        t.context()
    );
    // The timeline: never above the peak, and its rates, over the time between moments,
    // add up to every byte the workload allocated (450 blocks, and libc's few).
    let timeline: Vec<&Value> = (t.report["timeline"].as_array().unwrap().iter())
        .filter(|s| s["pid"] == t.workload.pid)
        .collect();
    assert!(
        timeline.len() >= 3,
        "a timeline of moments\n{}",
        t.context()
    );
    let peak = u64_of(process, "peak_bytes");
    assert!(
        timeline.iter().all(|s| u64_of(s, "live_bytes") <= peak),
        "{}",
        t.context()
    );
    let mut before = 0.0;
    let allocated: f64 = (timeline.iter())
        .map(|s| {
            let t_s = s["t_s"].as_f64().unwrap();
            let bytes = s["allocated_bytes_per_s"].as_f64().unwrap() * (t_s - before);
            before = t_s;
            bytes
        })
        .sum();
    let workload = 450.0 * t.workload.u64("block") as f64;
    assert!(
        (allocated - workload).abs() <= workload * 0.01,
        "the timeline's rates add up to {allocated} bytes; the workload allocated {workload}\n{}",
        t.context()
    );
    for (function, key) in [
        ("grow_a", "a_at_peak"),
        ("grow_b", "b_at_peak"),
        ("grow_c", "c_at_peak"),
    ] {
        assert_eq!(
            peak_bytes_through(&t, function),
            t.workload.u64(key),
            "bytes {function} had allocated at the peak\n{}",
            t.context()
        );
    }
}

/// lifetimes frees blocks at once (free_at_once), 2 ms after (free_after_2ms) and 200 ms
/// after (free_after_200ms) their allocation, and keeps 5 to the end, measuring each block's
/// lifetime itself. Every block freed is in its stack's histogram, in a bucket that the
/// workload's own measures reach (memtrace's stamps sit just outside the workload's: at
/// malloc's return probe and free's entry probe, so a preemption in between lengthens a
/// lifetime the workload does not see: at most 1% of the blocks may sit past that). The
/// temporary blocks (freed within 1 ms) are exactly free_at_once's that memtrace saw live
/// less than 1 ms; the blocks kept have no lifetime.
#[test]
fn lifetimes_land_in_their_buckets_and_temporaries_are_exact() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    // What a probe pair adds to a lifetime at most, unpreempted.
    const PROBES_US: f64 = 100.0;
    let t = trace(&["--top", "1000"], "lifetimes", &[]);
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert_eq!(
        t.report["temporary_s"].as_f64(),
        Some(0.001),
        "{}",
        t.context()
    );
    for (function, name, temporary) in [
        ("free_at_once", "at_once", true),
        ("free_after_2ms", "after_2ms", false),
        ("free_after_200ms", "after_200ms", false),
    ] {
        let rows = rows_through(&t.report, "stacks", function);
        assert!(
            !rows.is_empty(),
            "no stack through {function}\n{}",
            t.context()
        );
        let freed = t.workload.u64(&format!("{name}_freed"));
        let min_us = t.workload.f64(&format!("{name}_min_us"));
        let max_us = t.workload.f64(&format!("{name}_max_us")) + PROBES_US;
        let (mut counted, mut preempted, mut over_1ms) = (0, 0, 0);
        for bucket in rows.iter().flat_map(|r| r["lifetimes"].as_array().unwrap()) {
            let le_us = bucket["le_s"].as_f64().unwrap() * 1e6;
            let count = u64_of(bucket, "count");
            // The bucket holds (le/2, le] µs (bucket 0: up to 1 µs).
            let above_us = if le_us <= 1.0 { 0.0 } else { le_us / 2.0 };
            assert!(
                le_us >= min_us,
                "{function}: blocks in the bucket of ({above_us}, {le_us}] us, but the \
                 workload measured lifetimes of {min_us} us at least\n{}",
                t.context()
            );
            if above_us >= max_us {
                preempted += count;
            }
            if above_us >= 1000.0 {
                over_1ms += count;
            }
            counted += count;
        }
        assert_eq!(counted, freed, "{function}'s blocks freed\n{}", t.context());
        assert!(
            preempted * 100 <= freed,
            "{function}: {preempted} of {freed} blocks lived longer than the workload measured \
             ({max_us} us with the probes')\n{}",
            t.context()
        );
        let temporaries: u64 = rows.iter().map(|r| u64_of(r, "temporary")).sum();
        let expected = if temporary { freed - over_1ms } else { 0 };
        assert_eq!(
            temporaries,
            expected,
            "{function}'s temporary blocks\n{}",
            t.context()
        );
        let ranked = rows_through(&t.report, "temporary_stacks", function);
        assert_eq!(
            ranked.iter().map(|r| u64_of(r, "temporary")).sum::<u64>(),
            expected,
            "{function} among the stacks that churn\n{}",
            t.context()
        );
    }
    let kept = rows_through(&t.report, "stacks", "keep_to_the_end");
    assert_eq!(
        kept.iter().map(|r| u64_of(r, "calls")).sum::<u64>(),
        t.workload.u64("kept"),
        "{}",
        t.context()
    );
    for row in kept {
        assert_eq!(u64_of(row, "temporary"), 0, "{}", t.context());
        assert!(
            row["lifetimes"].as_array().unwrap().is_empty(),
            "{}",
            t.context()
        );
    }
}

/// heap_retained allocates 100 MB in blocks of 1000 bytes and frees all but one in 64: glibc
/// keeps the freed pages (the blocks left pin them), and the workload reads its own RssAnon.
/// What memtrace says the allocator retains is that RSS less the bytes the workload still has
/// allocated, within 5% (the rest of the anonymous memory, stacks and libraries' data, is
/// small). With `trim`, malloc_trim gives the pages back, and memtrace sees the retained
/// memory go (within 5% of the heap of the same figure).
#[test]
fn the_memory_the_allocator_keeps_is_rss_less_what_is_allocated() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let mut retained_kept = 0;
    for trim in [false, true] {
        let args: &[&str] = if trim { &["trim"] } else { &[] };
        let mut w = tests::spawn_waiting("heap_retained", args);
        let t = traced::trace_running("malloc", FRAME_POINTERS, &mut w);
        let process = (t.report["processes"].as_array().unwrap().iter())
            .find(|p| p["pid"] == t.workload.pid)
            .unwrap_or_else(|| panic!("no row for the workload\n{}", t.context()));
        let retained = u64_of(process, "retained_bytes") as f64;
        let heap = t.workload.u64("heap_bytes") as f64;
        let theirs = t.workload.u64("rss_anon_bytes") as f64 - t.workload.u64("live_bytes") as f64;
        let slack = if trim { heap * 0.05 } else { theirs * 0.05 };
        assert!(
            (retained - theirs).abs() <= slack,
            "trim {trim}: memtrace says the allocator retains {retained} bytes; RssAnon less \
             what the workload has allocated is {theirs}\n{}",
            t.context()
        );
        let split = &process["resident"];
        assert_eq!(
            u64_of(process, "rss_anon_bytes"),
            u64_of(split, "rss_anon_bytes"),
            "{}",
            t.context()
        );
        assert!(
            u64_of(split, "allocator_rss_bytes") + u64_of(split, "other_anon_bytes")
                <= u64_of(split, "rss_anon_bytes") + 4096 * 64,
            "the allocator's and the other anonymous memory are parts of RssAnon\n{}",
            t.context()
        );
        if trim {
            assert!(
                retained < retained_kept as f64 * 0.1,
                "malloc_trim gave back the memory: {retained} retained after it, \
                 {retained_kept} without\n{}",
                t.context()
            );
        } else {
            retained_kept = retained as u64;
            assert!(retained > heap * 0.8, "{}", t.context());
        }
        let timeline = t.report["timeline"].as_array().unwrap();
        let last = (timeline.iter())
            .rfind(|s| s["pid"] == t.workload.pid)
            .unwrap_or_else(|| panic!("no timeline for the workload\n{}", t.context()));
        assert_eq!(
            u64_of(last, "live_bytes"),
            u64_of(process, "live_bytes"),
            "the timeline ends where the trace does\n{}",
            t.context()
        );
        w.finish();
    }
}

/// `--at-peak --pprof`: the heap profile's in-use values are what heap_peak's functions had
/// allocated at its peak (grow_a's and grow_b's, none of grow_c's), shown first, as go tool
/// pprof reads them.
#[test]
fn the_peak_as_a_heap_profile() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("malloc-at-peak");
    let profile = dir.join("peak.pb.gz");
    let t = trace(
        &["--at-peak", "--pprof", profile.to_str().unwrap()],
        "heap_peak",
        &[],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    let Some(raw) = RawProfile::read(&profile, dir.path()) else {
        return;
    };
    let context = || format!("{}\n{}", raw.text, t.context());
    assert_eq!(
        raw.default_sample_type.as_deref(),
        Some("inuse_space/bytes"),
        "{}",
        context()
    );
    for (function, key) in [
        ("grow_a", "a_at_peak"),
        ("grow_b", "b_at_peak"),
        ("grow_c", "c_at_peak"),
    ] {
        let in_use = raw.value_through(function, "inuse_space/bytes");
        assert_eq!(
            in_use,
            t.workload.u64(key) as i64,
            "bytes {function} had allocated at the peak\n{}",
            context()
        );
    }
}

/// `--html`: one self-contained page that opens in headless Chromium without console
/// errors, with heap_peak's bytes allocated over time drawn (the chart's blue line) over its
/// anonymous RSS, its peak's stacks, its leaks, and the flame graph embedded.
#[test]
fn the_html_page_shows_the_heap_over_time() {
    if !tests::require_root() || !tests::require_chromium() {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("malloc-html");
    let page = dir.join("heap.html");
    let t = trace(
        &["--leaks", "--html", page.to_str().unwrap()],
        "heap_peak",
        &[],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    let html = std::fs::read_to_string(&page).unwrap();
    for reference in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "@import",
        "<script",
    ] {
        assert!(!html.contains(reference), "not self-contained: {reference}");
    }
    let section = |id: &str| {
        let start = html
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no {id}"));
        &html[start..start + html[start..].find("</table>").unwrap()]
    };
    assert!(section("peak-stacks").contains("grow_a"), "{html}");
    assert!(!section("peak-stacks").contains("grow_c"), "{html}");
    assert!(section("leaks").contains("grow_c"), "{html}");
    assert!(html.contains("id=\"flamegraph\""), "{html}");
    let pid = t.workload.pid;
    assert!(html.contains(&format!("id=\"heap-chart-{pid}\"")), "{html}");
    // The RSS line is drawn under the allocated one (here they are one: every block is
    // written), with a point a moment.
    let rss_line = html
        .split("<polyline")
        .find(|l| l.contains("#2ca02c"))
        .unwrap_or("");
    let moments = (t.report["timeline"].as_array().unwrap().iter())
        .filter(|s| s["pid"] == pid && !s["rss_anon_bytes"].is_null())
        .count();
    assert!(
        moments >= 3 && rss_line.matches(',').count() == moments,
        "an RSS line of {moments} moments: {rss_line}"
    );
    let (screenshot, artefact) = tests::chromium_screenshot(&page, dir.path(), "malloc.png");
    let allocated = tests::count_pixels(&screenshot, [0x1f, 0x77, 0xb4]);
    assert!(
        allocated >= 200,
        "allocated line {allocated} px in {}",
        artefact.display()
    );
}

/// oom_heap allocates 1 MiB blocks in a 64 MiB memory cgroup without swap until the OOM
/// killer ends it: 16 in hold_a, then as many as fit in grow_b, printing what it holds after
/// each. The report names the kill (its cgroup and limit), and the blocks outstanding per
/// function are what the workload said it held (grow_b's: the block being allocated when
/// the kill came may be one more).
#[test]
fn the_heap_of_an_oom_killed_process_is_its_heap_at_death() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    const LIMIT_MIB: u64 = 64;
    let cgroup = tests::swap_env::MemoryCgroup::without_swap(LIMIT_MIB);
    let shell = format!(
        "echo $$ > {} && exec {}",
        cgroup.procs().display(),
        workload("oom_heap").display()
    );
    let (run, report) = traced::run_json(
        "malloc",
        &[FRAME_POINTERS, &["--leaks"]].concat(),
        &["sh", "-c", &shell],
    );
    let context = || format!("{}\n{report:#}", run.describe());
    let said = |name: &str| -> u64 {
        (run.stdout.lines().rev())
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let (a_blocks, b_blocks) = (said("a "), said("b "));
    assert_eq!(a_blocks, 16, "{}", context());
    let victim = (report["processes"].as_array().unwrap().iter())
        .find(|p| p["comm"] == "oom_heap")
        .unwrap_or_else(|| panic!("no oom_heap row\n{}", context()));
    let kill = &victim["oom_kill"];
    assert!(kill.is_object(), "no oom_kill\n{}", context());
    let name = cgroup.dir.file_name().unwrap().to_str().unwrap();
    assert!(
        kill["memcg"].as_str().unwrap().ends_with(name),
        "memcg {} is not {name}\n{}",
        kill["memcg"],
        context()
    );
    assert_eq!(kill["limit_bytes"], LIMIT_MIB << 20, "{}", context());
    assert_eq!(kill["constraint"], "cgroup", "{}", context());
    let blocks_in = |function: &str| -> u64 {
        (rows_through(&report, "outstanding", function).iter())
            .filter(|r| r["pid"] == victim["pid"])
            .map(|r| u64_of(r, "bytes") / (1 << 20))
            .sum()
    };
    assert_eq!(blocks_in("hold_a"), a_blocks, "hold_a's MiB\n{}", context());
    let b = blocks_in("grow_b");
    assert!(
        b == b_blocks || b == b_blocks + 1,
        "grow_b: memtrace has {b} MiB outstanding, the workload said it held {b_blocks}\n{}",
        context()
    );
    let heap = u64_of(kill, "heap_bytes") >> 20;
    assert!(
        heap >= a_blocks + b_blocks && heap <= a_blocks + b_blocks + 1,
        "heap_bytes at the kill: {heap} MiB\n{}",
        context()
    );
}

#[test]
fn missing_lib_is_a_usage_error() {
    let _serial = serial();
    let run = memtrace(&[
        "malloc",
        "--lib",
        "/nonexistent/libjemalloc.so",
        "--",
        "true",
    ]);
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(
        run.stderr
            .contains("--lib /nonexistent/libjemalloc.so: no such file"),
        "{}",
        run.describe()
    );
}

/// The one outstanding row whose innermost frame is `function`: (allocations, bytes).
fn outstanding_of(t: &Traced, function: &str) -> (u64, u64) {
    let rows = outstanding_in(t, function);
    assert_eq!(
        rows.len(),
        1,
        "one outstanding row for {function}\n{}",
        t.context()
    );
    (u64_of(rows[0], "allocations"), u64_of(rows[0], "bytes"))
}

#[test]
fn every_allocator_function_is_exact() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let k = 50u64;
    let t = trace(
        &["--leaks", "--top", "50"],
        "malloc_kinds",
        &[&k.to_string()],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert_eq!(
        outstanding_of(&t, "calloc_leak"),
        (k, k * 1000),
        "{}",
        t.context()
    );
    assert_eq!(
        outstanding_of(&t, "posix_memalign_leak"),
        (k, k * 1000),
        "{}",
        t.context()
    );
    assert_eq!(
        outstanding_of(&t, "aligned_alloc_leak"),
        (k, k * 1024),
        "{}",
        t.context()
    );
    // Grown K times: one block of the last size.
    assert_eq!(
        outstanding_of(&t, "reallocarray_grow"),
        (1, k * 100),
        "{}",
        t.context()
    );
    assert_eq!(
        outstanding_of(&t, "realloc_from_null"),
        (1, 777),
        "{}",
        t.context()
    );
    // Grown, shrunk, then freed by realloc(p, 0).
    assert!(
        outstanding_in(&t, "realloc_cycle").is_empty(),
        "{}",
        t.context()
    );
    let process = t.process();
    for function in ["realloc", "reallocarray", "posix_memalign", "aligned_alloc"] {
        assert_eq!(
            u64_of(process, &format!("{function}_calls")),
            t.workload.u64(function),
            "{function} calls\n{}",
            t.context()
        );
    }
    let calloc = u64_of(process, "calloc_calls");
    assert!(
        (k..=k + LIBC_OWN_BLOCKS).contains(&calloc),
        "{calloc} calloc calls\n{}",
        t.context()
    );
}

#[test]
fn blocks_freed_by_other_threads_are_not_leaks() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let t = trace(
        &["--leaks", "--top", "50"],
        "malloc_threads",
        &["8", "20000"],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert_eq!(t.report["lost_events"], 0, "{}", t.context());
    for function in ["produce", "consume"] {
        assert!(
            outstanding_in(&t, function).is_empty(),
            "blocks of {function} outstanding\n{}",
            t.context()
        );
    }
    let process = t.process();
    let (mallocs, frees) = (t.workload.u64("mallocs"), t.workload.u64("frees"));
    let counted = u64_of(process, "malloc_calls");
    assert!(
        (mallocs..=mallocs + LIBC_OWN_BLOCKS).contains(&counted),
        "{counted} malloc calls counted, the workload made {mallocs}\n{}",
        t.context()
    );
    // Thread exits free a few blocks of the C library's own as well.
    let freed = u64_of(process, "free_calls");
    assert!(
        (frees..=frees + 16 * 8).contains(&freed),
        "{freed} free calls counted, the workload made {frees}\n{}",
        t.context()
    );
}

#[test]
fn another_allocator_is_traced_with_lib() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
    assert!(
        std::path::Path::new(jemalloc).exists(),
        "{jemalloc} is missing: run `cargo xtask setup` (Debian's libjemalloc2)"
    );
    let (leaks, size) = (40u64, 3000u64);
    let preload = format!("LD_PRELOAD={jemalloc}");
    let leak = workload("malloc_leak");
    let t = traced::trace(
        "malloc",
        &[FRAME_POINTERS, &["--leaks", "--lib", jemalloc]].concat(),
        &[
            "env",
            &preload,
            leak.to_str().unwrap(),
            &leaks.to_string(),
            &size.to_string(),
            "5000",
        ],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert_eq!(
        outstanding_of(&t, "leaky_function"),
        (leaks, leaks * size),
        "{}",
        t.context()
    );
    assert!(outstanding_in(&t, "churn").is_empty(), "{}", t.context());
}

#[test]
fn outstanding_blocks_are_bounded_and_the_overflow_counted() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let t = trace(
        &["--leaks", "--max-outstanding", "50"],
        "malloc_leak",
        &["100", "1000", "1000"],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    let followed: u64 = t.report["outstanding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| u64_of(r, "allocations"))
        .sum();
    assert_eq!(followed, 50, "{}", t.context());
    // The 100 leaked blocks did not fit: the other 50 are counted, not lost silently.
    assert!(
        u64_of(&t.report, "outstanding_dropped") >= 50,
        "{}",
        t.context()
    );
    // Calls are still counted exactly.
    let mallocs = t.workload.u64("mallocs");
    let counted = u64_of(t.process(), "malloc_calls");
    assert!(
        (mallocs..=mallocs + LIBC_OWN_BLOCKS).contains(&counted),
        "{counted} malloc calls counted, the workload made {mallocs}\n{}",
        t.context()
    );
}

#[test]
fn sampled_bytes_are_estimated_within_ten_percent() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    // About 144 MB in 1M blocks; one sample point per 64 KiB gives about 2,200 samples.
    let t = trace(
        &["--sample-bytes", "65536"],
        "malloc_leak",
        &["0", "16", "1000000"],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert_eq!(t.report["sampled"], true, "{}", t.context());
    let truth = t.workload.u64("bytes");
    assert!(
        truth >= 100_000_000,
        "the workload allocated only {truth} bytes"
    );
    let estimate = u64_of(t.process(), "bytes_allocated");
    assert!(
        (estimate as f64 - truth as f64).abs() <= truth as f64 * 0.10,
        "estimated {estimate} bytes allocated, the workload asked for {truth}\n{}",
        t.context()
    );
}

#[test]
fn the_programs_own_mmaps_with_mmap() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let k = 20u64;
    let t = trace(
        &["--leaks", "--mmap", "--top", "50"],
        "malloc_kinds",
        &[&k.to_string()],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    // Mappings are grouped by the stack of the mmap call: the wrapper, then its callers.
    let passing = |function: &str| rows_through(&t.report, "outstanding", function);
    let leaked = passing("mmap_leak");
    assert_eq!(leaked.len(), 1, "{}", t.context());
    assert_eq!(u64_of(leaked[0], "allocations"), k, "{}", t.context());
    assert_eq!(u64_of(leaked[0], "bytes"), k * 65536, "{}", t.context());
    // The wrapper's caller comes right after it: the walk reads the leaf's return address.
    assert_eq!(leaked[0]["frames"][1], "map", "{}", t.context());
    assert!(passing("mmap_cycle").is_empty(), "{}", t.context());
    let process = t.process();
    assert!(
        u64_of(process, "mmap_calls") >= t.workload.u64("mmap"),
        "{}",
        t.context()
    );
    assert!(
        u64_of(process, "munmap_calls") >= t.workload.u64("munmap"),
        "{}",
        t.context()
    );
    // The allocator's blocks are still counted once, as blocks, not as mappings.
    assert_eq!(
        outstanding_of(&t, "calloc_leak"),
        (k, k * 1000),
        "{}",
        t.context()
    );
}

#[test]
fn an_exited_processs_blocks_stay_reported_not_kept() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let (leaks, size) = (100u64, 1000u64);
    // The leaking child exits while tracing goes on (its parent sleeps past the next check).
    let script = format!(
        "{} {leaks} {size} 100; sleep 3",
        workload("malloc_leak").display()
    );
    let t = traced::trace(
        "malloc",
        &[
            FRAME_POINTERS,
            &["--leaks", "--follow-children", "--top", "50"],
        ]
        .concat(),
        &["sh", "-c", &script],
    );
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert!(
        u64_of(&t.report, "exited_blocks") >= leaks,
        "the exited child's blocks were not folded\n{}",
        t.context()
    );
    assert_eq!(
        outstanding_of(&t, "leaky_function"),
        (leaks, leaks * size),
        "{}",
        t.context()
    );
}

/// The kinds of allocator the report says it hooked, in its order.
fn allocator_kinds(t: &Traced) -> Vec<String> {
    (t.report["allocators"].as_array())
        .unwrap_or_else(|| panic!("no allocators\n{}", t.context()))
        .iter()
        .map(|a| a["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn the_allocator_a_program_links_is_found_without_lib() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let (leaks, size, churn) = (40u64, 3000u64, 5000u64);
    for (build, kind) in [
        ("malloc_leak_jemalloc", "jemalloc"),
        ("malloc_leak_tcmalloc", "tcmalloc"),
        ("malloc_leak_mimalloc", "mimalloc"),
    ] {
        let t = trace(
            &["--leaks"],
            build,
            &[&leaks.to_string(), &size.to_string(), &churn.to_string()],
        );
        assert_eq!(t.run.code(), 0, "{}", t.context());
        // It serves the program's malloc, so it is named first; libc's is hooked beside it.
        assert_eq!(allocator_kinds(&t), [kind, "glibc"], "{}", t.context());
        assert_eq!(
            outstanding_of(&t, "leaky_function"),
            (leaks, leaks * size),
            "{build}\n{}",
            t.context()
        );
        assert!(outstanding_in(&t, "churn").is_empty(), "{}", t.context());
        // The workload's own malloc calls, each seen once (libc and the allocator's start-up
        // add a few of their own).
        let own = t.workload.u64("mallocs");
        let seen = u64_of(t.process(), "malloc_calls");
        assert!(
            (own..=own + 16).contains(&seen),
            "{build}: {seen} malloc calls seen, the workload made {own}\n{}",
            t.context()
        );
        assert!(
            u64_of(t.process(), "free_calls") >= churn,
            "{build}\n{}",
            t.context()
        );
    }
}

#[test]
fn a_child_mapping_an_allocator_not_hooked_is_named() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    // sh needs libc alone; the program it starts maps jemalloc, found only as it runs.
    let program = workload("malloc_leak_jemalloc");
    let script = format!("{} 10 100 100; true", program.display());
    let (run, report) = traced::run_json(
        "malloc",
        &[FRAME_POINTERS, &["--leaks"]].concat(),
        &["sh", "-c", &script],
    );
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert_eq!(report["allocators"][0]["kind"], "glibc", "{report}");
    let warning = (run.stderr.lines())
        .find(|line| line.contains("mapped jemalloc"))
        .unwrap_or_else(|| panic!("no warning about jemalloc\n{}", run.describe()));
    assert!(
        warning.contains("libjemalloc.so.2") && warning.contains("--lib"),
        "{warning}"
    );
}

#[test]
fn redis_outstanding_bytes_follow_its_used_memory() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let redis = tests::redis::Redis::start();
    let dir = TempDir::new("malloc-redis");
    let out = dir.join("report.json");
    let pid = redis.pid().to_string();
    let mut tracer = tests::spawn_memtrace(&[
        "malloc",
        "--pid",
        &pid,
        "--leaks",
        "--format",
        "json",
        "--output",
        out.to_str().unwrap(),
    ]);
    tracer.wait_attached();
    let before = redis.memory("used_memory");
    // Values of 8186 bytes take 8192-byte blocks (a header of 5, a NUL): a jemalloc size
    // class, so the allocator's rounding, which used_memory counts, is left to small blocks.
    let keys = 2000u64;
    assert_eq!(
        redis.cli(&["DEBUG", "POPULATE", &keys.to_string(), "key", "8186"]),
        "OK"
    );
    let after = redis.memory("used_memory");
    tracer.signal(libc::SIGINT);
    let run = tracer.wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(report["allocators"][0]["kind"], "jemalloc", "{report}");
    let row = (report["processes"].as_array().unwrap().iter())
        .find(|p| p["pid"] == redis.pid())
        .unwrap_or_else(|| panic!("no row for redis-server\n{}", run.describe()));
    let held = u64_of(row, "bytes_allocated") as f64 - u64_of(row, "bytes_freed") as f64;
    let grew = after as f64 - before as f64;
    assert!(
        grew >= keys as f64 * 8192.0,
        "used_memory grew by {grew} only"
    );
    assert!(
        (held - grew).abs() <= 0.03 * grew,
        "memtrace: redis holds {held} bytes more; its used_memory grew by {grew}\n{}",
        run.describe()
    );
}

/// `nm -S`'s address and size of `symbol` in `binary`.
fn symbol_extent(binary: &std::path::Path, symbol: &str) -> (u64, u64) {
    let out = std::process::Command::new("nm")
        .args(["-S", "--defined-only"])
        .arg(binary)
        .output()
        .expect("nm runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = (text.lines())
        .find(|l| l.split_whitespace().nth(3) == Some(symbol))
        .unwrap_or_else(|| panic!("no {symbol} in nm -S {}:\n{text}", binary.display()));
    let hex = |field: &str| u64::from_str_radix(field, 16).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (hex(fields[0]), hex(fields[1]))
}

#[test]
fn frames_name_their_module_and_where_they_are() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let program = workload("malloc_leak");
    let (start, size) = symbol_extent(&program, "leaky_function");
    // Symbolized: the offset is from the function's start (nm's size is the oracle).
    let t = trace(&["--leaks"], "malloc_leak", &["5", "100", "10"]);
    assert_eq!(t.run.code(), 0, "{}", t.context());
    let row = outstanding_in(&t, "leaky_function")[0];
    let frame = &row["frames_detail"][0];
    assert_eq!(frame["module"], "malloc_leak", "{frame}");
    assert!(
        u64_of(frame, "offset") < size,
        "{frame}: leaky_function is {size} bytes"
    );

    // Stripped: no symbol, so the frame is named by its module and its offset in the file,
    // which falls inside leaky_function in the unstripped file (PIE text: offset = address).
    let dir = TempDir::new("malloc-stripped");
    let stripped = dir.join("leak_stripped");
    let status = std::process::Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&program)
        .status()
        .expect("strip runs");
    assert!(status.success());
    let (run, report) = traced::run_json(
        "malloc",
        &[FRAME_POINTERS, &["--leaks"]].concat(),
        &[stripped.to_str().unwrap(), "5", "100", "10"],
    );
    assert_eq!(run.code(), 0, "{}", run.describe());
    let row = (report["outstanding"].as_array().unwrap().iter())
        .find(|r| u64_of(r, "allocations") == 5 && u64_of(r, "bytes") == 500)
        .unwrap_or_else(|| panic!("no row of the 5 leaked blocks\n{report}"));
    let frame = &row["frames_detail"][0];
    let offset = u64_of(frame, "offset");
    assert!(frame["function"].is_null(), "{frame}");
    assert_eq!(frame["module"], "leak_stripped", "{frame}");
    assert!(
        (start..start + size).contains(&offset),
        "{frame}: leaky_function is at {start:#x}, {size} bytes"
    );
    assert_eq!(
        row["frames"][0],
        format!("leak_stripped+{offset:#x}"),
        "{row}"
    );
}
