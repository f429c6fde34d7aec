//! What the kernel must offer, checked before loading so a kernel lacking a feature is told by
//! name ("BPF ring buffers, Linux 5.8+") rather than by a verifier log.
use anyhow::{bail, Result};
use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_helper_supported, is_map_supported, is_program_supported, BpfHelper},
};

/// Fails naming every missing feature. `cgroup_filter`: `--cgroup` is in use.
pub fn check(cgroup_filter: bool) -> Result<()> {
    let missing: Vec<&str> = support(cgroup_filter)
        .into_iter()
        .filter(|(_, present)| !present)
        .map(|(what, _)| what)
        .collect();
    if !missing.is_empty() {
        bail!(
            "this kernel lacks what memtrace needs: {}",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Each feature memtrace needs, and whether this kernel has it (one it cannot probe counts as
/// present: the load then says more).
pub fn support(cgroup_filter: bool) -> Vec<(&'static str, bool)> {
    let mut support = Vec::new();
    for (map, what) in [
        (MapType::RingBuf, "BPF ring buffers (Linux 5.8+)"),
        (MapType::StackTrace, "BPF stack-trace maps (Linux 4.6+)"),
        (MapType::LruHash, "BPF LRU hash maps (Linux 4.10+)"),
    ] {
        support.push((what, is_map_supported(map).unwrap_or(true)));
    }
    for (program, what) in [
        (
            ProgramType::PerfEvent,
            "BPF programs on perf events (Linux 4.9+)",
        ),
        (
            ProgramType::TracePoint,
            "BPF programs on tracepoints (Linux 4.7+)",
        ),
    ] {
        support.push((what, is_program_supported(program).unwrap_or(true)));
    }
    let mut helpers = vec![(
        BpfHelper::BPF_FUNC_probe_read_user,
        "bpf_probe_read_user (Linux 5.5+)",
    )];
    if cgroup_filter {
        helpers.push((
            BpfHelper::BPF_FUNC_get_current_ancestor_cgroup_id,
            "bpf_get_current_ancestor_cgroup_id for --cgroup (Linux 5.7+)",
        ));
    }
    for (helper, what) in helpers {
        support.push((
            what,
            is_helper_supported(ProgramType::PerfEvent, helper).unwrap_or(true),
        ));
    }
    support
}
