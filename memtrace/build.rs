use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

// Builds memtrace-ebpf for the bpf target with the nightly toolchain (aya-build), so the loader
// can embed the object. MEMTRACE_SKIP_EBPF=1 writes an empty object instead, for `cargo check`
// and clippy on machines without bpf-linker; such a binary refuses to trace.
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=MEMTRACE_SKIP_EBPF");
    if std::env::var_os("MEMTRACE_SKIP_EBPF").is_some_and(|v| v == "1") {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("memtrace");
        std::fs::write(out, [])?;
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "memtrace-ebpf")
        .ok_or_else(|| anyhow!("memtrace-ebpf package not found"))?;
    let cargo_metadata::Package {
        name,
        manifest_path,
        ..
    } = ebpf_package;
    let ebpf_package = aya_build::Package {
        name: name.as_str(),
        root_dir: manifest_path
            .parent()
            .ok_or_else(|| anyhow!("no parent for {manifest_path}"))?
            .as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf_package], Toolchain::default())
}
