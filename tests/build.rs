//! Compiles the C workloads in `workloads/` with gcc into `<workspace target>/workloads/`,
//! a folder that does not depend on the profile, and tells the crate where it is.

use std::{
    env,
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
/// The default workloads' code generation.
/// -O0: gcc 12 drops the frame of small leaf functions at -O1 even with
/// -fno-omit-frame-pointer, which would hide their callers from frame-pointer stacks.
/// The loops are dominated by the cost of the faults they cause, not by codegen.
const FRAME_POINTERS: &[&str] = &["-O0", "-g", "-fno-omit-frame-pointer"];
const NO_FRAME_POINTERS: &[&str] = &["-O2", "-g", "-fomit-frame-pointer"];

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
        compile(&src, &out_dir.join(name), FRAME_POINTERS, &[]);
    }
    for (name, source) in NO_FRAME_POINTER_BUILDS {
        let src = manifest_dir.join(format!("workloads/{source}.c"));
        println!("cargo:rerun-if-changed={}", src.display());
        compile(&src, &out_dir.join(name), NO_FRAME_POINTERS, &[]);
    }
    let leak = manifest_dir.join("workloads/malloc_leak.c");
    for (name, library) in ALLOCATOR_BUILDS {
        let library = Path::new(LIBRARY_DIR).join(library);
        if library.exists() {
            compile(
                &leak,
                &out_dir.join(name),
                FRAME_POINTERS,
                &[library.as_os_str()],
            );
        } else {
            println!("cargo:warning={name} not built: no {}", library.display());
        }
    }
}

fn compile(src: &Path, dest: &Path, codegen: &[&str], libraries: &[&std::ffi::OsStr]) {
    // Build under a unique name, then rename: debug and release builds may run at once.
    let tmp = dest.with_extension(format!("tmp{}", std::process::id()));
    let output = Command::new("gcc")
        .args(codegen)
        .args(["-Wall", "-pthread", "-o"])
        .arg(&tmp)
        .arg(src)
        .args(libraries)
        .output()
        .unwrap_or_else(|e| panic!("cannot run gcc ({e}): install it (`cargo xtask setup`)"));
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        println!("cargo:warning={line}");
    }
    assert!(output.status.success(), "gcc failed on {}", src.display());
    std::fs::rename(&tmp, dest).unwrap();
}
