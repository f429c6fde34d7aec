use std::env;

// bpf-linker must be found for the bpf target; rebuild when it changes (aya-template does the same).
fn main() {
    let bpf_linker = which::which("bpf-linker")
        .expect("bpf-linker not found: run `cargo xtask setup`, which installs it with LLVM 22");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
    println!("cargo:rerun-if-env-changed=PATH");
    let _ = env::var("CARGO_CFG_BPF_TARGET_ARCH");
}
