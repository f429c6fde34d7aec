//! Compiles the C workloads in `workloads/` with gcc into `<workspace target>/workloads/`,
//! a folder that does not depend on the profile, and tells the crate where it is. The
//! unwinding fixtures are built as release builds are, without frame pointers: `unwind_chain`
//! (C, calling `libunwind_lib.so`) and `unwind_rust` (Rust, with this crate's rustc).

use std::{
    env,
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::Command,
};

const WORKLOADS: &[&str] = &[
    "fault_touch",
    "fault_file",
    "fault_threads",
    "fault_fork",
    "fault_storm",
    "swap_cycle",
    "swap_zero",
    "malloc_leak",
    "malloc_kinds",
    "malloc_threads",
    "heap_peak",
    "lifetimes",
    "heap_retained",
    "oom_heap",
    "demo",
    "memory_shape",
    "shared_anon",
];
/// malloc_leak again, linked against another allocator (which then serves its malloc and
/// free, as jemalloc serves redis's): built when `cargo xtask setup` installed the allocator.
const ALLOCATOR_BUILDS: &[(&str, &str)] = &[
    ("malloc_leak_jemalloc", "libjemalloc.so.2"),
    ("malloc_leak_tcmalloc", "libtcmalloc_minimal.so.4"),
    ("malloc_leak_mimalloc", "libmimalloc.so.2"),
];
const LIBRARY_DIR: &str = "/usr/lib/x86_64-linux-gnu";

/// Built as distributions build programs: -O2 without frame pointers, so only .eh_frame tells
/// a caller (`cargo xtask bench unwind`). (name, source in workloads/)
const NO_FRAME_POINTER_BUILDS: &[(&str, &str)] = &[
    ("unwind_storm", "unwind_storm"),
    ("malloc_leak_nofp", "malloc_leak"),
];

/// The C workloads' flags: -O0: gcc 12 drops the frame of small leaf functions at -O1 even
/// with -fno-omit-frame-pointer, which would hide their callers from frame-pointer stacks.
/// The loops are dominated by the cost of the faults they cause, not by codegen.
const FRAME_POINTER_FLAGS: &[&str] = &["-O0", "-g", "-fno-omit-frame-pointer"];
/// The unwinding fixtures' flags, a distribution's: optimized, no frame pointers, unwind
/// tables for every instruction (.eh_frame).
const RELEASE_FLAGS: &[&str] = &[
    "-O2",
    "-g",
    "-fomit-frame-pointer",
    "-fasynchronous-unwind-tables",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap();
    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir), // join keeps an absolute path as it is
        None => workspace.join("target"),
    };
    let out_dir = target_dir.join("workloads");
    std::fs::create_dir_all(&out_dir).unwrap();

    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    println!("cargo:rerun-if-changed=workloads/common.h");
    println!("cargo:rustc-env=WORKLOADS_DIR={}", out_dir.display());
    println!(
        "cargo:rustc-env=MEMTRACE_TARGET_DIR={}",
        target_dir.display()
    );
    // "debug" or "release": where memtrace_bin() looks for a memtrace of the same profile.
    println!(
        "cargo:rustc-env=MEMTRACE_PROFILE={}",
        env::var("PROFILE").unwrap()
    );
    for name in WORKLOADS {
        let src = manifest_dir.join(format!("workloads/{name}.c"));
        println!("cargo:rerun-if-changed={}", src.display());
        compile(&src, &out_dir.join(name), FRAME_POINTER_FLAGS, &[]);
    }
    for (name, source) in NO_FRAME_POINTER_BUILDS {
        let src = manifest_dir.join(format!("workloads/{source}.c"));
        println!("cargo:rerun-if-changed={}", src.display());
        compile(&src, &out_dir.join(name), RELEASE_FLAGS, &[]);
    }
    let leak = manifest_dir.join("workloads/malloc_leak.c");
    for (name, library) in ALLOCATOR_BUILDS {
        let library = Path::new(LIBRARY_DIR).join(library);
        if library.exists() {
            compile(
                &leak,
                &out_dir.join(name),
                FRAME_POINTER_FLAGS,
                &[library.as_os_str()],
            );
        } else {
            println!("cargo:warning={name} not built: no {}", library.display());
        }
    }
    unwind_fixtures(&manifest_dir.join("workloads"), &out_dir);
}

/// `libunwind_lib.so`, `unwind_chain` (which calls it through the PLT and finds it next to
/// itself) and `unwind_rust`.
fn unwind_fixtures(src_dir: &Path, out_dir: &Path) {
    let lib_src = src_dir.join("unwind_lib.c");
    let chain_src = src_dir.join("unwind_chain.c");
    let rust_src = src_dir.join("unwind_rust.rs");
    for src in [&lib_src, &chain_src, &rust_src] {
        println!("cargo:rerun-if-changed={}", src.display());
    }
    let pic: &[&OsStr] = &["-shared".as_ref(), "-fPIC".as_ref()];
    compile(
        &lib_src,
        &out_dir.join("libunwind_lib.so"),
        RELEASE_FLAGS,
        pic,
    );
    let search = OsString::from(format!("-L{}", out_dir.display()));
    let link: &[&OsStr] = &[
        &search,
        "-lunwind_lib".as_ref(),
        "-Wl,-rpath,$ORIGIN".as_ref(),
    ];
    compile(
        &chain_src,
        &out_dir.join("unwind_chain"),
        RELEASE_FLAGS,
        link,
    );

    // What cargo build --release does: opt-level 3, std's debug info stripped (the symbol
    // table kept); and Rust's defaults: no frame pointers, unwind tables.
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let dest = out_dir.join("unwind_rust");
    let tmp = dest.with_extension(format!("tmp{}", std::process::id()));
    let mut command = Command::new(&rustc);
    command
        .args([
            "--edition",
            "2021",
            "-C",
            "opt-level=3",
            "-C",
            "strip=debuginfo",
        ])
        .arg("-o")
        .arg(&tmp)
        .arg(&rust_src);
    run(&mut command, &rust_src);
    std::fs::rename(&tmp, dest).unwrap();
}

/// gcc `flags` on `src`, then `extra` (libraries, linker flags), into `dest`.
fn compile(src: &Path, dest: &Path, flags: &[&str], extra: &[&OsStr]) {
    // Build under a unique name, then rename: debug and release builds may run at once.
    let tmp = dest.with_extension(format!("tmp{}", std::process::id()));
    let mut command = Command::new("gcc");
    command
        .args(flags)
        .args(["-Wall", "-pthread", "-o"])
        .arg(&tmp)
        .arg(src)
        .args(extra);
    run(&mut command, src);
    std::fs::rename(&tmp, dest).unwrap();
}

/// Runs a compiler on `src`, its messages shown as cargo warnings; panics if it fails.
fn run(command: &mut Command, src: &Path) {
    let output = command.output().unwrap_or_else(|e| {
        panic!("cannot run {command:?} ({e}): install it (`cargo xtask setup`)")
    });
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        println!("cargo:warning={line}");
    }
    assert!(
        output.status.success(),
        "{command:?} failed on {}",
        src.display()
    );
}
