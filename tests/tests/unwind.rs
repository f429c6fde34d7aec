//! Whole user stacks on code built without frame pointers (issue 17): memtrace unwinds them
//! from each binary's .eh_frame by default (`--unwind dwarf`); `--unwind fp` keeps the
//! frame-pointer walk.
//!
//! The fixtures (`unwind_chain`, C with `libunwind_lib.so`; `unwind_rust`) run chains known
//! exactly; perf (`--call-graph dwarf`, its own copy of the stack unwound afterwards) names
//! the same chains, which `perf_sees_the_chains_this_file_expects` checks. Then two real
//! programs from Debian: python3, whose fault stacks must reach their root, and
//! redis-server, whose heaviest chains and stack depth must agree with perf's on the same
//! faults.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tests::{
    chains::{self, Aliases, LIBC},
    parse_report,
    perf_script::{self, PerfRecord},
    readelf::{self, ElfView},
    redis::Redis,
    serial, spawn_waiting,
    traced::{self, JsonTracer, Traced},
    workload,
};

/// Pages each fixture touches, or blocks it leaks, at the end of its chain.
const COUNT: u64 = 2000;
/// `unwind_chain`'s blocks (BLOCK_SIZE), and `unwind_rust`'s.
const BLOCK_SIZE: u64 = 1000;

/// Between the deepest function and the chain's root, in every mode of `unwind_chain`.
const C_MIDDLE: &[&str] = &[
    "level_alloca",
    "big_frame",
    "recurse",
    "recurse",
    "recurse",
    "recurse",
    "recurse",
    "unwind_lib_call",
    "run_chain",
];
/// A program's main thread below `main` (glibc 2.34 and later).
const MAIN_ROOT: &[&str] = &[
    "main",
    "__libc_start_call_main",
    "__libc_start_main",
    "_start",
];
/// A pthread below its start function.
const THREAD_ROOT: &[&str] = &["thread_main", "start_thread", "clone3"];
/// A signal handler's frames, the signal frame (the handler returns into `__restore_rt`, which
/// calls rt_sigreturn), then the function the signal interrupted: raise's `tgkill`, in
/// `__pthread_kill_implementation` (glibc 2.36).
const SIGNAL_ROOT: &[&str] = &[
    "on_sigusr1",
    "__restore_rt",
    "__pthread_kill_implementation",
    "raise",
    "send_signal",
];

/// `unwind_chain`'s chain in MODE, innermost first.
fn c_chain(mode: &str) -> Vec<&'static str> {
    let (deepest, root): (&[&str], Vec<&str>) = match mode {
        "faults" => (&["touch_pages"], MAIN_ROOT.to_vec()),
        // The kernel allocates in the system call: the innermost frame is libc's wrapper.
        "pages" => (&["madvise", "populate_pages"], MAIN_ROOT.to_vec()),
        // The block is the return probe's: the innermost frame is malloc's caller.
        "malloc" => (&["leak_blocks"], MAIN_ROOT.to_vec()),
        "thread" => (&["touch_pages"], THREAD_ROOT.to_vec()),
        "signal" => (&["touch_pages"], [SIGNAL_ROOT, MAIN_ROOT].concat()),
        _ => panic!("no mode {mode}"),
    };
    [deepest, C_MIDDLE, &root].concat()
}

/// `unwind_rust`'s own functions, from below the deepest one to its `main`. Below them come
/// std's frames that call a Rust `main` (`std::rt::lang_start_internal` and the closures it
/// calls, which depend on the toolchain), then C's `main` and [`MAIN_ROOT`].
const RUST_MIDDLE: &[&str] = &[
    "unwind_rust::big_frame",
    "unwind_rust::recurse",
    "unwind_rust::recurse",
    "unwind_rust::recurse",
    "unwind_rust::recurse",
    "unwind_rust::recurse",
    "unwind_rust::run_chain",
    "unwind_rust::main",
];

/// Whether `chain` is `unwind_rust`'s from `leaf` down: [`RUST_MIDDLE`], 1 to 6 frames of
/// std's or core's, [`MAIN_ROOT`]. `same` compares two names of a frame; the chain may come from perf,
/// whose [`perf_script::UNKNOWN`] frames match any name.
fn is_rust_chain(chain: &[String], leaf: &str, same: impl Fn(&str, &str) -> bool) -> bool {
    let head: Vec<&str> = [&[leaf], RUST_MIDDLE].concat();
    let Some(std_frames) = chain.len().checked_sub(head.len() + MAIN_ROOT.len()) else {
        return false;
    };
    // `std::rt::lang_start_internal`, `<F as core::ops::function::FnOnce<()>>::call_once`...
    let is_std = |f: &str| f.contains("std::") || f.contains("core::");
    let same = |a: &str, b: &str| a == perf_script::UNKNOWN || same(a, b);
    (1..=6).contains(&std_frames)
        && chain.iter().zip(&head).all(|(a, e)| same(a, e))
        && chain[head.len()..head.len() + std_frames]
            .iter()
            .all(|f| is_std(f))
        && chain[head.len() + std_frames..]
            .iter()
            .zip(MAIN_ROOT)
            .all(|(a, e)| same(a, e))
}

fn unwind_chain() -> PathBuf {
    workload("unwind_chain")
}

/// The names the C fixture's frames go by: its own, its library's, the C library's.
fn c_aliases() -> Aliases {
    Aliases::of(&[
        unwind_chain(),
        workload("libunwind_lib.so"),
        PathBuf::from(LIBC),
    ])
}

fn rust_aliases() -> Aliases {
    Aliases::of(&[workload("unwind_rust"), PathBuf::from(LIBC)])
}

/// What a failing chain assertion shows: memtrace's run, the report's `unwind` figures, and
/// the chains found.
fn chain_context(t: &Traced, found: &[(Vec<String>, u64)], expected: &[&str]) -> String {
    format!(
        "{}\n--- unwind ---\n{}\n--- expected ---\n{}\n--- chains with that leaf ---\n{}",
        t.run.describe(),
        t.report["unwind"],
        expected.join(" <- "),
        chains::describe(found, 20)
    )
}

/// The rows of `key` (`stacks`, `outstanding`) of the workload whose innermost frame is
/// `expected[0]`: each must hold the whole `expected` chain; returns their summed `weight`.
fn whole_chain_weight(t: &Traced, key: &str, expected: &[&str], weight: &str) -> u64 {
    let aliases = c_aliases();
    let rows = chains::rows_with_leaf(&t.report, key, t.workload.pid, expected[0], &aliases);
    let found = chains::weigh_chains(&rows, weight);
    let context = || chain_context(t, &found, expected);
    assert!(
        !found.is_empty(),
        "no row ends in {}\n{}",
        expected[0],
        context()
    );
    for (chain, _) in &found {
        assert!(
            aliases.chain_is(chain, expected),
            "a chain is not the whole expected one\n{}",
            context()
        );
    }
    found.iter().map(|(_, n)| n).sum()
}

/// The report says it unwound in `mode` (`dwarf`, `fp`), and counted at least `walks` walks
/// that reached the stack's root.
fn assert_unwound(t: &Traced, mode: &str, walks: u64) {
    let unwind = &t.report["unwind"];
    assert_eq!(unwind["mode"], mode, "{}", t.run.describe());
    for key in ["walks", "reached_root"] {
        let n = traced::u64_of(unwind, key);
        assert!(n >= walks, "unwind.{key} {n} < {walks}: {unwind}");
    }
}

/// Traced by pid, as `memtrace faults --pid $(pidof server)` is: the fixture does all its work
/// within milliseconds of starting, faster than memtrace can list the libraries a command's
/// loader maps (a walk meeting one first ends there, as the README says).
fn trace_c(subcommand: &str, extra: &[&str], mode: &str) -> Traced {
    let count = COUNT.to_string();
    let mut args = vec!["--top", "1000"];
    args.extend_from_slice(extra);
    let mut w = spawn_waiting("unwind_chain", &[mode, &count]);
    let t = traced::trace_running(subcommand, &args, &mut w);
    w.finish();
    assert_eq!(t.run.code(), 0, "{}", t.context());
    assert_eq!(
        traced::u64_of(&t.report, "lost_events"),
        0,
        "{}",
        t.context()
    );
    t
}

/// The options for the frame-pointer walk: `--unwind fp`; none with a memtrace from before
/// .eh_frame unwinding, which has no `--unwind` and walks frame pointers only.
fn frame_pointer_walk() -> Vec<&'static str> {
    let help = tests::memtrace(&["faults", "--help"]);
    if help.stdout.contains("--unwind") {
        vec!["--unwind", "fp"]
    } else {
        eprintln!("note: this memtrace has no --unwind: it walks frame pointers only");
        Vec::new()
    }
}

/// `unwind_chain`'s own functions on its chains.
const C_FUNCTIONS: &[&str] = &[
    "touch_pages",
    "populate_pages",
    "leak_blocks",
    "warm_stack",
    "level_alloca",
    "big_frame",
    "recurse",
    "run_chain",
    "thread_main",
    "run_in_thread",
    "on_sigusr1",
    "send_signal",
    "main",
];

/// The fixtures are built as distributions build: in every function of the chains, the CFA is
/// found from rsp (no frame pointer), except where alloca makes gcc keep one (level_alloca).
/// A frame-pointer walk cannot get past them.
#[test]
fn fixtures_use_no_frame_pointers() {
    let check = |path: &Path, is_chain: &dyn Fn(&str) -> bool, with_rbp: &[&str]| {
        let elf = ElfView::read(path);
        let fdes = readelf::fdes(path);
        let mut checked = Vec::new();
        for (start, len, name) in elf.functions().filter(|(.., n)| is_chain(n)) {
            let rules = readelf::cfa_rules_of(&fdes, start, start + len);
            assert!(!rules.is_empty(), "{name}: no .eh_frame rows");
            let rbp = rules.iter().any(|r| r.starts_with("rbp"));
            assert_eq!(
                rbp,
                with_rbp.contains(&name),
                "{name} in {}: CFA rules {rules:?}",
                path.display()
            );
            assert!(
                rules
                    .iter()
                    .all(|r| r.starts_with("rsp") || r.starts_with("rbp")),
                "{name}: {rules:?}"
            );
            checked.push(name.to_owned());
        }
        // A function may be in both symbol tables (.symtab, .dynsym).
        checked.sort_unstable();
        checked.dedup();
        checked
    };
    let path = unwind_chain();
    let checked = check(&path, &|n| C_FUNCTIONS.contains(&n), &["level_alloca"]);
    assert_eq!(checked.len(), C_FUNCTIONS.len(), "{checked:?}");
    let library = workload("libunwind_lib.so");
    let checked = check(&library, &|n| n == "unwind_lib_call", &[]);
    assert_eq!(checked, ["unwind_lib_call"]);
    // Rust's symbols are mangled: _ZN11unwind_rust9big_frame17h...E
    let rust = workload("unwind_rust");
    let checked = check(&rust, &|n| n.starts_with("_ZN11unwind_rust"), &[]);
    assert!(checked.len() >= 5, "{checked:?}");
}

/// perf, unwinding its own copies of the stacks, sees the chains this file expects (it
/// cannot name `__restore_rt`, the signal frame, and prints `[unknown]` there).
#[test]
fn perf_sees_the_chains_this_file_expects() {
    if !tests::require_root() || !perf_script::require_perf() {
        return;
    }
    let _serial = serial();
    let aliases = c_aliases();
    let pages = 200;
    let fixture = unwind_chain();
    let cases = [
        ("page-faults", "faults"),
        ("page-faults", "thread"),
        ("page-faults", "signal"),
        ("kmem:mm_page_alloc", "pages"),
    ];
    for (event, mode) in cases {
        let command = [fixture.to_str().unwrap(), mode, &pages.to_string()];
        let (samples, stdout) = perf_script::record_command(event, 32768, &command);
        let pid = parse_report(&stdout).unwrap().pid;
        let expected = c_chain(mode);
        let perf_chains: Vec<_> = perf_script::user_chains(&samples, Some(pid))
            .into_iter()
            .filter(|(chain, _)| aliases.same(&chain[0], expected[0]))
            .collect();
        let context = || {
            format!(
                "perf, {mode}: expected {}\n{}",
                expected.join(" <- "),
                chains::describe(&perf_chains, 10)
            )
        };
        assert_eq!(perf_chains.len(), 1, "{}", context());
        let (chain, n) = &perf_chains[0];
        assert!(
            perf_script::same_functions(chain, &expected, |a, b| aliases.same(a, b)),
            "{}",
            context()
        );
        assert!(*n >= pages / 2, "{}", context());
    }
    let aliases = rust_aliases();
    let rust = workload("unwind_rust");
    let command = [rust.to_str().unwrap(), "faults", &pages.to_string()];
    let (samples, _) = perf_script::record_command("page-faults", 32768, &command);
    let perf_chains = perf_script::user_chains(&samples, None);
    assert!(
        perf_chains.iter().any(|(chain, n)| *n >= pages / 2
            && is_rust_chain(chain, "unwind_rust::touch_pages", |a, b| aliases.same(a, b))),
        "perf, unwind_rust faults:\n{}",
        chains::describe(&perf_chains, 10)
    );
}

/// Faults at the end of the C chain: every one with the whole chain, from touch_pages through
/// the alloca frame, the 12 KiB frame, five recursions and the shared library down to _start.
#[test]
fn c_faults_have_whole_stacks() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let t = trace_c("faults", &[], "faults");
    let faults = whole_chain_weight(&t, "stacks", &c_chain("faults"), "count");
    assert_eq!(
        faults,
        COUNT,
        "faults under the chain\n{}",
        t.run.describe()
    );
    assert!(t.workload.phase_minflt >= COUNT, "{:?}", t.workload);
    assert_unwound(&t, "dwarf", COUNT);
}

/// Pages the kernel allocates in a system call (MADV_POPULATE_WRITE): the walk starts in
/// libc's madvise.
#[test]
fn c_page_allocations_have_whole_stacks() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let t = trace_c("pages", &[], "pages");
    let pages = whole_chain_weight(&t, "stacks", &c_chain("pages"), "pages");
    // Each page once, plus the page tables that map them (one per 512 pages, and a few more).
    assert!(
        (COUNT..=COUNT + COUNT / 256 + 4).contains(&pages),
        "{pages} pages under the chain, {COUNT} populated\n{}",
        t.run.describe()
    );
    assert_unwound(&t, "dwarf", COUNT);
}

/// Blocks leaked at the end of the chain, from malloc's return probe.
#[test]
fn c_malloc_has_whole_stacks() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let t = trace_c("malloc", &["--leaks"], "malloc");
    let expected = c_chain("malloc");
    let blocks = whole_chain_weight(&t, "outstanding", &expected, "allocations");
    assert_eq!(blocks, COUNT, "{}", t.run.describe());
    let bytes = whole_chain_weight(&t, "outstanding", &expected, "bytes");
    assert_eq!(bytes, COUNT * BLOCK_SIZE, "{}", t.run.describe());
    assert_unwound(&t, "dwarf", COUNT);
}

/// A thread's stack ends where glibc starts threads; traced by pid, the thread started after
/// memtrace attached.
#[test]
fn thread_stacks_end_at_clone3() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let count = COUNT.to_string();
    let mut w = spawn_waiting("unwind_chain", &["thread", &count]);
    let t = traced::trace_running("faults", &["--top", "1000"], &mut w);
    assert_ne!(
        t.workload.u64("tid"),
        u64::from(t.workload.pid),
        "{:?}",
        t.workload
    );
    let faults = whole_chain_weight(&t, "stacks", &c_chain("thread"), "count");
    assert_eq!(faults, COUNT, "{}", t.run.describe());
    assert_unwound(&t, "dwarf", COUNT);
    w.finish();
}

/// Faults in a signal handler: the handler's chain, the signal frame (`__restore_rt`), then the
/// interrupted function (its exact address, not a return address) and its callers.
#[test]
fn signal_handler_stacks_go_through_the_signal_frame() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let t = trace_c("faults", &[], "signal");
    assert_eq!(t.workload.u64("handled"), 1, "{:?}", t.workload);
    let faults = whole_chain_weight(&t, "stacks", &c_chain("signal"), "count");
    assert_eq!(faults, COUNT, "{}", t.run.describe());
    assert_unwound(&t, "dwarf", COUNT);
}

/// A Rust release binary: `touch_pages` (faults) or `leak_blocks` (malloc) down through its
/// own chain, std's start and libc's.
fn rust_case(subcommand: &str, extra: &[&str], mode: &str, key: &str, weight: &str) -> u64 {
    let count = COUNT.to_string();
    let mut args = vec!["--top", "1000"];
    args.extend_from_slice(extra);
    // By pid, as the C fixture (see trace_c).
    let mut w = spawn_waiting("unwind_rust", &[mode, &count]);
    let t = traced::trace_running(subcommand, &args, &mut w);
    w.finish();
    assert_eq!(t.run.code(), 0, "{}", t.context());
    let aliases = rust_aliases();
    let leaf = match mode {
        "faults" => "unwind_rust::touch_pages",
        _ => "unwind_rust::leak_blocks",
    };
    let rows = chains::rows_with_leaf(&t.report, key, t.workload.pid, leaf, &aliases);
    let found = chains::weigh_chains(&rows, weight);
    let expected: Vec<&str> = [&[leaf], RUST_MIDDLE, &["(std)"], MAIN_ROOT].concat();
    let context = || chain_context(&t, &found, &expected);
    assert!(!found.is_empty(), "no row ends in {leaf}\n{}", context());
    for (chain, _) in &found {
        assert!(
            is_rust_chain(chain, leaf, |a, b| aliases.same(a, b)),
            "a chain is not the whole expected one\n{}",
            context()
        );
    }
    assert_unwound(&t, "dwarf", COUNT);
    found.iter().map(|(_, n)| n).sum()
}

#[test]
fn rust_faults_have_whole_stacks() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let faults = rust_case("faults", &[], "faults", "stacks", "count");
    assert_eq!(faults, COUNT);
}

#[test]
fn rust_malloc_has_whole_stacks() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let blocks = rust_case(
        "malloc",
        &["--leaks"],
        "malloc",
        "outstanding",
        "allocations",
    );
    assert_eq!(blocks, COUNT);
}

/// The frame-pointer walk on the same fixture (the old behaviour, kept by `--unwind fp`):
/// touch_pages and leak_blocks keep a number in rbp, so the walk ends at the first frame.
/// The counts stay exact; only the stacks are short.
#[test]
fn frame_pointer_walk_stops_at_the_first_frame() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let fp = frame_pointer_walk();
    let aliases = c_aliases();
    for (subcommand, mode, key, weight, extra) in [
        ("faults", "faults", "stacks", "count", &[][..]),
        (
            "malloc",
            "malloc",
            "outstanding",
            "allocations",
            &["--leaks"][..],
        ),
    ] {
        let t = trace_c(subcommand, &[fp.as_slice(), extra].concat(), mode);
        let leaf = c_chain(mode)[0];
        let rows = chains::rows_with_leaf(&t.report, key, t.workload.pid, leaf, &aliases);
        let found = chains::weigh_chains(&rows, weight);
        let context = || chain_context(&t, &found, &[leaf]);
        let total: u64 = found.iter().map(|(_, n)| n).sum();
        assert_eq!(total, COUNT, "{}", context());
        for (chain, _) in &found {
            assert_eq!(chain, &[leaf], "{}", context());
        }
        if !fp.is_empty() {
            assert_eq!(t.report["unwind"]["mode"], "fp", "{}", context());
        }
    }
}

/// Every stack row of a faults report (run with a `--top` above their number).
fn all_stack_rows(report: &Value) -> Vec<&Value> {
    let rows: Vec<&Value> = report["stacks"].as_array().unwrap().iter().collect();
    let total = traced::u64_of(report, "stacks_total");
    assert_eq!(
        rows.len() as u64,
        total,
        "the report holds {} of {total} stack rows",
        rows.len()
    );
    rows
}

/// Debian's python3 (no frame pointers, libpython linked in), not a python3 earlier on PATH.
const PYTHON: &str = "/usr/bin/python3";
/// Touches fresh pages from the interpreter loop, fills bytearrays (memset), and grows
/// obmalloc's arenas, a list and a dict.
const PYTHON_SCRIPT: &str = "\
big = bytearray(16 << 20)
for i in range(0, len(big), 4096):
    big[i] = 1
blocks = [bytearray(4096) for _ in range(3000)]
words = [str(i) * 3 for i in range(150000)]
table = {i: str(i) for i in range(80000)}
print(len(big), len(blocks), len(words), len(table))
";

/// A real interpreter: nearly every fault's stack, weighted by faults, reaches the root
/// (`_start`; the dynamic loader's `_dl_start_user`), and the report's own count of walks
/// that reached the root agrees.
#[test]
fn python_fault_stacks_reach_the_root() {
    if !tests::require_root() {
        return;
    }
    if !Path::new(PYTHON).is_file() {
        assert!(
            !tests::in_ci(),
            "no {PYTHON} and CI=true: `cargo xtask setup` installs it"
        );
        eprintln!("skipped: no {PYTHON}");
        return;
    }
    let _serial = serial();
    let (run, report) = traced::run_json(
        "faults",
        &["--top", "100000"],
        &[PYTHON, "-c", PYTHON_SCRIPT],
    );
    assert_eq!(run.code(), 0, "{}", run.describe());
    let aliases = Aliases::of(&[PYTHON, LIBC]);
    let rows = all_stack_rows(&report);
    let found = chains::weigh_chains(&rows, "count");
    let faults: u64 = found.iter().map(|(_, n)| n).sum();
    assert!(faults >= 4096, "{faults} faults\n{}", run.describe());
    let share = chains::share_reaching_root(&found, &aliases);
    let unwind = &report["unwind"];
    let context = || {
        format!(
            "{}\n--- unwind ---\n{unwind}\n--- heaviest chains ---\n{}",
            run.describe(),
            chains::describe(&found, 15)
        )
    };
    assert!(
        share >= 0.95,
        "{:.1}% of the faults' stacks reach the root\n{}",
        share * 100.0,
        context()
    );
    assert_eq!(unwind["mode"], "dwarf", "{}", context());
    let walks = traced::u64_of(unwind, "walks");
    let reached = traced::u64_of(unwind, "reached_root");
    assert!(
        walks > 0 && reached as f64 >= 0.95 * walks as f64,
        "{reached} of {walks} walks reached the root\n{}",
        context()
    );
}

/// redis-server (no frame pointers, jemalloc) under DEBUG POPULATE and redis-benchmark,
/// traced by memtrace and recorded by `perf record --call-graph dwarf` at the same time: the
/// five heaviest chains are the same functions (perf's `[unknown]` matches any), and the
/// average stack depths are within 10%.
#[test]
fn redis_stacks_agree_with_perf() {
    if !tests::require_root() || !perf_script::require_perf() {
        return;
    }
    assert!(
        tests::on_path("redis-benchmark") || !tests::in_ci(),
        "no redis-benchmark and CI=true: `cargo xtask setup` installs redis-tools"
    );
    let _serial = serial();
    let redis = Redis::start();
    let pid = redis.pid();
    let pid_arg = pid.to_string();
    let tracer = JsonTracer::start("faults", &["--pid", &pid_arg, "--top", "100000"]);
    // 16 KiB of stack per sample: redis's stacks are shallow in bytes, and perf writes every
    // copy (about 120 MB here).
    let perf = PerfRecord::attach("page-faults", pid, 16384);
    assert_eq!(
        redis.cli(&["DEBUG", "POPULATE", "100000", "key", "100"]),
        "OK"
    );
    if tests::on_path("redis-benchmark") {
        let port = redis.port().to_string();
        let bench = tests::run_command(std::process::Command::new("redis-benchmark").args([
            "-p",
            &port,
            "-q",
            "-t",
            "set,lpush",
            "-n",
            "20000",
            "-d",
            "200",
            "-r",
            "100000",
        ]));
        assert!(bench.status.success(), "{}", bench.describe());
    }
    let samples = perf.stop();
    let (run, report) = tracer.stop();

    let rows: Vec<&Value> = all_stack_rows(&report)
        .into_iter()
        .filter(|r| r["pid"].as_u64() == Some(u64::from(pid)))
        // As perf's: faults without a user stack (none expected here) are no chain.
        .filter(|r| !chains::frames(r).is_empty())
        .collect();
    let ours = chains::weigh_chains(&rows, "count");
    let theirs = perf_script::user_chains(&samples, Some(pid));
    // The files perf's heaviest chains go through, for the names each function goes by.
    let mut modules: Vec<&str> = samples
        .iter()
        .flat_map(|s| &s.frames)
        .filter(|f| !f.is_kernel() && f.module.starts_with('/'))
        .map(|f| f.module.as_str())
        .collect();
    modules.sort_unstable();
    modules.dedup();
    let aliases = Aliases::of(&modules);
    let context = || {
        format!(
            "{}\n--- unwind ---\n{}\n--- memtrace ---\n{}\n--- perf ---\n{}",
            run.describe(),
            report["unwind"],
            chains::describe(&ours, 10),
            chains::describe(&theirs, 10)
        )
    };
    assert!(
        theirs.iter().map(|(_, n)| n).sum::<u64>() >= 2000,
        "perf recorded few faults\n{}",
        context()
    );
    let top = 5;
    let same = |perf: &Vec<String>, ours: &Vec<String>| {
        perf_script::same_functions(perf, ours, |a, b| aliases.same(a, b))
    };
    for (chain, _) in theirs.iter().take(top) {
        assert!(
            ours.iter().take(top).any(|(o, _)| same(chain, o)),
            "perf's chain {} is not among memtrace's {top} heaviest\n{}",
            chain.join(" <- "),
            context()
        );
    }
    for (chain, _) in ours.iter().take(top) {
        assert!(
            theirs.iter().take(top).any(|(p, _)| same(p, chain)),
            "memtrace's chain {} is not among perf's {top} heaviest\n{}",
            chain.join(" <- "),
            context()
        );
    }
    let (depth, perf_depth) = (
        perf_script::average_depth(&ours),
        perf_script::average_depth(&theirs),
    );
    assert!(
        (depth - perf_depth).abs() <= 0.1 * perf_depth,
        "average depth: memtrace {depth:.2}, perf {perf_depth:.2}\n{}",
        context()
    );
}

/// A walk may be taken from its CPU's walk before, when its thread, registers and every stack
/// word that walk read are the same (README). unwind_storm's alternating run touches each page
/// through via_left or via_right (then level_a), three pages each in turn: their faults have the same
/// registers and stack pointer, and only the return address on the stack tells them apart.
/// Each side's faults are on its own whole chain, exactly as many as the workload made, and
/// walks were replayed (within each run of three).
#[test]
fn replayed_walks_keep_stacks_apart() {
    if !tests::require_root() {
        return;
    }
    let _serial = serial();
    let mut w = spawn_waiting("unwind_storm", &["4", "1", "1", "3"]);
    let t = traced::trace_running("faults", &["--top", "1000"], &mut w);
    w.finish();
    assert_eq!(t.run.code(), 0, "{}", t.context());
    let aliases = Aliases::of(&[workload("unwind_storm"), PathBuf::from(LIBC)]);
    let rows = chains::rows_with_leaf(&t.report, "stacks", t.workload.pid, "storm_touch", &aliases);
    let found = chains::weigh_chains(&rows, "count");
    for side in ["left", "right"] {
        let caller = format!("via_{side}");
        let expected: Vec<&str> =
            [&["storm_touch", "level_a", &caller, "alternate"], MAIN_ROOT].concat();
        let counted: u64 = found
            .iter()
            .filter(|(chain, _)| aliases.chain_is(chain, &expected))
            .map(|(_, n)| n)
            .sum();
        let made = t.workload.u64(&format!("{side}_pages"));
        assert_eq!(
            counted,
            made,
            "faults on the {caller} chain: memtrace {counted}, the workload {made}\n{}",
            chain_context(&t, &found, &expected)
        );
    }
    let replayed = traced::u64_of(&t.report["unwind"], "replayed");
    assert!(replayed > 0, "no walk was replayed\n{}", t.context());
}
